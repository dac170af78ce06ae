"""Pairwise mode: FastChat's pair prompts, both orders, its [[A]]/[[B]]/[[C]] rule and its win rule."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from pytest_mtbench.judge import JudgeRequest
from pytest_mtbench.modes import JudgeReply
from pytest_mtbench.modes.pairwise import (
    MODEL_A,
    MODEL_B,
    TIE,
    PairMatch,
    PairResult,
    PairwiseMode,
    combine,
    make_matches,
    pair_prompt_name,
    read_verdict,
)
from pytest_mtbench.prompts import load_judge_prompts
from pytest_mtbench.questions import Question, load_questions, load_references
from pytest_mtbench.ratings import battles_from_results, win_rates
from pytest_mtbench.records import CallInfo

# Answers that would break naive templating, and that tell the two models apart in a rendered prompt.
HOSTILE = "{x} {{ y }} {% if z %}{# c #}{% endif %} {0} {question} }} {{\n\n"


class ScriptedJudge:
    """A JudgeClient whose reply depends on which model's answer is shown as Assistant A."""

    def __init__(self, reply: Callable[[str, JudgeRequest], str]) -> None:
        self.reply = reply
        self.requests: list[JudgeRequest] = []

    def complete(self, requests: Sequence[JudgeRequest]) -> list[JudgeReply]:
        self.requests += requests
        out = []
        for request in requests:
            shown_first = "good" if request.user.index("GOOD-") < request.user.index("POOR-") else "poor"
            out.append(JudgeReply(self.reply(shown_first, request), CallInfo()))
        return out

    def rating_probabilities(self, requests, judgments):  # pragma: no cover - not used by this mode
        raise AssertionError("pairwise judging never asks for rating probabilities")


@pytest.fixture(scope="module")
def official(shared_data: Path):
    questions = {q.question_id: q for q in load_questions(shared_data / "question.jsonl")}
    references = load_references(shared_data / "reference_answer" / "gpt-4.jsonl")
    prompts = load_judge_prompts(shared_data / "judge_prompts.jsonl", official=True)
    rows = {
        row["name"]: row
        for row in map(json.loads, (shared_data / "judge_prompts.jsonl").read_text().splitlines())
    }
    return questions, references, prompts, rows


def _match(question: Question, good: str = "good", poor: str = "poor") -> PairMatch:
    answers_good = tuple(f"GOOD-{i + 1} {HOSTILE}" for i in range(len(question.turns)))
    answers_poor = tuple(f"POOR-{i + 1} {HOSTILE} and more words" for i in range(len(question.turns)))
    return PairMatch(question, good, answers_good, poor, answers_poor)


def _fastchat_user_prompt(
    row: dict, question: Question, a: Sequence[str], b: Sequence[str], ref, turn: int
) -> str:
    """FastChat's run_judge_pair, written out: which variables it passes, then str.format."""
    kwargs = {}
    if ref is not None:
        kwargs["ref_answer_1"] = ref[0]
        if turn == 2:
            kwargs["ref_answer_2"] = ref[1]
    if turn == 2:
        return row["prompt_template"].format(
            question_1=question.turns[0],
            question_2=question.turns[1],
            answer_a_1=a[0],
            answer_b_1=b[0],
            answer_a_2=a[1],
            answer_b_2=b[1],
            **kwargs,
        )
    return row["prompt_template"].format(question=question.turns[0], answer_a=a[0], answer_b=b[0], **kwargs)


@pytest.mark.parametrize(
    ("question_id", "turn", "kind"),
    [
        (81, 1, "pair-v2"),
        (81, 2, "pair-v2-multi-turn"),
        (111, 1, "pair-math-v1"),
        (111, 2, "pair-math-v1-multi-turn"),
    ],
)
def test_both_orders_render_byte_identical_to_fastchat(
    official, question_id: int, turn: int, kind: str
) -> None:
    questions, references, prompts, rows = official
    question = questions[question_id]
    assert pair_prompt_name(question, turn) == kind
    match = _match(question)
    mode = PairwiseMode(prompts, references)
    planned = [(t, g1, g2) for m, t, g1, g2 in mode.requests([match]) if t == turn]
    assert len(planned) == 1
    _, g1, g2 = planned[0]
    ref = references[question_id] if question.needs_reference else None
    row = rows[kind]
    assert g1.prompt_name == g2.prompt_name == kind
    assert g1.user == _fastchat_user_prompt(row, question, match.answers_a, match.answers_b, ref, turn)
    assert g2.user == _fastchat_user_prompt(row, question, match.answers_b, match.answers_a, ref, turn)
    assert g1.system == g2.system == row["system_prompt"]
    assert g1.user != g2.user and HOSTILE in g1.user
    # FastChat sends the system prompt, then the user prompt (OpenAI judges).
    assert g1.messages() == [
        {"role": "system", "content": row["system_prompt"]},
        {"role": "user", "content": g1.user},
    ]


def test_reference_categories_use_the_math_prompts(official) -> None:
    questions, _, _, _ = official
    kinds = {q.category: pair_prompt_name(q, 1) for q in questions.values()}
    assert {c for c, k in kinds.items() if k == "pair-math-v1"} == {"math", "reasoning", "coding"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[[A]]", "A"),
        ("Final verdict: [[B]]", "B"),
        ("[[C]]", TIE),
        ("It is [[B]]. No wait, [[A]].", "A"),  # FastChat tests [[A]] first, wherever it is
        ("[[B]] or [[C]]", "B"),
        ("[A]", None),  # FastChat's pair rule has no single-bracket fallback
        ("Assistant A is better.", None),
        ("[[a]]", None),
        ("", None),
    ],
)
def test_verdict_rule_is_fastchats(text: str, expected: str | None) -> None:
    verdict, reason = read_verdict(text)
    assert verdict == expected
    assert (reason is None) == (expected is not None)


@pytest.mark.parametrize(
    ("g1", "g2", "winner", "consistent"),
    [
        (MODEL_A, MODEL_A, MODEL_A, True),
        (MODEL_B, MODEL_B, MODEL_B, True),
        (TIE, TIE, TIE, True),
        (MODEL_A, MODEL_B, TIE, False),  # the orders disagree: a tie, as FastChat counts it
        (MODEL_A, TIE, TIE, False),
        (TIE, MODEL_B, TIE, False),
        (None, MODEL_A, None, None),
        (MODEL_A, None, None, None),
    ],
)
def test_combine(g1, g2, winner, consistent) -> None:
    assert combine(g1, g2) == (winner, consistent)


def _judge(official, reply: Callable[[str, JudgeRequest], str], question_ids=(81, 111)):
    questions, references, prompts, _ = official
    matches = [_match(questions[q]) for q in question_ids]
    client = ScriptedJudge(reply)
    outcome = PairwiseMode(prompts, references).judge_pairs(matches, client)
    return outcome, client


def test_judge_preferring_position_a_in_both_orders_gives_ties(official) -> None:
    outcome, client = _judge(official, lambda first, request: "Assistant A is better. [[A]]")
    assert len(client.requests) == 2 * 2 * 2  # 2 questions x 2 turns x 2 orders
    assert not outcome.errors and len(outcome.results) == 4
    for result in outcome.results:
        assert (result.g1.verdict, result.g2.verdict) == (MODEL_A, MODEL_B)
        assert result.winner == TIE and result.consistent is False and result.longer_answer_won is None
    [overall] = [row for row in win_rates(outcome.results, "good") if row.group == "overall"]
    assert (overall.wins, overall.ties, overall.losses, overall.unparsable) == (0, 4, 0, 0)
    assert overall.consistency_rate == 0.0 and overall.win_rate == 0.0 and overall.adjusted_win_rate == 0.5


def test_consistent_preference_is_a_win(official) -> None:
    outcome, _ = _judge(official, lambda first, request: "[[A]]" if first == "good" else "[[B]]")
    assert len(outcome.results) == 4
    for result in outcome.results:
        assert result.winner == MODEL_A and result.winner_model == "good" and result.consistent is True
        # the poor answers are longer here, so the shorter answer won
        assert result.length_b > result.length_a and result.longer_answer_won is False
    rows = {row.group: row for row in win_rates(outcome.results, "good")}
    assert list(rows) == ["writing", "math", "overall"]
    assert (rows["overall"].wins, rows["overall"].losses, rows["overall"].win_rate) == (4, 0, 1.0)
    assert rows["overall"].consistency_rate == 1.0 and rows["overall"].longer_answer_won_rate == 0.0
    poor = {row.group: row for row in win_rates(outcome.results, "poor")}
    assert (poor["overall"].wins, poor["overall"].losses, poor["overall"].win_rate) == (0, 4, 0.0)


def test_unparsable_order_is_reported_and_excluded(official) -> None:
    def reply(first: str, request: JudgeRequest) -> str:
        if request.question_id == 111 and request.turn == 2 and first == "poor":
            return "Both are fine, I cannot choose."
        return "[[A]]" if first == "good" else "[[B]]"

    outcome, _ = _judge(official, reply)
    unparsable = [r for r in outcome.results if r.unparsable]
    assert len(unparsable) == 1
    [bad] = unparsable
    assert (bad.question_id, bad.turn, bad.winner, bad.consistent) == (111, 2, None, None)
    assert bad.g1.verdict == MODEL_A and bad.g2.verdict is None
    assert bad.g2.unparsable_reason == "the judge's text has none of [[A]], [[B]], [[C]]"
    rows = {row.group: row for row in win_rates(outcome.results, "good")}
    assert (rows["overall"].wins, rows["overall"].ties, rows["overall"].unparsable) == (3, 0, 1)
    assert (rows["math"].wins, rows["math"].unparsable) == (1, 1)
    assert len(battles_from_results(outcome.results)) == 3


def test_missing_judgment_fails_the_match(official) -> None:
    questions, references, prompts, _ = official

    class Offline(ScriptedJudge):
        def complete(self, requests):
            replies = super().complete(requests)
            replies[-1] = JudgeReply(None, CallInfo(), missing="--mtbench-offline: judgment not in the cache")
            return replies

    outcome = PairwiseMode(prompts, references).judge_pairs(
        [_match(questions[81]), _match(questions[111])], Offline(lambda first, request: "[[C]]")
    )
    assert outcome.errors == {(111, "good", "poor"): "--mtbench-offline: judgment not in the cache"}
    assert {(r.question_id, r.turn) for r in outcome.results} == {(81, 1), (81, 2)}


def test_make_matches_baseline_and_all_pairs(official) -> None:
    questions, _, _, _ = official
    subset = [questions[81], questions[82]]
    answers = {m: {81: (f"{m}1", f"{m}2"), 82: (f"{m}1", f"{m}2")} for m in ("x", "y", "base")}
    del answers["y"][82]  # a question y could not answer is left out of y's matches
    against = make_matches(subset, answers, baseline="base")
    assert [(m.question.question_id, m.model_a, m.model_b) for m in against] == [
        (81, "x", "base"),
        (81, "y", "base"),
        (82, "x", "base"),
    ]
    assert against[0].answers_a == ("x1", "x2") and against[0].answers_b == ("base1", "base2")
    every = make_matches(subset, answers)
    assert [(m.question.question_id, m.model_a, m.model_b) for m in every] == [
        (81, "x", "y"),
        (81, "x", "base"),
        (81, "y", "base"),
        (82, "x", "base"),
    ]
    with pytest.raises(ValueError, match="baseline model 'gpt-3.5'"):
        make_matches(subset, answers, baseline="gpt-3.5")


def test_result_round_trips_as_plain_json(official) -> None:
    outcome, _ = _judge(official, lambda first, request: "[[A]]" if first == "poor" else "[[C]]")
    for result in outcome.results:
        data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
        assert PairResult.from_dict(data) == result
    assert {r.winner for r in outcome.results} == {TIE}  # poor in one order, tie in the other


def test_swapped_cache_entries_serve_the_reverse_pairing(official) -> None:
    """(x vs base) and (base vs x) send the same two prompts, so a cache shares them."""
    questions, references, prompts, _ = official
    q = questions[81]
    forward = PairwiseMode(prompts, references).requests([_match(q, "good", "poor")])
    question = q
    reverse_match = PairMatch(question, "poor", _match(q).answers_b, "good", _match(q).answers_a)
    reverse = PairwiseMode(prompts, references).requests([reverse_match])
    for (_, _, f1, f2), (_, _, r1, r2) in zip(forward, reverse):
        assert (f1.user, f2.user) == (r2.user, r1.user)


def test_runs_through_the_runners_judge_client_and_cache(official, tmp_path: Path) -> None:
    """The runner's CachedJudge serves this mode as it serves single grading: cached on the second run."""
    from pytest_mtbench.backends import BackendOptions
    from pytest_mtbench.cache import ResultCache
    from pytest_mtbench.runner import CachedJudge, Completer, LazyBackend, PhaseStats, RunSettings

    questions, references, prompts, _ = official
    matches = [_match(questions[81]), _match(questions[111])]
    mode = PairwiseMode(prompts, references)
    stats = []
    for _ in range(2):
        phase = PhaseStats()
        client = CachedJudge(
            LazyBackend("fake/judge-7", BackendOptions()),
            Completer(ResultCache(tmp_path / "cache")),
            RunSettings(),
            phase,
        )
        outcome = mode.judge_pairs(matches, client)
        stats.append((phase.calls, phase.cached))
        # a judge that writes ratings, not verdicts: every pair is unparsable, none is a tie
        assert len(outcome.results) == 4 and all(r.unparsable for r in outcome.results)
        assert {r.group: r.unparsable for r in win_rates(outcome.results, "good")}["overall"] == 4
    assert stats == [(8, 0), (0, 8)]
