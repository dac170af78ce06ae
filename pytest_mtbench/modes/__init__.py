"""Judging modes behind one small protocol, one module per mode (single.py, pairwise.py, calibration.py).

A mode receives every model's answers to a group of questions and the judge client, and returns what
it made of them (`GroupJudging`: judgments per model and turn, pair results); at the end of the run it
sums its results up and says which gates pass (`summarize`). It never touches a backend or the cache:
it asks a `JudgeClient`, which the runner provides and which serves each request from the cache or the
judge (the same path answers go through). A new mode is one module with `create(**options)` and one
line in MODES; `--mtbench-mode` accepts every name there. (The calibration mode's models are FastChat's
published answer files: `--mtbench-calibrate=DIR` runs it, and `--mtbench-mode=calibration` with a
candidate is refused with that hint.)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..judge import JudgeRequest
from ..questions import Question
from ..records import CallInfo, GateResult, Judgment

# Whether a judge reply (request, text) will have its rating probed next.
ProbeIf = Callable[[JudgeRequest, str], bool]


@dataclass
class JudgeReply:
    """The judge's reply to one request, or why there is none (`missing`, e.g. an offline cache miss)."""

    text: str | None  # the judge's final text (a thinking judge's reasoning is split off)
    call: CallInfo
    missing: str | None = None
    reasoning: str | None = None


class JudgeClient(Protocol):
    """What a mode may ask of the judge (the runner implements it over the cache and the backend)."""

    def complete(self, requests: Sequence[JudgeRequest], probe_if: ProbeIf | None = None) -> list[JudgeReply]:
        """The judge's reply to each request, in order. `probe_if(request, text)`: whether
        rating_probabilities will be asked next for that reply (a local judge then works it out while
        it generates, and only for those)."""
        ...

    def rating_probabilities(
        self, requests: Sequence[JudgeRequest], judgments: Sequence[str]
    ) -> list[dict[int, float] | None]:
        """The judge's probabilities over ratings 1..10 after its own judgment (None: not available
        offline). Only for judges whose backend has the `rating_probes` capability."""
        ...


@dataclass(frozen=True)
class AnsweredQuestion:
    """A question with the candidate's answer to each of its turns."""

    question: Question
    answers: tuple[str, ...]


@dataclass
class JudgingOutcome:
    """Judgments per (question_id, turn), and the questions that could not be judged, with why."""

    judgments: dict[tuple[int, int], list[Judgment]] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)


@dataclass
class GroupJudging:
    """What a mode made of one group's answers: judgments by (model spec, question id, turn), the
    questions a model's answers could not be judged for, by (model spec, question id), and, for a mode
    that compares models, pair results and the pairs that could not be judged ((question id, why))."""

    judgments: dict[tuple[str, int, int], list[Judgment]] = field(default_factory=dict)
    errors: dict[tuple[str, int], str] = field(default_factory=dict)
    pairs: list[Any] = field(default_factory=list)
    pair_errors: list[tuple[int, str]] = field(default_factory=list)


@dataclass(frozen=True)
class RunContext:
    """What a mode's summary reads of the run's settings."""

    models: tuple[str, ...]
    baseline_model: str | None
    thresholds: Mapping[str, float]
    confidence: float


@dataclass
class ModeSummary:
    """A mode's summary of the whole run: its report section (pairwise: the pair summary; calibration:
    the calibration file's content) and gates."""

    pairwise: Any = None  # records.PairwiseSummary
    gates: list[GateResult] = field(default_factory=list)
    calibration: Any = None  # calibration.Calibration


class JudgingMode(Protocol):
    """One way of judging: single-answer grading, pairwise comparison, ..."""

    name: str

    def judge_models(
        self, answered: Mapping[str, Sequence[AnsweredQuestion]], client: JudgeClient
    ) -> GroupJudging:
        """Judge every model's answered questions of one group (models in the order given)."""
        ...

    def summarize(self, pairs: Sequence[Any], context: RunContext) -> ModeSummary:
        """The run's summary and gates from every pair result (empty for a mode without pairs)."""
        ...


# mode name -> module defining `create(**options) -> JudgingMode` (imported when used)
MODES: dict[str, str] = {
    "single": "pytest_mtbench.modes.single",
    "pairwise": "pytest_mtbench.modes.pairwise",
    "calibration": "pytest_mtbench.modes.calibration",  # --mtbench-calibrate=DIR runs it
}


def load_mode(name: str, **options: Any) -> JudgingMode:
    """Build the judging mode `name` with its options (each mode takes those it needs and ignores the
    rest: prompts, references, scoring, repeats)."""
    if name not in MODES:
        raise ValueError(f"unknown judging mode {name!r}; known: {', '.join(MODES)}")
    return importlib.import_module(MODES[name]).create(**options)
