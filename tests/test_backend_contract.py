"""What every backend promises the runner: completions as plain cached values, and capabilities read
without loading a model or importing a heavy library."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pytest_mtbench.backends import (
    BackendOptions,
    Capabilities,
    Completion,
    SamplingParams,
    capabilities,
    load_backend,
)
from pytest_mtbench.backends.base import FINISH_CONTEXT_OVERFLOW, FINISH_LENGTH, FINISH_STOP


def test_completion_value_round_trip_is_plain_json() -> None:
    completion = Completion(
        text="Rating: [[4",
        n_tokens=9,
        finish_reason=FINISH_LENGTH,
        truncated=True,
        prompt_tokens=731,
        served_model="gpt-4-0613",
        system_fingerprint="fp_44709d6fcb",
    )
    value = completion.as_value()
    assert value == {
        "text": "Rating: [[4",
        "n_tokens": 9,
        "finish_reason": "length",
        "truncated": True,
        "prompt_tokens": 731,
        "served_model": "gpt-4-0613",
        "system_fingerprint": "fp_44709d6fcb",
    }
    # What the cache stores survives JSON unchanged and reads back to the same completion.
    assert json.loads(json.dumps(value)) == value
    assert Completion.from_value(json.loads(json.dumps(value))) == completion


def test_extra_is_kept_only_when_it_holds_something() -> None:
    assert "extra" not in Completion(text="a").as_value()
    with_extra = Completion(text="a", extra={"probs": [0.25, 0.75]})
    assert with_extra.as_value()["extra"] == {"probs": [0.25, 0.75]}
    assert Completion.from_value(with_extra.as_value()) == with_extra


def test_values_cached_before_the_metadata_existed_still_read() -> None:
    old = Completion.from_value({"text": "Here is my answer", "n_tokens": 4})
    assert old == Completion(text="Here is my answer", n_tokens=4)
    assert (old.finish_reason, old.truncated, old.prompt_tokens) == (None, False, None)
    assert (old.served_model, old.system_fingerprint) == (None, None)
    assert Completion.from_value({"text": "x"}).n_tokens == 0


def test_finish_reason_names() -> None:
    assert (FINISH_STOP, FINISH_LENGTH, FINISH_CONTEXT_OVERFLOW) == ("stop", "length", "context_overflow")


LOCAL_MODEL = Capabilities(
    batch_scope="all", rating_probes=True, preflight=False, local=True, mixed_sampling=True, follow_ups=True
)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("hf/some/dir", LOCAL_MODEL),
        ("./no/prefix", LOCAL_MODEL),
        ("smollm2", LOCAL_MODEL),
        (
            "openai/gpt-4o",
            Capabilities(
                batch_scope="all", rating_probes=False, preflight=True, local=False, isolated_failures=True
            ),
        ),
        ("fake/judge-7", Capabilities(batch_scope="all", rating_probes=False, preflight=False, local=True)),
    ],
)
def test_capabilities_by_spec(spec: str, expected: Capabilities) -> None:
    assert capabilities(spec) == expected


def test_capabilities_are_frozen() -> None:
    caps = capabilities("openai/gpt-4o")
    with pytest.raises(AttributeError):
        caps.local = True  # type: ignore[misc]


def test_capabilities_import_no_heavy_library() -> None:
    code = (
        "import sys\n"
        "from pytest_mtbench.backends import capabilities\n"
        "for spec in ('hf/x', 'openai/gpt-4o', 'fake/echo', 'smollm2'):\n"
        "    capabilities(spec)\n"
        "print(sorted(m for m in ('torch', 'transformers', 'openai', 'httpx2', 'safetensors')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_new_options_default_to_the_safe_side() -> None:
    options = BackendOptions()
    assert options.trust_remote_code is False
    assert options.allow_pickle is False
    with pytest.raises(AttributeError):
        options.allow_pickle = True  # type: ignore[misc]


def test_fake_backend_reports_a_finished_reply() -> None:
    backend = load_backend("fake/judge-8", BackendOptions())
    [completion] = backend.chat([[{"role": "user", "content": "q"}]], SamplingParams(0.0, 64))
    assert completion.text.endswith("Rating: [[8]]")
    assert completion.finish_reason == "stop" and completion.truncated is False
    assert completion.as_value()["n_tokens"] == len(completion.text.split())


def test_options_repr_hides_a_password_in_the_base_url() -> None:
    options = BackendOptions(base_url="https://alice:s3cret-pw@gw.example:8443/v1", timeout=5.0)
    assert "s3cret-pw" not in repr(options)
    assert "base_url='https://alice:***@gw.example:8443/v1'" in repr(options)
    assert "timeout=5.0" in repr(options)
    assert repr(BackendOptions()).startswith("BackendOptions(base_url=None, api_key_env='OPENAI_API_KEY'")
