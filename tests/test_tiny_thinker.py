"""The tiny thinking models, checked with plain transformers as any user of them would load them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from pytest_mtbench.testing import tiny_model  # noqa: E402
from pytest_mtbench.testing.tiny_model import (  # noqa: E402
    THINK_CLOSE,
    THINK_OPEN,
    THINKER_ANSWER,
    THINKER_REASONING,
)

FULL_REPLY = f"{THINK_OPEN}\n{THINKER_REASONING}\n{THINK_CLOSE}\n\n{THINKER_ANSWER}"
# Real questions, long enough that the rendered prompts run to a few hundred tokens.
QUESTION = (
    "Imagine you are writing a blog post comparing two popular smartphone models. Develop an outline for "
    "the blog post, including key points and subheadings to effectively compare and contrast the features, "
    "performance, and user experience of the two models. Please answer in fewer than 200 words."
)
FOLLOW_UP = "Take your previous response and rephrase it as a limerick."
CONVERSATIONS = {
    "short": [{"role": "user", "content": "Solve 2x + 6 = 4(x - 1) for x."}],
    "system": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": f"{QUESTION}\n\n{QUESTION}"},
    ],
    "second-turn": [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": FULL_REPLY},
        {"role": "user", "content": FOLLOW_UP},
    ],
}


@pytest.fixture(scope="session")
def thinker_dir(build_shared: Callable[[Callable[[Path], Path], str], Path]) -> Path:
    return build_shared(tiny_model.build_tiny_thinker, "thinker")


class Greedy:
    """A saved model loaded with AutoTokenizer / AutoModelForCausalLM, decoding greedily."""

    def __init__(self, path: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path).eval()

    def prompt(self, messages: list[dict[str, str]], **template_vars: Any) -> str:
        return self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False, **template_vars
        )

    def reply(self, text: str, max_new_tokens: int) -> tuple[str, list[int]]:
        """The decoded reply (special tokens skipped) and its token ids, EOS included when written."""
        import torch

        ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
        with torch.no_grad():
            out = self.model.generate(
                ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=max_new_tokens
            )
        new = out[0, ids.shape[1] :].tolist()
        return self.tokenizer.decode(new, skip_special_tokens=True), new

    def n_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))


@pytest.fixture(scope="session")
def thinker(thinker_dir: Path) -> Greedy:
    return Greedy(thinker_dir)


@pytest.mark.slow
def test_the_prompts_run_to_a_few_hundred_tokens(thinker: Greedy) -> None:
    lengths = {name: thinker.n_tokens(thinker.prompt(c)) for name, c in CONVERSATIONS.items()}
    assert lengths["short"] < 50
    assert 200 < lengths["system"] < 600
    assert 150 < lengths["second-turn"] < 600


@pytest.mark.slow
@pytest.mark.parametrize("conversation", CONVERSATIONS)
def test_the_finite_thinker_thinks_then_answers(thinker: Greedy, conversation: str) -> None:
    text, ids = thinker.reply(thinker.prompt(CONVERSATIONS[conversation]), max_new_tokens=60)
    assert text == FULL_REPLY
    assert ids[-1] == thinker.tokenizer.eos_token_id


@pytest.mark.slow
@pytest.mark.parametrize("conversation", CONVERSATIONS)
def test_the_finite_thinker_answers_at_once_with_thinking_off(thinker: Greedy, conversation: str) -> None:
    prompt = thinker.prompt(CONVERSATIONS[conversation], enable_thinking=False)
    assert prompt.endswith(f"<|assistant|>\n{THINK_OPEN}\n\n{THINK_CLOSE}\n\n")
    text, ids = thinker.reply(prompt, max_new_tokens=30)
    assert text == THINKER_ANSWER
    assert ids[-1] == thinker.tokenizer.eos_token_id


@pytest.mark.slow
def test_the_template_drops_past_reasoning_and_honours_enable_thinking(thinker: Greedy) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {
            "role": "assistant",
            "content": f"{THINK_OPEN}\na\n{THINK_CLOSE}\n{THINK_OPEN}\nb\n{THINK_CLOSE}\n\n Hello! \n",
        },
        {"role": "user", "content": "Bye"},
    ]
    past = "<s><|system|>\nBe brief.</s>\n<|user|>\nHi</s>\n<|assistant|>\nHello!</s>\n<|user|>\nBye</s>\n"
    assert thinker.prompt(messages) == past + "<|assistant|>\n"
    assert thinker.prompt(messages, enable_thinking=True) == past + "<|assistant|>\n"
    assert thinker.prompt(messages, enable_thinking=False) == past + "<|assistant|>\n<think>\n\n</think>\n\n"
    # A reply without reasoning, and a user's text that mentions the tags, are shown as they are.
    plain = [{"role": "user", "content": " a </think> b "}, {"role": "assistant", "content": " c "}]
    rendered = thinker.tokenizer.apply_chat_template(plain, tokenize=False)
    assert rendered == "<s><|user|>\n a </think> b </s>\n<|assistant|>\n c </s>\n"


@pytest.mark.slow
def test_the_thinking_tags_are_whole_tokens_that_decoding_keeps(thinker: Greedy) -> None:
    tokenizer = thinker.tokenizer
    ids = tokenizer.encode(f"{THINK_OPEN}\nx\n{THINK_CLOSE}", add_special_tokens=False)
    assert ids[0] == tokenizer.convert_tokens_to_ids(THINK_OPEN)
    assert ids[-1] == tokenizer.convert_tokens_to_ids(THINK_CLOSE)
    assert THINK_OPEN not in tokenizer.all_special_tokens
    assert tokenizer.decode(ids, skip_special_tokens=True) == f"{THINK_OPEN}\nx\n{THINK_CLOSE}"


@pytest.mark.slow
def test_a_built_thinker_is_reused(thinker_dir: Path) -> None:
    weights = thinker_dir / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert tiny_model.build_tiny_thinker(thinker_dir) == thinker_dir
    assert weights.stat().st_mtime_ns == before
