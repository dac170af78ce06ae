"""Loading a local model safely: resolving its name, its identity from file contents, and its weights.

A model directory is untrusted input. Python code shipped in it (`auto_map` in config.json) never runs
unless `BackendOptions.trust_remote_code` (--mtbench-trust-remote-code); pickle weights (`*.bin`, `*.pt`,
... without a safetensors copy) are refused unless `BackendOptions.allow_pickle` (--mtbench-allow-pickle),
since unpickling can run code. A chat template that is not valid Jinja, a truncated or corrupt weight file
and missing custom code are one-line BackendErrors, found before generation starts. A .gguf model is
dequantised once and kept as a standard model directory (see _keep_converted).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from ...reasoning import DEFAULT_MARKERS
from ..base import BackendError, BackendOptions
from . import internals

SMOLLM2_ALIAS = "smollm2"

# Files that change what a model directory produces (hashed into the identity, by content).
_WEIGHT_PATTERNS = ("*.safetensors", "*.bin")
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
)
_HASH_CHUNK = 1 << 20
# Weight formats loaded by unpickling, which can run arbitrary code.
_PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")
# A dequantised .gguf model is kept in the cache dir up to this size (a 1B-parameter model in float32).
_CONVERTED_LIMIT = 4 << 30
_CONVERTED_MARK = "converted-from-gguf"


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _hash_files(files: list[Path], root: Path) -> str:
    """sha256 over (relative name, content) of each file in sorted order; the root path never enters."""
    digest = hashlib.sha256()
    for file in sorted(files, key=lambda f: f.relative_to(root).as_posix()):
        digest.update(file.relative_to(root).as_posix().encode("utf-8") + b"\0")
        with file.open("rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def _model_files(directory: Path, gguf_file: str | None) -> list[Path]:
    if gguf_file is not None:
        return [directory / gguf_file]
    files = [directory / "config.json"]
    for pattern in _WEIGHT_PATTERNS:
        files.extend(p for p in directory.glob(pattern) if p.is_file())
    files.extend(directory / name for name in _TOKENIZER_FILES if (directory / name).is_file())
    return files


def _resolve(name: str, options: BackendOptions) -> tuple[Path, str | None]:
    """Map a model name to (directory, gguf file name or None), with one-line errors for bad paths."""
    if name == SMOLLM2_ALIAS:
        from pytest_mtbench.data import fetch_smollm2

        path = fetch_smollm2(Path(options.cache_dir) if options.cache_dir else None)
    else:
        path = Path(name).expanduser()
    if not path.exists():
        raise BackendError(f"--mtbench-model/--mtbench-judge path {name} does not exist")
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise BackendError(
                f"--mtbench-model/--mtbench-judge path {name} is a file but not a .gguf model; "
                "pass a transformers model directory or a .gguf file"
            )
        return path.resolve().parent, path.name
    if not (path / "config.json").is_file():
        raise BackendError(
            f"--mtbench-model/--mtbench-judge path {name} is not a model directory (no config.json); "
            "pass a transformers model directory or a .gguf file"
        )
    return path.resolve(), None


def worker_index(environ: dict[str, str] | None = None) -> int:
    """This process's xdist worker number (`gw3` -> 3); 0 in-process."""
    name = (os.environ if environ is None else environ).get("PYTEST_XDIST_WORKER", "")
    digits = name.removeprefix("gw")
    return int(digits) if digits.isdigit() else 0


def select_device(requested: str, worker: int, device_count: int) -> str:
    """The torch device for a --mtbench-device value, an xdist worker index and the visible GPU count.

    `auto` is a GPU when one is visible, else the CPU; `cuda` and `auto` give worker i the GPU i modulo
    the visible GPUs (so -n 8 on an 8-GPU box uses each GPU once); `cuda:N` pins every worker to GPU N.
    A GPU that is not there is a BackendError naming the flag.
    """
    if requested == "cpu" or (requested == "auto" and device_count == 0):
        return "cpu"
    if device_count == 0:
        raise BackendError(
            f"--mtbench-device={requested}: no CUDA GPU is visible to torch here; "
            "use --mtbench-device=cpu (or auto)"
        )
    if requested in ("auto", "cuda"):
        return f"cuda:{worker % device_count}"
    index = int(requested.removeprefix("cuda:"))
    if index >= device_count:
        raise BackendError(
            f"--mtbench-device={requested}: only {device_count} GPU(s) visible (cuda:0 to "
            f"cuda:{device_count - 1}); pick one of those or use --mtbench-device=cuda"
        )
    return requested


def device_for(options: BackendOptions) -> str:
    """The device this process runs a local model on (imports torch only when a GPU may be wanted)."""
    if options.device == "cpu":
        return "cpu"
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return select_device(options.device, worker_index(), count)


def _dtype_name(device: str) -> str:
    # bfloat16 on GPU (fast, the usual serving dtype); float32 on CPU, where half precision is slow and lossy.
    return "float32" if device == "cpu" else "bfloat16"


_IDENTITIES: dict[tuple[Any, ...], dict[str, Any]] = {}


def _identity(directory: Path, gguf_file: str | None, options: BackendOptions) -> dict[str, Any]:
    """What determines this model's outputs, from file contents only (no torch, no loading).

    The tokenizer's own chat template lives in the hashed tokenizer files (or inside the .gguf); an
    override given with --mtbench-chat-template is hashed separately.
    """
    files = _model_files(directory, gguf_file)
    # With trust_remote_code the directory's Python files are part of the model, so they are hashed too.
    code = sorted(directory.glob("*.py")) if options.trust_remote_code and gguf_file is None else []
    # Memoised per process on each file's size and mtime, so a rewritten weight file is hashed again.
    stamps = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files + code)
    device = device_for(options)
    key = (
        stamps,
        options.chat_template,
        bool(code),
        device != "cpu",
        options.chat_template_kwargs,
        options.thinking_budget,
        options.think_markers,
    )
    if key not in _IDENTITIES:
        override = options.chat_template
        identity: dict[str, Any] = {
            "backend": "hf",
            "model_sha256": _hash_files(files, directory),
            "chat_template_sha256": _sha256_text(override) if override else None,
            "dtype": _dtype_name(device),
        }
        if code:
            identity["code_sha256"] = _hash_files(code, directory)
        if device != "cpu":
            # GPU kernels give other numbers than the CPU's; the CPU identity stays as it always was, so
            # CPU caches keep hitting. The GPU's index is not part of it: identical GPUs, same outputs.
            identity["device"] = "cuda"
        # Thinking settings, only when set: a plain model's identity (and cache keys) stay as they were.
        if options.chat_template_kwargs:
            identity["chat_template_kwargs"] = dict(options.chat_template_kwargs)
        if options.thinking_budget:
            identity["thinking_budget"] = options.thinking_budget
            if options.think_markers != DEFAULT_MARKERS:
                identity["think_markers"] = list(options.think_markers)
        _IDENTITIES[key] = identity
    return dict(_IDENTITIES[key])


def static_identity(name: str, options: BackendOptions) -> dict[str, Any]:
    """The identity of `hf/<name>` without loading it, so a fully cached run never loads the model."""
    directory, gguf_file = _resolve(name, options)
    return _identity(directory, gguf_file, options)


def load_model(
    spec: str, directory: Path, gguf_file: str | None, options: BackendOptions, device: str
) -> tuple[Any, str | dict[str, str], Any]:
    """(tokenizer, chat template, model) of a resolved model, the model on `device` in eval mode, after
    the safety checks; BackendError with one line for what cannot load."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # Never run code from the model directory unless the user said so (transformers' default may prompt).
    load_kwargs: dict[str, Any] = {
        "local_files_only": True,
        "trust_remote_code": options.trust_remote_code,
    }
    source = directory  # where the tokenizer and weights are read from
    converted = converted_dir(directory, gguf_file, options, device)
    if converted is not None and (converted / _CONVERTED_MARK).is_file():
        source = converted  # this .gguf file, already dequantised by an earlier run: no conversion
    elif gguf_file is not None:
        load_kwargs["gguf_file"] = gguf_file
    else:
        _refuse_pickle(spec, directory, options)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **load_kwargs)
    except (OSError, ValueError) as exc:
        hint = _remote_code_hint(exc)
        if not hint and gguf_file is not None:  # the tokenizer is read from the same file as the weights
            hint = " (a truncated or corrupt .gguf file? download or build it again)"
        raise BackendError(f"cannot load the tokenizer of {spec}: {_reason(exc)}{hint}") from exc
    chat_template = options.chat_template or tokenizer.chat_template
    if not chat_template:
        raise BackendError(
            f"the tokenizer of {spec} has no chat template: pass one with --mtbench-chat-template=FILE"
        )
    check_template(spec, chat_template, from_option=options.chat_template is not None)
    # Left padding keeps every prompt's last token at the end, where generation continues.
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model_kwargs = dict(load_kwargs)
    if "gguf_file" not in load_kwargs and not options.allow_pickle:
        model_kwargs["use_safetensors"] = True  # a pickle file is never the fallback
    try:
        # float32 on CPU: half-precision matmuls are slow and lossy there; GGUF weights are dequantised.
        dtype = torch.float32 if device == "cpu" else torch.bfloat16
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **model_kwargs)
    except _weight_errors() as exc:
        hint = _remote_code_hint(exc)
        if not hint and not isinstance(exc, OSError | ValueError):
            hint = " (a truncated or corrupt weight file? download or build it again)"
        raise BackendError(f"cannot load the model {spec}: {_reason(exc)}{hint}") from exc
    if converted is not None and source is directory:
        _keep_converted(model, tokenizer, converted)
    return tokenizer, chat_template, _aligned(model.to(device).eval())


def converted_dir(
    directory: Path, gguf_file: str | None, options: BackendOptions, device: str
) -> Path | None:
    """Where a .gguf model's dequantised weights and tokenizer are kept between runs (None for a model
    directory). Reading a .gguf file costs 16 s on SmolLM2-135M, mostly parsing its metadata and
    vocabulary in Python, where the same weights as safetensors load in 0.3 s. Keyed by the file's content
    hash (the identity's), the dtype and the transformers release that converted it."""
    if gguf_file is None:
        return None
    import transformers

    from pytest_mtbench.data import default_cache_dir

    root = Path(options.cache_dir) if options.cache_dir else default_cache_dir()
    model_sha256 = _identity(directory, gguf_file, options)["model_sha256"]
    name = f"{model_sha256[:32]}-{_dtype_name(device)}-transformers-{transformers.__version__}"
    return root / "converted" / name


def _aligned(model: Any) -> Any:
    """`model` with every weight in memory of its own, aligned as torch allocates it (64 bytes).

    Weights mapped from a safetensors file sit at whatever offset the file gives them, and CPU matmul
    kernels take other paths, with other float rounding, for unaligned data: the same weights read from a
    .gguf file and from its safetensors copy gave rating probabilities that differ at 1e-8. Copied once
    at load, the numbers depend on the weights only, not on the file they came from."""
    for tensor in list(model.parameters()) + list(model.buffers()):  # shared (tied) weights come once
        if tensor.device.type == "cpu" and tensor.data_ptr() % 64:
            tensor.data = tensor.data.clone()
    return model


def _keep_converted(model: Any, tokenizer: Any, target: Path) -> None:
    """Save a model just dequantised from a .gguf file (and its tokenizer) as safetensors at `target`,
    for the next run to load (see converted_dir). Written as `save_pretrained` writes a model,
    so the copy is a standard model directory that other loaders (vLLM) read too: `architectures` in its
    config, a tied weight under the name the model loads it from. Written to a temporary directory and
    renamed into place, the marker file last, so a crash or a concurrent worker never leaves a partial copy
    that is used. Skipped for weights over _CONVERTED_LIMIT bytes (a large GGUF would fill the disk with
    float32), for weights left packed as GGUF blocks, and on any error writing: keeping the copy only saves
    time, so it never fails a run."""
    import copy
    import shutil
    import tempfile

    parameters = list(model.parameters())
    if not all(p.is_floating_point() for p in parameters):
        return  # GGUF blocks kept packed (transformers' GGUF kernels): no plain checkpoint to write
    size = sum(p.numel() * p.element_size() for p in parameters)
    if size > _CONVERTED_LIMIT:
        return
    staging: Path | None = None
    try:
        if (target / _CONVERTED_MARK).is_file():
            return  # another worker's copy, complete: it may be loading from it now
        if target.is_dir():  # a copy without its marker, which was not loaded: replace it
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
        config = copy.deepcopy(model.config)
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # the weights are plain tensors now, not a .gguf file's
        if not getattr(config, "architectures", None):  # a config built from a .gguf file names none
            config.architectures = [type(model).__name__]
        internals.save_dequantised(model, config, staging)
        tokenizer.save_pretrained(staging)
        (staging / _CONVERTED_MARK).write_text("complete\n", encoding="utf-8")
        os.rename(staging, target)
        staging = None
    except Exception:  # noqa: BLE001 - the copy only saves time: whatever failed, convert next time
        pass  # e.g. another worker's copy won the rename, or the cache is not writable
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


REASON_CHARS = 400  # of a library's error message kept in ours


def _reason(exc: BaseException) -> str:
    """A library's error message on one line: all of it (transformers' often continue after "one of:"
    on the next lines), its whitespace collapsed, cut at REASON_CHARS."""
    text = " ".join(str(exc).split())
    if not text:
        return type(exc).__name__
    return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 1] + "…"


def _refuse_pickle(spec: str, directory: Path, options: BackendOptions) -> None:
    """BackendError when the only weights are pickle files and the user has not allowed them."""
    if options.allow_pickle or any(directory.glob("*.safetensors")):
        return
    pickles = sorted(p.name for pattern in _PICKLE_PATTERNS for p in directory.glob(pattern) if p.is_file())
    if pickles:
        shown = ", ".join(pickles[:3]) + (f" and {len(pickles) - 3} more" if len(pickles) > 3 else "")
        raise BackendError(
            f"{spec} has only pickle weights ({shown}), and loading pickle can run any code: convert them "
            "to safetensors, or pass --mtbench-allow-pickle if you trust where they came from"
        )


def _remote_code_hint(exc: BaseException) -> str:
    """A pointer to --mtbench-trust-remote-code when transformers refused to run the directory's code."""
    if "trust_remote_code" not in str(exc):
        return ""
    return (
        ": the model directory ships its own Python code (auto_map); read it, then pass "
        "--mtbench-trust-remote-code to let it run"
    )


def _weight_errors() -> tuple[type[BaseException], ...]:
    """What loading bad weights raises: OS/format errors, a damaged pickle, safetensors' own errors."""
    import pickle

    errors: list[type[BaseException]] = [OSError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError]
    try:
        from safetensors import SafetensorError

        errors.append(SafetensorError)
    except ImportError:  # pragma: no cover - safetensors comes with the hf extra
        pass
    return tuple(errors)


def check_template(spec: str, template: str | dict[str, str], from_option: bool) -> None:
    """BackendError when the chat template is not valid Jinja (checked before the weights load)."""
    import jinja2

    compile_template = internals.compile_chat_template()
    source = "given with --mtbench-chat-template" if from_option else "of the model"
    templates = template.values() if isinstance(template, dict) else [template]
    for text in templates:
        try:
            compile_template(text)
        except jinja2.TemplateError as exc:
            where = f"line {exc.lineno}: " if getattr(exc, "lineno", None) else ""
            raise BackendError(
                f"the chat template {source} ({spec}) is not valid Jinja ({where}{exc.message or exc}): "
                "fix it or pass another with --mtbench-chat-template=FILE"
            ) from None
