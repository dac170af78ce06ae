"""Model specs are parsed once, into a ModelSpec, and the registry is the only way to a backend."""

from __future__ import annotations

import ast
import sys
import types
from pathlib import Path

import pytest

from pytest_mtbench.backends import _REGISTRY, BackendError, ModelSpec, capabilities, registered
from pytest_mtbench.backends.spec import as_spec
from pytest_mtbench.fastchat import fastchat_name
from pytest_mtbench.reports.terminal import short

PACKAGE = Path(__file__).resolve().parents[1] / "pytest_mtbench"


@pytest.mark.parametrize(
    ("text", "backend", "name"),
    [
        ("openai/gpt-4", "openai", "gpt-4"),
        ("openai/meta-llama/Llama-3.1-8B-Instruct", "openai", "meta-llama/Llama-3.1-8B-Instruct"),
        ("smollm2", "hf", "smollm2"),  # an alias
        ("hf/smollm2", "hf", "smollm2"),
        ("models/tiny.gguf", "hf", "models/tiny.gguf"),  # a bare path is a local model
        ("/abs/models/my-model/", "hf", "/abs/models/my-model/"),
        ("together/llama", "hf", "together/llama"),  # an unregistered prefix is part of a path
        ("hf/models/my-model/", "hf", "models/my-model/"),
        ("replay/answers/vicuna-13b.jsonl", "replay", "answers/vicuna-13b.jsonl"),
        ("vllm/Qwen/Qwen3-0.6B", "vllm", "Qwen/Qwen3-0.6B"),
        ("fake/judge-7", "fake", "judge-7"),
    ],
)
def test_spec_parses_to_backend_and_name_and_keeps_its_text(text: str, backend: str, name: str) -> None:
    spec = ModelSpec.parse(text)
    assert (spec.text, spec.backend, spec.name) == (text, backend, name)
    assert str(spec) == text and backend in registered()
    assert as_spec(text) == spec and as_spec(spec) is spec


@pytest.mark.parametrize("prefix", ["openai", "hf", "vllm", "replay", "fake"])
@pytest.mark.parametrize("tail", ["/", "//"])
def test_a_backend_without_a_model_is_one_line(prefix: str, tail: str) -> None:
    with pytest.raises(BackendError) as caught:
        ModelSpec.parse(prefix + tail)
    assert str(caught.value) == f"names no model after '{prefix}/'; give {prefix}/NAME"


def test_an_empty_spec_is_refused() -> None:
    with pytest.raises(BackendError, match="an empty model spec"):
        ModelSpec.parse("")


def test_spec_is_frozen_and_compares_by_value() -> None:
    spec = ModelSpec.parse("fake/echo")
    with pytest.raises(AttributeError):
        spec.name = "other"  # type: ignore[misc]
    assert spec == ModelSpec.parse("fake/echo") and len({spec, ModelSpec.parse("fake/echo")}) == 1
    assert ModelSpec.parse("smollm2") != ModelSpec.parse("hf/smollm2")  # two texts: two cache keys


@pytest.mark.parametrize(
    ("text", "fastchat", "header"),
    [
        ("openai/gpt-4", "gpt-4", "gpt-4"),
        ("replay/answers/vicuna-13b-v1.3.jsonl", "vicuna-13b-v1.3", "vicuna-13b-v1.3"),
        ("hf/models/my-model/", "my-model", "my-model"),
        ("models/tiny.gguf", "tiny", "tiny"),
        ("smollm2", "smollm2", "smollm2"),
        ("vllm/Qwen/Qwen3-0.6B", "Qwen3-0.6B", "Qwen3-0.6B"),
        ("fake/judge-7", "judge-7", "judge-7"),
    ],
)
def test_names_in_fastchat_files_and_table_headers(text: str, fastchat: str, header: str) -> None:
    spec = ModelSpec.parse(text)
    assert spec.fastchat_name == fastchat_name(text) == fastchat_name(spec) == fastchat
    assert short(text) == header


def test_registry_functions_take_a_spec_or_its_text() -> None:
    assert capabilities(ModelSpec.parse("fake/echo")) == capabilities("fake/echo")
    assert capabilities("smollm2").local and not capabilities("openai/gpt-4").local


def _imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at any depth of the code, as an absolute dotted name."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "pytest_mtbench." * (node.level > 0) + (node.module or "")
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("module", ["assembly.py", "runner.py", "settings.py"])
def test_run_building_reaches_backends_only_through_the_registry(module: str) -> None:
    backends = {module_name for module_name, _ in _REGISTRY.values()}
    reached = sorted(
        name
        for name in _imported_modules(PACKAGE / module)
        if any(name == backend or name.startswith(backend + ".") for backend in backends)
    )
    assert not reached, f"{module} imports a backend module directly: {reached}"


def test_assembly_tests_no_backend_name() -> None:
    tree = ast.parse((PACKAGE / "assembly.py").read_text(encoding="utf-8"))
    named = {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in registered()
    }
    assert not named, f"assembly.py names backends {sorted(named)}; ask the registry instead"


def test_run_wide_checks_ask_every_registered_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """--mtbench-device and --mtbench-chat-template are checked by each backend module that defines the
    hook, whatever the run's models (a GPU that is not there fails a run of fake models too)."""
    from pytest_mtbench.backends import BackendOptions, check_chat_template, check_options

    seen: list[tuple[str, object]] = []
    module = types.ModuleType("mtbench_hooked_backend")

    def refuse_device(options: BackendOptions) -> None:
        seen.append(("options", options.device))
        raise BackendError(f"--mtbench-device={options.device}: not here")

    module.check_options = refuse_device  # type: ignore[attr-defined]
    module.check_chat_template = lambda path, template: seen.append(("template", path))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(_REGISTRY, "hooked", (module.__name__, None))
    with pytest.raises(BackendError, match="--mtbench-device=cpu: not here"):
        check_options(BackendOptions(device="cpu"))
    check_chat_template("t.jinja", "{{ messages }}")
    assert seen == [("options", "cpu"), ("template", "t.jinja")]
