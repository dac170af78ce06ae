"""Fixtures for this repository's own tests (not shipped with the plugin)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "mt_bench"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The official MT-Bench files beside the checkout (never copied into the repo)."""
    if not (SHARED_DATA / "question.jsonl").is_file():
        pytest.fail(
            f"the official data is expected at {SHARED_DATA} (../shared/mt_bench beside the checkout)"
        )
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's own settings or key must never leak into a test run (nor a test reach OpenAI).
    for name in ("MTBENCH_MODEL", "MTBENCH_JUDGE", "MTBENCH_DATA", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
