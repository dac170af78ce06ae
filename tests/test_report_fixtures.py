"""Reports already written keep loading: the committed reports of this version (tests/data/reports) and
those of 0.1.0 are read, written back byte for byte, rendered in every output, and accepted as a baseline."""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree

import pytest

from conftest import run_plugin
from pytest_mtbench.mlflow_log import mlflow_payload
from pytest_mtbench.records import RunReport
from pytest_mtbench.reports import html, markdown, radar, terminal

REPORTS = Path(__file__).resolve().parent / "data" / "reports"
OLD_REPORTS = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "report-0.1.0"
COMMITTED = sorted(REPORTS.glob("*.json"))
SVG = "{http://www.w3.org/2000/svg}"

# What each committed report's table shows beyond the score rows: one line (start) per section it holds.
SECTION_LINES = {
    "single": [],
    "with-baseline": ["baseline single.json: margin 0.5", "  judge drift: 2 baseline turns re-judged"],
    "judge-repeats": ["judge noise: 3 judgments per turn"],
    "two-models": ["score per model:", "FastChat files in export: 2 answer files, 24 judgments"],
    "imported": ["imported judgments: 24 read, 12 reused"],
    "calibrated": ["gpt-4-0613 scale (calibration calibration.json: 30 published turns"],
    "pairwise": [
        "pairwise against every other model",
        "ratings (Bradley-Terry",
        "FastChat files in export-pair",
    ],
}


def test_every_committed_report_is_covered() -> None:
    assert {p.stem for p in COMMITTED} == set(SECTION_LINES)


@pytest.mark.parametrize("path", COMMITTED, ids=[p.stem for p in COMMITTED])
def test_a_committed_report_reads_back_byte_for_byte_and_renders_everywhere(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    report = RunReport.read(path)
    assert report.to_json() == text
    data = json.loads(text)

    lines = [terminal.title(report), *terminal.render_table(report)]
    assert lines[0] == f"MT-Bench: {data['run']['model']} judged by {data['run']['judge']}" + (
        f" (served: {', '.join(data['run']['judge_served'])})" if data["run"]["judge_served"] else ""
    )
    for start in SECTION_LINES[path.stem]:
        assert any(line.startswith(start) for line in lines), (start, lines)
    for phase, totals in data["run"]["phases"].items():
        assert any(
            line.startswith(f"{phase}: {totals['calls']} calls, {totals['cached']} cached") for line in lines
        )

    page = html.render([report])
    for record in data["questions"]:
        assert f'id="q{record["question_id"]}"' in page
    chart = ElementTree.fromstring(radar.svg(radar.radar_axes([report]), radar.radar_series([report])))
    series = [g.get("data-label") for g in chart.iter(f"{SVG}g") if g.get("class") == "series"]
    assert series == (["baseline", data["run"]["model"]] if data["baseline"] else [data["run"]["model"]])

    text_md = markdown.render(report)
    payload = mlflow_payload(report)
    if data["pairwise"] is None:
        overall = next(line for line in lines if line.startswith("overall"))
        assert f"{data['overall']:.2f}" in overall
        assert f"| **overall** | {data['overall_detail']['n_scored']}/" in text_md
        assert payload.metrics["score/overall"] == data["overall"]
    else:
        for spec, rows in data["pairwise"]["win_rates"].items():
            assert f"  {spec}:" in lines
            overall_row = rows[-1]
            assert overall_row["group"] == "overall"
            assert any(
                line.split()[:4] == ["overall", *(str(overall_row[k]) for k in ("wins", "ties", "losses"))]
                for line in lines
            )
    assert payload.tags["mtbench.gates"] == (
        "FAIL" if any(not g["passed"] for g in data["gates"]) else "PASS"
    )
    for name in ("calls", "cached"):
        assert payload.metrics[f"{name}/judging"] == data["run"]["phases"]["judging"][name]


def test_the_sections_are_read_as_records() -> None:
    baseline = RunReport.read(REPORTS / "with-baseline.json").baseline
    assert baseline is not None and baseline.judge_drift is not None
    assert [c.name for c in baseline.comparisons] == ["writing", "math", "coding", "support", "overall"]
    assert baseline.judge_drift.n == 2 and baseline.judge_drift.judge_sd_source == "default"
    pairwise = RunReport.read(REPORTS / "pairwise.json").pairwise
    assert pairwise is not None and pairwise.ratings is not None
    assert [r.model for r in pairwise.ratings.ratings] == ["openai/gamma", "openai/beta", "openai/alpha"]
    assert len(pairwise.results) == pairwise.n_pairs == 18
    assert pairwise.results[0].g1.prompt.name == "pair-v2"
    noise = RunReport.read(REPORTS / "judge-repeats.json").judge_noise
    assert noise is not None and noise.repeats == 3
    two = RunReport.read(REPORTS / "two-models.json")
    assert two.models is not None and list(two.models) == ["fake/echo", "fake/silent"]
    assert two.fastchat is not None and two.fastchat.exported is not None and two.fastchat.imported is None
    assert two.run.phases["judging"].calls == 24 and two.run.judge_call.max_tokens == 2048
    calibrated = RunReport.read(REPORTS / "calibrated.json").calibration
    assert calibrated is not None and calibrated.agreement is not None and calibrated.turns == 30


def test_several_committed_reports_render_side_by_side() -> None:
    reports = [RunReport.read(REPORTS / f"{name}.json") for name in ("single", "two-models", "judge-repeats")]
    page = html.render(reports)
    assert page.count('<g class="series"') == 3 and "Scores by model" in page


def test_a_key_a_run_may_leave_out_stays_out() -> None:
    data = json.loads((REPORTS / "with-baseline.json").read_text(encoding="utf-8"))
    data["baseline"]["judge_drift"] = {
        "n": 0,
        "changed": False,
        "reason": "no re-judged turn could be scored",
    }
    data["baseline"]["comparisons"][0]["reason"] = "judge changed"
    # A thinking model's run: the writer puts reasoning_tokens after seconds.
    phase = data["run"]["phases"]["generation"]
    data["run"]["phases"]["generation"] = {
        **{k: phase[k] for k in ("calls", "cached", "tokens", "seconds")},
        "reasoning_tokens": 40,
        **{k: phase[k] for k in ("wall_seconds", "tokens_per_second")},
    }
    data["run"]["judge_call"] = {"style": "reasoning", "max_completion_tokens": 4096}
    data["run"]["sampling"] = {}
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    report = RunReport.from_json(text)
    assert report.to_json() == text
    assert report.run.judge_call.call_style == "reasoning" and report.run.sampling.seed is None
    assert report.baseline is not None and report.baseline.judge_drift is not None
    assert report.baseline.judge_drift.mean_difference is None


@pytest.mark.skipif(not OLD_REPORTS.is_dir(), reason=f"the 0.1.0 reports are not at {OLD_REPORTS}")
@pytest.mark.parametrize("name", ["single", "with-baseline", "pairwise"])
def test_a_0_1_0_report_loads_and_renders(name: str) -> None:
    report = RunReport.read(OLD_REPORTS / f"{name}.json")
    assert report.run.plugin_version == "0.1.0"
    assert terminal.render_table(report) and markdown.render(report) and html.render([report])
    again = RunReport.from_json(report.to_json())
    assert again.to_json() == report.to_json()


def test_a_committed_report_is_accepted_as_a_baseline(tmp_path: Path, shared_data: Path) -> None:
    repo = Path(__file__).resolve().parents[1]
    proc = run_plugin(
        tmp_path,
        "--mtbench-model=fake/echo",
        "--mtbench-judge=fake/judge-varied",
        f"--mtbench-data={shared_data}",
        f"--mtbench-questions={repo / 'questions' / 'example-support.jsonl'}",
        f"--mtbench-judge-prompts={repo / 'judge_prompts' / 'rubric-v1.jsonl'}",
        "--mtbench-no-cache",
        f"--mtbench-baseline={REPORTS / 'single.json'}",
        "--mtbench-report=r.json",
    )
    assert proc.returncode == 0, proc.stdout[-2000:]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["baseline"]["reused_judgments"] == 12 and report["run"]["phases"]["judging"]["calls"] == 0
    assert {c["verdict"] for c in report["baseline"]["comparisons"]} == {"inconclusive"}


@pytest.mark.skipif(not OLD_REPORTS.is_dir(), reason=f"the 0.1.0 reports are not at {OLD_REPORTS}")
def test_a_0_1_0_report_is_accepted_as_a_baseline(tmp_path: Path, shared_data: Path) -> None:
    proc = run_plugin(
        tmp_path,
        "--mtbench-model=fake/echo",
        "--mtbench-judge=fake/judge-varied",
        f"--mtbench-data={shared_data}",
        "--mtbench-no-cache",
        "-k",
        "81 or 121 or 131",
        f"--mtbench-baseline={OLD_REPORTS / 'single.json'}",
        "--mtbench-report=r.json",
    )
    assert proc.returncode == 0, proc.stdout[-2000:]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["baseline"]["reused_judgments"] == 6 and report["run"]["phases"]["judging"]["calls"] == 0
