"""A run's results as typed records with one versioned JSON layout (no pytest here).

Per turn (`TurnRecord`: the answer and its judgments), per question (`QuestionRecord`), per run
(`RunReport`: run info, category summaries, gates, questions, and the baseline comparison when there is
one). The same layout is what crosses the xdist boundary (`QuestionRecord.to_dict()`, plain builtins),
what every report writer reads, and what `--mtbench-baseline` reads back (`RunReport.from_json`).

Each record has `to_dict()` and `from_dict()`; `RunReport.to_json()` / `from_json()` round-trip exactly.
A change of layout bumps `SCHEMA_VERSION`; reading a report of an unknown version is an error.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import MTBenchError

SCHEMA_VERSION = 1
REPORT_KIND = "pytest-mtbench report"

Score = float | int  # the official rule keeps "7" an int and "7.5" a float, as FastChat does

# How a turn's score was obtained.
SCORED_BY_OFFICIAL = "official"
SCORED_BY_CONSTRAINED = "constrained"


class ReportError(MTBenchError, ValueError):
    """A file that cannot be read as a report; the message names the file and what is wrong."""


class _FlatRecord:
    """A record whose fields are all plain values: read back field by field."""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Any:
        return cls(**_known(cls, data))


@dataclass
class CallInfo(_FlatRecord):
    """What one model or judge call cost and what the endpoint said about it."""

    cached: bool = False  # served from the cache (or the baseline report): no call was made in this run
    from_baseline: bool = False  # a judgment reused from the baseline report (the answer did not change)
    imported: bool = False  # a judgment reused from --mtbench-import-judgments (same prompt, same judge)
    tokens: int = 0  # generated (completion) tokens
    prompt_tokens: int | None = None
    seconds: float = 0.0  # this call's share of the backend's wall time
    finish_reason: str | None = None  # "stop", "length", "context_overflow", ... (None: not reported)
    truncated: bool = False  # cut off at the token limit: the text is incomplete
    served_model: str | None = None  # the `model` the endpoint says answered
    system_fingerprint: str | None = None
    reasoning_tokens: int | None = None  # of `tokens`, those spent thinking (None: no reasoning, or untold)
    # Epoch seconds from the start of the call's batch to its result (None: cached, or an older report):
    # a phase's wall time is the union of these, however many calls ran at once.
    started: float | None = None
    finished: float | None = None


@dataclass
class PromptSent(_FlatRecord):
    """A judge prompt exactly as sent."""

    name: str
    system: str
    user: str


@dataclass
class Judgment:
    """One judge call on one turn; `score` is None when unscored (never -1 or 0)."""

    prompt: PromptSent
    text: str
    score: Score | None
    scored_by: str | None  # SCORED_BY_OFFICIAL, SCORED_BY_CONSTRAINED, or None when unscored
    call: CallInfo
    repeat: int = 0  # 0..K-1 with --mtbench-judge-repeats=K
    unscored_reason: str | None = None
    rating_probabilities: dict[str, float] | None = None  # constrained scoring only
    expected_rating: float | None = None  # constrained scoring only
    reasoning: str | None = None  # a thinking judge's reasoning; the rating is read from `text` only

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Judgment:
        values = _known(cls, data)
        values["prompt"] = PromptSent.from_dict(data["prompt"])
        values["call"] = CallInfo.from_dict(data["call"])
        return cls(**values)


@dataclass
class TurnRecord:
    """One turn of one question: the candidate's answer and the judge's verdicts on it."""

    turn: int
    question: str
    answer: str
    temperature: float
    answer_call: CallInfo
    judgments: list[Judgment] = field(default_factory=list)
    # A thinking model's reasoning before `answer` (never judged, never in the next turn's history).
    reasoning: str | None = None

    @property
    def scores(self) -> list[Score]:
        return [j.score for j in self.judgments if j.score is not None]

    @property
    def score(self) -> float | Score | None:
        """The turn's score: the judgment's, or the mean over repeats; None when none is scored."""
        scores = self.scores
        if not scores:
            return None
        return scores[0] if len(scores) == 1 else sum(scores) / len(scores)

    @property
    def scored_by(self) -> str | None:
        kinds = {j.scored_by for j in self.judgments if j.scored_by}
        return kinds.pop() if len(kinds) == 1 else ("mixed" if kinds else None)

    def to_dict(self) -> dict[str, Any]:
        # score and scored_by are derived, but written so readers of the JSON need not derive them.
        return {**asdict(self), "score": self.score, "scored_by": self.scored_by}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TurnRecord:
        values = _known(cls, data)
        values["answer_call"] = CallInfo.from_dict(data["answer_call"])
        values["judgments"] = [Judgment.from_dict(j) for j in data.get("judgments", [])]
        return cls(**values)


@dataclass
class QuestionRecord:
    """One question's result for one model; `error` says why it has no (complete) result."""

    question_id: int
    category: str
    model: str
    turns: list[TurnRecord] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "question_id": self.question_id,
            "category": self.category,
            "model": self.model,
            "turns": [t.to_dict() for t in self.turns],
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QuestionRecord:
        values = _known(cls, data)
        values["turns"] = [TurnRecord.from_dict(t) for t in data.get("turns", [])]
        return cls(**values)


@dataclass
class CategorySummary(_FlatRecord):
    """Scores of one category (or of the whole run, `overall`); None where nothing was scored."""

    name: str
    n_questions: int
    n_scored: int
    n_unscored: int
    turn_1: float | None
    turn_2: float | None
    score: float | None  # mean of all scored turns, FastChat's show_result rule
    n_truncated: int = 0  # answers or judgments cut off at their token limit
    n_unfinished_reasoning: int = 0  # answers whose thinking never ended (not judged)
    threshold: float | None = None
    ci_low: float | None = None  # question-clustered bootstrap interval of `score`
    ci_high: float | None = None

    def notes(self) -> list[str]:
        """What is wrong with the row's turns, for every table: "2 unscored, 1 truncated"."""
        counts = (
            (self.n_unscored, "unscored"),
            (self.n_truncated, "truncated"),
            (self.n_unfinished_reasoning, "unfinished reasoning"),
        )
        return [f"{n} {what}" for n, what in counts if n]


@dataclass
class GateResult(_FlatRecord):
    """One whole-run verdict that can fail the build: a threshold, or a baseline regression."""

    name: str  # a category or "overall"
    kind: str  # "threshold" or "regression"
    passed: bool
    message: str
    threshold: float | None = None
    score: float | None = None


@dataclass
class RunInfo(_FlatRecord):
    """What ran: models, judge, data, sampling and call parameters, timing and throughput."""

    plugin_version: str
    model: str
    judge: str
    judge_scoring: str
    model_base_url: str | None = None
    judge_base_url: str | None = None
    judge_served: list[str] = field(default_factory=list)  # served model names seen in judge calls
    judge_repeats: int = 1
    data: dict[str, Any] = field(default_factory=dict)  # source, sha256 of every file, references
    sampling: dict[str, Any] = field(default_factory=dict)
    judge_call: dict[str, Any] = field(default_factory=dict)
    started: str | None = None
    finished: str | None = None
    wall_seconds: float | None = None
    workers: int = 0
    phases: dict[str, dict[str, Any]] = field(default_factory=dict)
    # A thinking model's answers (stats.answer_lengths): mean tokens a turn with and without reasoning.
    answer_tokens: dict[str, Any] | None = None
    # What the endpoints said they serve, read at preflight ("model", "judge": served_model,
    # system_fingerprint, root, max_model_len), and the candidate's --mtbench-model-revision.
    served: dict[str, Any] = field(default_factory=dict)
    # vllm/ models: the vLLM servers the plugin started (spec, served_model, vllm_version, server_args,
    # identity_args, layout, logs).
    vllm: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class RunReport:
    """A whole run; `to_json`/`from_json` round-trip exactly."""

    run: RunInfo
    categories: dict[str, CategorySummary]
    overall_detail: CategorySummary
    gates: list[GateResult] = field(default_factory=list)
    questions: list[QuestionRecord] = field(default_factory=list)
    baseline: dict[str, Any] | None = None  # the comparison with --mtbench-baseline, when given
    judge_noise: dict[str, Any] | None = None  # the judge's own spread, with --mtbench-judge-repeats
    models: dict[str, Any] | None = None  # several --mtbench-model: every model's summaries, by spec
    pairwise: dict[str, Any] | None = None  # --mtbench-mode=pairwise: pair results, win rates, ratings
    fastchat: dict[str, Any] | None = None  # --mtbench-export / --mtbench-import-judgments: what was done
    calibration: dict[str, Any] | None = None  # scores on the GPT-4-0613 scale, with --mtbench-calibration
    schema_version: int = SCHEMA_VERSION

    @property
    def overall(self) -> float | None:
        return self.overall_detail.score

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": REPORT_KIND,
            "schema_version": self.schema_version,
            "run": asdict(self.run),
            "overall": self.overall,
            "overall_detail": asdict(self.overall_detail),
            "categories": {name: asdict(row) for name, row in self.categories.items()},
            "gates": [asdict(g) for g in self.gates],
            "baseline": self.baseline,
            "judge_noise": self.judge_noise,
            "models": self.models,
            "pairwise": self.pairwise,
            "fastchat": self.fastchat,
            "calibration": self.calibration,
            "questions": [q.to_dict() for q in self.questions],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunReport:
        return cls(
            run=RunInfo.from_dict(data["run"]),
            categories={n: CategorySummary.from_dict(c) for n, c in data["categories"].items()},
            overall_detail=CategorySummary.from_dict(data["overall_detail"]),
            gates=[GateResult.from_dict(g) for g in data.get("gates", [])],
            questions=[QuestionRecord.from_dict(q) for q in data.get("questions", [])],
            baseline=data.get("baseline"),
            judge_noise=data.get("judge_noise"),
            models=data.get("models"),
            pairwise=data.get("pairwise"),
            fastchat=data.get("fastchat"),
            calibration=data.get("calibration"),
            schema_version=int(data["schema_version"]),
        )

    @classmethod
    def from_json(cls, text: str, source: str = "report") -> RunReport:
        """Parse a report; a file that is not one, is damaged or is of an unknown version: ReportError."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ReportError(
                f"{source}: not valid JSON ({exc.msg}, line {exc.lineno}); is it damaged?"
            ) from None
        if not isinstance(data, dict) or data.get("kind") != REPORT_KIND:
            raise ReportError(
                f"{source}: not a pytest-mtbench report (write one with --mtbench-report=PATH.json)"
            )
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ReportError(
                f"{source}: report schema version {version!r} is not the one this pytest-mtbench reads "
                f"({SCHEMA_VERSION}); use the pytest-mtbench version that wrote it"
            )
        try:
            return cls.from_dict(data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ReportError(f"{source}: damaged report ({type(exc).__name__}: {exc})") from None

    @classmethod
    def read(cls, path: str | Path) -> RunReport:
        """Read a report file written by `--mtbench-report=PATH.json`."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ReportError(f"{path}: cannot read the report ({reason})") from None
        return cls.from_json(text, str(path))


def _known(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of `cls` present in `data` (unknown keys are an error: the layout is versioned)."""
    if not isinstance(data, Mapping):
        raise TypeError(f"{cls.__name__} is not an object")
    names = set(cls.__dataclass_fields__)  # type: ignore[attr-defined]
    derived = {"score", "scored_by"} if cls is TurnRecord else set()
    unknown = set(data) - names - derived
    if unknown:
        raise ValueError(f"{cls.__name__} has unknown fields {sorted(unknown)}")
    return {k: v for k, v in data.items() if k in names}


def finite_or_none(value: float | None) -> float | None:
    """JSON has no NaN or infinity: such a value is written as null."""
    return None if value is None or not math.isfinite(value) else value
