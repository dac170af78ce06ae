"""`replay/PATH`: a candidate whose answers are read from a FastChat `model_answer/<model>.jsonl`.

No model is loaded: the runner asks for turns as usual and gets the file's `choices[0].turns`, so the
items, the judging and the report are those of a generated run.

The answer file holds question ids, not question texts, while the runner sends conversations
(`[user q1]`, then `[user q1, assistant a1, user q2]`). So the run's assembly first calls
`prepare(path, questions)`, which reads and checks the file against the question set and indexes every
answer by the user turns that lead to it (the exact texts of the question's turns 1..i). `chat` then
finds the question by the conversation's user messages and returns turn i of its answer.

Contract with the runner. A conversation without a usable answer (the question is missing from the file,
its answer has the wrong number of turns, or the conversation matches no prepared question) gets a
`Completion` with `text=""`, `finish_reason="missing_answer"` (`FINISH_MISSING_ANSWER`) and the reason in
`extra["missing"]`; no exception is raised, so the other questions of the batch go on. The runner must
treat that finish reason as it treats `context_overflow`: do not cache the value, and fail the question
with `extra["missing"]` (never judge the empty text).

Names: FastChat names a model by its answer file, not by the `model_id` inside; so does the export
(`model_answer/<file stem>.jsonl`), and `PreparedReplay.note` says so when the inner id differs. The
report's `model` is the spec (`replay/PATH`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..fastchat import FastChatFileError, model_name_from_answer_file, read_answer_file
from ..questions import Question
from .base import (
    FINISH_MISSING_ANSWER,
    BackendError,
    BackendOptions,
    Capabilities,
    Completion,
    Message,
    ResultCallback,
    SamplingParams,
)

# Reading a file: no network, no model, independent calls (any batching gives the same replies).
CAPABILITIES = Capabilities(
    batch_scope="all", rating_probes=False, preflight=False, local=True, replayed=True
)

# The finish reason of a conversation the file has no answer for (see the module docstring).


@dataclass
class PreparedReplay:
    """An answer file checked against the run's questions, ready to serve conversations."""

    path: str
    model: str  # the file's stem: FastChat's name for the model
    sha256: str
    answers: dict[int, tuple[str, ...]]
    errors: list[str]  # problems that make the file unusable: the run must not start
    item_failures: dict[int, str]  # question id -> why it has no answer: its item fails with this
    note: str | None = None  # the inner model_id differs from the file name
    index: dict[tuple[str, ...], int] = field(default_factory=dict)  # user turns so far -> question id


# Resolved path -> prepared file, filled by `prepare` in each process that runs questions.
_PREPARED: dict[str, PreparedReplay] = {}


def _key(path: str | Path) -> str:
    return str(Path(path).expanduser().resolve())


def load_answer_file(path: str | Path, questions: Iterable[Question]) -> PreparedReplay:
    """Read and check a FastChat answer file against `questions`, and index it by question text.

    Problems are returned, one message each, never raised: `errors` (not an answer file, duplicate
    question ids, answers to questions not in the set, questions whose texts cannot be told apart) and
    `item_failures` (questions with no answer or the wrong number of turns).
    """
    questions = list(questions)
    try:
        checked = read_answer_file(path, questions)
    except FastChatFileError as exc:
        return PreparedReplay(str(path), model_name_from_answer_file(path), "", {}, [str(exc)], {})
    prepared = PreparedReplay(
        path=checked.path,
        model=checked.model,
        sha256=checked.sha256,
        answers=dict(checked.answers),
        errors=checked.errors,
        item_failures=checked.item_failures,
        note=checked.naming_note(),
    )
    for q in questions:
        for turn in range(len(q.turns)):
            key = q.turns[: turn + 1]
            other = prepared.index.setdefault(key, q.question_id)
            if other != q.question_id and _answer(prepared, other, turn) != _answer(
                prepared, q.question_id, turn
            ):
                prepared.errors.append(
                    f"questions {other} and {q.question_id} have the same text up to turn {turn + 1}, but "
                    f"{checked.path} answers them differently: a replay cannot tell which answer is meant"
                )
    return prepared


def _answer(prepared: PreparedReplay, question_id: int, turn: int) -> str | None:
    answer = prepared.answers.get(question_id)
    return answer[turn] if answer is not None and turn < len(answer) else None


def prepare(path: str | Path, questions: Iterable[Question]) -> PreparedReplay:
    """Check `path` against the run's questions and register it for `replay/PATH` in this process.

    The assembly calls this once per process (xdist workers included) before the backend is built; it
    refuses to start when `errors` is not empty, and reports `item_failures` and `note`.
    """
    prepared = load_answer_file(path, questions)
    if not prepared.errors:
        _PREPARED[_key(path)] = prepared
    return prepared


class ReplayBackend:
    """Answers from a prepared FastChat answer file."""

    def __init__(self, name: str, prepared: PreparedReplay) -> None:
        self.spec = f"replay/{name}"
        self.prepared = prepared
        self.calls = 0

    def identity(self) -> dict[str, Any]:
        return {"backend": "replay", "answers_sha256": self.prepared.sha256, "model": self.prepared.model}

    def answer(self, conversation: list[Message]) -> Completion:
        """Turn i of the answer to the question whose turns 1..i are the conversation's user messages."""
        users = tuple(m["content"] for m in conversation if m.get("role") == "user")
        question_id = self.prepared.index.get(users)
        if question_id is None:
            return _missing(
                f"{self.prepared.path}: the conversation matches none of the questions the replay was "
                "prepared with"
            )
        failure = self.prepared.item_failures.get(question_id)
        if failure is not None:
            return _missing(failure)
        text = _answer(self.prepared, question_id, len(users) - 1)
        if text is None:
            return _missing(f"question {question_id}: no turn {len(users)} in {self.prepared.path}")
        # The file says nothing about tokens or how the answer ended.
        return Completion(text=text, extra={"replayed_question": question_id})

    def chat(
        self,
        conversations: list[list[Message]],
        params: SamplingParams,
        on_result: ResultCallback | None = None,
    ) -> list[Completion]:
        out = []
        for index, conversation in enumerate(conversations):
            self.calls += 1
            out.append(self.answer(conversation))
            if on_result is not None:
                on_result(index, out[-1])
        return out

    def close(self) -> None:
        pass


def _missing(reason: str) -> Completion:
    return Completion(text="", finish_reason=FINISH_MISSING_ANSWER, extra={"missing": reason})


def _file_sha256(path: Path, spec: str) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise BackendError(f"{spec}: cannot read the answer file ({exc.strerror or exc})") from None


def static_identity(name: str, options: BackendOptions) -> dict[str, Any]:
    """What determines the answers: the file's bytes (and its name, the model's name); no prepare needed."""
    path = Path(name).expanduser()
    return {
        "backend": "replay",
        "answers_sha256": _file_sha256(path, f"replay/{name}"),
        "model": model_name_from_answer_file(path),
    }


def create(name: str, options: BackendOptions) -> ReplayBackend:
    prepared = _PREPARED.get(_key(name))
    if prepared is None:
        raise BackendError(
            f"replay/{name}: the answer file was not prepared with the question set "
            "(the run's assembly calls backends.replay.prepare(path, questions) first)"
        )
    if _file_sha256(Path(name).expanduser(), f"replay/{name}") != prepared.sha256:
        raise BackendError(f"replay/{name}: the answer file changed since it was checked; run again")
    return ReplayBackend(name, prepared)
