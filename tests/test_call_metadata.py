"""What the endpoint says about each call is recorded: truncation, served model, fingerprint, usage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import requires, run_plugin
from pytest_mtbench.testing.judge_server import FakeOpenAIServer


def _reply(body: dict[str, Any]) -> str:
    if body["model"] == "judge":
        return "Short judgment.\n\nRating: [[6]]"
    return "A candidate answer that the server says was cut off"


@requires("openai")
def test_cut_off_replies_are_marked_and_counted_and_the_served_judge_is_recorded(
    tmp_path: Path, shared_data: Path
) -> None:
    with FakeOpenAIServer(
        reply=_reply, finish_reason="length", served_model="judge-2026-01-01", system_fingerprint="fp_abc"
    ) as server:
        report_path = tmp_path / "r.json"
        proc = run_plugin(
            tmp_path,
            "--mtbench-model=openai/candidate",
            f"--mtbench-model-base-url={server.base_url}",
            "--mtbench-judge=openai/judge",
            f"--mtbench-judge-base-url={server.base_url}",
            f"--mtbench-data={shared_data}",
            "--mtbench-no-cache",
            "-k",
            "81 or 82",
            f"--mtbench-report={report_path}",
        )
    assert proc.returncode == 0, proc.stdout[-2000:]
    report = json.loads(report_path.read_text())
    turns = [t for q in report["questions"] for t in q["turns"]]
    assert len(turns) == 4
    for turn in turns:
        assert turn["answer_call"]["truncated"] and turn["answer_call"]["finish_reason"] == "length"
        (judgment,) = turn["judgments"]
        assert judgment["call"]["truncated"] and judgment["score"] == 6  # a readable rating still counts
        assert judgment["call"]["served_model"] == "judge-2026-01-01"
        assert judgment["call"]["system_fingerprint"] == "fp_abc"
        assert judgment["call"]["prompt_tokens"] > 0 and judgment["call"]["tokens"] > 0
    assert report["categories"]["writing"]["n_truncated"] == 8  # 4 answers + 4 judgments
    assert report["run"]["judge_served"] == ["judge-2026-01-01"]
    assert "judged by openai/judge (served: judge-2026-01-01)" in proc.stdout
    assert "(8 truncated)" in next(line for line in proc.stdout.splitlines() if line.startswith("writing "))


def test_a_local_model_stopped_by_max_new_tokens_is_marked_truncated(
    tmp_path: Path, shared_data: Path, chat_dir: Path
) -> None:
    pytest.importorskip("torch")
    report_path = tmp_path / "r.json"
    proc = run_plugin(
        tmp_path,
        f"--mtbench-model={chat_dir}",
        "--mtbench-judge=fake/judge-7",
        f"--mtbench-data={shared_data}",
        "--mtbench-no-cache",
        "--mtbench-max-new-tokens=3",
        "-k",
        "coding",
        f"--mtbench-report={report_path}",
    )
    assert proc.returncode == 0, proc.stdout[-2000:]
    report = json.loads(report_path.read_text())
    calls = [t["answer_call"] for q in report["questions"] for t in q["turns"]]
    cut = [c for c in calls if c["truncated"]]
    assert cut and all(c["finish_reason"] == "length" and c["tokens"] == 3 for c in cut)
    assert all(c["finish_reason"] == "stop" for c in calls if not c["truncated"])
    assert report["categories"]["coding"]["n_truncated"] == len(cut)
    assert f"({len(cut)} truncated)" in next(
        line for line in proc.stdout.splitlines() if line.startswith("coding ")
    )
