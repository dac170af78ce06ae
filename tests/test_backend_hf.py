"""The transformers backend against real tiny models built in-process (no downloads)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from pytest_mtbench.backends import BackendError, BackendOptions, SamplingParams, load_backend  # noqa: E402
from pytest_mtbench.backends.base import ChatBackend, RatingProber  # noqa: E402
from pytest_mtbench.testing import tiny_model  # noqa: E402

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=16)
SAMPLED = SamplingParams(temperature=0.7, max_new_tokens=16, seed=11)


def _official_judge_prompt() -> str:
    """A real single-v1 judge prompt, rendered from the official file beside the checkout (never copied)."""
    from pytest_mtbench.prompts import load_judge_prompts

    shared = Path(__file__).resolve().parents[2] / "shared" / "mt_bench" / "judge_prompts.jsonl"
    prompt = load_judge_prompts(shared, official=True)["single-math-v1"]
    return prompt.render(
        question="Solve for x in the equation 2x + 6 = 4(x - 1).",
        ref_answer_1="x = 5",
        answer="x = 10, because 2x + 6 = 4x - 4.",
    )[1]


JUDGE_PROMPT = _official_judge_prompt()

CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Explain"}],
    [{"role": "user", "content": "Write a long post about a weekend by the sea, with places to see. " * 4}],
    [
        {"role": "user", "content": "2 + 2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And doubled?"},
    ],
    [{"role": "user", "content": "Write a function that returns the items two lists share."}],
]
JUDGE_CONVERSATIONS = [
    [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": JUDGE_PROMPT},
    ],
    [{"role": "user", "content": "Rate this: hello"}],
]


@pytest.fixture(scope="session")
def gguf_path(models_root: Path, build_shared) -> Path:
    return build_shared(tiny_model.write_tiny_gguf, "gguf/tiny-chat.gguf")


@pytest.fixture(scope="session")
def chat(chat_dir: Path):
    backend = load_backend(str(chat_dir), BackendOptions(batch_size=4))
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def judge(judge_dir: Path):
    backend = load_backend(f"hf/{judge_dir}", BackendOptions())
    yield backend
    backend.close()


def test_module_imports_stay_light() -> None:
    code = (
        "import sys, pytest_mtbench.backends.hf, pytest_mtbench.testing.tiny_model\n"
        "print(sorted(m for m in ('torch', 'transformers', 'gguf', 'tokenizers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_backend_satisfies_both_protocols(chat) -> None:
    assert isinstance(chat, ChatBackend)
    assert isinstance(chat, RatingProber)


def test_render_uses_the_tokenizer_chat_template(chat) -> None:
    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert chat.render(conversation) == "<s><|system|>\nBe brief.</s>\n<|user|>\nHi</s>\n<|assistant|>\n"


def test_batched_greedy_generation_equals_one_at_a_time(chat, chat_dir: Path) -> None:
    batched = chat.chat(CONVERSATIONS, GREEDY)
    single = load_backend(str(chat_dir), BackendOptions(batch_size=1))
    one_by_one = [single.chat([conversation], GREEDY)[0] for conversation in CONVERSATIONS]
    single.close()
    assert [c.text for c in batched] == [c.text for c in one_by_one]
    assert [c.n_tokens for c in batched] == [c.n_tokens for c in one_by_one]
    assert all(0 < c.n_tokens <= GREEDY.max_new_tokens for c in batched)
    assert len({c.text for c in batched}) > 1  # different prompts, different answers: order was restored


def test_greedy_and_seeded_sampling_repeat_exactly(chat) -> None:
    greedy = [c.text for c in chat.chat(CONVERSATIONS, GREEDY)]
    assert greedy == [c.text for c in chat.chat(CONVERSATIONS, GREEDY)]
    first = [c.text for c in chat.chat(CONVERSATIONS, SAMPLED)]
    assert first == [c.text for c in chat.chat(CONVERSATIONS, SAMPLED)]
    other_seed = SamplingParams(temperature=0.7, max_new_tokens=16, seed=12)
    assert first != [c.text for c in chat.chat(CONVERSATIONS, other_seed)]
    assert first != greedy


def test_identity_is_content_not_location(chat, chat_dir: Path, tmp_path: Path) -> None:
    identity = chat.identity()
    assert json.loads(json.dumps(identity)) == identity  # plain builtins only
    assert identity["backend"] == "hf" and identity["dtype"] == "float32"
    assert str(chat_dir) not in json.dumps(identity)

    copy = shutil.copytree(chat_dir, tmp_path / "elsewhere")
    assert load_backend(str(copy), BackendOptions()).identity() == identity

    from safetensors.torch import load_file, save_file

    weights = load_file(copy / "model.safetensors")
    weights["model.norm.weight"][0] += 1.0
    save_file(weights, copy / "model.safetensors", metadata={"format": "pt"})
    changed = load_backend(str(copy), BackendOptions()).identity()
    assert changed["model_sha256"] != identity["model_sha256"]
    assert changed["chat_template_sha256"] == identity["chat_template_sha256"]


def test_identity_follows_the_chat_template_in_use(chat, chat_dir: Path) -> None:
    template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    overridden = load_backend(str(chat_dir), BackendOptions(chat_template=template))
    assert overridden.identity()["chat_template_sha256"] != chat.identity()["chat_template_sha256"]
    assert overridden.identity()["model_sha256"] == chat.identity()["model_sha256"]
    assert overridden.render([{"role": "user", "content": "Hi"}]) == "Hi\n"


def test_num_threads_is_applied(chat_dir: Path) -> None:
    import torch

    before = torch.get_num_threads()
    try:
        load_backend(str(chat_dir), BackendOptions(num_threads=1))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_trained_judge_writes_the_rating(judge) -> None:
    completions = judge.chat(JUDGE_CONVERSATIONS, GREEDY)
    assert [c.text for c in completions] == ["Rating: [[7]]"] * 2
    n_reply = len(judge.tokenizer.encode("Rating: [[7]]", add_special_tokens=False))
    assert [c.n_tokens for c in completions] == [n_reply + 1] * 2  # the reply plus EOS


def test_rating_probabilities_of_the_trained_judge(judge) -> None:
    judgments = [c.text for c in judge.chat(JUDGE_CONVERSATIONS, GREEDY)]
    results = judge.rating_probabilities(JUDGE_CONVERSATIONS, judgments, "\nRating: [[")
    assert len(results) == 2
    for probs in results:
        assert sorted(probs) == list(range(1, 11))
        assert all(type(p) is float and 0.0 <= p <= 1.0 for p in probs.values())
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-9)
        assert max(probs, key=probs.__getitem__) == 7
        assert probs[7] > 0.5


def test_silent_judge_gives_no_rating_but_can_be_probed(silent_judge_dir: Path) -> None:
    silent = load_backend(str(silent_judge_dir), BackendOptions())
    judgments = [c.text for c in silent.chat(JUDGE_CONVERSATIONS, GREEDY)]
    assert judgments == ["Good answer."] * 2
    probs = silent.rating_probabilities(JUDGE_CONVERSATIONS, judgments, "\nRating: [[")
    assert [max(p, key=p.__getitem__) for p in probs] == [7, 7]
    assert all(sum(p.values()) == pytest.approx(1.0) for p in probs)
    silent.close()


def test_missing_path_names_the_flags(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    expected = r"--mtbench-model/--mtbench-judge path .*no-such-model does not exist"
    with pytest.raises(BackendError, match=expected):
        load_backend(str(missing), BackendOptions())


def test_directory_without_config_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="is not a model directory"):
        load_backend(str(tmp_path), BackendOptions())


def test_tokenizer_without_chat_template_names_the_flag(chat_dir: Path, tmp_path: Path) -> None:
    bare = shutil.copytree(chat_dir, tmp_path / "bare")
    (bare / "chat_template.jinja").unlink()
    config_path = bare / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.pop("chat_template", None)
    config_path.write_text(json.dumps(config))
    with pytest.raises(BackendError, match="--mtbench-chat-template=FILE") as info:
        load_backend(str(bare), BackendOptions())
    assert "\n" not in str(info.value)
    # The same directory works once a template is supplied.
    backend = load_backend(str(bare), BackendOptions(chat_template=tiny_model.CHAT_TEMPLATE))
    assert backend.chat([[{"role": "user", "content": "Hi"}]], GREEDY)[0].n_tokens > 0


def test_gguf_file_loads_and_generates_like_the_directory_model(gguf_path: Path, chat) -> None:
    backend = load_backend(str(gguf_path), BackendOptions(batch_size=4))
    completions = backend.chat(CONVERSATIONS, GREEDY)
    assert all(c.n_tokens > 0 for c in completions)
    # Same seed, same weights: the GGUF round trip must not change a single greedy token.
    assert [c.text for c in completions] == [c.text for c in chat.chat(CONVERSATIONS, GREEDY)]
    identity = backend.identity()
    assert identity["model_sha256"] != chat.identity()["model_sha256"]
    assert identity["chat_template_sha256"] == chat.identity()["chat_template_sha256"]
    backend.close()


def _converted(cache: Path) -> list[Path]:
    return sorted((cache / "converted").glob("*")) if (cache / "converted").is_dir() else []


def test_a_gguf_model_is_converted_once_and_then_loaded_from_its_safetensors_copy(
    gguf_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    options = BackendOptions(batch_size=4, cache_dir=str(tmp_path))
    first = load_backend(str(gguf_path), options)
    texts = [c.text for c in first.chat(CONVERSATIONS, GREEDY)]
    first_probs = first.rating_probabilities(JUDGE_CONVERSATIONS, ["Fine.", "Good."], "\nRating: [[")
    first_template, first_identity = first.chat_template, first.identity()
    first.close()
    (copy,) = _converted(tmp_path)
    assert copy.name.startswith(first_identity["model_sha256"][:32])
    assert (copy / "model.safetensors").is_file() and (copy / "converted-from-gguf").is_file()

    def no_gguf(*args, **kwargs):
        raise AssertionError("the .gguf file was parsed again")

    monkeypatch.setattr(gguf_utils, "load_gguf_checkpoint", no_gguf)
    again = load_backend(str(gguf_path), options)
    # The copy is the same model: the same tokens, template, identity and rating distributions.
    assert [c.text for c in again.chat(CONVERSATIONS, GREEDY)] == texts
    assert again.chat_template == first_template and again.identity() == first_identity
    assert again.rating_probabilities(JUDGE_CONVERSATIONS, ["Fine.", "Good."], "\nRating: [[") == first_probs
    assert again.tokenizer.padding_side == "left"
    again.close()


def test_a_partial_converted_copy_is_never_loaded_and_is_replaced(gguf_path: Path, tmp_path: Path) -> None:
    options = BackendOptions(batch_size=4, cache_dir=str(tmp_path))
    load_backend(str(gguf_path), options).close()
    (copy,) = _converted(tmp_path)
    (copy / "converted-from-gguf").unlink()  # as if a copy had been cut short before its marker
    (copy / "model.safetensors").write_bytes(b"not weights")
    backend = load_backend(str(gguf_path), options)  # reads the .gguf file, not the broken copy
    assert backend.chat(CONVERSATIONS[:1], GREEDY)[0].n_tokens > 0
    backend.close()
    assert (copy / "converted-from-gguf").is_file() and (copy / "model.safetensors").stat().st_size > 1000


def test_a_gguf_model_is_not_kept_when_too_large_or_the_cache_is_not_writable(
    gguf_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytest_mtbench.backends.hf import loading

    monkeypatch.setattr(loading, "_CONVERTED_LIMIT", 1000)
    load_backend(str(gguf_path), BackendOptions(cache_dir=str(tmp_path / "small"))).close()
    assert _converted(tmp_path / "small") == []
    monkeypatch.undo()
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    backend = load_backend(str(gguf_path), BackendOptions(cache_dir=str(blocked)))
    assert backend.chat(CONVERSATIONS[:1], GREEDY)[0].n_tokens > 0  # keeping the copy never fails a run
    backend.close()


def test_rating_probabilities_match_full_sequence_scoring(judge) -> None:
    import torch

    conversation, judgment, cue = JUDGE_CONVERSATIONS[0], "Fine.", "\nRating: [["
    probs = judge.rating_probabilities([conversation], [judgment], cue)[0]
    context = judge.render(conversation) + judgment + cue
    n_context = len(judge.tokenizer.encode(context, add_special_tokens=False))
    scores = []
    for rating in range(1, 11):
        ids = judge.tokenizer.encode(context + f"{rating}]]", add_special_tokens=False)
        with torch.inference_mode():
            log_probs = torch.log_softmax(judge.model(torch.tensor([ids])).logits[0].float(), dim=-1)
        scores.append(sum(float(log_probs[p - 1, ids[p]]) for p in range(n_context, len(ids))))
    expected = torch.softmax(torch.tensor(scores, dtype=torch.float64), dim=0).tolist()
    assert [probs[k] for k in range(1, 11)] == pytest.approx(expected, abs=1e-5)


# -- call metadata ----------------------------------------------------------------------------------------


def test_completions_report_stop_prompt_tokens_and_no_endpoint_fields(judge) -> None:
    completions = judge.chat(JUDGE_CONVERSATIONS, GREEDY)
    for conversation, completion in zip(JUDGE_CONVERSATIONS, completions):
        assert completion.text == "Rating: [[7]]"
        assert (completion.finish_reason, completion.truncated) == ("stop", False)
        prompt = judge.tokenizer.encode(judge.render(conversation), add_special_tokens=False)
        assert completion.prompt_tokens == len(prompt)
        assert (completion.served_model, completion.system_fingerprint) == (None, None)
    assert completions[0].prompt_tokens > 100 > completions[1].prompt_tokens  # really measured per prompt


def test_a_reply_cut_at_max_new_tokens_is_marked_truncated(chat, judge) -> None:
    short = SamplingParams(temperature=0.0, max_new_tokens=4)
    cut = chat.chat(CONVERSATIONS, short)
    # The random chat model rarely writes EOS within 4 tokens: every such row is "length" with 4 tokens.
    assert any(c.truncated for c in cut)
    for completion in cut:
        assert completion.truncated == (completion.finish_reason == "length")
        if completion.truncated:
            assert completion.n_tokens == 4
        else:
            assert completion.finish_reason == "stop" and completion.n_tokens <= 4
    # The trained judge needs 1 + len("Rating: [[7]]") tokens; one fewer cuts it off, that many does not.
    n_reply = len(judge.tokenizer.encode("Rating: [[7]]", add_special_tokens=False)) + 1
    [cut_judge] = judge.chat(JUDGE_CONVERSATIONS[1:], SamplingParams(0.0, n_reply - 1))
    [full_judge] = judge.chat(JUDGE_CONVERSATIONS[1:], SamplingParams(0.0, n_reply))
    assert (cut_judge.finish_reason, cut_judge.truncated, cut_judge.n_tokens) == ("length", True, n_reply - 1)
    assert (full_judge.finish_reason, full_judge.truncated, full_judge.n_tokens) == ("stop", False, n_reply)


# -- prompts longer than the context window ---------------------------------------------------------------


def _with_json(directory: Path, name: str, **changes: object) -> None:
    path = directory / name
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("limit_in", ["config.json", "tokenizer_config.json"])
def test_prompt_beyond_the_context_window_is_reported_not_truncated(
    chat, chat_dir: Path, tmp_path: Path, limit_in: str
) -> None:
    small = shutil.copytree(chat_dir, tmp_path / "small-context")
    key = "max_position_embeddings" if limit_in == "config.json" else "model_max_length"
    _with_json(small, limit_in, **{key: 64})
    backend = load_backend(str(small), BackendOptions(batch_size=4))
    assert backend.context_window == 64
    long_prompt = [{"role": "user", "content": "Write a long post about a weekend by the sea. " * 8}]
    conversations = [CONVERSATIONS[0], long_prompt, CONVERSATIONS[3]]
    n_long = len(backend.tokenizer.encode(backend.render(long_prompt), add_special_tokens=False))
    assert n_long >= 64  # no room left to generate
    seen: list[int] = []
    results = backend.chat(conversations, GREEDY, on_result=lambda i, c: seen.append(i))
    assert sorted(seen) == [0, 1, 2]  # the overflow is reported through on_result too
    overflow = results[1]
    assert (overflow.text, overflow.n_tokens) == ("", 0)
    assert (overflow.finish_reason, overflow.truncated, overflow.prompt_tokens) == (
        "context_overflow",
        False,
        n_long,
    )
    # The prompts that fit are generated exactly as by the unchanged model (same weights, same batch).
    expected = chat.chat([conversations[0], conversations[2]], GREEDY)
    assert [results[0].text, results[2].text] == [c.text for c in expected]
    assert all(c.finish_reason in ("stop", "length") for c in (results[0], results[2]))
    # A prompt that fits, but not with max_new_tokens more, generates to the end of the window, marked.
    n_short = results[0].prompt_tokens
    capped = backend.chat([conversations[0]], SamplingParams(0.0, 64 - n_short + 10))[0]
    assert capped.finish_reason in ("stop", "length") and 0 < capped.n_tokens <= 64 - n_short
    assert capped.truncated == (capped.finish_reason == "length")
    exact = backend.chat([conversations[0]], SamplingParams(0.0, 64 - n_short))[0]
    assert (exact.text, exact.n_tokens) == (capped.text, capped.n_tokens)  # the same window, the same reply
    backend.close()


# -- untrusted model directories --------------------------------------------------------------------------

CUSTOM_CODE = """\
from pathlib import Path

Path({marker!r}).write_text("the directory's code ran")

from transformers import LlamaConfig, LlamaForCausalLM


class TinyConfig(LlamaConfig):
    model_type = "tiny_custom"


class TinyModel(LlamaForCausalLM):
    config_class = TinyConfig
"""


def _with_custom_code(chat_dir: Path, target: Path, marker: Path, model_type: str) -> Path:
    directory = shutil.copytree(chat_dir, target)
    (directory / "modeling_tiny.py").write_text(CUSTOM_CODE.format(marker=str(marker)))
    auto_map = {"AutoConfig": "modeling_tiny.TinyConfig", "AutoModelForCausalLM": "modeling_tiny.TinyModel"}
    _with_json(directory, "config.json", auto_map=auto_map, model_type=model_type)
    return directory


def test_code_in_a_model_directory_never_runs_by_default(chat, chat_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran.txt"
    # A known architecture: transformers' own class is used and the shipped code is ignored.
    known = _with_custom_code(chat_dir, tmp_path / "known", marker, model_type="llama")
    backend = load_backend(str(known), BackendOptions())
    assert [c.text for c in backend.chat(CONVERSATIONS[:2], GREEDY)] == [
        c.text for c in chat.chat(CONVERSATIONS[:2], GREEDY)
    ]
    backend.close()
    # An architecture only the shipped code defines: a one-line refusal that names the flag.
    custom = _with_custom_code(chat_dir, tmp_path / "custom", marker, model_type="tiny_custom")
    with pytest.raises(BackendError) as info:
        load_backend(str(custom), BackendOptions())
    message = str(info.value)
    assert "\n" not in message
    assert message.endswith(
        "the model directory ships its own Python code (auto_map); read it, then pass "
        "--mtbench-trust-remote-code to let it run"
    )
    assert not marker.exists()


def test_trust_remote_code_runs_it_and_hashes_it(chat, chat_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran.txt"
    custom = _with_custom_code(chat_dir, tmp_path / "custom", marker, model_type="tiny_custom")
    options = BackendOptions(trust_remote_code=True)
    backend = load_backend(str(custom), options)
    assert marker.read_text() == "the directory's code ran"
    assert type(backend.model).__name__ == "TinyModel"
    assert [c.text for c in backend.chat(CONVERSATIONS[:2], GREEDY)] == [
        c.text for c in chat.chat(CONVERSATIONS[:2], GREEDY)
    ]
    identity = backend.identity()
    backend.close()
    # The code is part of what determines the outputs; without the option nothing changes in the identity.
    assert set(identity) - set(chat.identity()) == {"code_sha256"}
    assert set(load_backend(str(chat_dir), options).identity()) == set(chat.identity())  # no .py files
    (custom / "modeling_tiny.py").write_text(CUSTOM_CODE.format(marker=str(marker)) + "# edited\n")
    from pytest_mtbench.backends.hf import static_identity

    assert static_identity(str(custom), options)["code_sha256"] != identity["code_sha256"]
    assert static_identity(str(custom), options)["model_sha256"] == identity["model_sha256"]


def _with_pickle_weights(chat_dir: Path, target: Path) -> Path:
    import torch
    from safetensors.torch import load_file

    directory = shutil.copytree(chat_dir, target)
    torch.save(load_file(directory / "model.safetensors"), directory / "pytorch_model.bin")
    (directory / "model.safetensors").unlink()
    return directory


def test_pickle_weights_need_their_own_opt_in(chat, chat_dir: Path, tmp_path: Path) -> None:
    pickled = _with_pickle_weights(chat_dir, tmp_path / "pickled")
    with pytest.raises(BackendError) as info:
        load_backend(str(pickled), BackendOptions(trust_remote_code=True))  # the other flag is not enough
    assert str(info.value) == (
        f"hf/{pickled} has only pickle weights (pytorch_model.bin), and loading pickle can run any code: "
        "convert them to safetensors, or pass --mtbench-allow-pickle if you trust where they came from"
    )
    backend = load_backend(str(pickled), BackendOptions(allow_pickle=True))
    assert [c.text for c in backend.chat(CONVERSATIONS, GREEDY)] == [
        c.text for c in chat.chat(CONVERSATIONS, GREEDY)
    ]
    backend.close()


def test_invalid_jinja_template_fails_before_the_weights_load(
    chat_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    import transformers

    def no_weights(*args: object, **kwargs: object) -> None:
        raise AssertionError("the weights were loaded before the template was checked")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_weights)
    broken = "{% for m in messages %}{{ m['content'] }}"  # the for is never closed
    with pytest.raises(BackendError) as info:
        load_backend(str(chat_dir), BackendOptions(chat_template=broken))
    message = str(info.value)
    assert message.startswith(f"the chat template given with --mtbench-chat-template (hf/{chat_dir}) is not")
    assert "valid Jinja (line 1: Unexpected end of template." in message
    assert message.endswith("fix it or pass another with --mtbench-chat-template=FILE")
    assert "\n" not in message

    shipped = shutil.copytree(chat_dir, tmp_path / "bad-template")
    (shipped / "chat_template.jinja").write_text("{{ bos_token }}\n{% if messages %}{{ messages[0] }")
    with pytest.raises(
        BackendError, match=r"the chat template of the model .* is not valid Jinja \(line 2: "
    ):
        load_backend(str(shipped), BackendOptions())


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_damaged_weights_are_one_line(chat_dir: Path, tmp_path: Path, damage: str) -> None:
    damaged = shutil.copytree(chat_dir, tmp_path / damage)
    weights = damaged / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"not a safetensors file")
    with pytest.raises(BackendError) as info:
        load_backend(str(damaged), BackendOptions())
    message = str(info.value)
    assert message.startswith(f"cannot load the model hf/{damaged}: Error while deserializing header")
    assert message.endswith("(a truncated or corrupt weight file? download or build it again)")
    assert "\n" not in message


def test_truncated_gguf_is_one_line(gguf_path: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    data = gguf_path.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(BackendError) as info:
        load_backend(str(cut), BackendOptions())
    assert str(info.value).endswith("(a truncated or corrupt .gguf file? download or build it again)")
    assert "\n" not in str(info.value)
