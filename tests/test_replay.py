"""replay/PATH: a FastChat answer file scored as if the model had answered, with a message per problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import fake_runner, requires
from pytest_mtbench.backends import BackendError, BackendOptions, SamplingParams, capabilities
from pytest_mtbench.backends import replay as replay_module
from pytest_mtbench.backends import static_identity as backend_static_identity
from pytest_mtbench.backends.replay import FINISH_MISSING_ANSWER, create, prepare
from pytest_mtbench.fastchat import write_answer_file
from pytest_mtbench.questions import Question

FIRST_OF_EACH_CATEGORY = (81, 91, 101, 111, 121, 131, 141, 151)
PARAMS = SamplingParams(temperature=0.0, max_new_tokens=16)


@pytest.fixture(autouse=True)
def _forget_prepared(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replay_module, "_PREPARED", {})


def _answer_line(qid: int, turns: list[str], model_id: str = "m", **extra) -> str:
    return json.dumps(
        {"question_id": qid, "model_id": model_id, "choices": [{"index": 0, "turns": turns}], **extra}
    )


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _two_questions() -> list[Question]:
    return [
        Question(1, "writing", ("Write a poem.", "Now shorter.")),
        Question(2, "stem", ("Explain gravity.", "To a child.")),
    ]


def _conversation(*turns: str) -> list[dict[str, str]]:
    messages = []
    for i, text in enumerate(turns):
        role = "user" if i % 2 == 0 else "assistant"
        messages.append({"role": role, "content": text})
    return messages


def test_replay_scores_equal_generating_the_same_answers(official, tmp_path: Path) -> None:
    questions, _, _ = official
    subset = [questions[q] for q in FIRST_OF_EACH_CATEGORY]
    generated = fake_runner(official, "fake/echo", "fake/judge-varied", tmp_path / "cache-generated").run(
        subset
    )
    answer_file, skipped = write_answer_file(tmp_path / "fastchat", "echo", generated.values(), tstamp=0.0)
    assert skipped == [] and answer_file == tmp_path / "fastchat" / "model_answer" / "echo.jsonl"

    prepared = prepare(answer_file, questions.values())
    assert prepared.errors == [] and prepared.model == "echo" and prepared.note is None
    # every question the file lacks fails its item (here: the 72 not exported)
    assert len(prepared.item_failures) == 80 - len(subset)
    replayed_runner = fake_runner(
        official, f"replay/{answer_file}", "fake/judge-varied", tmp_path / "cache-replayed"
    )
    replayed = replayed_runner.run(subset)
    assert replayed_runner.generation.calls == 16 and replayed_runner.judging.calls == 16
    scores = []
    for qid in FIRST_OF_EACH_CATEGORY:
        before, after = generated[qid], replayed[qid]
        assert after.error is None and after.model == f"replay/{answer_file}"
        assert [t.answer for t in after.turns] == [t.answer for t in before.turns]
        assert [t.judgments[0].prompt for t in after.turns] == [t.judgments[0].prompt for t in before.turns]
        assert [t.score for t in after.turns] == [t.score for t in before.turns]
        scores += [t.score for t in after.turns]
    assert len(set(scores)) > 3  # varied scores: agreement is not an accident of a constant judge


def test_missing_question_answers_with_the_missing_answer_contract(tmp_path: Path) -> None:
    path = _write(tmp_path / "m.jsonl", [_answer_line(1, ["a poem", "a short poem"])])
    prepared = prepare(path, _two_questions())
    assert prepared.errors == []
    assert prepared.item_failures == {2: f"question 2: no answer in {path}"}
    backend = create(str(path), BackendOptions())
    first, second, gone = backend.chat(
        [
            _conversation("Write a poem."),
            _conversation("Write a poem.", "a poem", "Now shorter."),
            _conversation("Explain gravity."),
        ],
        PARAMS,
    )
    assert (first.text, first.finish_reason) == ("a poem", None)
    assert second.text == "a short poem"
    assert (gone.text, gone.finish_reason) == ("", FINISH_MISSING_ANSWER)
    assert gone.extra == {"missing": f"question 2: no answer in {path}"}
    unknown = backend.chat([_conversation("A question nobody asked.")], PARAMS)[0]
    assert (
        unknown.finish_reason == FINISH_MISSING_ANSWER
        and "matches none of the questions" in unknown.extra["missing"]
    )


def test_wrong_number_of_turns_fails_that_question(tmp_path: Path) -> None:
    path = _write(tmp_path / "m.jsonl", [_answer_line(1, ["only one turn"]), _answer_line(2, ["g", "g2"])])
    prepared = prepare(path, _two_questions())
    assert prepared.errors == []
    assert prepared.item_failures == {1: f"{path}:1: question 1 has 2 turn(s) but the answer has 1"}
    reply = create(str(path), BackendOptions()).chat([_conversation("Write a poem.")], PARAMS)[0]
    assert (
        reply.finish_reason == FINISH_MISSING_ANSWER
        and "has 2 turn(s) but the answer has 1" in reply.extra["missing"]
    )


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (
            [_answer_line(1, ["a", "b"]), _answer_line(2, ["c", "d"]), _answer_line(1, ["e", "f"])],
            "{path}:3: question 1 is answered twice (also at line 1); keep one answer per question",
        ),
        (
            [_answer_line(1, ["a", "b"]), _answer_line(2, ["c", "d"]), _answer_line(7, ["e", "f"])],
            "{path}:3: question 7 is not in the question set; is the file for another question set",
        ),
        (
            [_answer_line(1, ["a", "b"]), json.dumps({"question_id": 2, "answer": "c"})],
            '{path}:2: not a FastChat answer (no turns); each line needs an integer "question_id"',
        ),
        (
            [json.dumps({"question_id": "1", "choices": [{"turns": ["a", "b"]}]})],
            "{path}:1: not a FastChat answer (no integer question_id)",
        ),
        (
            [_answer_line(1, ["a", "b"]), json.dumps({"question_id": 2, "choices": [{"turns": ["c", 4]}]})],
            "{path}:2: not a FastChat answer (no turns)",
        ),
        ([_answer_line(1, ["a", "b"]), "{not json"], "{path}:2: not valid JSON"),
        (["[1, 2]"], "{path}:1: expected a JSON object {{...}} on each line, got an array"),
        ([], "{path}: holds no answers"),
    ],
    ids=[
        "duplicate",
        "unknown",
        "no-choices",
        "id-not-int",
        "turn-not-text",
        "not-json",
        "not-object",
        "empty",
    ],
)
def test_unusable_files_give_one_message_per_problem(tmp_path: Path, lines: list[str], message: str) -> None:
    path = _write(tmp_path / "m.jsonl", lines)
    prepared = prepare(path, _two_questions())
    expected = message.format(path=path)
    assert any(error.startswith(expected) for error in prepared.errors), prepared.errors
    with pytest.raises(BackendError, match="not prepared"):
        create(str(path), BackendOptions())


def test_every_problem_is_listed_not_only_the_first(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "m.jsonl",
        [
            _answer_line(1, ["a"]),
            _answer_line(7, ["x", "y"]),
            _answer_line(8, ["x", "y"]),
            _answer_line(7, ["z", "w"]),
        ],
    )
    prepared = prepare(path, _two_questions())
    assert [e.split(": ", 1)[1] for e in prepared.errors] == [
        "question 7 is not in the question set; is the file for another question set (--mtbench-questions)?",
        "question 8 is not in the question set; is the file for another question set (--mtbench-questions)?",
        "question 7 is answered twice (also at line 2); keep one answer per question (FastChat's "
        "reorg_answer_file keeps the last)",
    ]
    assert set(prepared.item_failures) == {1, 2}


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    prepared = prepare(tmp_path / "nowhere.jsonl", _two_questions())
    assert prepared.errors == [f"{tmp_path / 'nowhere.jsonl'}: no such FastChat answer file"]


def test_questions_with_the_same_text_but_different_answers_are_refused(tmp_path: Path) -> None:
    twins = [Question(1, "writing", ("Same?", "A")), Question(2, "writing", ("Same?", "B"))]
    path = _write(tmp_path / "m.jsonl", [_answer_line(1, ["one", "x"]), _answer_line(2, ["two", "y"])])
    prepared = prepare(path, twins)
    assert prepared.errors == [
        f"questions 1 and 2 have the same text up to turn 1, but {path} answers them differently: "
        "a replay cannot tell which answer is meant"
    ]
    same = _write(tmp_path / "same.jsonl", [_answer_line(1, ["one", "x"]), _answer_line(2, ["one", "y"])])
    prepared = prepare(same, twins)
    assert prepared.errors == []  # same first answer: turn 2's texts tell them apart
    backend = create(str(same), BackendOptions())
    assert backend.chat([_conversation("Same?", "one", "B")], PARAMS)[0].text == "y"


def test_identity_is_the_file_and_its_name_not_the_inner_model_id(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "vicuna-13b.jsonl",
        [_answer_line(1, ["a", "b"], "vicuna-13b-v1.3"), _answer_line(2, ["c", "d"], "vicuna-13b-v1.3")],
    )
    prepared = prepare(path, _two_questions())
    assert prepared.model == "vicuna-13b"
    assert prepared.note == (
        f"{path}: the answers are named 'vicuna-13b' after the file, as FastChat names them; "
        "the file's model_id says 'vicuna-13b-v1.3'"
    )
    import hashlib

    expected = {
        "backend": "replay",
        "answers_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "model": "vicuna-13b",
    }
    spec = f"replay/{path}"
    assert backend_static_identity(spec, BackendOptions()) == expected
    assert create(str(path), BackendOptions()).identity() == expected
    caps = capabilities(spec)
    assert (caps.batch_scope, caps.local, caps.rating_probes, caps.preflight) == ("all", True, False, False)
    path.write_text(path.read_text() + "\n", encoding="utf-8")
    assert backend_static_identity(spec, BackendOptions())["answers_sha256"] != expected["answers_sha256"]
    with pytest.raises(BackendError, match="changed since it was checked"):
        create(str(path), BackendOptions())


def test_published_rows_with_extra_keys_and_several_choices_use_the_first_choice(tmp_path: Path) -> None:
    line = json.dumps(
        {
            "question_id": 1,
            "answer_id": "abc",
            "model_id": "m",
            "choices": [
                {"index": 0, "turns": ["first", "second"]},
                {"index": 1, "turns": ["other", "other"]},
            ],
            "tstamp": 1687000000.0,
        }
    )
    path = _write(tmp_path / "m.jsonl", [line, _answer_line(2, ["c", "d"])])
    prepared = prepare(path, _two_questions())
    assert prepared.errors == [] and prepared.answers[1] == ("first", "second")


def test_runner_fails_a_question_missing_from_the_file(official, tmp_path: Path) -> None:
    questions, _, _ = official
    path = _write(tmp_path / "m.jsonl", [_answer_line(81, ["a", "b"])])
    assert prepare(path, questions.values()).errors == []
    records = fake_runner(official, f"replay/{path}", "fake/judge-varied", tmp_path / "cache").run(
        [questions[81], questions[82]]
    )
    assert records[81].error is None
    assert records[82].error is not None and "question 82: no answer in" in records[82].error


def test_a_published_run_reproduces_offline_with_an_empty_cache_and_no_judge(
    pytester: pytest.Pytester, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FastChat answers + GPT-4 judgments, `--mtbench-offline`, an empty cache, no key: nothing to call,
    and the scores are FastChat's show_result numbers (mean of the scored turns, overall and per turn)."""
    from pytest_mtbench.testing.published import published_files

    files = published_files(shared_data, ["vicuna-x"], lambda model, qid, turn: 1 + (qid * 7 + turn * 3) % 10)
    published = files.write(pytester.path / "mt_bench")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    (pytester.path / "empty-cache").mkdir()
    report_path = pytester.path / "report.json"
    result = pytester.runpytest_inprocess(
        "-p",
        "no:cacheprovider",
        f"--mtbench-model=replay/{published}/model_answer/vicuna-x.jsonl",
        "--mtbench-judge=openai/gpt-4",
        f"--mtbench-import-judgments={published}/model_judgment/gpt-4_single.jsonl",
        "--mtbench-offline",
        f"--mtbench-data={shared_data}",
        f"--mtbench-cache={pytester.path / 'empty-cache'}",
        f"--mtbench-report={report_path}",
    )
    assert result.ret == 0, result.stdout.str()
    report = json.loads(report_path.read_text())
    scores = {(row["question_id"], row["turn"]): row["score"] for row in files.judgments}
    turn_1 = [s for (_, turn), s in scores.items() if turn == 1]
    assert report["overall"] == pytest.approx(sum(scores.values()) / len(scores), abs=1e-12)
    assert report["overall_detail"]["turn_1"] == pytest.approx(sum(turn_1) / len(turn_1), abs=1e-12)
    assert report["run"]["phases"]["judging"]["calls"] == 0
    assert not list((pytester.path / "empty-cache").rglob("*.json"))  # offline: nothing written either


@requires("openai")
def test_every_judgment_imported_needs_no_key_and_no_call(
    pytester: pytest.Pytester, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --mtbench-offline: the judge (OpenAI's, no key set) is never needed, so never checked."""
    from pytest_mtbench.testing.published import published_files

    files = published_files(shared_data, ["vicuna-x"], lambda model, qid, turn: 1 + qid % 10)
    published = files.write(pytester.path / "mt_bench")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    result = pytester.runpytest_inprocess(
        "-p",
        "no:cacheprovider",
        f"--mtbench-model=replay/{published}/model_answer/vicuna-x.jsonl",
        "--mtbench-judge=openai/gpt-4",
        f"--mtbench-import-judgments={published}/model_judgment/gpt-4_single.jsonl",
        f"--mtbench-data={shared_data}",
        f"--mtbench-cache={pytester.path / 'cache'}",
        "-k",
        "writing",
    )
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    assert "judging: 0 calls, 20 cached" in result.stdout.str()
