"""FastChat's llm_judge files: model answers, single and pairwise judgments, read and written (no pytest).

The layout is FastChat's (`fastchat/llm_judge/data/<bench>/`), so its `show_result.py` reads what we
write and years of published files can be replayed or imported:

- `model_answer/<model>.jsonl`: one line per question, `question_id`, `answer_id`, `model_id`, `choices`
  (`[{"index": 0, "turns": [...]}]`), `tstamp`. FastChat names a model by the file name (its
  `load_model_answers` keys answers by the file's stem), never by the inner `model_id`; so do we.
- `model_judgment/<judge>_single.jsonl`: one line per judged turn, `question_id, model, judge,
  user_prompt, judgment, score, turn, tstamp`, with `judge` = `[judge model, prompt name]`. FastChat writes
  an unscored turn as `score: -1` and its `show_result.py` drops those rows; the export does the same and
  is the only place a -1 is ever written (our records keep `None`).
- `model_judgment/<judge>_pair.jsonl`: one line per (question, turn, pair of models): `question_id,
  model_1, model_2, g1_winner, g2_winner, judge, g1_user_prompt, g1_judgment, g2_user_prompt,
  g2_judgment, turn, tstamp`. Game 1 shows model_1 as Assistant A, game 2 swaps them; each winner is
  already un-swapped into `model_1`, `model_2`, `tie`, or `error` (no verdict could be read).

`ImportedJudgments` indexes judgments read from such files by the exact user prompt, so a judge call
whose rendered prompt is byte-identical to a FastChat one is served from the file instead of paid again;
`ImportedJudgments.check` counts the imported judgments whose prompt differs from ours (not reused).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import MTBenchError
from .jsonl import read_jsonl
from .questions import Question
from .records import (
    CallInfo,
    FastChatExport,
    FastChatImport,
    FastChatSummary,
    Judgment,
    PromptSent,
    QuestionRecord,
    RunReport,
    Score,
)

if TYPE_CHECKING:
    from .backends.spec import ModelSpec
    from .modes.pairwise import PairResult
    from .settings import Settings

ANSWER_DIR = "model_answer"
JUDGMENT_DIR = "model_judgment"
UNSCORED_SCORE = -1  # FastChat's marker for a turn without a rating; written by exports only
FASTCHAT_API_ERROR = "$ERROR$"  # what FastChat records as the judgment when every API retry failed

# Pair verdicts in FastChat's vocabulary (after un-swapping game 2).
PAIR_WINNERS = ("model_1", "model_2", "tie", "error")

# Kinds of problems in an answer file. The first three make the file unusable; the last two fail only
# the questions concerned (their items fail with the message, they are never skipped).
PROBLEM_FORMAT = "format"
PROBLEM_DUPLICATE = "duplicate"
PROBLEM_UNKNOWN = "unknown"
PROBLEM_MISSING = "missing"
PROBLEM_TURNS = "turns"
FATAL_PROBLEMS = frozenset({PROBLEM_FORMAT, PROBLEM_DUPLICATE, PROBLEM_UNKNOWN})

_ANSWER_SHAPE = 'each line needs an integer "question_id" and "choices": [{"turns": ["...", "..."]}]'


class FastChatFileError(MTBenchError, ValueError):
    """A FastChat file that cannot be read at all; the message names the file (and line) and the fix."""


# ---- model answers --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnswerProblem:
    """One problem found in an answer file; `question_id` is None for a line that is not an answer."""

    kind: str  # one of the PROBLEM_* kinds
    message: str
    question_id: int | None = None

    @property
    def fatal(self) -> bool:
        return self.kind in FATAL_PROBLEMS


@dataclass
class AnswerFile:
    """A FastChat answer file read and checked against a question set.

    `answers` holds only usable answers (question_id -> `choices[0].turns`); every problem is in
    `problems`, one message each.
    """

    path: str
    model: str  # the file name without .jsonl: FastChat's name for the model, and the export's
    model_ids: tuple[str, ...]  # the distinct inner `model_id` values, for information only
    sha256: str
    answers: dict[int, tuple[str, ...]] = field(default_factory=dict)
    problems: list[AnswerProblem] = field(default_factory=list)

    @property
    def errors(self) -> list[str]:
        """Problems that make the file unusable (not an answer file, duplicate or unknown ids)."""
        return [p.message for p in self.problems if p.fatal]

    @property
    def item_failures(self) -> dict[int, str]:
        """Questions without a usable answer (missing, wrong number of turns) -> why; their items fail."""
        failures: dict[int, str] = {}
        for problem in self.problems:
            if not problem.fatal and problem.question_id is not None:
                failures.setdefault(problem.question_id, problem.message)
        return failures

    def naming_note(self) -> str | None:
        """A note when the file's inner model_id differs from the name FastChat (and we) use for it."""
        others = [m for m in self.model_ids if m != self.model]
        if not others:
            return None
        return (
            f"{self.path}: the answers are named {self.model!r} after the file, as FastChat names them; "
            f"the file's model_id says {', '.join(repr(m) for m in others)}"
        )


def model_name_from_answer_file(path: str | Path) -> str:
    """FastChat's model name for an answer file: the file name without `.jsonl` (its basename[:-6])."""
    name = Path(path).name
    return name[: -len(".jsonl")] if name.endswith(".jsonl") else Path(name).stem


def read_answer_file(path: str | Path, questions: Iterable[Question] | None = None) -> AnswerFile:
    """Read a FastChat `model_answer/<model>.jsonl` and check it against `questions` (when given).

    A file that cannot be read, or a line that is not JSON, raises FastChatFileError. Everything else is
    collected as problems: lines that are not answer records, duplicate question ids, answers to questions
    not in the set (fatal), and questions with no answer or the wrong number of turns (those items fail).
    """
    path = Path(path).expanduser()
    where = str(path)
    try:
        raw = path.read_bytes()
    except OSError:
        raw = b""  # read_jsonl below gives the one-line message for a missing or unreadable file
    rows = list(read_jsonl(path, FastChatFileError, "FastChat answer file"))
    result = AnswerFile(
        path=where,
        model=model_name_from_answer_file(path),
        model_ids=(),
        sha256=hashlib.sha256(raw).hexdigest(),
    )
    by_id = {q.question_id: q for q in questions} if questions is not None else None
    first_line: dict[int, int] = {}
    model_ids: list[str] = []
    for lineno, row in rows:
        qid, turns = row.get("question_id"), _first_choice_turns(row)
        if not isinstance(qid, int) or isinstance(qid, bool) or turns is None:
            result.problems.append(AnswerProblem(PROBLEM_FORMAT, _not_an_answer(row, f"{where}:{lineno}")))
            continue
        model_id = row.get("model_id")
        if isinstance(model_id, str) and model_id not in model_ids:
            model_ids.append(model_id)
        if qid in first_line:
            result.problems.append(
                AnswerProblem(
                    PROBLEM_DUPLICATE,
                    f"{where}:{lineno}: question {qid} is answered twice (also at line {first_line[qid]}); "
                    "keep one answer per question (FastChat's reorg_answer_file keeps the last)",
                    qid,
                )
            )
            result.answers.pop(qid, None)
            continue
        first_line[qid] = lineno
        if by_id is not None and qid not in by_id:
            result.problems.append(
                AnswerProblem(
                    PROBLEM_UNKNOWN,
                    f"{where}:{lineno}: question {qid} is not in the question set; "
                    "is the file for another question set (--mtbench-questions)?",
                    qid,
                )
            )
            continue
        if by_id is not None and len(turns) != len(by_id[qid].turns):
            result.problems.append(
                AnswerProblem(
                    PROBLEM_TURNS,
                    f"{where}:{lineno}: question {qid} has {len(by_id[qid].turns)} turn(s) but the answer "
                    f"has {len(turns)}",
                    qid,
                )
            )
            continue
        result.answers[qid] = turns
    if not rows:
        result.problems.append(AnswerProblem(PROBLEM_FORMAT, f"{where}: holds no answers"))
    if by_id is not None:
        for qid in sorted(set(by_id) - set(first_line)):
            result.problems.append(
                AnswerProblem(PROBLEM_MISSING, f"question {qid}: no answer in {where}", qid)
            )
    result.model_ids = tuple(model_ids)
    return result


def read_reference_answers(path: str | Path) -> dict[int, tuple[str, ...]]:
    """A FastChat answer file of reference answers (`reference_answer/gpt-4.jsonl`): question_id -> the
    turns of its first choice, a later line for a question replacing an earlier one (as FastChat's
    `load_model_answers` keeps the last). A line that is not an answer raises FastChatFileError naming it."""
    path = Path(path).expanduser()
    references: dict[int, tuple[str, ...]] = {}
    for lineno, row in read_jsonl(path, FastChatFileError, "reference answer file"):
        qid, turns = row.get("question_id"), _first_choice_turns(row)
        if not isinstance(qid, int) or isinstance(qid, bool) or turns is None:
            raise FastChatFileError(_not_an_answer(row, f"{path}:{lineno}"))
        references[qid] = turns
    return references


def _not_an_answer(row: Mapping[str, Any], where: str) -> str:
    qid = row.get("question_id")
    what = "no integer question_id" if not isinstance(qid, int) or isinstance(qid, bool) else "no turns"
    return f"{where}: not a FastChat answer ({what}); {_ANSWER_SHAPE}"


def read_answer_dir(directory: str | Path) -> dict[str, AnswerFile]:
    """Every `<model>.jsonl` of a FastChat `model_answer/` directory by model name (the file's stem), as
    FastChat's `load_model_answers` reads them; each file read as `read_answer_file` reads it without a
    question set (its unusable lines and duplicated questions are problems, never answers)."""
    files = (read_answer_file(path) for path in sorted(Path(directory).expanduser().glob("*.jsonl")))
    return {answer_file.model: answer_file for answer_file in files}


def _first_choice_turns(row: Mapping[str, Any]) -> tuple[str, ...] | None:
    choices = row.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    turns = choices[0].get("turns")
    if not isinstance(turns, list) or not turns or not all(isinstance(t, str) for t in turns):
        return None
    return tuple(turns)


def answer_rows(
    model: str, records: Iterable[QuestionRecord], tstamp: float | None = None
) -> tuple[list[dict[str, Any]], list[int]]:
    """FastChat answer rows for complete records (sorted by question id), and the ids left out (errors)."""
    tstamp = time.time() if tstamp is None else tstamp
    rows, skipped = [], []
    for record in sorted(records, key=lambda r: r.question_id):
        if record.error is not None or not record.turns:
            skipped.append(record.question_id)
            continue
        turns = [t.answer for t in record.turns]
        rows.append(
            {
                "question_id": record.question_id,
                # FastChat draws a random shortuuid; a digest of the content keeps exports reproducible.
                "answer_id": _digest(model, record.question_id, turns)[:22],
                "model_id": model,
                "choices": [{"index": 0, "turns": turns}],
                "tstamp": tstamp,
            }
        )
    return rows, skipped


def write_answer_file(
    directory: str | Path, model: str, records: Iterable[QuestionRecord], tstamp: float | None = None
) -> tuple[Path, list[int]]:
    """Write `directory/model_answer/<model>.jsonl`; returns its path and the question ids left out."""
    rows, skipped = answer_rows(model, records, tstamp)
    path = Path(directory) / ANSWER_DIR / f"{model}.jsonl"
    _write_jsonl(path, rows)
    return path, skipped


# ---- single-answer judgments ---------------------------------------------------------------------


@dataclass(frozen=True)
class SingleJudgmentRow:
    """One line of a FastChat `<judge>_single.jsonl`; `score` is None where FastChat wrote -1."""

    question_id: int
    model: str
    judge: str  # the judge model's name, e.g. "gpt-4"
    prompt_name: str  # e.g. "single-v1"
    turn: int
    user_prompt: str
    judgment: str
    score: Score | None
    tstamp: float | None = None


@dataclass(frozen=True)
class SingleExport:
    """What writing a single judgment file did."""

    path: Path
    rows: int
    unscored: int  # turns written with FastChat's -1 (our records say unscored)
    skipped_questions: list[int]  # records with an error: FastChat has no line for them


def single_judgment_rows(
    model: str, judge: str, records: Iterable[QuestionRecord], tstamp: float | None = None
) -> tuple[list[dict[str, Any]], int, list[int]]:
    """FastChat single judgment rows (one per judgment, repeats included), the number written with -1,
    and the question ids left out (records with an error)."""
    tstamp = time.time() if tstamp is None else tstamp
    rows, unscored, skipped = [], 0, []
    for record in sorted(records, key=lambda r: r.question_id):
        if record.error is not None:
            skipped.append(record.question_id)
            continue
        for turn in record.turns:
            for judgment in turn.judgments:
                score = judgment.score
                if score is None:
                    unscored += 1
                rows.append(
                    {
                        "question_id": record.question_id,
                        "model": model,
                        "judge": [judge, judgment.prompt.name],
                        "user_prompt": judgment.prompt.user,
                        "judgment": judgment.text,
                        "score": UNSCORED_SCORE if score is None else score,
                        "turn": turn.turn,
                        "tstamp": tstamp,
                    }
                )
    return rows, unscored, skipped


def write_single_judgments(
    directory: str | Path,
    judge: str,
    records_by_model: Mapping[str, Iterable[QuestionRecord]],
    tstamp: float | None = None,
) -> SingleExport:
    """Write `directory/model_judgment/<judge>_single.jsonl` for every model's records."""
    rows: list[dict[str, Any]] = []
    unscored, skipped = 0, []
    for model, records in records_by_model.items():
        model_rows, model_unscored, model_skipped = single_judgment_rows(model, judge, records, tstamp)
        rows += model_rows
        unscored += model_unscored
        skipped += model_skipped
    path = Path(directory) / JUDGMENT_DIR / f"{judge}_single.jsonl"
    _write_jsonl(path, rows)
    return SingleExport(path, len(rows), unscored, skipped)


def read_single_judgments(path: str | Path) -> list[SingleJudgmentRow]:
    """Read a FastChat `<judge>_single.jsonl`; a malformed line raises FastChatFileError naming it."""
    path = Path(path).expanduser()
    out = []
    for lineno, row in read_jsonl(path, FastChatFileError, "FastChat judgment file"):
        where = f"{path}:{lineno}"
        judge, prompt_name = _judge_field(row, where)
        score = row.get("score")
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise FastChatFileError(f"{where}: 'score' must be a number (-1 when unscored), got {score!r}")
        out.append(
            SingleJudgmentRow(
                question_id=_int_field(row, "question_id", where),
                model=_str_field(row, "model", where),
                judge=judge,
                prompt_name=prompt_name,
                turn=_turn_field(row, where),
                user_prompt=_str_field(row, "user_prompt", where),
                judgment=_str_field(row, "judgment", where),
                score=None if score == UNSCORED_SCORE else score,
                tstamp=_tstamp(row),
            )
        )
    return out


# ---- pairwise judgments --------------------------------------------------------------------------


@dataclass(frozen=True)
class PairJudgmentRow:
    """One line of a FastChat `<judge>_pair.jsonl` (game 1: model_1 is A; game 2: model_2 is A)."""

    question_id: int
    model_1: str
    model_2: str
    judge: str
    prompt_name: str
    turn: int
    g1_winner: str  # model_1, model_2, tie or error (already un-swapped)
    g2_winner: str
    g1_user_prompt: str
    g1_judgment: str
    g2_user_prompt: str
    g2_judgment: str
    tstamp: float | None = None


# Our pair verdicts ("model_a"/"model_b"/"tie"/None) in FastChat's words, and back.
_TO_FASTCHAT = {"model_a": "model_1", "model_b": "model_2", "tie": "tie", None: "error"}
_FROM_FASTCHAT = {v: k for k, v in _TO_FASTCHAT.items()}


def pair_judgment_rows(
    judge: str,
    results: Iterable[PairResult],
    tstamp: float | None = None,
    names: Mapping[str, str] | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """FastChat pair rows for our pair results, and how many have a game written as "error".

    `names` maps the results' model names (specs) to the names the answer files use (`fastchat_name`);
    a model not in it keeps its own name.
    """
    tstamp = time.time() if tstamp is None else tstamp
    names = names or {}
    rows, errors = [], 0
    for result in results:
        g1, g2 = _TO_FASTCHAT[result.g1.verdict], _TO_FASTCHAT[result.g2.verdict]
        errors += "error" in (g1, g2)
        rows.append(
            {
                "question_id": result.question_id,
                "model_1": names.get(result.model_a, result.model_a),
                "model_2": names.get(result.model_b, result.model_b),
                "g1_winner": g1,
                "g2_winner": g2,
                "judge": [judge, result.g1.prompt.name],
                "g1_user_prompt": result.g1.prompt.user,
                "g1_judgment": result.g1.text,
                "g2_user_prompt": result.g2.prompt.user,
                "g2_judgment": result.g2.text,
                "turn": result.turn,
                "tstamp": tstamp,
            }
        )
    return rows, errors


@dataclass(frozen=True)
class PairExport:
    """What writing a pair judgment file did."""

    path: Path
    rows: int
    unparsable: int  # pairs with a game written as "error" (show_result.py drops them, as we do)


def write_pair_judgments(
    directory: str | Path,
    judge: str,
    results: Iterable[PairResult],
    tstamp: float | None = None,
    names: Mapping[str, str] | None = None,
) -> PairExport:
    """Write `directory/model_judgment/<judge>_pair.jsonl` (`names` as in `pair_judgment_rows`)."""
    rows, errors = pair_judgment_rows(judge, results, tstamp, names)
    path = Path(directory) / JUDGMENT_DIR / f"{judge}_pair.jsonl"
    _write_jsonl(path, rows)
    return PairExport(path, len(rows), errors)


def read_pair_judgments(path: str | Path) -> list[PairJudgmentRow]:
    """Read a FastChat `<judge>_pair.jsonl`; a malformed line raises FastChatFileError naming it."""
    path = Path(path).expanduser()
    out = []
    for lineno, row in read_jsonl(path, FastChatFileError, "FastChat judgment file"):
        where = f"{path}:{lineno}"
        judge, prompt_name = _judge_field(row, where)
        winners = []
        for key in ("g1_winner", "g2_winner"):
            value = row.get(key)
            if value not in PAIR_WINNERS:
                raise FastChatFileError(
                    f"{where}: {key!r} must be one of {', '.join(PAIR_WINNERS)}, got {value!r}"
                )
            winners.append(value)
        out.append(
            PairJudgmentRow(
                question_id=_int_field(row, "question_id", where),
                model_1=_str_field(row, "model_1", where),
                model_2=_str_field(row, "model_2", where),
                judge=judge,
                prompt_name=prompt_name,
                turn=_turn_field(row, where),
                g1_winner=winners[0],
                g2_winner=winners[1],
                g1_user_prompt=_str_field(row, "g1_user_prompt", where),
                g1_judgment=_str_field(row, "g1_judgment", where),
                g2_user_prompt=_str_field(row, "g2_user_prompt", where),
                g2_judgment=_str_field(row, "g2_judgment", where),
                tstamp=_tstamp(row),
            )
        )
    return out


def pair_verdict_from_fastchat(winner: str) -> str | None:
    """A FastChat game winner (model_1/model_2/tie/error) as our verdict (model_a/model_b/tie/None)."""
    return _FROM_FASTCHAT[winner]


def read_judgments(path: str | Path) -> tuple[list[SingleJudgmentRow], list[PairJudgmentRow]]:
    """Read either kind of FastChat judgment file, told apart by its first line's keys."""
    path = Path(path).expanduser()
    for _, row in read_jsonl(path, FastChatFileError, "FastChat judgment file"):
        if "model_1" in row or "g1_judgment" in row:
            return [], read_pair_judgments(path)
        if "model" in row and "judgment" in row:
            return read_single_judgments(path), []
        raise FastChatFileError(
            f"{path}:1: not a FastChat judgment file (expected the keys of "
            "model_judgment/<judge>_single.jsonl or <judge>_pair.jsonl)"
        )
    raise FastChatFileError(f"{path}: holds no judgments")


# ---- import: reuse FastChat judgments of byte-identical prompts -----------------------------------


@dataclass(frozen=True)
class JudgmentSlot:
    """Where a judgment belongs: one judged turn of one model, or one game of one pair of models.

    `models` is (model,) for a single judgment and the pair sorted by name for a pairwise one, with
    `game` 1 when the first of the sorted pair was shown as Assistant A, else 2.
    """

    question_id: int
    models: tuple[str, ...]
    turn: int
    prompt_name: str
    game: int = 1

    @classmethod
    def single(cls, question_id: int, model: str, turn: int, prompt_name: str) -> JudgmentSlot:
        return cls(question_id, (model,), turn, prompt_name)

    @classmethod
    def pair(
        cls, question_id: int, model_a: str, model_b: str, turn: int, prompt_name: str, game: int
    ) -> JudgmentSlot:
        """Game `game` (1: model_a shown as A, 2: model_b shown as A), keyed independently of the order
        in which a file lists the two models."""
        if model_a <= model_b:
            return cls(question_id, (model_a, model_b), turn, prompt_name, game)
        return cls(question_id, (model_b, model_a), turn, prompt_name, 3 - game)


@dataclass(frozen=True)
class ImportCheck:
    """How the imported judgments relate to the judgments this run needs."""

    rows: int  # judgments read from the file(s)
    reusable: int  # same slot, byte-identical user prompt: served from the file
    differing: int  # same slot, another user prompt (other answers, references or templates): not reused
    not_in_run: int  # slots this run does not have (other models, questions or turns)
    other_judge: int  # judged by another judge model: never reused
    api_errors: int  # FastChat's "$ERROR$" placeholder instead of a judgment: never reused
    differing_examples: tuple[str, ...] = ()  # a few slots that differ, for the message

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "reusable": self.reusable,
            "differing": self.differing,
            "not_in_run": self.not_in_run,
            "other_judge": self.other_judge,
            "api_errors": self.api_errors,
            "differing_examples": list(self.differing_examples),
        }


class ImportedJudgments:
    """Judgments from FastChat files, found by the exact user prompt sent (as `BaselineJudgments` does).

    FastChat records the user prompt but not the system prompt; a prompt's system message is fixed by
    its template, and the user text embeds the template, so the user text alone identifies the call.
    Only judgments of `judge` (a judge model name such as "gpt-4"; None accepts any) are used.
    """

    source = "import"

    def __init__(
        self,
        single: Iterable[SingleJudgmentRow] = (),
        pairs: Iterable[PairJudgmentRow] = (),
        judge: str | None = None,
    ) -> None:
        self.judge = judge
        self._entries: list[tuple[JudgmentSlot, str, str, str]] = []  # slot, judge, user prompt, judgment
        for row in single:
            slot = JudgmentSlot.single(row.question_id, row.model, row.turn, row.prompt_name)
            self._entries.append((slot, row.judge, row.user_prompt, row.judgment))
        for row in pairs:
            for game, user, text in (
                (1, row.g1_user_prompt, row.g1_judgment),
                (2, row.g2_user_prompt, row.g2_judgment),
            ):
                slot = JudgmentSlot.pair(
                    row.question_id, row.model_1, row.model_2, row.turn, row.prompt_name, game
                )
                self._entries.append((slot, row.judge, user, text))
        # user prompt -> judgments in file order (repeat k is the k-th judgment of that prompt)
        self._by_prompt: dict[str, list[tuple[str, str]]] = {}
        for slot, judge_name, user, text in self._entries:
            if self._usable(judge_name, text):
                self._by_prompt.setdefault(user, []).append((slot.prompt_name, text))

    @classmethod
    def read(cls, paths: Iterable[str | Path], judge: str | None = None) -> ImportedJudgments:
        """Read FastChat judgment files of either kind."""
        single: list[SingleJudgmentRow] = []
        pairs: list[PairJudgmentRow] = []
        for path in paths:
            s, p = read_judgments(path)
            single += s
            pairs += p
        return cls(single, pairs, judge)

    def _usable(self, judge_name: str, text: str) -> bool:
        return (self.judge is None or judge_name == self.judge) and text != FASTCHAT_API_ERROR

    def find(self, system: str, user: str, repeat: int) -> Judgment | None:
        """The imported judgment of this exact prompt (None when there is none); the same call as
        `BaselineJudgments.find`, so the runner can serve it through its reuse path."""
        found = self._by_prompt.get(user)
        if not found or repeat >= len(found):
            return None
        name, text = found[repeat]
        return Judgment(
            prompt=PromptSent(name, system, user),
            text=text,
            score=None,  # the runner re-reads the judge's text with the official rule
            scored_by=None,
            call=CallInfo(cached=True),
            repeat=repeat,
        )

    def check(self, expected: Mapping[JudgmentSlot, str]) -> ImportCheck:
        """Compare the imported judgments with the user prompts this run renders for each slot."""
        reusable = differing = not_in_run = other_judge = api_errors = 0
        examples: list[str] = []
        for slot, judge_name, user, text in self._entries:
            if self.judge is not None and judge_name != self.judge:
                other_judge += 1
            elif text == FASTCHAT_API_ERROR:
                api_errors += 1
            elif slot not in expected:
                not_in_run += 1
            elif expected[slot] == user:
                reusable += 1
            else:
                differing += 1
                if len(examples) < 3:
                    game = f" game {slot.game}" if len(slot.models) == 2 else ""
                    examples.append(
                        f"question {slot.question_id} turn {slot.turn} {' vs '.join(slot.models)}{game} "
                        f"({slot.prompt_name})"
                    )
        return ImportCheck(
            len(self._entries), reusable, differing, not_in_run, other_judge, api_errors, tuple(examples)
        )

    def __len__(self) -> int:
        return len(self._entries)


# ---- a run's FastChat side: what an import matched, what an export wrote --------------------------------
def interop_summary(
    settings: Settings, mode: str, reuse: Sequence[Any], report: RunReport
) -> FastChatSummary | None:
    """--mtbench-import-judgments: how the imported judgments (`reuse`'s import source) matched this run's
    prompts; --mtbench-export: the run written as FastChat files. None when the run did neither."""
    names = {spec.text: spec.fastchat_name for spec in settings.model_specs}
    pairs = report.pairwise.results if report.pairwise is not None else []
    info = FastChatSummary()
    imported = [source for source in reuse if source.source == "import"]
    if imported:
        check = imported[0].check(_judgment_slots(report.questions, pairs, names))
        reused = sum(j.call.imported for q in report.questions for t in q.turns for j in t.judgments)
        info.imported = FastChatImport(
            files=list(settings.import_judgments),
            rows=check.rows,
            reusable=check.reusable,
            differing=check.differing,
            not_in_run=check.not_in_run,
            other_judge=check.other_judge,
            api_errors=check.api_errors,
            differing_examples=list(check.differing_examples),
            reused=reused + sum(game.call.imported for p in pairs for game in (p.g1, p.g2)),
        )
    if settings.export:
        info.exported = _export(settings, mode, report, pairs, names)
    return info if info.imported or info.exported else None


def _export(
    settings: Settings, mode: str, report: RunReport, pairs: list[Any], names: dict[str, str]
) -> FastChatExport:
    directory = Path(str(settings.export))
    by_model = {spec: [r for r in report.questions if r.model == spec] for spec in settings.models}
    files = [str(write_answer_file(directory, names[spec], records)[0]) for spec, records in by_model.items()]
    judge = settings.judge_spec.fastchat_name
    if mode != "pairwise":
        single = write_single_judgments(directory, judge, {names[s]: r for s, r in by_model.items()})
        return FastChatExport(
            dir=str(directory),
            answer_files=files,
            judgment_file=str(single.path),
            single_rows=single.rows,
            unscored_as_minus_1=single.unscored,
        )
    pair = write_pair_judgments(directory, judge, pairs, names=names)
    return FastChatExport(
        dir=str(directory),
        answer_files=files,
        judgment_file=str(pair.path),
        pair_rows=pair.rows,
        unparsable_as_error=pair.unparsable,
    )


def _judgment_slots(records: list[QuestionRecord], pairs: list[Any], names: dict[str, str]) -> dict[Any, str]:
    """Every judgment this run made, by FastChat's slot (question, model(s), turn, prompt), to its prompt."""
    slots: dict[Any, str] = {}
    for record in records:
        for turn in record.turns:
            for judgment in turn.judgments[:1]:
                slot = JudgmentSlot.single(
                    record.question_id, names[record.model], turn.turn, judgment.prompt.name
                )
                slots[slot] = judgment.prompt.user
    for pair in pairs:
        for game_number, game in ((1, pair.g1), (2, pair.g2)):
            slot = JudgmentSlot.pair(
                pair.question_id,
                names[pair.model_a],
                names[pair.model_b],
                pair.turn,
                game.prompt.name,
                game_number,
            )
            slots[slot] = game.prompt.user
    return slots


# ---- names ----------------------------------------------------------------------------------------


def fastchat_name(spec: ModelSpec | str) -> str:
    """The name FastChat files use for a model or judge spec (ModelSpec.fastchat_name): `openai/gpt-4` ->
    `gpt-4`, `replay/dir/vicuna-13b.jsonl` -> `vicuna-13b`, a local path -> its last part.

    Two specs can share a name (two directories both called `model`); the caller checks uniqueness.
    """
    from .backends.spec import as_spec

    return as_spec(spec).fastchat_name


# ---- helpers -------------------------------------------------------------------------------------


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode("utf-8")).hexdigest()


def _write_jsonl(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # FastChat writes json.dumps defaults (ASCII escapes); the bytes stay readable by its json.loads.
    text = "".join(json.dumps(row) + "\n" for row in rows)
    path.write_text(text, encoding="utf-8")


def _judge_field(row: Mapping[str, Any], where: str) -> tuple[str, str]:
    judge = row.get("judge")
    if not isinstance(judge, list) or len(judge) != 2 or not all(isinstance(j, str) for j in judge):
        raise FastChatFileError(f'{where}: "judge" must be [judge model, prompt name], got {judge!r}')
    return judge[0], judge[1]


def _int_field(row: Mapping[str, Any], key: str, where: str) -> int:
    value = row.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise FastChatFileError(f"{where}: {key!r} must be an integer, got {value!r}")
    return value


def _str_field(row: Mapping[str, Any], key: str, where: str) -> str:
    value = row.get(key)
    if not isinstance(value, str):
        raise FastChatFileError(f"{where}: {key!r} must be a string, got {type(value).__name__}")
    return value


def _turn_field(row: Mapping[str, Any], where: str) -> int:
    turn = _int_field(row, "turn", where)
    if turn < 1:
        raise FastChatFileError(f"{where}: 'turn' must be 1 or more, got {turn}")
    return turn


def _tstamp(row: Mapping[str, Any]) -> float | None:
    value = row.get("tstamp")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


__all__ = [
    "AnswerFile",
    "AnswerProblem",
    "FastChatFileError",
    "ImportCheck",
    "ImportedJudgments",
    "JudgmentSlot",
    "PairJudgmentRow",
    "SingleJudgmentRow",
    "fastchat_name",
    "read_answer_dir",
    "read_answer_file",
    "read_judgments",
    "read_pair_judgments",
    "read_reference_answers",
    "read_single_judgments",
    "write_answer_file",
    "write_pair_judgments",
    "write_single_judgments",
]
