"""Small FastChat-format "published" MT-Bench files, for tests and benchmarks of the calibration.

Writes `model_answer/<model>.jsonl` and `model_judgment/gpt-4_single.jsonl` as FastChat lays them out,
for made-up answers to the official questions. Each judgment's `user_prompt` is rendered the way FastChat
renders it (`str.format` of the official prompt templates, FastChat's run_judge_single variables), not
with this plugin's renderer, so a calibration that accepts these rows shows the two agree byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REFERENCE_CATEGORIES = ("math", "reasoning", "coding")  # FastChat's NEED_REF_CATS


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@dataclass
class PublishedFiles:
    """Rows of the published files, before they are written (a test may spoil some first)."""

    answers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # model -> answer rows
    judgments: list[dict[str, Any]] = field(default_factory=list)

    def scores_by_prompt(self) -> dict[str, float]:
        """Published score by user prompt, for a scripted judge that must know what GPT-4 said."""
        return {row["user_prompt"]: row["score"] for row in self.judgments}

    def write(self, directory: Path) -> Path:
        """Write FastChat's data/mt_bench layout under `directory`; returns it."""
        (directory / "model_answer").mkdir(parents=True, exist_ok=True)
        (directory / "model_judgment").mkdir(parents=True, exist_ok=True)
        for model, rows in self.answers.items():
            text = "".join(json.dumps(row) + "\n" for row in rows)
            (directory / "model_answer" / f"{model}.jsonl").write_text(text, encoding="utf-8")
        text = "".join(json.dumps(row) + "\n" for row in self.judgments)
        (directory / "model_judgment" / "gpt-4_single.jsonl").write_text(text, encoding="utf-8")
        return directory


def published_files(
    data: Path, models: Sequence[str], score: Callable[[str, int, int], int]
) -> PublishedFiles:
    """Answers of `models` to every official question in `data` (a flat official data directory) and
    GPT-4's judgment of each turn, scored `score(model, question_id, turn)`."""
    questions = _jsonl(data / "question.jsonl")
    prompts = {row["name"]: row for row in _jsonl(data / "judge_prompts.jsonl")}
    references = {
        row["question_id"]: row["choices"][0]["turns"]
        for row in _jsonl(data / "reference_answer" / "gpt-4.jsonl")
    }
    files = PublishedFiles()
    for model in models:
        rows = []
        for q in questions:
            qid = q["question_id"]
            answers = [
                f"{model} answers turn {t + 1} of question {qid}: {{braces}} stay literal, as do "
                f"'quotes' and a line\nbreak."
                for t in range(len(q["turns"]))
            ]
            rows.append(
                {
                    "question_id": qid,
                    "answer_id": f"{model}-{qid}",
                    "model_id": model,
                    "choices": [{"index": 0, "turns": answers}],
                    "tstamp": 1687000000.0,
                }
            )
            for turn in range(1, len(q["turns"]) + 1):
                files.judgments.append(_judgment(model, q, answers, turn, prompts, references, score))
        files.answers[model] = rows
    return files


def _judgment(
    model: str,
    q: dict[str, Any],
    answers: list[str],
    turn: int,
    prompts: dict[str, dict[str, Any]],
    references: dict[int, list[str]],
    score: Callable[[str, int, int], int],
) -> dict[str, Any]:
    """One row as FastChat's play_a_match_single writes it."""
    needs_reference = q["category"] in REFERENCE_CATEGORIES
    name = ("single-math-v1" if needs_reference else "single-v1") + ("-multi-turn" if turn == 2 else "")
    kwargs: dict[str, str] = {}
    if needs_reference:
        kwargs["ref_answer_1"] = references[q["question_id"]][0]
        if turn == 2:
            kwargs["ref_answer_2"] = references[q["question_id"]][1]
    if turn == 1:
        kwargs.update(question=q["turns"][0], answer=answers[0])
    else:
        kwargs.update(
            question_1=q["turns"][0], question_2=q["turns"][1], answer_1=answers[0], answer_2=answers[1]
        )
    rating = score(model, q["question_id"], turn)
    return {
        "question_id": q["question_id"],
        "model": model,
        "judge": ["gpt-4", name],
        "user_prompt": prompts[name]["prompt_template"].format(**kwargs),
        "judgment": f"The answer is as good as a {rating}.\n\nRating: [[{rating}]]",
        "score": rating,
        "turn": turn,
        "tstamp": 1687000001.0,
    }
