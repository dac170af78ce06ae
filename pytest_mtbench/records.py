"""A run's results as typed records with one versioned JSON layout (no pytest here).

Per turn (`TurnRecord`: the answer and its judgments), per question (`QuestionRecord`), per run
(`RunReport`: run info, category summaries, gates, questions, and one typed section per feature that was
used: the baseline comparison, the judge's noise, every model's scores, pairwise results, the FastChat
files, calibrated scores). The same layout is what crosses the xdist boundary (`QuestionRecord.to_dict()`,
plain builtins), what every report writer reads (by attribute), and what `--mtbench-baseline` reads back
(`RunReport.from_json`).

Each record has `to_dict()` and `from_dict()`; `RunReport.to_json()` / `from_json()` round-trip exactly:
a key that only some runs write (a record's `OPTIONAL` fields) is left out when it is None, as it was
when the report was written. A change of layout bumps `SCHEMA_VERSION`; reading a report of an unknown
version is an error.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from .comparison import JudgeNoise
from .errors import MTBenchError
from .ratings import ModelRating, Ratings, WinRate

if TYPE_CHECKING:
    from .modes.pairwise import PairResult

SCHEMA_VERSION = 1
REPORT_KIND = "pytest-mtbench report"

Score = float | int  # the official rule keeps "7" an int and "7.5" a float, as FastChat does

# How a turn's score was obtained.
SCORED_BY_OFFICIAL = "official"
SCORED_BY_CONSTRAINED = "constrained"


class ReportError(MTBenchError, ValueError):
    """A file that cannot be read as a report; the message names the file and what is wrong."""


class _FlatRecord:
    """A record written as one JSON object, its fields in order, and read back field by field (a record
    holding other records reads them in its own `from_dict`). Fields named in OPTIONAL are keys that only
    some runs write: left out when None, so a report read back is written as it was."""

    OPTIONAL: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Any:
        return cls(**_known(cls, data))

    def to_dict(self) -> dict[str, Any]:
        values = ((f.name, getattr(self, f.name)) for f in fields(self))  # type: ignore[arg-type]
        return {
            name: _plain(value) for name, value in values if value is not None or name not in self.OPTIONAL
        }


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


# ---- what ran ---------------------------------------------------------------------------------------------
@dataclass
class DataInfo(_FlatRecord):
    """The question, reference and judge prompt files a run read, and their hashes."""

    OPTIONAL = frozenset(
        {
            "source",
            "root",
            "questions",
            "judge_prompts",
            "references",
            "sha256",
            "questions_file",
            "inputs_sha256",
        }
    )  # a run always writes them all; a report made by hand may hold none ({})

    source: str | None = None
    root: str | None = None
    questions: str | None = None
    judge_prompts: str | None = None
    references: str | None = None  # the reference answer set's name (or file)
    sha256: dict[str, str] | None = None  # of every official file, by its name
    questions_file: str | None = None
    # What the scores depend on, by content: "questions", "references", "judge_prompts" (None: none given).
    inputs_sha256: dict[str, str | None] | None = None


@dataclass
class Sampling(_FlatRecord):
    """How the candidates' answers were sampled."""

    OPTIONAL = frozenset({"temperature_by_category", "default_temperature", "max_new_tokens", "seed"})

    temperature_by_category: dict[str, float] | None = None
    default_temperature: float | None = None
    max_new_tokens: int | None = None
    seed: int | None = None


@dataclass
class JudgeCall(_FlatRecord):
    """The judge call's parameters: the official call's (temperature, max_tokens, a thinking budget) or a
    reasoning model's (style "reasoning", max_completion_tokens, reasoning_effort); unset ones unwritten."""

    OPTIONAL = frozenset(
        {"style", "temperature", "max_tokens", "max_completion_tokens", "reasoning_effort", "thinking_budget"}
    )

    style: str | None = None  # "reasoning"; None: the official call
    temperature: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    reasoning_effort: str | None = None
    thinking_budget: int | None = None

    @property
    def call_style(self) -> str:
        return self.style or "official"


@dataclass
class PhaseTotals(_FlatRecord):
    """One phase (generation or judging): calls made, cache hits, generated tokens and time."""

    OPTIONAL = frozenset({"reasoning_tokens", "wall_seconds"})

    calls: int = 0
    cached: int = 0
    tokens: int = 0
    seconds: float = 0.0  # each call's share of its batch's wall time, summed
    reasoning_tokens: int | None = None  # of `tokens`, those spent thinking (runs of thinking models only)
    wall_seconds: float | None = None  # time with a call under way (None: no call was timed)
    tokens_per_second: float | None = None  # over wall_seconds (else seconds); None when no time passed

    @property
    def elapsed(self) -> float:
        """The phase's time as the tables show it: its wall time when known, else its summed seconds."""
        return self.wall_seconds if self.wall_seconds is not None else self.seconds


@dataclass
class AnswerTokens(_FlatRecord):
    """A thinking model's answers: mean generated tokens a turn with and without the reasoning."""

    turns: int
    mean_tokens: float
    mean_answer_tokens: float
    reasoning_share: float


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
    data: DataInfo = field(default_factory=DataInfo)
    sampling: Sampling = field(default_factory=Sampling)
    judge_call: JudgeCall = field(default_factory=JudgeCall)
    started: str | None = None
    finished: str | None = None
    wall_seconds: float | None = None
    workers: int = 0
    phases: dict[str, PhaseTotals] = field(default_factory=dict)  # "generation", "judging"
    # A thinking model's answers (stats.answer_lengths): mean tokens a turn with and without reasoning.
    answer_tokens: AnswerTokens | None = None
    # What the endpoints said they serve, read at preflight ("model", "judge": served_model,
    # system_fingerprint, root, max_model_len), and the candidate's --mtbench-model-revision.
    served: dict[str, Any] = field(default_factory=dict)
    # vllm/ models: the vLLM servers the plugin started (spec, served_model, vllm_version, server_args,
    # identity_args, layout, logs).
    vllm: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunInfo:
        values = _known(cls, data)
        values["data"] = DataInfo.from_dict(data.get("data", {}))
        values["sampling"] = Sampling.from_dict(data.get("sampling", {}))
        values["judge_call"] = JudgeCall.from_dict(data.get("judge_call", {}))
        values["phases"] = {name: PhaseTotals.from_dict(p) for name, p in data.get("phases", {}).items()}
        tokens = data.get("answer_tokens")
        values["answer_tokens"] = AnswerTokens.from_dict(tokens) if tokens is not None else None
        return cls(**values)


# ---- the baseline comparison (--mtbench-baseline, `pytest-mtbench compare`) --------------------------------
@dataclass
class BaselineComparison(_FlatRecord):
    """One group (a category or overall) against the baseline's (comparison.Comparison, with an unbounded
    interval end written as None); `reason` says why a verdict was overridden (the judge changed)."""

    OPTIONAL = frozenset({"reason"})

    name: str
    n_questions: int
    baseline_score: float | None
    new_score: float | None
    difference: float | None
    low: float | None
    high: float | None
    interval_confidence: float
    p_value: float
    adjusted_p_value: float
    margin: float
    verdict: str
    reason: str | None = None


@dataclass
class JudgeDrift(_FlatRecord):
    """A sample of the baseline's turns re-judged live (--mtbench-judge-drift): did the judge change?
    With no re-judged turn scored, only n (0), changed (False) and reason are written."""

    OPTIONAL = frozenset(
        {
            "unscored",
            "mean_difference",
            "mean_absolute_difference",
            "threshold",
            "judge_sd",
            "judge_sd_source",
        }
        | {"reason"}
    )

    n: int
    unscored: int | None = None
    mean_difference: float | None = None
    mean_absolute_difference: float | None = None
    threshold: float | None = None  # the largest mean change the judge's own noise allows
    judge_sd: float | None = None
    judge_sd_source: str | None = None  # "repeats" (measured) or "default"
    changed: bool = False
    reason: str | None = None


@dataclass
class BaselineSummary(_FlatRecord):
    """The comparison with a baseline report: how it was made, and one row per group."""

    OPTIONAL = frozenset({"judge_drift"})

    path: str
    margin: float
    margins: dict[str, float]
    confidence: float
    strict: bool
    mismatches: list[str]  # why the runs are not comparable (compared anyway with allowed_mismatch)
    allowed_mismatch: bool
    reused_judgments: int  # judgments of unchanged answers taken from the baseline
    comparisons: list[BaselineComparison] = field(default_factory=list)
    judge_drift: JudgeDrift | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BaselineSummary:
        values = _known(cls, data)
        values["comparisons"] = [BaselineComparison.from_dict(c) for c in data.get("comparisons", [])]
        drift = data.get("judge_drift")
        values["judge_drift"] = JudgeDrift.from_dict(drift) if drift is not None else None
        return cls(**values)


# ---- several models, pairwise judging, FastChat files, calibration ----------------------------------------
@dataclass
class ModelSummary(_FlatRecord):
    """One model's scores per category and overall (several --mtbench-model: a column each)."""

    categories: dict[str, CategorySummary]
    overall: CategorySummary

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSummary:
        _known(cls, data)
        return cls(
            categories={n: CategorySummary.from_dict(c) for n, c in data["categories"].items()},
            overall=CategorySummary.from_dict(data["overall"]),
        )


@dataclass
class PairwiseSummary(_FlatRecord):
    """--mtbench-mode=pairwise: each model's win rates (against the baseline model, or all others), the
    Bradley-Terry ratings (three or more models) and every pair result."""

    baseline_model: str | None
    models: list[str]
    n_pairs: int
    n_unparsable: int
    win_rates: dict[str, list[WinRate]]  # by model spec: one row per category, then overall
    ratings: Ratings | None
    results: list[PairResult]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PairwiseSummary:
        from .modes.pairwise import PairResult

        values = _known(cls, data)
        values["win_rates"] = {
            spec: [WinRate(**_known(WinRate, row)) for row in rows]
            for spec, rows in data["win_rates"].items()
        }
        ratings = data.get("ratings")
        values["ratings"] = _ratings_from_dict(ratings) if ratings is not None else None
        values["results"] = [PairResult.from_dict(r) for r in data.get("results", [])]
        return cls(**values)


@dataclass
class FastChatImport(_FlatRecord):
    """--mtbench-import-judgments: how the files' judgments matched this run's (fastchat.ImportCheck)."""

    files: list[str]
    rows: int
    reusable: int
    differing: int
    not_in_run: int
    other_judge: int
    api_errors: int
    differing_examples: list[str]
    reused: int  # judgments this run took from the files


@dataclass
class FastChatExport(_FlatRecord):
    """--mtbench-export: the FastChat files written (single rows, or pair rows in pairwise mode)."""

    OPTIONAL = frozenset({"single_rows", "unscored_as_minus_1", "pair_rows", "unparsable_as_error"})

    dir: str
    answer_files: list[str]
    judgment_file: str
    single_rows: int | None = None
    unscored_as_minus_1: int | None = None
    pair_rows: int | None = None
    unparsable_as_error: int | None = None


@dataclass
class FastChatSummary(_FlatRecord):
    """What was imported from and exported to FastChat files (written as "import" and "export")."""

    imported: FastChatImport | None = None
    exported: FastChatExport | None = None

    def to_dict(self) -> dict[str, Any]:
        written = {"import": self.imported, "export": self.exported}
        return {key: value.to_dict() for key, value in written.items() if value is not None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FastChatSummary:
        unknown = set(data) - {"import", "export"}
        if unknown:
            raise ValueError(f"{cls.__name__} has unknown fields {sorted(unknown)}")
        imported, exported = data.get("import"), data.get("export")
        return cls(
            imported=FastChatImport.from_dict(imported) if imported is not None else None,
            exported=FastChatExport.from_dict(exported) if exported is not None else None,
        )


@dataclass
class Agreement(_FlatRecord):
    """How the calibrated judge agreed with GPT-4-0613 on the published turns (difference = judge - GPT-4)."""

    n: int
    pearson: float | None
    spearman: float | None
    kendall: float | None
    mean_abs_diff: float | None
    mean_offset: float | None
    within_one: float | None
    unscored: int


@dataclass
class CalibratedScore(_FlatRecord):
    """One group's raw score and its score on GPT-4-0613's scale, with the mapping's interval."""

    n_scored: int
    raw: float | None
    calibrated: float | None
    low: float | None
    high: float | None


@dataclass
class CalibratedScores(_FlatRecord):
    """--mtbench-calibration: the run's scores on GPT-4-0613's scale (calibration.calibrated_report)."""

    path: str
    target: str
    judge: str
    judge_served: list[str]
    served_mismatch: bool  # the judge endpoint served another model than when the calibration was made
    turns: int | None  # published turns the mapping was fitted on
    agreement: Agreement | None
    mapping: dict[str, Any]  # the calibration file's mapping, as it is there (method, knots, ...)
    confidence: float
    resamples: int
    categories: dict[str, CalibratedScore]
    overall: CalibratedScore

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CalibratedScores:
        values = _known(cls, data)
        agreement = data.get("agreement")
        values["agreement"] = Agreement.from_dict(agreement) if agreement is not None else None
        values["categories"] = {n: CalibratedScore.from_dict(c) for n, c in data["categories"].items()}
        values["overall"] = CalibratedScore.from_dict(data["overall"])
        return cls(**values)


# ---- the whole run -----------------------------------------------------------------------------------------
@dataclass
class RunReport:
    """A whole run; `to_json`/`from_json` round-trip exactly."""

    run: RunInfo
    categories: dict[str, CategorySummary]
    overall_detail: CategorySummary
    gates: list[GateResult] = field(default_factory=list)
    questions: list[QuestionRecord] = field(default_factory=list)
    baseline: BaselineSummary | None = None  # the comparison with --mtbench-baseline, when given
    judge_noise: JudgeNoise | None = None  # the judge's own spread, with --mtbench-judge-repeats
    models: dict[str, ModelSummary] | None = None  # several --mtbench-model: every model's, by spec
    pairwise: PairwiseSummary | None = None  # --mtbench-mode=pairwise: pair results, win rates, ratings
    fastchat: FastChatSummary | None = None  # --mtbench-export / --mtbench-import-judgments: what was done
    calibration: CalibratedScores | None = None  # scores on the GPT-4-0613 scale, with --mtbench-calibration
    schema_version: int = SCHEMA_VERSION

    @property
    def overall(self) -> float | None:
        return self.overall_detail.score

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": REPORT_KIND,
            "schema_version": self.schema_version,
            "run": self.run.to_dict(),
            "overall": self.overall,
            "overall_detail": asdict(self.overall_detail),
            "categories": {name: asdict(row) for name, row in self.categories.items()},
            "gates": [asdict(g) for g in self.gates],
            "baseline": _plain(self.baseline),
            "judge_noise": _plain(self.judge_noise),
            "models": _plain(self.models),
            "pairwise": _plain(self.pairwise),
            "fastchat": _plain(self.fastchat),
            "calibration": _plain(self.calibration),
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
            baseline=_section(BaselineSummary.from_dict, data.get("baseline")),
            judge_noise=_section(lambda d: JudgeNoise(**_known(JudgeNoise, d)), data.get("judge_noise")),
            models=_section(
                lambda d: {spec: ModelSummary.from_dict(m) for spec, m in d.items()}, data.get("models")
            ),
            pairwise=_section(PairwiseSummary.from_dict, data.get("pairwise")),
            fastchat=_section(FastChatSummary.from_dict, data.get("fastchat")),
            calibration=_section(CalibratedScores.from_dict, data.get("calibration")),
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


def _section(read: Callable[[Any], Any], data: Any) -> Any:
    """A report section read back with `read`; None where the run had none."""
    return None if data is None else read(data)


def _ratings_from_dict(data: Mapping[str, Any]) -> Ratings:
    values = _known(Ratings, data)
    values["ratings"] = [ModelRating(**_known(ModelRating, r)) for r in data["ratings"]]
    return Ratings(**values)


def _plain(value: Any) -> Any:
    """A record as JSON's plain builtins: records by their to_dict (OPTIONAL keys left out when None), other
    dataclasses (ratings, pair results, the judge's noise) field by field."""
    if isinstance(value, _FlatRecord):
        return value.to_dict()
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def finite_or_none(value: float | None) -> float | None:
    """JSON has no NaN or infinity: such a value is written as null."""
    return None if value is None or not math.isfinite(value) else value
