"""Where the files the project ships (questions/, judge_prompts/) live, installed or in a checkout."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def shipped_dir(name: str) -> Path:
    """`questions` or `judge_prompts`: inside the wheel, else the repository root (editable install)."""
    for candidate in (_PACKAGE / "_shipped" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"pytest-mtbench is installed without its {name}/ directory")
