"""The content-addressed cache: keys, atomic writes, torn entries, concurrent writers."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

from pytest_mtbench.cache import ResultCache, content_key

MATERIAL = {
    "model": {"backend": "hf", "model_sha256": "abc"},
    "messages": [{"role": "user", "content": "hi"}],
}


def test_key_depends_on_every_field_and_not_on_order() -> None:
    key = content_key("answer", MATERIAL)
    assert key == content_key("answer", json.loads(json.dumps(MATERIAL)))
    assert key == content_key("answer", dict(reversed(list(MATERIAL.items()))))
    assert key != content_key("judgment", MATERIAL)
    changed = {**MATERIAL, "model": {"backend": "hf", "model_sha256": "abd"}}
    assert key != content_key("answer", changed)


def test_roundtrip_and_counters(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path)
    key = content_key("answer", MATERIAL)
    assert cache.get("answer", key) is None
    cache.put("answer", key, MATERIAL, {"text": "hello", "n_tokens": 2})
    assert cache.get("answer", key) == {"text": "hello", "n_tokens": 2}
    assert (cache.hits, cache.misses) == (1, 1)
    assert not list(tmp_path.rglob("*.tmp")), "no temp files are left behind"


def test_torn_or_tampered_entries_are_never_served(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path)
    key = content_key("answer", MATERIAL)
    cache.put("answer", key, MATERIAL, {"text": "hello"})
    path = cache.path_for("answer", key)
    assert path is not None
    full = path.read_text()
    path.write_text(full[: len(full) // 2])  # torn write
    assert cache.get("answer", key) is None and cache.corrupt == 1
    entry = json.loads(full)
    entry["material"]["messages"][0]["content"] = "something else"  # content no longer matches its key
    path.write_text(json.dumps(entry))
    assert cache.get("answer", key) is None and cache.corrupt == 2
    cache.put("answer", key, MATERIAL, {"text": "rewritten"})
    assert cache.get("answer", key) == {"text": "rewritten"}


def test_disabled_cache_reads_and_writes_nothing(tmp_path: Path) -> None:
    off = ResultCache(None)
    key = content_key("answer", MATERIAL)
    off.put("answer", key, MATERIAL, {"text": "x"})
    assert off.get("answer", key) is None
    read_only = ResultCache(tmp_path, write=False)
    read_only.put("answer", key, MATERIAL, {"text": "x"})
    assert not list(tmp_path.rglob("*.json"))


def _writer(root: str, worker: int, rounds: int, queue) -> None:
    cache = ResultCache(root)
    bad = 0
    for i in range(rounds):
        shared = {"shared": i % 5}
        mine = {"worker": worker, "i": i}
        for material, value in ((shared, {"text": f"shared-{i % 5}"}), (mine, {"text": f"w{worker}-{i}"})):
            key = content_key("answer", material)
            cache.put("answer", key, material, value)
            got = ResultCache(root).get("answer", key)
            if got != value:
                bad += 1
        # read everyone's shared keys while others are rewriting them
        for j in range(5):
            got = cache.get("answer", content_key("answer", {"shared": j}))
            if got is not None and got != {"text": f"shared-{j}"}:
                bad += 1
    queue.put(bad)


def test_concurrent_writers_never_see_a_corrupt_entry(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, 150, queue)) for w in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
        assert proc.exitcode == 0
    assert [queue.get(timeout=5) for _ in procs] == [0, 0, 0, 0]
    cache = ResultCache(tmp_path)
    for w in range(4):
        for i in range(150):
            assert cache.get("answer", content_key("answer", {"worker": w, "i": i})) == {"text": f"w{w}-{i}"}
    assert cache.corrupt == 0
    assert not list(tmp_path.rglob("*.tmp"))


FIXTURE_CACHE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "cache-0.1.0"


def _stored(cache: ResultCache, kind: str, value: dict) -> tuple[str, Path]:
    key = content_key(kind, MATERIAL)
    cache.put(kind, key, MATERIAL, value)
    path = cache.path_for(kind, key)
    assert path is not None
    return key, path


def test_an_edited_value_fails_its_checksum_and_is_not_served(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path)
    key, path = _stored(cache, "judgment", {"text": "Rating: [[3]]", "n_tokens": 4})
    entry = json.loads(path.read_text())
    entry["value"]["text"] = "Rating: [[10]]"  # still the right shape, but not what was stored
    path.write_text(json.dumps(entry))
    assert cache.get("judgment", key) is None and cache.corrupt == 1


def test_a_value_of_the_wrong_shape_is_not_served(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path)
    wrong = [
        ("answer", {"text": None}),
        ("answer", {"text": ""}),  # an empty reply is a failed call, never an answer
        ("answer", {"text": "ok", "n_tokens": "many"}),
        ("judgment", {"n_tokens": 3}),
        ("judgment", {"text": "x", "truncated": "yes"}),
        ("rating", {"probabilities": "high"}),
        ("rating", {"probabilities": {"7": 1.5}}),
    ]
    for count, (kind, value) in enumerate(wrong, 1):
        key, path = _stored(
            cache, kind, {"text": "placeholder"} if kind != "rating" else {"probabilities": {"7": 1}}
        )
        entry = json.loads(path.read_text())
        entry["value"] = value
        entry.pop("checksum")  # shaped like a 0.1.0 entry, so only the shape check can catch it
        path.write_text(json.dumps(entry))
        assert cache.get(kind, key) is None, value
        assert cache.corrupt == count


def test_entries_written_by_0_1_0_are_still_served(tmp_path: Path) -> None:
    cache = ResultCache(FIXTURE_CACHE / "fake", write=False)
    entries = list((FIXTURE_CACHE / "fake").rglob("*.json"))
    assert len(entries) == 8
    for path in entries:
        kind = path.parent.parent.name
        value = cache.get(kind, path.stem)
        assert value is not None and value["text"]
    assert cache.corrupt == 0 and cache.hits == 8
