"""The run's records: one versioned JSON layout that round-trips exactly and refuses what it cannot read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_mtbench.records import SCHEMA_VERSION, ReportError, RunReport


@pytest.fixture(scope="module")
def full_report(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """A full 80-question run's JSON report (fake candidate, varied judge, a threshold gate)."""
    from conftest import run_plugin

    where = tmp_path_factory.mktemp("full")
    path = where / "report.json"
    proc = run_plugin(
        where,
        "--mtbench-model=fake/echo",
        "--mtbench-judge=fake/judge-varied",
        f"--mtbench-data={shared_data}",
        "--mtbench-no-cache",
        "--mtbench-threshold=overall=3",
        f"--mtbench-report={path}",
    )
    assert proc.returncode == 0, proc.stdout[-2000:]
    return path


def test_a_full_report_round_trips_exactly(full_report: Path) -> None:
    text = full_report.read_text(encoding="utf-8")
    report = RunReport.from_json(text)
    assert report.to_json() == text
    assert report.schema_version == SCHEMA_VERSION and len(report.questions) == 80
    assert len(report.gates) == 1 and report.gates[0].kind == "threshold"
    turns = [t for q in report.questions for t in q.turns]
    assert len(turns) == 160 and all(len(t.judgments) == 1 for t in turns)
    assert len({t.score for t in turns}) >= 8
    data = json.loads(text)
    assert data["kind"] == "pytest-mtbench report" and data["overall"] == report.overall


def test_the_layout_keeps_the_field_names_readers_use(full_report: Path) -> None:
    data = json.loads(full_report.read_text())
    assert set(data) == {
        "kind", "schema_version", "run", "overall", "overall_detail", "categories", "gates", "baseline",
        "judge_noise", "calibration", "models", "pairwise", "fastchat", "questions",
    }  # fmt: skip
    assert {"score", "turn_1", "turn_2", "n_scored", "n_unscored", "threshold"} <= set(
        data["categories"]["coding"]
    )
    turn = data["questions"][0]["turns"][0]
    assert {
        "turn",
        "question",
        "answer",
        "temperature",
        "answer_call",
        "judgments",
        "score",
        "scored_by",
    } <= set(turn)
    judgment = turn["judgments"][0]
    assert {"prompt", "text", "score", "scored_by", "call", "repeat", "unscored_reason"} <= set(judgment)
    assert set(judgment["prompt"]) == {"name", "system", "user"}
    assert {"cached", "tokens", "finish_reason", "truncated", "served_model", "system_fingerprint"} <= set(
        judgment["call"]
    )
    assert data["run"]["phases"]["generation"]["calls"] == 160


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"run": {', "not valid JSON"),
        ("[1, 2, 3]", "not a pytest-mtbench report"),
        ('{"kind": "something else"}', "not a pytest-mtbench report"),
        (
            json.dumps({"kind": "pytest-mtbench report", "schema_version": SCHEMA_VERSION + 1}),
            f"report schema version {SCHEMA_VERSION + 1} is not the one this pytest-mtbench reads",
        ),
        (json.dumps({"kind": "pytest-mtbench report", "schema_version": SCHEMA_VERSION}), "damaged report"),
    ],
)
def test_what_is_not_a_readable_report_is_one_clear_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ReportError) as info:
        RunReport.read(path)
    text = str(info.value)
    assert message in text and str(path) in text and "\n" not in text


def test_an_unknown_field_is_refused_not_dropped(full_report: Path) -> None:
    data = json.loads(full_report.read_text())
    data["questions"][0]["turns"][0]["judgments"][0]["call"]["surprise"] = 1
    with pytest.raises(ReportError, match="unknown fields"):
        RunReport.from_json(json.dumps(data))


def test_unreadable_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="cannot read the report"):
        RunReport.read(tmp_path / "missing.json")
    (tmp_path / "latin1.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(ReportError, match="not UTF-8"):
        RunReport.read(tmp_path / "latin1.json")
