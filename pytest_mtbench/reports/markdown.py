"""The Markdown report: the score table and the gates, for PR comments and GitHub's step summary."""

from __future__ import annotations

from pathlib import Path

from ..records import BaselineSummary, CalibratedScores, CategorySummary, RunReport
from . import write_text_atomically
from .terminal import title


def _num(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "-"


def _cell(text: str) -> str:
    # A pipe or a newline in a name would break the table row.
    return " ".join(text.replace("|", "\\|").split())


def _row(row: CategorySummary, verdict: str, bold: bool = False) -> str:
    name = f"**{_cell(row.name)}**" if bold else _cell(row.name)
    interval = f"{_num(row.ci_low)} to {_num(row.ci_high)}" if row.ci_low is not None else "-"
    threshold = f"{row.threshold:g}" if row.threshold is not None else "-"
    notes = row.notes()
    cells = [
        name,
        f"{row.n_scored}/{row.n_scored + row.n_unscored}",
        _num(row.turn_1),
        _num(row.turn_2),
        _num(row.score),
        interval,
        threshold,
        " ".join([verdict, *(f"({n})" for n in notes)]).strip(),
    ]
    return "| " + " | ".join(cells) + " |"


def render(report: RunReport) -> str:
    """The report as Markdown text."""
    gates = {g.name: g for g in report.gates if g.kind == "threshold"}

    def verdict(name: str) -> str:
        gate = gates.get(name)
        return ("PASS" if gate.passed else "FAIL") if gate else ""

    lines = [
        f"### {_cell(title(report))}",
        "",
        "| category | scored | turn 1 | turn 2 | score | interval | min | verdict |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    lines += [_row(row, verdict(row.name)) for row in report.categories.values()]
    lines.append(_row(report.overall_detail, verdict(report.overall_detail.name), bold=True))
    if report.baseline is not None:
        lines += ["", baseline_markdown(report.baseline).rstrip("\n")]
    if report.calibration is not None:
        lines += ["", calibrated_markdown(report.calibration).rstrip("\n")]
    if report.gates:
        failed = [g for g in report.gates if not g.passed]
        lines += ["", f"**Gates:** {len(report.gates) - len(failed)} passed, {len(failed)} failed", ""]
        lines += [
            f"- {'PASS' if g.passed else 'FAIL'} {g.kind} `{g.name}`: {_cell(g.message)}"
            for g in report.gates
        ]
    return "\n".join(lines) + "\n"


def _signed(value: float | None) -> str:
    return f"{value:+.2f}" if value is not None else "-"


def baseline_markdown(baseline: BaselineSummary) -> str:
    """The comparison with the baseline as a Markdown table."""
    lines = [
        f"**Baseline** `{_cell(str(baseline.path))}`: margin {baseline.margin:g}, confidence "
        f"{baseline.confidence:g} (Holm-adjusted); {baseline.reused_judgments} judgments of unchanged "
        "answers reused.",
        "",
    ]
    if baseline.mismatches:
        lines += [f"Compared despite: {_cell('; '.join(baseline.mismatches))}.", ""]
    lines += [
        "| category | before | now | change | interval | verdict |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for row in baseline.comparisons:
        interval = f"{_signed(row.low)} to {_signed(row.high)}"
        lines.append(
            f"| {_cell(row.name)} | {_num(row.baseline_score)} | {_num(row.new_score)} | "
            f"{_signed(row.difference)} | {interval} | {row.verdict} |"
        )
    return "\n".join(lines) + "\n"


def write(report: RunReport, path: Path) -> None:
    write_text_atomically(path, render(report))


def append_step_summary(report: RunReport, path: str | Path) -> None:
    """Append the Markdown table to GitHub's step summary file (other steps' summaries are kept)."""
    with Path(path).open("a", encoding="utf-8") as handle:
        handle.write(render(report) + "\n")


def calibrated_markdown(calibration: CalibratedScores) -> str:
    """The run's scores on the GPT-4-0613 scale (the interval is the uncertainty the mapping adds)."""
    pearson = calibration.agreement.pearson if calibration.agreement else None
    lines = [
        f"**{_cell(calibration.target)} scale** (calibration `{_cell(str(calibration.path))}`: "
        f"{calibration.turns} published turns"
        + (f", Pearson {pearson:.2f}" if pearson is not None else "")
        + f"; interval: the mapping's, {calibration.confidence:g})",
        "",
        "| category | raw | GPT-4 scale | interval |",
        "|---|---:|---:|---:|",
    ]
    rows = {**calibration.categories, "overall": calibration.overall}
    for name, row in rows.items():
        interval = f"{_num(row.low)} to {_num(row.high)}" if row.low is not None else "-"
        lines.append(f"| {_cell(name)} | {_num(row.raw)} | {_num(row.calibrated)} | {interval} |")
    return "\n".join(lines) + "\n"
