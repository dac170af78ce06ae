"""The safetensors copy kept of a dequantised .gguf model is a standard transformers model directory.

Other loaders (plain `from_pretrained`, vLLM) read that copy: it must name its architecture and keep a tied
embedding under its canonical name, `model.embed_tokens.weight`, as `save_pretrained` writes it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

from pytest_mtbench.backends import BackendOptions, SamplingParams, load_backend  # noqa: E402
from pytest_mtbench.backends.hf import _CONVERTED_MARK, _keep_converted  # noqa: E402
from pytest_mtbench.testing import tiny_model  # noqa: E402

TOKEN_IDS = [[1, 5, 9, 20, 33, 47, 2, 60], [3, 3, 8, 13, 21, 34, 55, 4]]


def _write_tied_gguf(source: Path, path: Path) -> Path:
    """`source` without its `output.weight` tensor: transformers then ties lm_head to token_embd, as for
    SmolLM2 (the quick start's model)."""
    if path.is_file():
        return path
    reader = gguf.GGUFReader(str(source))
    tmp = path.with_name(f".{path.name}.tmp")
    writer = gguf.GGUFWriter(str(tmp), reader.get_field(gguf.Keys.General.ARCHITECTURE).contents())
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue  # written by GGUFWriter itself
        kind = field.types[0]
        sub_type = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub_type)
    for tensor in reader.tensors:
        if tensor.name != "output.weight":
            writer.add_tensor(tensor.name, tensor.data, raw_dtype=tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(path)
    return path


@pytest.fixture(scope="module")
def untied_gguf(build_shared) -> Path:
    return build_shared(tiny_model.write_tiny_gguf, "gguf/tiny-chat.gguf")


@pytest.fixture(scope="module")
def tied_gguf(build_shared, untied_gguf: Path) -> Path:
    return build_shared(lambda path: _write_tied_gguf(untied_gguf, path), "gguf/tiny-chat-tied.gguf")


@pytest.fixture(params=["untied", "tied"])
def gguf_file(request: pytest.FixtureRequest) -> tuple[Path, bool]:
    tied = request.param == "tied"
    return request.getfixturevalue(f"{request.param}_gguf"), tied


def _logits(model, token_ids: list[list[int]]):
    import torch

    with torch.no_grad():
        return model(torch.tensor(token_ids)).logits


def test_the_converted_copy_loads_in_plain_transformers_as_the_gguf_model(
    gguf_file: tuple[Path, bool], tmp_path: Path
) -> None:
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, tied = gguf_file
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    embedding = model.get_input_embeddings().weight
    assert model.config.tie_word_embeddings is tied
    assert (model.get_output_embeddings().weight is embedding) is tied
    config, quantization_config = model.config, model.config.quantization_config

    target = tmp_path / "copy"
    _keep_converted(model, tokenizer, target)

    assert (target / _CONVERTED_MARK).is_file()
    assert not list(tmp_path.glob(".tmp-*"))  # the staging directory was renamed into place
    saved_config = json.loads((target / "config.json").read_text(encoding="utf-8"))
    assert saved_config["architectures"] == ["LlamaForCausalLM"]
    assert "quantization_config" not in saved_config  # plain tensors now, not a .gguf file's blocks
    assert saved_config["tie_word_embeddings"] is tied
    with safe_open(str(target / "model.safetensors"), framework="pt") as weights:
        names = set(weights.keys())
        assert torch.equal(weights.get_tensor("model.embed_tokens.weight"), embedding)
    # A tied weight is written once, under the name every loader expects: the embedding's.
    assert ("lm_head.weight" in names) is not tied
    assert len(names) == len(model.state_dict()) - tied
    # The model passed in is left as it was: the run goes on with it.
    assert model.config is config and model.config.quantization_config is quantization_config
    assert model.hf_quantizer is not None

    plain = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32)
    assert type(plain).__name__ == "LlamaForCausalLM"
    assert (plain.get_output_embeddings().weight is plain.get_input_embeddings().weight) is tied
    torch.testing.assert_close(_logits(plain, TOKEN_IDS), _logits(model, TOKEN_IDS), rtol=0, atol=0)
    assert (
        AutoTokenizer.from_pretrained(target)(["Hello there"])["input_ids"]
        == tokenizer(["Hello there"])["input_ids"]
    )


def test_the_plugin_loads_a_tied_gguf_model_and_its_copy_alike(
    tied_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    conversations = [[{"role": "user", "content": "Hi"}], [{"role": "user", "content": "2 + 2? " * 6}]]
    greedy = SamplingParams(temperature=0.0, max_new_tokens=12)
    options = BackendOptions(batch_size=2, cache_dir=str(tmp_path))
    first = load_backend(str(tied_gguf), options)
    texts = [c.text for c in first.chat(conversations, greedy)]
    logits = _logits(first.model, TOKEN_IDS)
    first.close()
    (copy,) = (tmp_path / "converted").iterdir()
    assert (copy / _CONVERTED_MARK).is_file()

    def no_gguf(*args, **kwargs):
        raise AssertionError("the .gguf file was parsed again")

    monkeypatch.setattr(gguf_utils, "load_gguf_checkpoint", no_gguf)
    again = load_backend(str(tied_gguf), options)
    assert again.model.get_output_embeddings().weight is again.model.get_input_embeddings().weight
    assert [c.text for c in again.chat(conversations, greedy)] == texts
    assert _logits(again.model, TOKEN_IDS).equal(logits)
    again.close()
