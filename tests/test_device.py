"""--mtbench-device: which torch device a local model runs on, per xdist worker (no GPU needed)."""

from __future__ import annotations

import pytest

from pytest_mtbench.backends.base import BackendError, BackendOptions
from pytest_mtbench.backends.hf import select_device, worker_index


@pytest.mark.parametrize(
    ("requested", "worker", "gpus", "device"),
    [
        ("auto", 0, 0, "cpu"),  # no GPU: auto is the CPU
        ("auto", 5, 0, "cpu"),
        ("cpu", 3, 8, "cpu"),  # cpu wins even with GPUs
        ("auto", 0, 8, "cuda:0"),
        ("auto", 7, 8, "cuda:7"),  # -n 8 on an 8-GPU box: one GPU per worker
        ("cuda", 3, 8, "cuda:3"),
        ("cuda", 9, 8, "cuda:1"),  # more workers than GPUs: modulo
        ("cuda", 2, 2, "cuda:0"),
        ("cuda", 1, 1, "cuda:0"),
        ("cuda:1", 0, 2, "cuda:1"),  # pinned: every worker on that GPU
        ("cuda:1", 6, 2, "cuda:1"),
    ],
)
def test_device_per_worker(requested: str, worker: int, gpus: int, device: str) -> None:
    assert select_device(requested, worker, gpus) == device


@pytest.mark.parametrize(
    ("requested", "gpus", "message"),
    [
        ("cuda", 0, "--mtbench-device=cuda: no CUDA GPU is visible to torch here; use --mtbench-device=cpu"),
        ("cuda:0", 0, "--mtbench-device=cuda:0: no CUDA GPU is visible"),
        ("cuda:2", 2, "--mtbench-device=cuda:2: only 2 GPU(s) visible (cuda:0 to cuda:1)"),
    ],
)
def test_unavailable_gpu_is_one_line(requested: str, gpus: int, message: str) -> None:
    with pytest.raises(BackendError) as caught:
        select_device(requested, 0, gpus)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("environ", "index"),
    [({}, 0), ({"PYTEST_XDIST_WORKER": "gw0"}, 0), ({"PYTEST_XDIST_WORKER": "gw11"}, 11), ({"X": "1"}, 0)],
)
def test_worker_index(environ: dict[str, str], index: int) -> None:
    assert worker_index(environ) == index


def test_cpu_identity_is_unchanged(tmp_path) -> None:
    """The CPU identity has exactly the keys it always had, so CPU caches keep hitting."""
    pytest.importorskip("torch")
    from pytest_mtbench.backends.hf import static_identity
    from pytest_mtbench.testing.tiny_model import build_tiny_chat_model

    model = build_tiny_chat_model(tmp_path / "m")
    for device in ("auto", "cpu"):
        identity = static_identity(str(model), BackendOptions(device=device))
        assert set(identity) == {"backend", "model_sha256", "chat_template_sha256", "dtype"}
        assert identity["dtype"] == "float32"


def test_cuda_on_a_cpu_box_fails_the_run_in_one_line(tmp_path) -> None:
    """Asking for a GPU that is not there stops the run with one line naming the flag, no traceback."""
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    from conftest import run_pytest_subprocess
    from pytest_mtbench.testing.tiny_model import build_tiny_chat_model

    model = build_tiny_chat_model(tmp_path / "m")
    proc = run_pytest_subprocess(
        tmp_path,
        f"--mtbench-model={model}",
        "--mtbench-judge=fake/judge-5",
        "--mtbench-device=cuda",
        "-k",
        "81",
    )
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "--mtbench-device=cuda: no CUDA GPU is visible" in output
    assert "Traceback" not in output
