"""Report writers, chosen by the output path's suffix (one module per format)."""

from __future__ import annotations

# suffix -> module in this package that writes it (imported only when that format is asked for)
WRITERS: dict[str, str] = {
    ".json": "pytest_mtbench.reports.json_report",
    ".md": "pytest_mtbench.reports.markdown",
}


def known_suffixes() -> tuple[str, ...]:
    """The report suffixes `--mtbench-report` accepts."""
    return tuple(WRITERS)
