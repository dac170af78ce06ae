"""Pairwise comparison as published with MT-Bench: the judge picks the better of two answers.

Each (question, turn, pair of models) is judged in both orders, as FastChat's `play_a_match_pair` does:
game 1 shows model_a as Assistant A and model_b as B, game 2 swaps them. The prompt is `pair-v2`
(reference-guided `pair-math-v1` for math, reasoning and coding), with `-multi-turn` for the second turn,
rendered with exactly the variables FastChat's `run_judge_pair` passes. The verdict is read exactly as
FastChat reads it: `[[A]]` anywhere in the text, else `[[B]]`, else `[[C]]` (a tie); FastChat has no
single-bracket fallback for these prompts, so neither do we, and a text with none of them is unparsable.

The two games combine as FastChat's `show_result.py` counts them: a win only when both games name the
same model; a tie when either says tie or they disagree. A pair with an unparsable game is reported as
unparsable and left out of every count (FastChat drops its "error" rows), never counted as a tie.

This mode compares two models' answers, so instead of `judge(answered, client)` it offers
`judge_pairs(matches, client)`; `make_matches` builds the matches as FastChat's gen_judgment does
(every model against a baseline, or all pairs).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..judge import JudgeRequest, render_request
from ..prompts import JudgePrompt
from ..questions import Question
from ..records import CallInfo, GateResult, PromptSent
from . import AnsweredQuestion, GroupJudging, JudgeClient, ModeSummary, RunContext

# Verdicts in the models' terms (game 2 already un-swapped); None means unparsable.
MODEL_A = "model_a"
MODEL_B = "model_b"
TIE = "tie"


def pair_prompt_name(question: Question, turn: int) -> str:
    """`pair-v2` / `pair-math-v1` (reference-guided), with `-multi-turn` for the second turn."""
    base = "pair-math-v1" if question.needs_reference else "pair-v2"
    return base if turn == 1 else f"{base}-multi-turn"


def build_pair_request(
    question: Question,
    answers_a: Sequence[str],
    answers_b: Sequence[str],
    turn: int,
    prompt: JudgePrompt,
    reference: Sequence[str] | None,
) -> JudgeRequest:
    """Render the pair prompt for `turn` (1 or 2), `answers_a` shown as Assistant A, exactly as
    FastChat's run_judge_pair does."""
    if turn == 1:
        variables: dict[str, Any] = {
            "question": question.turns[0],
            "answer_a": answers_a[0],
            "answer_b": answers_b[0],
        }
    else:
        variables = {
            "question_1": question.turns[0],
            "question_2": question.turns[1],
            "answer_a_1": answers_a[0],
            "answer_b_1": answers_b[0],
            "answer_a_2": answers_a[1],
            "answer_b_2": answers_b[1],
        }
    return render_request(question, turn, prompt, variables, reference)


def read_verdict(judgment: str) -> tuple[str | None, str | None]:
    """FastChat's rule for `[[A]]` prompts: ("A" | "B" | "tie", None), or (None, why it is unparsable).

    The checks run in FastChat's order, so a text holding both `[[A]]` and `[[B]]` reads as A.
    """
    if "[[A]]" in judgment:
        return "A", None
    if "[[B]]" in judgment:
        return "B", None
    if "[[C]]" in judgment:
        return TIE, None
    return None, "the judge's text has none of [[A]], [[B]], [[C]]"


def combine(g1: str | None, g2: str | None) -> tuple[str | None, bool | None]:
    """(winner, consistent) from the two games' verdicts in the models' terms.

    Winner: the model both games chose; a tie when either game says tie or they disagree; None when a
    game is unparsable. Consistent: both games gave the same verdict (a tie in both counts); None when
    a game is unparsable.
    """
    if g1 is None or g2 is None:
        return None, None
    if g1 == g2:
        return g1, True
    return TIE, False


@dataclass(frozen=True)
class PairMatch:
    """One question answered by two models: model_a is shown first in game 1, model_b in game 2."""

    question: Question
    model_a: str
    answers_a: tuple[str, ...]
    model_b: str
    answers_b: tuple[str, ...]


def make_matches(
    questions: Iterable[Question],
    answers: Mapping[str, Mapping[int, Sequence[str]]],
    baseline: str | None = None,
) -> list[PairMatch]:
    """Matches as FastChat's gen_judgment makes them, in `answers`' model order.

    With `baseline`: every other model as model_a against the baseline as model_b (pairwise-baseline).
    Without: every pair (i < j) of models (pairwise-all). A question a model has no answer for is left
    out of its matches (the runner has already failed it).
    """
    models = list(answers)
    if baseline is not None and baseline not in answers:
        raise ValueError(f"baseline model {baseline!r} has no answers; models: {', '.join(models)}")
    if baseline is not None:
        pairs = [(m, baseline) for m in models if m != baseline]
    else:
        pairs = [(a, b) for i, a in enumerate(models) for b in models[i + 1 :]]
    matches = []
    for q in questions:
        for a, b in pairs:
            answer_a, answer_b = answers[a].get(q.question_id), answers[b].get(q.question_id)
            if answer_a is None or answer_b is None:
                continue
            matches.append(PairMatch(q, a, tuple(answer_a), b, tuple(answer_b)))
    return matches


@dataclass
class GameVerdict:
    """One game (one order) of a pair: the prompt sent, the judge's text, and its verdict in the models'
    terms (MODEL_A, MODEL_B, TIE, or None when unparsable)."""

    prompt: PromptSent
    text: str
    verdict: str | None
    call: CallInfo
    unparsable_reason: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GameVerdict:
        return cls(
            prompt=PromptSent.from_dict(data["prompt"]),
            text=data["text"],
            verdict=data["verdict"],
            call=CallInfo.from_dict(data["call"]),
            unparsable_reason=data.get("unparsable_reason"),
        )


@dataclass
class PairResult:
    """One (question, turn, pair of models), judged in both orders (plain builtins via to_dict)."""

    question_id: int
    category: str
    turn: int
    model_a: str
    model_b: str
    g1: GameVerdict  # model_a shown as Assistant A
    g2: GameVerdict  # model_b shown as Assistant A
    winner: str | None  # MODEL_A, MODEL_B, TIE; None: a game is unparsable, the pair is excluded
    consistent: bool | None  # both games gave the same verdict; None when unparsable
    length_a: int  # characters of the judged turn's answer
    length_b: int
    longer_answer_won: bool | None  # None: a tie, unparsable, or answers of equal length

    @property
    def unparsable(self) -> bool:
        return self.winner is None

    @property
    def winner_model(self) -> str | None:
        """The winning model's name, "tie", or None when unparsable."""
        return {MODEL_A: self.model_a, MODEL_B: self.model_b}.get(self.winner or "", self.winner)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PairResult:
        values = dict(data)
        values["g1"] = GameVerdict.from_dict(data["g1"])
        values["g2"] = GameVerdict.from_dict(data["g2"])
        return cls(**values)


@dataclass
class PairwiseOutcome:
    """Pair results (unparsable ones included, marked), and the matches that could not be judged."""

    results: list[PairResult] = field(default_factory=list)
    errors: dict[tuple[int, str, str], str] = field(default_factory=dict)  # (qid, model_a, model_b) -> why


def _game(request: JudgeRequest, text: str, call: CallInfo, swapped: bool) -> GameVerdict:
    raw, reason = read_verdict(text)
    if reason is not None and call.truncated:
        reason = f"{reason}; the judgment was cut off at its token limit"
    shown_first, shown_second = (MODEL_B, MODEL_A) if swapped else (MODEL_A, MODEL_B)
    verdict = {"A": shown_first, "B": shown_second, TIE: TIE}.get(raw or "")
    return GameVerdict(request.sent(), text, verdict, call, reason)


def pair_result(match: PairMatch, turn: int, g1: GameVerdict, g2: GameVerdict) -> PairResult:
    """Combine a match's two games for one turn into its result."""
    winner, consistent = combine(g1.verdict, g2.verdict)
    length_a, length_b = len(match.answers_a[turn - 1]), len(match.answers_b[turn - 1])
    longer_won = None
    if winner in (MODEL_A, MODEL_B) and length_a != length_b:
        longer_won = (winner == MODEL_A) == (length_a > length_b)
    return PairResult(
        question_id=match.question.question_id,
        category=match.question.category,
        turn=turn,
        model_a=match.model_a,
        model_b=match.model_b,
        g1=g1,
        g2=g2,
        winner=winner,
        consistent=consistent,
        length_a=length_a,
        length_b=length_b,
        longer_answer_won=longer_won,
    )


@dataclass(frozen=True)
class PairwiseMode:
    """Judge every turn of every match in both orders (FastChat's pairwise-baseline / pairwise-all)."""

    prompts: Mapping[str, JudgePrompt]
    references: Mapping[int, tuple[str, ...]]
    baseline_model: str | None = None  # every other model against this one; None: every pair
    name: str = "pairwise"

    def judge_models(
        self, answered: Mapping[str, Sequence[AnsweredQuestion]], client: JudgeClient
    ) -> GroupJudging:
        """Every match of the group's answered questions (against the baseline model, or all pairs),
        judged in both orders; a model's unanswered question is left out of its matches."""
        questions = {
            item.question.question_id: item.question for items in answered.values() for item in items
        }
        answers = {
            spec: {item.question.question_id: item.answers for item in items}
            for spec, items in answered.items()
        }
        outcome = self.judge_pairs(
            make_matches(questions.values(), answers, baseline=self.baseline_model), client
        )
        errors = [
            (qid, f"{model_a} vs {model_b}: {why}") for (qid, model_a, model_b), why in outcome.errors.items()
        ]
        return GroupJudging(pairs=list(outcome.results), pair_errors=errors)

    def summarize(self, pairs: Sequence[Any], context: RunContext) -> ModeSummary:
        """Pair results, each model's win rates (against the baseline model, or all others), Bradley-Terry
        ratings when three or more models were compared, and the `win_rate` gates."""
        from ..ratings import battles_from_results, bradley_terry, win_rates
        from ..records import PairwiseSummary

        baseline = context.baseline_model
        contenders = [spec for spec in context.models if spec != baseline]
        summary = PairwiseSummary(
            baseline_model=baseline,
            models=list(context.models),
            n_pairs=len(pairs),
            n_unparsable=sum(p.winner is None for p in pairs),
            win_rates={
                spec: win_rates(pairs, spec, baseline, confidence=context.confidence) for spec in contenders
            },
            ratings=None,
            results=list(pairs),
        )
        battles = battles_from_results(pairs)
        if len(context.models) >= 3 and battles:
            summary.ratings = bradley_terry(battles, confidence=context.confidence)
        return ModeSummary(pairwise=summary, gates=win_rate_gates(summary, context.thresholds.get(WIN_RATE)))

    def requests(
        self, matches: Sequence[PairMatch]
    ) -> list[tuple[PairMatch, int, JudgeRequest, JudgeRequest]]:
        """(match, turn, game 1 request, game 2 request) for every turn of every match, in a stable order."""
        out = []
        for match in matches:
            q = match.question
            reference = self.references.get(q.question_id) if q.needs_reference else None
            for turn in range(1, len(q.turns) + 1):
                prompt = self.prompts[pair_prompt_name(q, turn)]
                g1 = build_pair_request(q, match.answers_a, match.answers_b, turn, prompt, reference)
                g2 = build_pair_request(q, match.answers_b, match.answers_a, turn, prompt, reference)
                out.append((match, turn, g1, g2))
        return out

    def judge_pairs(self, matches: Sequence[PairMatch], client: JudgeClient) -> PairwiseOutcome:
        """Both games of every turn of every match, through `client` (the cache, else the judge)."""
        outcome = PairwiseOutcome()
        planned = self.requests(matches)
        flat = [request for _, _, g1, g2 in planned for request in (g1, g2)]
        replies = client.complete(flat)
        for index, (match, turn, g1_request, g2_request) in enumerate(planned):
            key = (match.question.question_id, match.model_a, match.model_b)
            games = []
            for request, reply, swapped in (
                (g1_request, replies[2 * index], False),
                (g2_request, replies[2 * index + 1], True),
            ):
                if reply.missing is not None or reply.text is None:
                    outcome.errors.setdefault(key, reply.missing or "no judgment")
                    break
                games.append(_game(request, reply.text, reply.call, swapped))
            if len(games) == 2:
                outcome.results.append(pair_result(match, turn, games[0], games[1]))
        # A match with a judgment missing in any turn has no complete result: drop its other turns too.
        outcome.results = [
            r for r in outcome.results if (r.question_id, r.model_a, r.model_b) not in outcome.errors
        ]
        return outcome


WIN_RATE = "win_rate"  # the threshold name of the win-rate gate (--mtbench-threshold=win_rate=X)


def win_rate_gates(summary: Any, threshold: float | None) -> list[GateResult]:
    """`--mtbench-threshold=win_rate=X`: each model's overall win rate against its opponents."""
    if threshold is None:
        return []
    gates = []
    against = summary.baseline_model or "the other models"
    for spec, rows in summary.win_rates.items():
        overall = next(row for row in rows if row.group == "overall")
        rate = overall.win_rate
        passed = rate is not None and rate >= threshold
        shown = f"{rate:.3f}" if rate is not None else "none (no parsable pair)"
        relation = ">=" if passed else "below"
        message = f"{spec} win rate against {against}: {shown}, {relation} {threshold:g}"
        gates.append(GateResult(spec, WIN_RATE, passed, message, threshold=threshold, score=rate))
    return gates


def create(
    *,
    prompts: Mapping[str, JudgePrompt],
    references: Mapping[int, tuple[str, ...]],
    baseline_model: str | None = None,
    **_: Any,
) -> PairwiseMode:
    return PairwiseMode(prompts, references, baseline_model)
