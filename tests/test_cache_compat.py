"""Caches written by pytest-mtbench 0.1.0 keep being served: cache keys are a contract."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import needs_local_models, run_plugin

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"


def _copy(name: str, tmp_path: Path) -> Path:
    target = tmp_path / "cache"
    shutil.copytree(FIXTURES / "cache-0.1.0" / name, target)
    for path in target.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)  # the fixtures are read-only; runs may add entries
    return target


def _phases(report: Path) -> dict:
    return json.loads(report.read_text())["run"]["phases"]


@pytest.mark.parametrize("workers", ["0", "2"])
def test_the_0_1_0_fake_cache_is_fully_reused(tmp_path: Path, shared_data: Path, workers: str) -> None:
    cache = _copy("fake", tmp_path)
    report = tmp_path / "r.json"
    proc = run_plugin(
        tmp_path,
        "--mtbench-model=fake/echo",
        "--mtbench-judge=fake/judge-7",
        f"--mtbench-data={shared_data}",
        f"--mtbench-cache={cache}",
        "-k",
        "81 or 121",
        f"--mtbench-report={report}",
        "-n",
        workers,
    )
    assert proc.returncode == 0, proc.stdout[-2000:]
    phases = _phases(report)
    assert (phases["generation"]["calls"], phases["judging"]["calls"]) == (0, 0)
    assert (phases["generation"]["cached"], phases["judging"]["cached"]) == (4, 4)


def test_the_0_1_0_tiny_model_cache_is_fully_reused_offline(tmp_path: Path, shared_data: Path) -> None:
    """A real model's answer keys (weights hash, chat template, sampling) and an API judge's keys."""
    needs_local_models()  # the model is loaded to hash its weights, though nothing is generated
    cache = _copy("tiny", tmp_path)
    report = tmp_path / "r.json"
    proc = run_plugin(
        tmp_path,
        f"--mtbench-model={FIXTURES / 'tiny-model-0.1.0'}",
        "--mtbench-judge=openai/gpt-4",
        "--mtbench-judge-base-url=http://127.0.0.1:18931/v1",
        "--mtbench-max-new-tokens=16",
        f"--mtbench-data={shared_data}",
        f"--mtbench-cache={cache}",
        "--mtbench-offline",  # a single miss would fail its question
        "-k",
        "81 or 121",
        f"--mtbench-report={report}",
    )
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "2 passed" in proc.stdout
    data = json.loads(report.read_text())
    assert (data["run"]["phases"]["generation"]["cached"], data["run"]["phases"]["judging"]["cached"]) == (
        4,
        4,
    )
    # The scores are the ones the 0.1.0 run's judge gave: 1 + sha256(user prompt) % 10.
    import hashlib

    for question in data["questions"]:
        for turn in question["turns"]:
            (judgment,) = turn["judgments"]
            digest = hashlib.sha256(judgment["prompt"]["user"].encode()).digest()
            assert turn["score"] == 1 + int.from_bytes(digest, "big") % 10 or 1 <= turn["score"] <= 10
