"""The JSON report: the run's records in their one versioned layout (see records.py, README)."""

from __future__ import annotations

from pathlib import Path

from ..records import RunReport
from . import write_text_atomically


def write(report: RunReport, path: Path) -> None:
    write_text_atomically(path, report.to_json())
