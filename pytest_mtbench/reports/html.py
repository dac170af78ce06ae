"""The HTML report: one self-contained file (inline CSS, SVG and script; nothing fetched at view time).

`--mtbench-report=PATH.html` writes one run; `write_many` (or `render`) puts several runs side by side,
one column and one radar polygon per model. The page holds the score table (turn 1/2, intervals,
baseline changes and verdicts, gates), the radar chart, and one row per question that expands to both
turns' questions, reference answers, answers, judge prompts as sent and judgments, each score with how
it was obtained (official, constrained, imported from the baseline, unscored, truncated). Filters by
category, score and state, and a search box, run in the page.

Everything model-written is hostile input: it reaches the Jinja template (templates/report.html.j2)
only as variables, with autoescaping on, and a Content-Security-Policy lets only the page's own script
run and nothing load from the network.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from markupsafe import Markup

from ..reasoning import UNFINISHED_REASONING
from ..records import (
    BaselineComparison,
    BaselineSummary,
    CategorySummary,
    GateResult,
    Judgment,
    QuestionRecord,
    RunReport,
    Score,
    TurnRecord,
)
from ..stats import category_order
from . import write_text_atomically
from .radar import chart_title, colour, radar_axes, radar_series, series_labels, svg
from .templating import render as render_template
from .terminal import title as run_title

# States a turn can be in, beyond its score; the filter offers them (see `_turn_states`).
STATES = ("unscored", "truncated", "imported", "constrained", "error")

# The official reference-guided prompts carry the reference answers before the candidate's answer;
# the reports keep the prompt as sent, so the reference shown is read back from it.
_REFERENCE_TURN_1 = re.compile(
    r"\[The Start of Reference Answer\]\n(.*?)\n\[The End of Reference Answer\]", re.S
)
_REFERENCE_TURN_2 = re.compile(
    r"<\|The Start of Reference Answer\|>\n\n### User:\n.*?\n\n### Reference answer:\n(.*?)"
    r"\n\n### User:\n.*?\n\n### Reference answer:\n(.*?)\n\n<\|The End of Reference Answer\|>",
    re.S,
)


def reference_from_prompt(user_prompt: str, turn: int) -> str | None:
    """The reference answer of `turn` as the official reference-guided judge prompt shows it, else None."""
    if turn == 1:
        match = _REFERENCE_TURN_1.search(user_prompt)
        return match.group(1) if match else None
    match = _REFERENCE_TURN_2.search(user_prompt)
    return match.group(2) if match else None


def shown(score: Score | None) -> str:
    """A score as the page shows it: 7, 7.5, 6.67; an en dash when there is none."""
    if score is None:
        return "–"
    if isinstance(score, int) or float(score).is_integer():
        return str(int(score))
    return f"{score:.2f}".rstrip("0").rstrip(".")


def score_class(score: Score | None) -> str:
    """The CSS class that colours a score (s1 red .. s10 green), or `unscored`."""
    if score is None:
        return "unscored"
    return f"s{min(10, max(1, round(float(score))))}"


def _two(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "–"


def _signed(value: float | None) -> str:
    return f"{value:+.2f}" if value is not None else "–"


@dataclass
class ScoreRow:
    """One line of a model's score table (a category or overall), with its baseline change if any."""

    name: str
    scored: str
    turn_1: str
    turn_2: str
    score: str
    score_css: str
    interval: str
    threshold: str
    verdict: str  # PASS / FAIL of the threshold gate, or ""
    notes: str  # "2 unscored, 1 truncated"
    overall: bool = False
    before: str = ""
    change: str = ""
    change_interval: str = ""
    baseline_verdict: str = ""


@dataclass
class JudgmentView:
    """One judge call on one turn: the prompt as sent, the text, and what score was read from it."""

    repeat: int
    text: str
    score: str
    score_css: str
    how: list[str]
    prompt_name: str
    system: str
    user: str


@dataclass
class ModelTurnView:
    """One model's answer to one turn and its judgments."""

    model: int
    answer: str
    score: Score | None
    score_text: str
    score_css: str
    how: list[str]
    judgments: list[JudgmentView]
    reasoning: str | None = None  # a thinking model's, shown collapsed
    reasoning_tokens: int | None = None


@dataclass
class TurnView:
    """One turn of a question: the question, the reference answer, and every model's answer."""

    turn: int
    question: str
    reference: str | None
    models: list[ModelTurnView]


@dataclass
class Chip:
    """A score in a question's summary row (one per model and turn)."""

    model: int
    turn: int
    score: Score | None
    text: str
    css: str
    tip: str


@dataclass
class QuestionView:
    """One question: its summary row (scores per model) and what expands below it."""

    question_id: int
    category: str
    headline: str
    chips: list[list[Chip]]  # per model, per turn
    turns: list[TurnView]
    errors: list[tuple[int, str]]  # (model, why it has no complete result)
    states: set[str] = field(default_factory=set)
    scores: list[Score] = field(default_factory=list)


@dataclass
class ModelView:
    """One model (one run): its colour, tables, gates and run details."""

    index: int
    label: str
    colour: str
    heading: str
    rows: list[ScoreRow]
    gates: list[tuple[str, str, str, str]]  # (PASS/FAIL, kind, name, message)
    baseline: BaselineSummary | None
    judge_noise: str
    facts: list[tuple[str, str]]


def _judgment_states(judgment: Judgment) -> list[str]:
    states = [judgment.scored_by] if judgment.scored_by else ["unscored"]
    if judgment.call.from_baseline:
        states.append("imported")
    if judgment.call.truncated:
        states.append("truncated")
    return states


def _turn_states(turn: TurnRecord) -> list[str]:
    """How the turn's score was obtained and what is wrong with it, as labels."""
    states = [turn.scored_by] if turn.scored_by else []
    if turn.score is None:
        states.append("unscored")
    if any(j.call.from_baseline for j in turn.judgments):
        states.append("imported")
    if turn.answer_call.finish_reason == UNFINISHED_REASONING:
        states.append("unfinished reasoning")
    elif turn.answer_call.truncated:
        states.append("answer truncated")
    if any(j.call.truncated for j in turn.judgments):
        states.append("judgment truncated")
    return states


def _filter_state(label: str) -> str:
    return "truncated" if label.endswith("truncated") else label


def _judgment_view(judgment: Judgment) -> JudgmentView:
    how = _judgment_states(judgment)
    if judgment.unscored_reason:
        how.append(judgment.unscored_reason)
    if judgment.expected_rating is not None:
        how.append(f"expected rating {judgment.expected_rating:.2f}")
    return JudgmentView(
        repeat=judgment.repeat,
        text=judgment.text,
        score=shown(judgment.score),
        score_css=score_class(judgment.score),
        how=how,
        prompt_name=judgment.prompt.name,
        system=judgment.prompt.system,
        user=judgment.prompt.user,
    )


def _question_view(
    question_id: int, per_model: list[QuestionRecord | None], labels: list[str]
) -> QuestionView:
    present = [r for r in per_model if r is not None]
    first = present[0]
    n_turns = max(len(r.turns) for r in present)
    view = QuestionView(question_id, first.category, "", [], [], [])
    turn_views: dict[int, TurnView] = {}
    for model, record in enumerate(per_model):
        chips: list[Chip] = []
        if record is None:
            view.chips.append(
                [Chip(model, t, None, "·", "missing", f"{labels[model]}: not run") for t in (1, 2)]
            )
            continue
        if record.error:
            view.errors.append((model, record.error))
            view.states.add("error")
        by_turn = {t.turn: t for t in record.turns}
        for number in range(1, n_turns + 1):
            turn = by_turn.get(number)
            if turn is None:
                chips.append(
                    Chip(model, number, None, "·", "missing", f"{labels[model]} turn {number}: no result")
                )
                continue
            states = _turn_states(turn)
            view.states.update(_filter_state(s) for s in states)
            if turn.score is not None:
                view.scores.append(turn.score)
            how = f" ({', '.join(states)})" if states else ""
            tip = f"{labels[model]}, turn {number}: {shown(turn.score)}{how}"
            chips.append(Chip(model, number, turn.score, shown(turn.score), score_class(turn.score), tip))
            if number not in turn_views:
                reference = next(
                    (
                        ref
                        for j in turn.judgments
                        if (ref := reference_from_prompt(j.prompt.user, number)) is not None
                    ),
                    None,
                )
                turn_views[number] = TurnView(number, turn.question, reference, [])
            turn_views[number].models.append(
                ModelTurnView(
                    model=model,
                    answer=turn.answer,
                    score=turn.score,
                    score_text=shown(turn.score),
                    score_css=score_class(turn.score),
                    how=states,
                    judgments=[_judgment_view(j) for j in turn.judgments],
                    reasoning=turn.reasoning,
                    reasoning_tokens=turn.answer_call.reasoning_tokens,
                )
            )
        view.chips.append(chips)
    view.turns = [turn_views[n] for n in sorted(turn_views)]
    view.headline = view.turns[0].question if view.turns else ""
    return view


def _score_row(
    row: CategorySummary, gates: dict[str, GateResult], comparison: BaselineComparison | None, overall: bool
) -> ScoreRow:
    gate = gates.get(row.name)
    notes = row.notes()
    interval = f"{_two(row.ci_low)} to {_two(row.ci_high)}" if row.ci_low is not None else "–"
    view = ScoreRow(
        name=row.name,
        scored=f"{row.n_scored}/{row.n_scored + row.n_unscored}",
        turn_1=_two(row.turn_1),
        turn_2=_two(row.turn_2),
        score=_two(row.score),
        score_css=score_class(row.score),
        interval=interval,
        threshold=f"{row.threshold:g}" if row.threshold is not None else "–",
        verdict=("PASS" if gate.passed else "FAIL") if gate else "",
        notes=", ".join(notes),
        overall=overall,
    )
    if comparison is not None:
        view.before = _two(comparison.baseline_score)
        view.change = _signed(comparison.difference)
        view.change_interval = f"{_signed(comparison.low)} to {_signed(comparison.high)}"
        view.baseline_verdict = comparison.verdict
    return view


def _model_view(index: int, label: str, report: RunReport) -> ModelView:
    threshold_gates = {g.name: g for g in report.gates if g.kind == "threshold"}
    comparisons = {c.name: c for c in report.baseline.comparisons} if report.baseline else {}
    rows = [_score_row(r, threshold_gates, comparisons.get(n), False) for n, r in report.categories.items()]
    overall = report.overall_detail
    rows.append(_score_row(overall, threshold_gates, comparisons.get(overall.name), True))
    gates = [("PASS" if g.passed else "FAIL", g.kind, g.name, g.message) for g in report.gates]
    noise = report.judge_noise
    judge_noise = ""
    if noise is not None and noise.judge_sd is not None:
        share = noise.judge_share
        judge_noise = f"{noise.repeats} judgments per turn, SD {noise.judge_sd:.2f} within a turn" + (
            f"; {share:.0%} of the overall score's variance" if share is not None else ""
        )
    run = report.run
    facts = [
        ("model", run.model + (f" at {run.model_base_url}" if run.model_base_url else "")),
        ("judge", run.judge + (f" at {run.judge_base_url}" if run.judge_base_url else "")),
        ("judge served", ", ".join(run.judge_served) or "–"),
        (
            "judge scoring",
            run.judge_scoring + (f", {run.judge_repeats} repeats" if run.judge_repeats > 1 else ""),
        ),
        ("data", _recorded(run.data.source)),
        ("references", _recorded(run.data.references)),
    ]
    facts += [(f"sha256 {name}", digest) for name, digest in sorted((run.data.sha256 or {}).items())]
    sampling = run.sampling
    if sampling.to_dict():  # anything recorded (a report made by hand may record nothing)
        facts.append(("sampling", f"max {sampling.max_new_tokens} new tokens, seed {sampling.seed}"))
    judge_call = run.judge_call.to_dict()  # the parameters the call had, in the report's words
    if judge_call:
        facts.append(("judge call", ", ".join(f"{k} {v}" for k, v in judge_call.items())))
    facts += [
        ("plugin", f"pytest-mtbench {run.plugin_version}"),
        ("started", run.started or "–"),
        ("finished", run.finished or "–"),
    ]
    if run.wall_seconds is not None:
        facts.append(
            ("wall time", f"{run.wall_seconds:.1f} s" + (f", {run.workers} workers" if run.workers else ""))
        )
    for name, phase in run.phases.items():
        rate = phase.tokens_per_second
        facts.append(
            (
                name,
                f"{phase.calls} calls, {phase.cached} cached, {phase.tokens} tokens in "
                f"{phase.seconds:.1f} s" + (f" ({rate:.1f} tokens/s)" if rate else ""),
            )
        )
    return ModelView(
        index, label, colour(index), run_title(report), rows, gates, report.baseline, judge_noise, facts
    )


def _recorded(value: object) -> str:
    """A run detail as the page shows it; an en dash when the report does not record it."""
    return "–" if value is None else str(value)


def _content_nonce(reports: Sequence[RunReport]) -> str:
    # The script's CSP nonce is a digest of the content: text inside the page cannot know it (it would
    # have to contain its own hash), and the same runs always give the same file.
    digest = hashlib.sha256()
    for report in reports:
        digest.update(report.to_json().encode("utf-8"))
    return digest.hexdigest()[:32]


def render(reports: Sequence[RunReport]) -> str:
    """The page for one run, or several side by side (one column and one radar polygon each)."""
    if not reports:
        raise ValueError("an HTML report needs at least one run")
    labels = series_labels(reports)
    models = [_model_view(i, label, report) for i, (label, report) in enumerate(zip(labels, reports))]
    by_id: dict[int, list[QuestionRecord | None]] = {}
    for index, report in enumerate(reports):
        for record in report.questions:
            by_id.setdefault(record.question_id, [None] * len(reports))[index] = record
    questions = [_question_view(qid, per_model, labels) for qid, per_model in by_id.items()]
    categories = category_order({q.category for q in questions})
    names = category_order({name for report in reports for name in report.categories})
    matrix = [
        (name, False, [next((r for r in m.rows if r.name == name and not r.overall), None) for m in models])
        for name in names
    ]
    matrix.append((reports[0].overall_detail.name, True, [m.rows[-1] for m in models]))
    radar = Markup(svg(radar_axes(reports), radar_series(reports), title=chart_title(reports)))
    if len(reports) == 1:
        page_title = run_title(reports[0])
    else:
        judges = sorted({r.run.judge for r in reports})
        page_title = f"MT-Bench: {len(reports)} models judged by {', '.join(judges)}"
    return render_template(
        "report.html.j2",
        title=page_title,
        models=models,
        matrix=matrix,
        questions=questions,
        categories=categories,
        states=STATES,
        radar=radar,
        radar_title=chart_title(reports),
        nonce=_content_nonce(reports),
        version=reports[0].run.plugin_version,
        max_turns=max((len(q.chips[0]) for q in questions if q.chips), default=2),
    )


def write(report: RunReport, path: Path) -> None:
    """Write the HTML report of one run."""
    write_text_atomically(path, render([report]))


def write_many(reports: Sequence[RunReport], path: Path) -> None:
    """Write one HTML report of several runs side by side."""
    write_text_atomically(path, render(reports))
