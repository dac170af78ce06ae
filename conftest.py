"""Fixtures for this repository's own tests (not shipped with the plugin)."""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
def _clean_environment(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's own settings or key must never leak into a test run (nor a test reach OpenAI).
    # Only for this repo's test functions: a benchmark run started inside the checkout (the README's
    # run/ directory) keeps its environment, OPENAI_API_KEY included.
    if not isinstance(request.node, pytest.Function):
        return
    for name in ("MTBENCH_MODEL", "MTBENCH_JUDGE", "MTBENCH_DATA", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    # xdist workers share the models; the lock makes one build each model while the other waits for it.
    with lock_path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="session", autouse=True)
def _share_cores_between_workers(worker_id: str) -> None:
    # Under xdist each worker would start one torch thread per core; oversubscribed cores slow training.
    if worker_id != "master" and "torch" in sys.modules:
        import torch

        workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


@pytest.fixture(scope="session")
def models_root(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """A directory shared by all xdist workers of this run, for models built once per run."""
    base = tmp_path_factory.getbasetemp()
    root = (base if worker_id == "master" else base.parent) / "tiny-models"
    root.mkdir(exist_ok=True)
    return root


@pytest.fixture(scope="session")
def build_shared(models_root: Path) -> Callable[[Callable[[Path], Path], str], Path]:
    """Build a tiny model once per run (under a file lock, so xdist workers do not both train it)."""

    def build(builder: Callable[[Path], Path], name: str) -> Path:
        with _locked(models_root / f"{name.replace('/', '-')}.lock"):
            return builder(models_root / name)

    return build


@pytest.fixture(scope="session")
def chat_dir(build_shared) -> Path:
    from pytest_mtbench.testing import tiny_model

    return build_shared(tiny_model.build_tiny_chat_model, "chat")


@pytest.fixture(scope="session")
def judge_dir(build_shared) -> Path:
    from pytest_mtbench.testing import tiny_model

    return build_shared(tiny_model.build_tiny_judge, "judge-7")


@pytest.fixture(scope="session")
def silent_judge_dir(build_shared) -> Path:
    from pytest_mtbench.testing import tiny_model

    return build_shared(lambda p: tiny_model.build_tiny_judge(p, with_rating=False), "judge-silent")
