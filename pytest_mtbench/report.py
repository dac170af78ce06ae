"""Report formats over plain data: the terminal score table and the JSON report (no pytest)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .stats import CategoryScore, GateResult


def _num(value: float | None, width: int) -> str:
    return f"{value:>{width}.2f}" if value is not None else f"{'-':>{width}}"


def throughput(phases: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Add tokens/s to per-phase totals ({calls, cached, tokens, seconds})."""
    out = {}
    for name, phase in phases.items():
        seconds = float(phase.get("seconds", 0.0))
        tokens = int(phase.get("tokens", 0))
        out[name] = {**phase, "tokens_per_second": (tokens / seconds) if seconds > 0 else None}
    return out


def render_table(
    categories: Mapping[str, CategoryScore],
    overall: CategoryScore,
    gates: list[GateResult],
    phases: Mapping[str, Mapping[str, Any]] | None = None,
    wall_seconds: float | None = None,
) -> list[str]:
    """The score table shown at the end of a run, one string per line."""
    gate_by_name = {g.name: g for g in gates}
    width = max([len(name) for name in categories] + [len("category"), len("overall")])
    columns = f"{'scored':>7}  {'turn 1':>6}  {'turn 2':>6}  {'score':>6}  {'min':>5}  verdict"
    header = f"{'category':<{width}}  {columns}"
    lines = [header, "-" * len(header)]
    for row in [*categories.values(), overall]:
        gate = gate_by_name.get(row.name)
        threshold = f"{gate.threshold:>5g}" if gate else f"{'-':>5}"
        verdict = ("PASS" if gate.passed else "FAIL") if gate else ""
        if row.n_unscored:
            verdict = f"{verdict} ({row.n_unscored} unscored)".strip()
        if row is overall:
            lines.append("-" * len(header))
        scored = f"{row.n_scored}/{row.n_scored + row.n_unscored}"
        lines.append(
            f"{row.name:<{width}}  {scored:>7}  {_num(row.turn_1, 6)}  {_num(row.turn_2, 6)}  "
            f"{_num(row.score, 6)}  {threshold}  {verdict}".rstrip()
        )
    for name, phase in throughput(phases or {}).items():
        rate = phase["tokens_per_second"]
        lines.append(
            f"{name}: {phase['calls']} calls, {phase['cached']} cached, {phase['tokens']} tokens in "
            f"{phase['seconds']:.1f} s" + (f" ({rate:.1f} tokens/s)" if rate else "")
        )
    if wall_seconds is not None:
        lines.append(f"wall time: {wall_seconds:.1f} s")
    return lines


def write_json(path: str | Path, report: Mapping[str, Any]) -> Path:
    """Write the JSON report atomically (a crash never leaves half a report)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2, ensure_ascii=False)
        handle.write("\n")
    os.replace(tmp, path)
    return path
