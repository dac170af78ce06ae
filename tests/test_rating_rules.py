"""Rating rules per prompt set: a project prompt file may declare its own rating pattern and scale."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO_ROOT, requires, run_plugin
from pytest_mtbench.judge import read_rating
from pytest_mtbench.prompts import PromptError, load_judge_prompts
from pytest_mtbench.testing.judge_server import FakeOpenAIServer

EXAMPLE = REPO_ROOT / "judge_prompts" / "result-1to5.jsonl"
RESULT = r"\[RESULT\]\s*(\d+)"


@pytest.mark.parametrize(
    ("text", "score", "reason"),
    [
        ("Good reply.\n[RESULT] 4", 4, None),
        ("[RESULT]5", 5, None),
        ("Fine.\n[RESULT] 7", None, "rating 7 is outside the prompt's scale 1-5"),
        ("Rating: [[4]]", None, "the judge's text has no rating matching"),
    ],
)
def test_a_declared_rule_reads_its_own_format_and_scale(
    text: str, score: int | None, reason: str | None
) -> None:
    got, why = read_rating(text, (1, 5), RESULT)
    assert got == score
    assert (why is None) if reason is None else (reason in why)


def test_the_shipped_example_declares_its_rule_on_every_prompt() -> None:
    prompts = load_judge_prompts(EXAMPLE, official=False)
    assert set(prompts) == {
        "single-v1",
        "single-v1-multi-turn",
        "single-math-v1",
        "single-math-v1-multi-turn",
    }
    assert {(p.rating_pattern, p.scale) for p in prompts.values()} == {(RESULT, (1, 5))}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"rating_pattern": "[RESULT"}, "rating_pattern is not a regular expression"),
        ({"rating_pattern": r"\[RESULT\] \d+"}, "exactly one (group)"),
        ({"scale": [5, 1]}, "scale must be [low, high]"),
        ({"scale": [1, "ten"]}, "scale must be [low, high]"),
    ],
)
def test_a_bad_rule_is_one_line_naming_the_prompt(tmp_path: Path, extra: dict, message: str) -> None:
    row = json.loads(EXAMPLE.read_text().splitlines()[0]) | extra
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(PromptError, match="judge prompt 'single-v1'") as info:
        load_judge_prompts(path, official=False)
    assert message in str(info.value)


@requires("openai")
def test_a_run_with_the_1_to_5_set_scores_on_its_scale(tmp_path: Path, shared_data: Path) -> None:
    def reply(body: dict[str, Any]) -> str:
        prompt = body["messages"][-1]["content"]
        if "### Reply to evaluate" not in prompt:
            return "A candidate answer."
        return "Clear and correct.\n[RESULT] 4" if "Follow-up" not in prompt else "Too long.\n[RESULT] 9"

    report_path = tmp_path / "r.json"
    with FakeOpenAIServer(reply=reply, model_ids=("candidate", "judge")) as server:
        proc = run_plugin(
            tmp_path,
            "--mtbench-model=openai/candidate",
            f"--mtbench-model-base-url={server.base_url}",
            "--mtbench-judge=openai/judge",
            f"--mtbench-judge-base-url={server.base_url}",
            f"--mtbench-data={shared_data}",
            "--mtbench-no-cache",
            f"--mtbench-judge-prompts={EXAMPLE}",
            "-k",
            "81 or 111",
            f"--mtbench-report={report_path}",
        )
    assert proc.returncode == 1  # the second turns rated 9 on a 1-5 scale are unscored
    assert "turn 2 is unscored: rating 9 is outside the prompt's scale 1-5" in proc.stdout
    report = json.loads(report_path.read_text())
    assert [t["score"] for q in report["questions"] for t in q["turns"]] == [4, None, 4, None]
    assert report["overall"] == 4 and report["overall_detail"]["n_unscored"] == 2
