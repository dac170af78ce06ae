"""MT-Bench question sets: the official categories and temperatures, loading and validation."""

from __future__ import annotations

import keyword
from dataclasses import dataclass
from pathlib import Path

from .errors import MTBenchError
from .jsonl import read_jsonl

# The single source of truth for the official MT-Bench categories, in the order FastChat lists them.
CATEGORIES: tuple[str, ...] = (
    "writing",
    "roleplay",
    "reasoning",
    "math",
    "coding",
    "extraction",
    "stem",
    "humanities",
)

# FastChat gen_model_answer temperature_config; unknown categories get 0.7 as in FastChat.
CATEGORY_TEMPERATURE: dict[str, float] = {
    "writing": 0.7,
    "roleplay": 0.7,
    "extraction": 0.0,
    "math": 0.0,
    "coding": 0.0,
    "reasoning": 0.0,
    "stem": 0.1,
    "humanities": 0.1,
}
DEFAULT_TEMPERATURE = 0.7

# Categories judged with the reference-guided prompts (FastChat NEED_REF_CATS).
REFERENCE_CATEGORIES: frozenset[str] = frozenset({"math", "reasoning", "coding"})

# A category becomes a marker, a -k keyword and a node name: these would collide with pytest's own
# markers, the plugin's marker and collector, or the gate named "overall" (stats.OVERALL).
RESERVED_CATEGORIES: frozenset[str] = frozenset(
    {
        "skip",
        "skipif",
        "xfail",
        "parametrize",
        "usefixtures",
        "filterwarnings",
        "tryfirst",
        "trylast",
        "mtbench",
        "overall",
    }
)


class QuestionFileError(MTBenchError, ValueError):
    """A question or reference file that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class Question:
    question_id: int
    category: str
    turns: tuple[str, ...]
    # Reference answers carried in the question file (custom sets); the official set uses its own file.
    reference: tuple[str, ...] | None = None

    @property
    def temperature(self) -> float:
        return CATEGORY_TEMPERATURE.get(self.category, DEFAULT_TEMPERATURE)

    @property
    def needs_reference(self) -> bool:
        return self.category in REFERENCE_CATEGORIES


def load_questions(path: str | Path) -> list[Question]:
    """Load a question file in FastChat's schema: question_id (int), category (str), turns (1+ strings)."""
    path = Path(path).expanduser()
    questions: list[Question] = []
    seen: set[int] = set()
    for lineno, row in read_jsonl(path, QuestionFileError, "question file"):
        where = f"{path}:{lineno}"
        qid, category, turns = row.get("question_id"), row.get("category"), row.get("turns")
        if not isinstance(qid, int) or isinstance(qid, bool):
            raise QuestionFileError(f"{where}: 'question_id' must be an integer, got {qid!r}")
        if qid in seen:
            raise QuestionFileError(f"{where}: question_id {qid} appears twice")
        if not isinstance(category, str) or not category.strip() or not category.isidentifier():
            raise QuestionFileError(
                f"{where}: 'category' must be a word of letters, digits or _ (it becomes a test id), "
                f"got {category!r}"
            )
        if category in RESERVED_CATEGORIES or keyword.iskeyword(category):
            raise QuestionFileError(
                f"{where}: category {category!r} is reserved (a pytest marker or keyword, a Python keyword, "
                "or the plugin's own mtbench/overall); rename the category"
            )
        if (
            not isinstance(turns, list)
            or not 1 <= len(turns) <= 2
            or not all(isinstance(t, str) and t.strip() for t in turns)
        ):
            raise QuestionFileError(f"{where}: 'turns' must be a list of 1 or 2 non-empty strings")
        reference = row.get("reference")
        if reference is not None and (
            not isinstance(reference, list) or not all(isinstance(r, str) for r in reference)
        ):
            raise QuestionFileError(f"{where}: 'reference' must be a list of strings, one per turn")
        seen.add(qid)
        questions.append(Question(qid, category, tuple(turns), tuple(reference) if reference else None))
    if not questions:
        raise QuestionFileError(f"{path}: holds no questions")
    return questions


def load_references(path: str | Path) -> dict[int, tuple[str, ...]]:
    """Load a FastChat answer file of reference answers: question_id -> turns of the first choice (read
    by fastchat.py, the one reader of FastChat's files)."""
    from .fastchat import FastChatFileError, read_reference_answers  # fastchat.py imports this module

    try:
        return read_reference_answers(path)
    except FastChatFileError as exc:
        raise QuestionFileError(str(exc)) from None
