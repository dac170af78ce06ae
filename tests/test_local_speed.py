"""Local models batch across categories, yet a question's answer never depends on its batch.

Batches now span categories (so the batch size is reached), and each sampled row draws from its own
generator: the answers and judgments are the same in-process and under -n 2 (whose workers see other
batches), and the same for two batch sizes.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest

from conftest import strip_timing
from pytest_mtbench.backends.base import BackendOptions, SamplingParams
from pytest_mtbench.cache import ResultCache
from pytest_mtbench.questions import load_questions
from pytest_mtbench.runner import RATING_CUE, BenchmarkRunner, LazyBackend, RunSettings

pytest.importorskip("torch")

FIRST_OF_EACH = ("81", "91", "101", "111", "121", "131", "141", "151")


def _answers(model: Path, shared_data: Path, batch_size: int) -> tuple[dict[int, list[str]], list[set[str]]]:
    """Both turns of the first two questions of each category, and the categories of each model call."""
    questions = [q for q in load_questions(shared_data / "question.jsonl") if q.question_id % 10 in (1, 2)]
    backend = LazyBackend(f"hf/{model}", BackendOptions(batch_size=batch_size))
    category_of = {q.turns[0]: q.category for q in questions}
    calls: list[set[str]] = []
    chat = backend.backend.chat

    def recording_chat(conversations: list[Any], params: Any, on_result: Any = None, **extra: Any) -> Any:
        calls.append({category_of[c[0]["content"]] for c in conversations})
        return chat(conversations, params, on_result, **extra)

    backend.backend.chat = recording_chat  # type: ignore[method-assign]
    runner = BenchmarkRunner(backend, backend, None, ResultCache(None), RunSettings(max_new_tokens=10))  # type: ignore[arg-type]
    turns = runner.generate_answers(questions, {})
    return {qid: [t.answer for t in ts] for qid, ts in turns.items()}, calls


def test_greedy_and_sampled_answers_do_not_depend_on_the_batch_size(
    chat_dir: Path, shared_data: Path
) -> None:
    small, small_calls = _answers(chat_dir, shared_data, batch_size=3)
    large, large_calls = _answers(chat_dir, shared_data, batch_size=16)
    assert small == large
    assert len(small) == 16 and all(len(turns) == 2 for turns in small.values())
    # Not a vacuous pass: the answers differ between questions, and each turn's requests go to the model
    # at once, all eight categories and all three temperatures (the backend cuts them into batches).
    assert len({turns[0] for turns in small.values()}) > 8
    assert len(large_calls) == 2 and all(len(c) == 8 for c in large_calls)
    assert small_calls == large_calls


def test_rows_of_different_temperatures_share_a_batch_and_decode_as_they_would_alone(
    chat_dir: Path, shared_data: Path
) -> None:
    questions = [
        q for q in load_questions(shared_data / "question.jsonl") if str(q.question_id) in FIRST_OF_EACH
    ]
    backend = LazyBackend(f"hf/{chat_dir}", BackendOptions(batch_size=16)).backend
    conversations = [[{"role": "user", "content": q.turns[0]}] for q in questions]

    def params(seed: int) -> list[SamplingParams]:
        return [SamplingParams(q.temperature, 12, seed) for q in questions]

    together = [c.text for c in backend.chat(conversations, params(0))]
    alone = [backend.chat([c], p)[0].text for c, p in zip(conversations, params(0))]
    assert together == alone
    # Greedy (0.0) and sampled rows (0.1 and 0.7) shared the one batch; the sampled rows really sample.
    assert {p.temperature for p in params(0)} == {0.0, 0.1, 0.7}
    reseeded = [c.text for c in backend.chat(conversations, params(1))]
    greedy = [i for i, p in enumerate(params(0)) if p.greedy]
    assert [reseeded[i] for i in greedy] == [together[i] for i in greedy]
    assert reseeded != together


def test_in_process_and_xdist_agree_with_batches_across_categories(
    run_pytest, chat_dir: Path, shared_data: Path, tmp_path: Path
) -> None:
    """A tiny local candidate and a tiny local judge (constrained scoring, varied probe ratings)."""
    reports = []
    for workers in ("0", "2"):
        path = tmp_path / f"r{workers}.json"
        proc = run_pytest(
            tmp_path,
            f"--mtbench-model={chat_dir}",
            f"--mtbench-judge=hf/{chat_dir}",
            "--mtbench-judge-scoring=constrained",
            "--mtbench-judge-max-tokens=6",
            "--mtbench-max-new-tokens=8",
            f"--mtbench-data={shared_data}",
            f"--mtbench-cache={tmp_path / f'c{workers}'}",
            "-k",
            " or ".join(FIRST_OF_EACH),
            f"--mtbench-report={path}",
            "-n",
            workers,
        )
        assert proc.returncode in (0, 1), proc.stdout[-2000:]
        reports.append(json.loads(path.read_text()))
    first, second = (strip_timing(r) for r in reports)
    # -n 2 gives each worker one torch thread, which changes float summation order: rating probabilities
    # agree to ~1e-7, everything else (answers, judgment texts, scores) exactly.
    for q1, q2 in zip(first["questions"], second["questions"], strict=True):
        for t1, t2 in zip(q1["turns"], q2["turns"], strict=True):
            for j1, j2 in zip(t1.pop("judgments"), t2.pop("judgments"), strict=True):
                p1, p2 = j1.pop("rating_probabilities"), j2.pop("rating_probabilities")
                assert p1.keys() == p2.keys() and all(abs(p1[k] - p2[k]) < 1e-5 for k in p1)
                j1.pop("expected_rating"), j2.pop("expected_rating")
                assert j1 == j2
    assert first["questions"] == second["questions"]
    answers = [t["answer"] for q in first["questions"] for t in q["turns"]]
    scores = [t["score"] for q in first["questions"] for t in q["turns"]]
    assert scores == [t["score"] for q in second["questions"] for t in q["turns"]]
    assert len(answers) == 16 and len(set(answers)) > 8
    assert all(s is not None for s in scores)


def _recording_passes(backend: Any, read: list[int] | None = None) -> list[tuple[int, int, int]]:
    """(rows, positions, positions already in the cache) of each forward pass the model runs from now;
    and in `read`, the tokens each pass read that were not padding (the tiny models' padding token is
    theirs alone)."""
    passes: list[tuple[int, int, int]] = []
    forward = backend.model.forward

    @functools.wraps(forward)  # generate() reads forward's signature (position ids for padded rows)
    def recording_forward(*args: Any, **kwargs: Any) -> Any:
        cache = kwargs.get(backend._cache_kwarg)
        rows, width = kwargs["input_ids"].shape
        passes.append((rows, width, int(cache.get_seq_length()) if cache is not None else 0))
        if read is not None:
            read.append(int((kwargs["input_ids"] != backend.tokenizer.pad_token_id).sum()))
        return forward(*args, **kwargs)

    backend.model.forward = recording_forward
    return passes


def test_a_local_judge_works_out_its_rating_probes_on_the_prompt_it_has_just_read(chat_dir: Path) -> None:
    """With probes to follow, the judge's rating distributions come from the KV cache of its own
    generation: rating_probabilities then runs nothing, and gives what reading it all again gives."""
    backend = LazyBackend(f"hf/{chat_dir}", BackendOptions(batch_size=4)).backend
    conversations = [
        [
            {"role": "system", "content": "You judge."},
            {"role": "user", "content": f"Rate answer {i}: " + "x " * 20 * i},
        ]
        for i in range(1, 4)
    ]
    prompt_tokens = sorted(len(backend._encode(backend.render(c))) for c in conversations)
    shapes = _recording_passes(backend)
    replies = backend.chat(conversations, SamplingParams(0.0, 6), probe_cue=RATING_CUE)
    generated = len(shapes)
    probes = backend.rating_probabilities(conversations, [r.text for r in replies], RATING_CUE)
    assert len(shapes) == generated  # served from what chat worked out: no forward pass at all
    # Each prompt was read once (all but its last token): the long one in the two pieces of _prefill,
    # the two short ones together, as wide as the longer; every other pass started on a cache: no prompt
    # was read again for its rating.
    assert prompt_tokens == [65, 105, 145]
    assert shapes[:3] == [(1, 128, 0), (1, 16, 128), (2, 104, 0)]
    assert [past for *_, past in shapes].count(0) == 2
    assert all(rows in (1, 3, 10) for rows, _, _ in shapes[3:])  # one row, the batch of 3, or the check's 10
    again = backend.rating_probabilities(conversations, [r.text for r in replies], RATING_CUE)
    assert max(len(shapes) - generated, 0) >= 3  # now it read each context from scratch
    for mine, fresh in zip(probes, again, strict=True):
        assert mine.keys() == fresh.keys() == set(range(1, 11))
        assert all(abs(mine[k] - fresh[k]) < 1e-5 for k in mine), (mine, fresh)
    assert len({round(p[7], 6) for p in again}) > 1  # the distributions differ between prompts


def _opening_conversations(size: int) -> list[list[dict[str, str]]]:
    """Judge-like prompts: one long shared opening (over _OPENING tokens), then each its own question."""
    opening = "Please act as an impartial judge of the answer below, and explain first. " * 8
    return [
        [
            {"role": "system", "content": "You judge."},
            {"role": "user", "content": opening + f"Answer {i}: " + "y " * i},
        ]
        for i in range(size)
    ]


def test_prompts_that_open_the_same_way_read_the_opening_once_and_get_the_same_numbers(
    chat_dir: Path,
) -> None:
    """A prompt's opening is kept and serves the next prompt that starts with the same tokens, and a
    prompt's texts and rating distributions are the same whether its opening was kept or read."""
    from pytest_mtbench.backends.hf import _OPENING

    conversations = _opening_conversations(3)
    warm = LazyBackend(f"hf/{chat_dir}", BackendOptions(batch_size=1)).backend
    ids = [warm._encode(warm.render(c)) for c in conversations]
    assert min(len(i) for i in ids) > _OPENING + 10 and all(i[:_OPENING] == ids[0][:_OPENING] for i in ids)
    shapes = _recording_passes(warm)
    replies = warm.chat(conversations, SamplingParams(0.0, 6), probe_cue=RATING_CUE)
    starts = [(width, past) for rows, width, past in shapes if rows == 1 and past < _OPENING]
    # The opening was read for the first prompt only (batch size 1: one prompt a batch); each prompt's
    # rest was read on its cache.
    assert starts == [(_OPENING, 0)], shapes
    assert [past for rows, _, past in shapes if rows == 1].count(_OPENING) == len(conversations)
    assert len(warm._openings) == 1
    probes = warm.rating_probabilities(conversations, [r.text for r in replies], RATING_CUE)
    for index, conversation in enumerate(conversations):
        cold = LazyBackend(f"hf/{chat_dir}", BackendOptions(batch_size=1)).backend  # nothing kept
        alone = cold.chat([conversation], SamplingParams(0.0, 6), probe_cue=RATING_CUE)[0]
        assert alone.text == replies[index].text
        assert cold.rating_probabilities([conversation], [alone.text], RATING_CUE)[0] == probes[index]
        cold.close()
    warm.close()


def test_kept_prompt_openings_stay_within_their_budget_and_the_used_ones_stay_longest() -> None:
    torch = pytest.importorskip("torch")
    from pytest_mtbench.backends.hf import _Openings

    def opening() -> list[tuple[Any, Any]]:
        return [(torch.zeros(1, 1, 4, 2), torch.zeros(1, 1, 4, 2))]  # 2 x 32 bytes

    store = _Openings(budget=64 * 3)
    store.put((1,), opening())
    store.put((2,), opening())
    assert store.get((1,)) is not None  # (1,) serves another prompt
    store.put((3,), opening())
    store.put((4,), opening())  # over budget: the unused (2,) goes, not the older but used (1,)
    assert store.get((2,)) is None and store.get((1,)) is not None and len(store) == 3
    store.put((5,), opening())
    assert store.get((3,)) is None and store.get((4,)) is not None and store.get((5,)) is not None
    store.put((6,), opening())  # every kept opening has been used: the least recently used, (1,), goes
    assert store.get((1,)) is None and len(store) == 3 and store.get((6,)) is not None
    store.put((8,), [(torch.zeros(1, 1, 100, 2), torch.zeros(1, 1, 100, 2))])  # larger than the budget
    assert store.get((8,)) is None and len(store) == 3


def test_a_rating_probe_runs_only_the_cue_on_the_cache_of_what_the_judge_wrote(
    silent_judge_dir: Path,
) -> None:
    """The judgment's tokens are in generation's KV cache as well as the prompt's: a probe runs the cue
    (and the ten ratings), never the judgment again, and gives what reading it all afresh gives."""
    backend = LazyBackend(f"hf/{silent_judge_dir}", BackendOptions(batch_size=4)).backend
    conversations = [
        [
            {"role": "system", "content": "You judge."},
            {"role": "user", "content": f"Rate {i}: " + "x " * 20 * i},
        ]
        for i in range(1, 4)
    ]
    passes = _recording_passes(backend)
    replies = backend.chat(conversations, SamplingParams(0.0, 24), probe_cue=RATING_CUE)
    prompts = [len(backend._encode(backend.render(c))) for c in conversations]
    judgment_tokens = min(len(backend._encode(r.text)) for r in replies)
    cue_tokens = len(backend._encode(RATING_CUE))
    assert judgment_tokens >= 3 and all(r.text for r in replies)
    # After generation (the batch of 3 rows), each probe's passes start past its prompt and judgment.
    probing = passes[max(i for i, (rows, _, _) in enumerate(passes) if rows == 3) + 1 :]
    assert len(probing) >= 6 and all(past >= min(prompts) + judgment_tokens for _, _, past in probing), (
        probing
    )
    heads = [width for rows, width, past in probing if rows == 1 and width <= cue_tokens + 1]
    assert len(heads) >= 3, (probing, cue_tokens)
    mine = [
        backend._probed.pop(backend.render(c) + r.text + RATING_CUE) for c, r in zip(conversations, replies)
    ]
    # The ten continuations ran as one row (a tree mask), checked once against ten rows on a cache copy
    # each; reading everything afresh as ten rows gives the same distributions.
    assert backend._tree_probes is True and [rows for rows, _, _ in probing].count(10) == 1
    backend._tree_probes = False
    fresh = backend.rating_probabilities(conversations, [r.text for r in replies], RATING_CUE)
    for a, b in zip(mine, fresh, strict=True):
        assert all(abs(a[k] - b[k]) < 1e-5 for k in range(1, 11)), (a, b)


def test_prompts_read_into_the_batch_cache_give_what_the_padded_batch_gives(
    chat_dir: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    questions = [
        q for q in load_questions(shared_data / "question.jsonl") if str(q.question_id) in FIRST_OF_EACH
    ]
    backend = LazyBackend(f"hf/{chat_dir}", BackendOptions(batch_size=8)).backend
    conversations = [[{"role": "user", "content": q.turns[0]}] for q in questions]
    params = [SamplingParams(q.temperature, 12, 0) for q in questions]
    lengths = {len(backend._encode(backend.render(c))) for c in conversations}
    assert max(lengths) > 2 * min(lengths)  # one batch, mostly padding for its shorter prompts
    read_by_row = [c.text for c in backend.chat(conversations, params)]
    monkeypatch.setattr(backend, "_prefill_rows", lambda prompts, width, room: None)  # generate() prefills
    padded = [c.text for c in backend.chat(conversations, params)]
    assert read_by_row == padded and len(set(padded)) > 4


def test_a_batch_decodes_into_memory_allocated_once_and_reused_by_the_next_batch(
    chat_dir: Path, shared_data: Path
) -> None:
    """A cache that grows by concatenation copies all its keys and values at every step (at batch 64
    and 600-token prompts, more than the step's attention), and memory taken afresh for every batch
    costs a page fault per page: each batch's cache is laid out in memory the backend allocated once,
    as long as the batch can need, written in place, and attended to as far as it is written. The
    texts are those of a batched read into a cache that grows."""
    questions = [
        q for q in load_questions(shared_data / "question.jsonl") if str(q.question_id) in FIRST_OF_EACH
    ]
    backend = LazyBackend(f"hf/{chat_dir}", BackendOptions(batch_size=4)).backend
    conversations = [[{"role": "user", "content": q.turns[0]}] for q in questions]
    params = [SamplingParams(q.temperature, 16, 0) for q in questions]
    widths = sorted((len(backend._encode(backend.render(c))) for c in conversations), reverse=True)
    steps: list[tuple[str, int, int, int, int]] = []  # layer kind, capacity, attended, memory, rows
    forward = backend.model.forward

    @functools.wraps(forward)
    def recording_forward(*args: Any, **kwargs: Any) -> Any:
        cache = kwargs.get(backend._cache_kwarg)
        rows = kwargs["input_ids"].shape[0]
        if cache is not None and kwargs["input_ids"].shape[1] == 1 and rows > 1:  # a decoding step
            layer = cache.layers[0]
            steps.append((type(layer).__name__, layer.room[0].shape[2], layer.keys.shape[2], 0, rows))
            out = forward(*args, **kwargs)
            steps[-1] = (*steps[-1][:3], layer.room[0].data_ptr(), rows)
            assert layer.keys.shape[2] == steps[-1][2] + 1  # one position written, in place
            return out
        return forward(*args, **kwargs)

    backend.model.forward = recording_forward
    replies = backend.chat(conversations, params)
    # Two batches of four (longest prompts first): each decodes into room for its longest prompt and
    # 16 tokens, attending to the positions written so far, in the memory the first batch took.
    first = [s for s in steps if s[1] == widths[0] - 1 + 16]
    second = [s for s in steps if s[1] == widths[4] - 1 + 16]
    assert len(first) + len(second) == len(steps) and first and second
    assert {s[0] for s in steps} == {"_SlabLayer"}
    assert [s[2] for s in first] == list(range(widths[0] - 1, widths[0] - 1 + len(first)))
    assert len({s[3] for s in steps}) == 1  # never reallocated, and reused by the second batch
    assert any(r.truncated and r.n_tokens == 16 for r in replies)  # the room was used to its end
    backend.model.forward = forward
    backend._prefill_rows = lambda prompts, width, room: None  # type: ignore[method-assign]
    assert [r.text for r in backend.chat(conversations, params)] == [r.text for r in replies]


def test_rows_that_end_leave_the_batch_and_the_rest_decode_as_they_would_alone(
    chat_dir: Path, shared_data: Path
) -> None:
    """Once enough rows of a batch have written EOS, they leave it (their keys and values are dropped
    and the rest moved up) instead of running to the longest row's end; no row's tokens change."""
    questions = [
        q for q in load_questions(shared_data / "question.jsonl") if str(q.question_id) in FIRST_OF_EACH
    ]
    backend = LazyBackend(f"hf/{chat_dir}", BackendOptions(batch_size=8)).backend
    conversations = [[{"role": "user", "content": q.turns[0]}] for q in questions]
    params = [SamplingParams(q.temperature, 24, 0) for q in questions]
    # The random model never writes its EOS: make EOS a token that some rows write early and some never.
    backend._eos_ids = set()
    free = [backend._encode(r.text) for r in backend.chat(conversations, params)]
    counts: dict[int, int] = {}
    for tokens in free:
        for token in set(tokens[1:6]):
            counts[token] = counts.get(token, 0) + 1
    stop = next(t for t, n in sorted(counts.items(), key=lambda kv: -kv[1]) if 1 <= n <= 4)
    backend._eos_ids = {stop}
    rows_per_step: list[int] = []
    forward = backend.model.forward

    @functools.wraps(forward)
    def recording_forward(*args: Any, **kwargs: Any) -> Any:
        if kwargs["input_ids"].shape[1] == 1:
            rows_per_step.append(kwargs["input_ids"].shape[0])
        return forward(*args, **kwargs)

    backend.model.forward = recording_forward
    together = backend.chat(conversations, params)
    backend.model.forward = forward
    ended = [r for r in together if not r.truncated]
    assert 1 <= len(ended) <= 4 and all(r.n_tokens < 24 for r in ended)
    # The batch shrank as rows ended, and never grew back.
    assert rows_per_step[0] == 8 and min(rows_per_step) == 8 - len(ended)
    assert rows_per_step == sorted(rows_per_step, reverse=True)
    alone = [backend.chat([c], p)[0] for c, p in zip(conversations, params)]
    assert [(r.text, r.n_tokens, r.finish_reason) for r in together] == [
        (r.text, r.n_tokens, r.finish_reason) for r in alone
    ]


@pytest.mark.slow  # trains tiny judges (named by parameter: the collection hook cannot see them)
@pytest.mark.parametrize(
    ("judge_fixture", "writes_ratings"), [("judge_dir", True), ("silent_judge_dir", False)]
)
def test_constrained_scoring_probes_only_the_judgments_without_a_rating(
    judge_fixture: str, writes_ratings: bool, shared_data: Path, request: pytest.FixtureRequest
) -> None:
    from pytest_mtbench.modes.single import SingleAnswerMode
    from pytest_mtbench.prompts import load_judge_prompts
    from pytest_mtbench.questions import load_references

    judge_path = request.getfixturevalue(judge_fixture)
    questions = [q for q in load_questions(shared_data / "question.jsonl") if q.question_id in (81, 121)]
    judge = LazyBackend(f"hf/{judge_path}", BackendOptions(batch_size=4))
    backend = judge.backend
    worked_out: list[str] = []  # when each rating distribution was computed: in chat() or afterwards
    phase = ["chat"]
    distribution = backend._rating_distribution
    chat = backend.chat

    def counting_distribution(context: str, start: Any = None) -> Any:
        worked_out.append(phase[0])
        return distribution(context, start)

    def chat_then_probe(*args: Any, **kwargs: Any) -> Any:
        phase[0] = "chat"
        replies = chat(*args, **kwargs)
        phase[0] = "probe"
        return replies

    backend._rating_distribution = counting_distribution  # type: ignore[method-assign]
    backend.chat = chat_then_probe  # type: ignore[method-assign]
    mode = SingleAnswerMode(
        load_judge_prompts(shared_data / "judge_prompts.jsonl", official=True),
        load_references(shared_data / "reference_answer" / "gpt-4.jsonl"),
        scoring="constrained",
    )
    runner = BenchmarkRunner(
        LazyBackend("fake/echo", BackendOptions()),
        judge,
        mode,
        ResultCache(None),
        RunSettings(judge_max_tokens=8),
    )
    records = runner.run(questions)
    judgments = [j for r in records.values() for t in r.turns for j in t.judgments]
    assert len(judgments) == 4
    if writes_ratings:
        assert all(j.scored_by == "official" for j in judgments)
        assert worked_out == []  # a judgment the official rule reads is never probed, not even in passing
    else:
        assert all(j.scored_by == "constrained" for j in judgments)
        assert worked_out == ["chat"] * 4  # each worked out once, on the prompt's cache, and then served
        assert backend._probed == {}


def test_a_generation_config_with_logits_processors_decodes_through_generate(
    chat_dir: Path, tmp_path: Path
) -> None:
    """A model whose generation config asks for a repetition penalty (Qwen2.5's does) gets it: its
    batches go through generate(), which applies it, and give what generate() gives them alone."""
    import shutil

    torch = pytest.importorskip("torch")
    model_dir = tmp_path / "penalised"
    shutil.copytree(chat_dir, model_dir)
    config_file = model_dir / "generation_config.json"
    config = json.loads(config_file.read_text()) if config_file.exists() else {}
    config_file.write_text(json.dumps({**config, "repetition_penalty": 1.8}))
    conversations = [[{"role": "user", "content": f"Question {i}: " + "why " * (3 * i)}] for i in range(1, 5)]
    plain = LazyBackend(f"hf/{chat_dir}", BackendOptions(batch_size=4)).backend
    penalised = LazyBackend(f"hf/{model_dir}", BackendOptions(batch_size=4)).backend
    assert plain._config_processors == [] and penalised._config_processors == ["repetition_penalty"]
    replies = [r.text for r in penalised.chat(conversations, SamplingParams(0.0, 12))]
    assert replies != [r.text for r in plain.chat(conversations, SamplingParams(0.0, 12))]
    for conversation, reply in zip(conversations, replies):
        ids = torch.tensor([penalised._encode(penalised.render(conversation))])
        with torch.inference_mode():
            out = penalised.model.generate(input_ids=ids, do_sample=False, max_new_tokens=12)
        tokens = out[0, ids.shape[1] :].tolist()
        n_tokens, _ = penalised._count_generated(tokens)
        assert penalised.tokenizer.decode(tokens[:n_tokens], skip_special_tokens=True).strip() == reply


def _two_turns(questions: list[Any], replies: list[Any]) -> list[list[dict[str, str]]]:
    return [
        [
            {"role": "user", "content": q.turns[0]},
            {"role": "assistant", "content": reply.text},
            {"role": "user", "content": q.turns[1]},
        ]
        for q, reply in zip(questions, replies)
    ]


@pytest.mark.parametrize("model", ["judge", "chat"])
def test_turn_two_is_read_from_where_turn_one_ended_and_decodes_as_reading_it_all_would(
    model: str, judge_dir: Path, chat_dir: Path, shared_data: Path
) -> None:
    """A conversation that chat() is told will go on keeps its prompt's and reply's keys and values;
    the next turn's prompt is then read from where they end. Its greedy and sampled replies are those
    of a backend that reads the whole prompt.

    The trained judge writes text ("Rating: [[7]]") that tokenises again as it was written, so all of
    its reply is reused; the random chat model writes bytes that do not (so only its prompt and the
    reply's first tokens are), and replies that differ from row to row."""
    questions = [
        q for q in load_questions(shared_data / "question.jsonl") if str(q.question_id) in FIRST_OF_EACH
    ]
    params = [SamplingParams(q.temperature, 12, 0) for q in questions]
    first = [[{"role": "user", "content": q.turns[0]}] for q in questions]
    path = judge_dir if model == "judge" else chat_dir
    warm = LazyBackend(f"hf/{path}", BackendOptions(batch_size=16)).backend
    kept = [i for i in range(len(questions)) if i % 4 != 3]  # two conversations are not said to go on
    replies = warm.chat(first, params, follow_up=lambda index: index in kept)
    assert len(warm._follow_ups) == len(kept)
    second = _two_turns(questions, replies)
    turn_one = [len(warm._encode(warm.render(c))) for c in first]
    turn_two = [len(warm._encode(warm.render(c))) for c in second]
    read: list[int] = []
    passes = _recording_passes(warm, read)
    continued = warm.chat(second, params)
    reading = next(i for i, (rows, width, _) in enumerate(passes) if (rows, width) == (len(questions), 1))
    # The two not kept were read from their start; the six kept were read on the keys and values of
    # their turn 1, from past its prompt at least.
    afresh = sum(turn_two[i] - 1 for i in range(len(questions)) if i not in kept)
    read_on_turn_one = sum(read[:reading]) - afresh
    after_prompt = sum(turn_two[i] - 1 - turn_one[i] for i in kept)
    assert read_on_turn_one <= after_prompt
    if model == "judge":
        # ... and past its whole reply but the EOS that ended it (decoding read padding in its place).
        assert [replies[i].text for i in kept] == ["Rating: [[7]]"] * len(kept)
        assert [replies[i].finish_reason for i in kept] == ["stop"] * len(kept)
        assert read_on_turn_one == after_prompt - sum(replies[i].n_tokens - 1 for i in kept)
    assert len(warm._follow_ups) == 0  # each served its one next turn
    warm.close()

    cold = LazyBackend(f"hf/{path}", BackendOptions(batch_size=16)).backend
    read_all = cold.chat(second, params)
    assert [c.text for c in continued] == [c.text for c in read_all]
    assert [c.n_tokens for c in continued] == [c.n_tokens for c in read_all]
    assert {p.temperature for p in params} == {0.0, 0.1, 0.7}  # greedy and sampled rows alike
    if model == "chat":
        assert len({c.text for c in read_all}) > 4
    cold.close()


def test_a_turn_two_whose_turn_one_came_from_the_cache_gets_the_answer_of_an_unbroken_run(
    chat_dir: Path, shared_data: Path, tmp_path: Path
) -> None:
    """A run that stopped between the turns resumes with turn 1 from the result cache and reads turn
    2's prompts in full; its answers are those of the run that went on from turn 1's keys and values."""
    import shutil

    questions = [q for q in load_questions(shared_data / "question.jsonl") if q.question_id % 10 in (1, 2)]

    def run(cache_dir: Path) -> tuple[dict[int, list[str]], int, int]:
        model = LazyBackend(f"hf/{chat_dir}", BackendOptions(batch_size=6))
        backend = model.backend
        taken: list[bool] = []
        take = backend._follow_ups.take

        def counting_take(ids: list[int]) -> Any:
            found = take(ids)
            taken.append(found is not None)
            return found

        backend._follow_ups.take = counting_take  # type: ignore[method-assign]
        runner = BenchmarkRunner(model, model, None, ResultCache(cache_dir), RunSettings(max_new_tokens=10))  # type: ignore[arg-type]
        turns = runner.generate_answers(questions, {})
        model.close()
        answers = {qid: [t.answer for t in ts] for qid, ts in turns.items()}
        return answers, taken.count(True), runner.generation.cached

    unbroken, continued, cached = run(tmp_path / "unbroken")
    assert continued == len(questions) and cached == 0  # every turn 2 went on from its turn 1
    shutil.copytree(tmp_path / "unbroken", tmp_path / "resumed")
    second_turns = [
        path
        for path in (tmp_path / "resumed").rglob("*.json")
        if len(json.loads(path.read_text())["material"]["messages"]) == 3
    ]
    assert len(second_turns) == len(questions)
    for path in second_turns:
        path.unlink()
    resumed, continued, cached = run(tmp_path / "resumed")
    assert continued == 0 and cached == len(questions)  # turn 1 from the cache, turn 2 read in full
    assert resumed == unbroken
    assert len({turns[1] for turns in unbroken.values()}) > 8


def test_batches_are_as_few_as_the_batch_size_allows_and_cut_where_the_least_padding_is_attended() -> None:
    import itertools
    import random

    from pytest_mtbench.backends.hf import _batches

    def attended(lengths: list[int], spans: list[tuple[int, int]], new: int) -> int:
        return sum((end - start) * (lengths[start] + new // 2) for start, end in spans)

    rng = random.Random(7)
    for _ in range(200):
        count, size, new = rng.randint(1, 12), rng.randint(1, 5), rng.choice([0, 8, 128])
        lengths = sorted((rng.randint(1, 600) for _ in range(count)), reverse=True)
        spans = _batches(lengths, size, new)
        # Contiguous, in order, covering every prompt once, none over the batch size, as few as possible.
        assert spans[0][0] == 0 and spans[-1][1] == count
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
        assert all(0 < end - start <= size for start, end in spans)
        fewest = -(-count // size)
        assert len(spans) == fewest
        # No other cut into that many batches attends to fewer positions (every cut, tried).
        best = min(
            attended(lengths, list(zip((0, *cuts), (*cuts, count))), new)
            for cuts in itertools.combinations(range(1, count), fewest - 1)
            if all(0 < b - a <= size for a, b in zip((0, *cuts), (*cuts, count)))
        )
        assert attended(lengths, spans, new) == best
    # Like MT-Bench's turn 1 for SmolLM2 at batch 64: two long prompts and 78 short ones. The long ones
    # go in the batch of 16, not in the first 64 (whose 64 rows would then all attend to 402 positions).
    lengths = [402, 300, *[110] * 62, *[52] * 16]
    assert _batches(lengths, 64, 128) == [(0, 16), (16, 80)]
    assert _batches([], 4, 0) == [] and _batches([9, 9], 4, 0) == [(0, 2)]


def test_a_long_prompt_gets_a_batch_of_its_own_rather_than_padding_the_short_ones(chat_dir: Path) -> None:
    backend = LazyBackend(f"hf/{chat_dir}", BackendOptions(batch_size=4)).backend
    conversations = [[{"role": "user", "content": "word " * 200}]] + [
        [{"role": "user", "content": f"Short {i}."}] for i in range(4)
    ]
    passes = _recording_passes(backend)
    together = [c.text for c in backend.chat(conversations, SamplingParams(0.0, 5))]
    # Decoding steps (more than one row, or one row on a cache): the long prompt alone, then the four
    # short ones, never the long one with three short ones and the fourth alone.
    batch_rows = [rows for rows, width, _ in passes if width == 1]
    assert batch_rows[0] == 1 and 4 in batch_rows and 3 not in batch_rows and 2 not in batch_rows
    alone = [backend.chat([c], SamplingParams(0.0, 5))[0].text for c in conversations]
    assert together == alone
    backend.close()


def test_kept_turns_serve_the_prompt_that_continues_them_once_and_stay_within_their_budget() -> None:
    torch = pytest.importorskip("torch")
    from pytest_mtbench.backends.hf import _FollowUps

    def part(positions: int) -> list[tuple[Any, Any]]:
        return [(torch.zeros(1, 1, positions, 2), torch.zeros(1, 1, positions, 2))]  # 16 bytes a position

    store = _FollowUps(budget=16 * 12)
    store.put([1, 2], [1, 2, 7, 8], part(4))  # prompt [1, 2], then the reply 7, 8
    store.put([3], [3, 9], part(2))
    assert store.take([5, 1, 2, 7]) is None  # continues no kept prompt
    assert store.take([1, 2]) is None  # the prompt itself is not a continuation
    # The next turn re-tokenised the reply's end differently: only the first 3 positions serve.
    done, kept = store.take([1, 2, 7, 6, 4])  # type: ignore[misc]
    assert done == 3 and kept[0][0].shape[2] == 4
    assert store.take([1, 2, 7, 6, 4]) is None and len(store) == 1  # served once
    store.put([4], [4] * 5, part(5))
    store.put([5], [5] * 6, part(6))  # over budget: the oldest, [3], goes
    assert len(store) == 2 and store.take([3, 9, 1]) is None
    store.put([6], [6] * 20, part(20))  # larger than the whole budget: not kept, nothing dropped
    assert len(store) == 2 and store.take([4, 4, 4, 4, 4, 4])[0] == 5  # type: ignore[index]


def test_a_sampled_question_alone_draws_what_generate_draws_after_manual_seed(chat_dir: Path) -> None:
    torch = pytest.importorskip("torch")
    backend = LazyBackend(f"hf/{chat_dir}", BackendOptions(batch_size=4)).backend
    conversation = [{"role": "user", "content": "Write a short poem about the sea."}]
    ids = torch.tensor([backend._encode(backend.render(conversation))])
    texts = []
    for seed in (5, 6):
        ours = backend.chat([conversation], SamplingParams(0.7, 12, seed))[0]
        torch.manual_seed(seed)
        out = backend.model.generate(input_ids=ids, do_sample=True, temperature=0.7, max_new_tokens=12)
        n_tokens, _ = backend._count_generated(out[0, ids.shape[1] :].tolist())
        theirs = backend.tokenizer.decode(out[0, ids.shape[1] :][:n_tokens], skip_special_tokens=True).strip()
        assert ours.text == theirs
        texts.append(ours.text)
    assert texts[0] != texts[1]  # the seeds draw differently: the rows really sample
    backend.close()


def test_short_reads_go_together_when_they_pad_little_and_up_to_a_pass_size() -> None:
    from pytest_mtbench.backends.hf import _READ_TOGETHER, _reading_groups

    # 100 and 95 pad 5 positions; 40 would pad 60 more (over a quarter): a group of its own, with 38.
    assert _reading_groups([(4, 10), (0, 100), (2, 40), (1, 95), (3, 38)]) == [[0, 1], [2, 3], [4]]
    per_pass = _READ_TOGETHER // 100
    groups = _reading_groups([(row, 100) for row in range(2 * per_pass + 1)])
    assert [len(g) for g in groups] == [per_pass, per_pass, 1]
    assert _reading_groups([]) == [] and _reading_groups([(7, 1)]) == [[7]]
