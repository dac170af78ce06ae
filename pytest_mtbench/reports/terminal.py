"""The score table shown at the end of a run (plain text lines, no pytest)."""

from __future__ import annotations

from ..records import RunReport


def _num(value: float | None, width: int) -> str:
    return f"{value:>{width}.2f}" if value is not None else f"{'-':>{width}}"


def title(report: RunReport) -> str:
    """The table's title: what was judged, by which judge spec, and which model the endpoint served."""
    run = report.run
    served = f" (served: {', '.join(run.judge_served)})" if run.judge_served else ""
    return f"MT-Bench: {run.model} judged by {run.judge}{served}"


def render_table(report: RunReport) -> list[str]:
    """The score table, one string per line."""
    gates = {g.name: g for g in report.gates if g.kind == "threshold"}
    categories = report.categories
    width = max([len(name) for name in categories] + [len("category"), len("overall")])
    columns = f"{'scored':>7}  {'turn 1':>6}  {'turn 2':>6}  {'score':>6}  {'min':>5}  verdict"
    header = f"{'category':<{width}}  {columns}"
    lines = [header, "-" * len(header)]
    for row in [*categories.values(), report.overall_detail]:
        gate = gates.get(row.name)
        threshold = f"{gate.threshold:>5g}" if gate and gate.threshold is not None else f"{'-':>5}"
        verdict = ("PASS" if gate.passed else "FAIL") if gate else ""
        notes = [
            f"{n} {what}" for n, what in ((row.n_unscored, "unscored"), (row.n_truncated, "truncated")) if n
        ]
        if notes:
            verdict = f"{verdict} ({', '.join(notes)})".strip()
        if row is report.overall_detail:
            lines.append("-" * len(header))
        scored = f"{row.n_scored}/{row.n_scored + row.n_unscored}"
        lines.append(
            f"{row.name:<{width}}  {scored:>7}  {_num(row.turn_1, 6)}  {_num(row.turn_2, 6)}  "
            f"{_num(row.score, 6)}  {threshold}  {verdict}".rstrip()
        )
    for name, phase in report.run.phases.items():
        rate = phase.get("tokens_per_second")
        lines.append(
            f"{name}: {phase['calls']} calls, {phase['cached']} cached, {phase['tokens']} tokens in "
            f"{phase['seconds']:.1f} s" + (f" ({rate:.1f} tokens/s)" if rate else "")
        )
    if report.run.wall_seconds is not None:
        lines.append(f"wall time: {report.run.wall_seconds:.1f} s")
    return lines
