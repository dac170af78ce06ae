"""Judge drift: baseline turns re-judged live; a judge that moved makes the verdicts inconclusive."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from conftest import requires, run_plugin
from pytest_mtbench.testing.judge_server import FakeOpenAIServer

pytestmark = requires("openai")  # every run here calls an OpenAI-compatible endpoint


class ShiftingJudge:
    """A judge whose rating of a prompt is fixed by its text, plus a shift the test sets."""

    def __init__(self) -> None:
        self.shift = 0

    def __call__(self, body: dict[str, Any]) -> str:
        if body["model"] == "candidate":
            return "An answer: " + body["messages"][-1]["content"][:30]
        digest = hashlib.sha256(body["messages"][-1]["content"].encode()).digest()
        rating = min(10, max(1, 2 + digest[0] % 6 + self.shift))
        return f"Judgment.\n\nRating: [[{rating}]]"


def _run(tmp_path: Path, shared_data: Path, url: str, cache: str, *extra: str):
    return run_plugin(
        tmp_path,
        "--mtbench-model=openai/candidate",
        f"--mtbench-model-base-url={url}",
        "--mtbench-judge=openai/judge",
        f"--mtbench-judge-base-url={url}",
        f"--mtbench-data={shared_data}",
        f"--mtbench-cache={tmp_path / cache}",
        "-k",
        "writing or coding",
        *extra,
    )


def test_a_judge_that_moved_makes_the_comparison_inconclusive(tmp_path: Path, shared_data: Path) -> None:
    judge = ShiftingJudge()
    with FakeOpenAIServer(reply=judge, model_ids=("candidate", "judge")) as server:
        base = tmp_path / "base.json"
        assert _run(tmp_path, shared_data, server.base_url, "c1", f"--mtbench-report={base}").returncode == 0

        steady = tmp_path / "steady.json"
        proc = _run(
            tmp_path, shared_data, server.base_url, "c2", f"--mtbench-baseline={base}",
            "--mtbench-judge-drift=30", f"--mtbench-report={steady}",
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout[-2000:]
        report = json.loads(steady.read_text())["baseline"]
        assert report["judge_drift"]["n"] == 30 and not report["judge_drift"]["changed"]
        assert report["judge_drift"]["mean_difference"] == 0
        assert {row["verdict"] for row in report["comparisons"]} == {"unchanged"}
        assert "no drift" in proc.stdout

        judge.shift = 2  # the endpoint now serves a judge that rates two points higher
        before = server.request_count
        moved = tmp_path / "moved.json"
        proc = _run(
            tmp_path, shared_data, server.base_url, "c3", f"--mtbench-baseline={base}",
            "--mtbench-judge-drift=30", f"--mtbench-report={moved}",
        )  # fmt: skip
        calls = [b for b in server.requests[before:] if b.get("max_tokens") != 1]  # not the preflight's
        assert len(calls) == 40 + 30  # answers again, judgments reused, 30 re-judged
    assert proc.returncode == 0, proc.stdout[-2000:]
    report = json.loads(moved.read_text())["baseline"]
    assert report["judge_drift"]["changed"] and report["judge_drift"]["mean_difference"] > 1
    assert {(row["verdict"], row["reason"]) for row in report["comparisons"]} == {
        ("inconclusive", "judge changed")
    }
    assert "JUDGE CHANGED" in proc.stdout
    strict = _run(
        tmp_path, shared_data, server.base_url, "c3", f"--mtbench-baseline={base}", "--mtbench-strict",
        "--mtbench-offline", "-k", "coding",
    )  # fmt: skip
    assert strict.returncode == 0  # offline: no drift check asked for, nothing inconclusive
