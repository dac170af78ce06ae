"""Report writers over one `RunReport`, chosen by the output path's suffix (one module per format).

To add a format: write a module here with `write(report: RunReport, path: Path) -> None` and add its
suffix to WRITERS. The terminal table (terminal.py) is not a file format; it is always shown.
"""

from __future__ import annotations

import importlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from ..records import RunReport

# suffix -> module in this package that writes it (imported only when that format is asked for)
WRITERS: dict[str, str] = {
    ".json": "pytest_mtbench.reports.json_report",
    ".md": "pytest_mtbench.reports.markdown",
    ".html": "pytest_mtbench.reports.html",
    ".svg": "pytest_mtbench.reports.radar",  # the radar chart alone
    ".png": "pytest_mtbench.reports.radar",  # the radar chart alone (needs the plot extra)
}


def known_suffixes() -> tuple[str, ...]:
    """The report suffixes `--mtbench-report` accepts."""
    return tuple(WRITERS)


def write_report(report: RunReport, path: str | Path) -> Path:
    """Write `report` in the format its suffix names."""
    path = Path(path)
    module = importlib.import_module(WRITERS[path.suffix.lower()])
    module.write(report, path)
    return path


def write_reports(report: RunReport, paths: Iterable[str | Path]) -> list[str]:
    """Write every report; returns one message per report that could not be written (none lost silently)."""
    problems = []
    for path in paths:
        try:
            write_report(report, path)
        except OSError as exc:
            problems.append(f"cannot write the report {path}: {exc.strerror or exc}")
    return problems


def write_text_atomically(path: Path, text: str) -> None:
    """Write a file so that a crash never leaves half of it, and no temporary file stays behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # a report is shared like any file (mkstemp would leave it 0600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
