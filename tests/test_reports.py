"""Report writers: Markdown (and GitHub's step summary) read back, several formats in one run."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_plugin
from pytest_mtbench.questions import CATEGORIES


def _markdown_rows(text: str) -> dict[str, list[str]]:
    """Table rows of a Markdown text, by their first cell (bold stripped)."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows.setdefault(cells[0].strip("*"), cells[1:])
    return rows


def _run(tmp_path: Path, shared_data: Path, *extra: str, env: dict | None = None):
    return run_plugin(
        tmp_path,
        "--mtbench-model=fake/echo",
        "--mtbench-judge=fake/judge-varied",
        f"--mtbench-data={shared_data}",
        f"--mtbench-cache={tmp_path / 'cache'}",
        *extra,
        env=env,
    )


def test_markdown_and_json_in_one_run_agree(tmp_path: Path, shared_data: Path) -> None:
    md, js = tmp_path / "out" / "report.md", tmp_path / "report.json"
    proc = _run(
        tmp_path,
        shared_data,
        f"--mtbench-report={md}",
        f"--mtbench-report={js}",
        "--mtbench-threshold=overall=3",
        "--mtbench-threshold=coding=9.5",
    )
    assert proc.returncode == 1, proc.stdout[-2000:]  # the coding gate fails
    report = json.loads(js.read_text())
    rows = _markdown_rows(md.read_text())
    assert rows["category"][:4] == ["scored", "turn 1", "turn 2", "score"]
    for name in CATEGORIES:
        summary = report["categories"][name]
        assert rows[name][0] == "20/20"
        assert rows[name][3] == f"{summary['score']:.2f}"
        assert rows[name][4] == f"{summary['ci_low']:.2f} to {summary['ci_high']:.2f}"
    assert rows["overall"][0] == "160/160" and rows["overall"][3] == f"{report['overall']:.2f}"
    assert rows["coding"][-2:] == ["9.5", "FAIL"] and rows["overall"][-2:] == ["3", "PASS"]
    text = md.read_text()
    assert "**Gates:** 1 passed, 1 failed" in text
    assert "- FAIL threshold `coding`:" in text and "- PASS threshold `overall`:" in text
    assert f"report: {md}" in proc.stdout and f"report: {js}" in proc.stdout
    assert not list(tmp_path.rglob("*.tmp"))


def test_github_step_summary_is_appended_not_overwritten(tmp_path: Path, shared_data: Path) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("## An earlier step\n")
    env = {"GITHUB_STEP_SUMMARY": str(summary)}
    for _ in range(2):
        assert _run(tmp_path, shared_data, "-k", "coding", env=env).returncode == 0
    text = summary.read_text()
    assert text.startswith("## An earlier step\n")
    assert text.count("### MT-Bench: fake/echo judged by fake/judge-varied") == 2
    rows = _markdown_rows(text)
    assert rows["coding"][0] == "20/20" and rows["overall"][0] == "20/20"


def test_a_report_that_cannot_be_written_leaves_the_table_and_the_exit_code(
    tmp_path: Path, shared_data: Path
) -> None:
    # The report's directory can be created at start-up; during the run a file takes its name.
    (tmp_path / "conftest.py").write_text(
        "from pathlib import Path\n"
        "def pytest_runtest_setup(item):\n"
        "    Path('out').write_text('not a directory')\n"
    )
    proc = _run(
        tmp_path, shared_data, "-k", "coding", "--mtbench-report=out/r.json", "--mtbench-threshold=coding=9.9"
    )
    assert proc.returncode == 1, proc.stdout[-2000:]  # the failed gate decides, not the lost report
    assert "coding " in proc.stdout and "overall " in proc.stdout  # the table is there
    assert "mtbench: cannot write the report out/r.json" in proc.stdout
    assert "INTERNALERROR" not in proc.stdout + proc.stderr and "Traceback" not in proc.stdout
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob(".r.json*"))
