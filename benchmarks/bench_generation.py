"""How much faster does HFBackend's batched generation answer the 80 MT-Bench questions?

Builds the tiny random-weight chat model (pytest_mtbench.testing.tiny_model) in a temp dir, then
generates both turns of all 80 official questions (turn 2 sees turn 1's question and answer, per-category
temperature, greedy below 1e-4) and measures in this one run:

  (a) one question at a time, batch size 1, a plain transformers loop like FastChat's gen_model_answer
  (b) the plugin's path (BenchmarkRunner -> HFBackend, batch_size 16): per turn, the questions of a
      category that share a temperature go through the model as one left-padded batch

Both paths use the same max_new_tokens and the same stopping rule (EOS or the token limit), and count
generated tokens the same way (up to and including EOS), so tokens/s compares them fairly even though
a random model stops at different points. Also checks that greedy turn-1 answers agree across paths.

    .venv/bin/python benchmarks/bench_generation.py [--data DIR] [--max-new-tokens 64] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from pytest_mtbench.backends.base import BackendOptions, Message, SamplingParams
from pytest_mtbench.cache import ResultCache
from pytest_mtbench.questions import Question, load_questions
from pytest_mtbench.runner import BenchmarkRunner, LazyBackend, RunSettings
from pytest_mtbench.testing.tiny_model import build_tiny_chat_model

REPO_ROOT = Path(__file__).resolve().parent.parent


def params_for(question: Question, max_new_tokens: int, seed: int = 0) -> SamplingParams:
    """The sampling params FastChat uses for a question's category."""
    return SamplingParams(temperature=question.temperature, max_new_tokens=max_new_tokens, seed=seed)


def conversation(question: Question, answers: list[str]) -> list[Message]:
    """The messages for the next turn: every earlier question with its answer, then the next question."""
    messages: list[Message] = []
    for turn, answer in enumerate(answers):
        messages.append({"role": "user", "content": question.turns[turn]})
        messages.append({"role": "assistant", "content": answer})
    messages.append({"role": "user", "content": question.turns[len(answers)]})
    return messages


def one_at_a_time(model_dir: Path, questions: list[Question], max_new_tokens: int) -> tuple[dict, int, float]:
    """FastChat-style: per question, per turn, one `model.generate` call on a single prompt."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, local_files_only=True).eval()
    eos = tokenizer.eos_token_id
    answers: dict[int, list[str]] = {}
    n_tokens = 0
    began = time.perf_counter()
    with torch.inference_mode():
        for question in questions:
            params = params_for(question, max_new_tokens)
            sampling: dict[str, Any] = (
                {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
                if params.greedy
                else {"do_sample": True, "temperature": params.temperature}
            )
            turns: list[str] = []
            for _ in question.turns:
                prompt = tokenizer.apply_chat_template(
                    conversation(question, turns), add_generation_prompt=True, tokenize=False
                )
                ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids
                torch.manual_seed(params.seed)
                output = model.generate(
                    ids, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, **sampling
                )
                new = output[0, ids.shape[1] :].tolist()
                count = new.index(eos) + 1 if eos in new else len(new)
                n_tokens += count
                turns.append(tokenizer.decode(new[:count], skip_special_tokens=True).strip())
            answers[question.question_id] = turns
    return answers, n_tokens, time.perf_counter() - began


def batched(model_dir: Path, questions: list[Question], max_new_tokens: int, batch_size: int) -> tuple:
    """The plugin's own path: BenchmarkRunner.generate_answers (no cache), which sends each turn of a
    category's questions that share a temperature through HFBackend as left-padded batches."""
    runner = BenchmarkRunner(
        model=LazyBackend(str(model_dir), BackendOptions(batch_size=batch_size)),
        judge=LazyBackend("fake/judge-7", BackendOptions()),
        prompts={},
        references={},
        cache=ResultCache(None),
        settings=RunSettings(max_new_tokens=max_new_tokens),
    )
    _ = runner.model.backend  # load the model outside the timed part, as (a) does
    began = time.perf_counter()
    records = runner.generate_answers(questions, errors={})
    elapsed = time.perf_counter() - began
    answers = {qid: [turn["answer"] for turn in turns] for qid, turns in records.items()}
    n_tokens = sum(turn["answer_tokens"] for turns in records.values() for turn in turns)
    runner.model.close()
    return answers, n_tokens, elapsed


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "mt_bench")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    import torch

    questions = load_questions(args.data / "question.jsonl")
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_chat_model(Path(tmp) / "tiny-chat")
        print(
            f"{len(questions)} questions x 2 turns, tiny chat model, max_new_tokens={args.max_new_tokens}, "
            f"torch threads={torch.get_num_threads()}"
        )
        single_answers, single_tokens, single_s = one_at_a_time(model_dir, questions, args.max_new_tokens)
        batch_answers, batch_tokens, batch_s = batched(
            model_dir, questions, args.max_new_tokens, args.batch_size
        )

    single_rate, batch_rate = single_tokens / single_s, batch_tokens / batch_s
    print(f"(a) one at a time  : {single_tokens:6d} tokens  {single_s:7.2f} s  {single_rate:8.1f} tokens/s")
    print(
        f"(b) batched ({args.batch_size:>3d})   : {batch_tokens:6d} tokens  {batch_s:7.2f} s  "
        f"{batch_rate:8.1f} tokens/s"
    )
    print(f"ratio batched / one-at-a-time: {batch_rate / single_rate:.2f}x tokens/s")
    greedy = [q for q in questions if q.temperature < 1e-4]
    same = sum(single_answers[q.question_id][0] == batch_answers[q.question_id][0] for q in greedy)
    print(f"greedy turn-1 answers identical across paths: {same}/{len(greedy)}")


if __name__ == "__main__":
    main()
