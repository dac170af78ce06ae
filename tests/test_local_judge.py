"""Local (hf/) judges through the plugin: official rule first, constrained fallback only when it fails."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import run_pytest_subprocess

pytest.importorskip("torch")
pytestmark = pytest.mark.slow  # trains tiny judges and runs them through the plugin


def _run(
    tmp_path: Path, shared_data: Path, judge: Path, *extra: str
) -> tuple[subprocess.CompletedProcess, dict]:
    report = tmp_path / "report.json"
    proc = run_pytest_subprocess(
        tmp_path,
        "--mtbench-model=fake/echo",
        f"--mtbench-judge=hf/{judge}",
        f"--mtbench-data={shared_data}",
        "--mtbench-no-cache",
        "-k",
        "81 or 121",
        f"--mtbench-report={report}",
        *extra,
    )
    return proc, json.loads(report.read_text()) if report.exists() else {}


def test_judgment_without_rating_is_scored_by_the_constrained_fallback(
    tmp_path: Path, shared_data: Path, silent_judge_dir: Path
) -> None:
    proc, report = _run(tmp_path, shared_data, silent_judge_dir, "--mtbench-judge-scoring=constrained")
    assert proc.returncode == 0, proc.stdout[-3000:]
    turns = [t for q in report["questions"] for t in q["turns"]]
    assert len(turns) == 4
    for turn in turns:
        (judgment,) = turn["judgments"]
        assert "[[" not in judgment["text"] and judgment["text"]  # the judge really wrote no rating
        assert turn["scored_by"] == judgment["scored_by"] == "constrained"
        assert isinstance(turn["score"], int) and 1 <= turn["score"] <= 10
        probs = judgment["rating_probabilities"]
        assert set(probs) == {str(k) for k in range(1, 11)} and sum(probs.values()) == pytest.approx(1)
        assert turn["score"] == int(max(probs, key=probs.get))
        assert judgment["expected_rating"] == pytest.approx(sum(int(k) * p for k, p in probs.items()))
    assert report["run"]["judge_scoring"] == "constrained"


def test_without_the_fallback_the_same_judge_leaves_turns_unscored(
    tmp_path: Path, shared_data: Path, silent_judge_dir: Path
) -> None:
    proc, report = _run(tmp_path, shared_data, silent_judge_dir)
    assert proc.returncode == 1
    assert "turn 1 is unscored" in proc.stdout
    assert all(t["score"] is None and t["scored_by"] is None for q in report["questions"] for t in q["turns"])


def test_a_readable_rating_is_never_touched_by_the_fallback(
    tmp_path: Path, shared_data: Path, judge_dir: Path
) -> None:
    proc, report = _run(tmp_path, shared_data, judge_dir, "--mtbench-judge-scoring=constrained")
    assert proc.returncode == 0, proc.stdout[-3000:]
    for turn in (t for q in report["questions"] for t in q["turns"]):
        (judgment,) = turn["judgments"]
        assert judgment["text"] == "Rating: [[7]]"
        assert (turn["score"], turn["scored_by"]) == (7, "official")
        assert judgment["rating_probabilities"] is None and judgment["expected_rating"] is None
