"""Judging modes behind one small protocol, one module per mode (as single.py).

A mode turns answered questions into judge requests and the judge's replies into `Judgment` records.
It never touches a backend or the cache: it asks a `JudgeClient`, which the runner provides and which
serves each request from the cache or the judge (the same path answers go through).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..judge import JudgeRequest
from ..questions import Question
from ..records import CallInfo, Judgment

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


class JudgingMode(Protocol):
    """One way of judging (single-answer grading; pairwise comparison next)."""

    name: str

    def judge(self, answered: Sequence[AnsweredQuestion], client: JudgeClient) -> JudgingOutcome: ...


# mode name -> module defining `create(**options) -> JudgingMode` (imported when used)
MODES: dict[str, str] = {"single": "pytest_mtbench.modes.single", "pairwise": "pytest_mtbench.modes.pairwise"}


def load_mode(name: str, **options: Any) -> JudgingMode:
    """Build the judging mode `name` with its options."""
    if name not in MODES:
        raise ValueError(f"unknown judging mode {name!r}; known: {', '.join(MODES)}")
    return importlib.import_module(MODES[name]).create(**options)
