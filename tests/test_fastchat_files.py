"""FastChat's files: exports its tools can read, imports that spare judge calls, and the round trip.

The readers at the top are written from FastChat's llm_judge format (common.py's load_model_answers,
show_result.py's single and pairwise tables), not from our writer, so an export that passes them is one
FastChat reads the same way.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from conftest import fake_runner
from pytest_mtbench.backends import replay as replay_module
from pytest_mtbench.backends.replay import prepare
from pytest_mtbench.fastchat import (
    FastChatFileError,
    ImportedJudgments,
    JudgmentSlot,
    fastchat_name,
    read_answer_file,
    read_judgments,
    read_pair_judgments,
    read_single_judgments,
    write_answer_file,
    write_pair_judgments,
    write_single_judgments,
)
from pytest_mtbench.judge import JudgeRequest
from pytest_mtbench.modes import JudgeReply
from pytest_mtbench.modes.pairwise import PairwiseMode, make_matches
from pytest_mtbench.ratings import win_rates
from pytest_mtbench.records import CallInfo
from pytest_mtbench.stats import aggregate

SUBSET = (81, 82, 91, 101, 111, 121, 131, 141, 151, 152)
SINGLE_KEYS = ["question_id", "model", "judge", "user_prompt", "judgment", "score", "turn", "tstamp"]
PAIR_KEYS = [
    "question_id",
    "model_1",
    "model_2",
    "g1_winner",
    "g2_winner",
    "judge",
    "g1_user_prompt",
    "g1_judgment",
    "g2_user_prompt",
    "g2_judgment",
    "turn",
    "tstamp",
]


# ---- FastChat's side, from its documented format -------------------------------------------------


def fastchat_load_model_answers(answer_dir: Path) -> dict[str, dict[int, dict]]:
    """common.load_model_answers: model name = file name minus '.jsonl'; answers keyed by question_id."""
    answers = {}
    for path in sorted(answer_dir.glob("*.jsonl")):
        answers[path.name[:-6]] = {row["question_id"]: row for row in map(json.loads, path.open())}
    return answers


def fastchat_show_single(path: Path) -> dict[str, dict[str, float]]:
    """show_result.display_result_single: drop score -1, then mean per model for turn 1, turn 2, all."""
    rows = [json.loads(line) for line in path.open()]
    scores: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if row["score"] == -1:
            continue
        scores[row["model"]][f"turn_{row['turn']}"].append(row["score"])
        scores[row["model"]]["average"].append(row["score"])
    return {m: {k: sum(v) / len(v) for k, v in parts.items()} for m, parts in scores.items()}


def fastchat_show_pairwise(path: Path) -> dict[str, dict[str, int]]:
    """show_result.display_result_pairwise: drop rows with an 'error' game; a win only when both games
    name the same model, every other parsed row a tie for both."""
    table: dict[str, dict[str, int]] = defaultdict(lambda: {"win": 0, "loss": 0, "tie": 0})
    for row in map(json.loads, path.open()):
        if row["g1_winner"] == "error" or row["g2_winner"] == "error":
            continue
        if row["g1_winner"] == "tie" or row["g1_winner"] != row["g2_winner"]:
            table[row["model_1"]]["tie"] += 1
            table[row["model_2"]]["tie"] += 1
        else:
            winner, loser = (
                (row["model_1"], row["model_2"])
                if row["g1_winner"] == "model_1"
                else (row["model_2"], row["model_1"])
            )
            table[winner]["win"] += 1
            table[loser]["loss"] += 1
    return dict(table)


# ---- our side ------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _forget_prepared(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replay_module, "_PREPARED", {})


@pytest.fixture
def judged(official, tmp_path: Path):
    """A run on 10 questions: 9 judged with varied ratings, one (152) by a judge that writes none."""
    questions, _, _ = official
    rated = [questions[q] for q in SUBSET if q != 152]
    records = fake_runner(official, "fake/echo", "fake/judge-varied", tmp_path / "cache").run(rated)
    silent = fake_runner(official, "fake/echo", "fake/silent", tmp_path / "cache").run([questions[152]])
    return {**records, **silent}


def _expected_slots(records, model: str) -> dict[JudgmentSlot, str]:
    return {
        JudgmentSlot.single(r.question_id, model, t.turn, j.prompt.name): j.prompt.user
        for r in records.values()
        for t in r.turns
        for j in t.judgments
    }


def test_export_is_read_by_fastchats_tools_with_the_same_scores(judged, tmp_path: Path) -> None:
    out = tmp_path / "export"
    answer_path, skipped = write_answer_file(out, "echo", judged.values(), tstamp=1.5)
    export = write_single_judgments(out, "judge-varied", {"echo": judged.values()}, tstamp=1.5)
    assert skipped == [] and (export.rows, export.unscored, export.skipped_questions) == (20, 2, [])
    assert export.path == out / "model_judgment" / "judge-varied_single.jsonl"

    answers = fastchat_load_model_answers(out / "model_answer")
    assert list(answers) == ["echo"] and sorted(answers["echo"]) == sorted(SUBSET)
    for qid, record in judged.items():
        row = answers["echo"][qid]
        assert row["choices"][0]["turns"] == [t.answer for t in record.turns]
        assert row["model_id"] == "echo" and row["tstamp"] == 1.5 and len(row["answer_id"]) == 22

    rows = [json.loads(line) for line in export.path.open()]
    assert all(list(row) == SINGLE_KEYS for row in rows)
    assert all(row["judge"][0] == "judge-varied" and row["judge"][1].startswith("single-") for row in rows)
    assert [row["score"] for row in rows if row["question_id"] == 152] == [-1, -1]  # only here: -1
    shown = fastchat_show_single(export.path)["echo"]
    _, overall = aggregate(judged.values())
    assert shown["turn_1"] == pytest.approx(overall.turn_1)
    assert shown["turn_2"] == pytest.approx(overall.turn_2)
    assert shown["average"] == pytest.approx(overall.score)
    assert overall.n_unscored == export.unscored == 2


def test_export_skips_failed_questions_and_says_which(judged, tmp_path: Path) -> None:
    judged[81].error = "turn 1: --mtbench-offline: answer not in the cache"
    judged[81].turns = []
    _, skipped = write_answer_file(tmp_path, "echo", judged.values())
    export = write_single_judgments(tmp_path, "judge-varied", {"echo": judged.values()})
    assert skipped == [81] and export.skipped_questions == [81] and export.rows == 18


def test_round_trip_export_import_gives_identical_scores_without_judge_calls(
    official, judged, tmp_path: Path
) -> None:
    questions, _, _ = official
    out = tmp_path / "export"
    answer_path, _ = write_answer_file(out, "echo", judged.values())
    export = write_single_judgments(out, "judge-varied", {"echo": judged.values()})

    imported = ImportedJudgments.read([export.path], judge="judge-varied")
    assert len(imported) == 20
    assert prepare(answer_path, questions.values()).errors == []
    spec = f"replay/{answer_path}"
    assert fastchat_name(spec) == "echo"
    # A judge that writes no rating at all: any judgment not served from the import would be unscored.
    again_runner = fake_runner(official, spec, "fake/silent", tmp_path / "fresh-cache", reuse=imported)
    again = again_runner.run([questions[q] for q in SUBSET])
    assert again_runner.judging.calls == 0 and again_runner.judging.cached == 20
    for qid in SUBSET:
        assert [t.score for t in again[qid].turns] == [t.score for t in judged[qid].turns]
        assert [t.judgments[0].text for t in again[qid].turns] == [
            t.judgments[0].text for t in judged[qid].turns
        ]
    check = imported.check(_expected_slots(again, "echo"))
    assert (check.rows, check.reusable, check.differing, check.not_in_run) == (20, 20, 0, 0)


def test_imported_judgment_of_another_prompt_is_not_reused_and_is_counted(
    official, judged, tmp_path: Path
) -> None:
    questions, _, _ = official
    out = tmp_path / "export"
    write_answer_file(out, "echo", judged.values())
    export = write_single_judgments(out, "judge-varied", {"echo": judged.values()})
    rows = [json.loads(line) for line in export.path.open()]
    edited = next(r for r in rows if r["question_id"] == 91 and r["turn"] == 2)
    edited["user_prompt"] += "\n(rendered from another template)"
    rows.append({**rows[0], "model": "other-model"})  # a model this run does not have
    rows.append({**rows[1], "judge": ["gpt-4", rows[1]["judge"][1]]})  # another judge
    rows.append({**rows[2], "judgment": "$ERROR$"})  # FastChat's placeholder for a failed API call
    export.path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    imported = ImportedJudgments.read([export.path], judge="judge-varied")
    check = imported.check(_expected_slots(judged, "echo"))
    assert (check.rows, check.reusable, check.differing, check.not_in_run) == (23, 19, 1, 1)
    assert (check.other_judge, check.api_errors) == (1, 1)
    assert check.differing_examples == ("question 91 turn 2 echo (single-v1-multi-turn)",)
    assert json.loads(json.dumps(check.as_dict())) == check.as_dict()

    runner = fake_runner(official, "fake/echo", "fake/judge-varied", tmp_path / "fresh-cache", reuse=imported)
    runner.run([questions[q] for q in SUBSET])
    assert runner.judging.calls == 1  # only the judgment whose prompt differs is paid again


def test_single_judgment_rows_read_back(judged, tmp_path: Path) -> None:
    export = write_single_judgments(tmp_path, "judge-varied", {"echo": judged.values()}, tstamp=2.0)
    rows = read_single_judgments(export.path)
    assert len(rows) == 20
    first = rows[0]
    record = judged[first.question_id]
    assert (first.model, first.judge, first.turn, first.tstamp) == ("echo", "judge-varied", 1, 2.0)
    assert first.prompt_name == record.turns[0].judgments[0].prompt.name
    assert first.user_prompt == record.turns[0].judgments[0].prompt.user
    assert first.score == record.turns[0].score
    assert [r.score for r in rows if r.question_id == 152] == [None, None]  # FastChat's -1, read as unscored
    assert read_judgments(export.path) == (rows, [])


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"judge": "gpt-4"}, '"judge" must be [judge model, prompt name]'),
        ({"score": "7"}, "'score' must be a number (-1 when unscored)"),
        ({"turn": 0}, "'turn' must be 1 or more"),
        ({"question_id": None}, "'question_id' must be an integer"),
        ({"user_prompt": None}, "'user_prompt' must be a string"),
    ],
)
def test_malformed_judgment_rows_name_file_and_line(tmp_path: Path, row: dict, message: str) -> None:
    good = {
        "question_id": 81,
        "model": "m",
        "judge": ["gpt-4", "single-v1"],
        "user_prompt": "u",
        "judgment": "Rating: [[5]]",
        "score": 5,
        "turn": 1,
        "tstamp": 0.0,
    }
    path = tmp_path / "gpt-4_single.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, **row}) + "\n")
    with pytest.raises(FastChatFileError) as info:
        read_single_judgments(path)
    assert str(info.value).startswith(f"{path}:2: {message}")


def test_unknown_judgment_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps({"question_id": 1, "choices": []}) + "\n")
    with pytest.raises(FastChatFileError, match="not a FastChat judgment file"):
        read_judgments(path)


# ---- pairwise files -------------------------------------------------------------------------------


class _ScriptedPairJudge:
    """Prefers the candidate on questions not divisible by 3, but always says [[A]] in the second game of
    odd questions (so the orders sometimes disagree), and writes no verdict for question 111's turn 2."""

    def complete(self, requests: list[JudgeRequest]) -> list[JudgeReply]:
        replies = []
        for index, request in enumerate(requests):
            game = 1 + index % 2
            shown_first = "cand" if request.user.index("cand ") < request.user.index("base ") else "base"
            preferred = "cand" if request.question_id % 3 else "base"
            if request.question_id == 111 and request.turn == 2:
                text = "I cannot decide."
            elif game == 2 and request.question_id % 2:
                text = "[[A]]"
            else:
                text = "[[A]]" if shown_first == preferred else "[[B]]"
            replies.append(JudgeReply(text, CallInfo()))
        return replies

    def rating_probabilities(self, requests, judgments):  # pragma: no cover
        raise AssertionError


def _pair_results(official):
    questions, references, prompts = official
    subset = [questions[q] for q in SUBSET]
    answers = {
        "cand": {
            q.question_id: (f"cand {q.question_id} " * (q.question_id % 5 + 1), "cand two") for q in subset
        },
        "base": {q.question_id: ("base answer of middling length", "base turn two answer") for q in subset},
    }
    matches = make_matches(subset, answers, baseline="base")
    return PairwiseMode(prompts, references).judge_pairs(matches, _ScriptedPairJudge()).results


def test_pair_export_is_read_by_fastchats_show_result_with_our_counts(official, tmp_path: Path) -> None:
    results = _pair_results(official)
    renamed = write_pair_judgments(tmp_path / "renamed", "j", results, names={"cand": "fake/echo-model"})
    assert {json.loads(line)["model_1"] for line in renamed.path.open()} == {"fake/echo-model"}
    export = write_pair_judgments(tmp_path, "judge-varied", results, tstamp=3.0)
    assert export.path == tmp_path / "model_judgment" / "judge-varied_pair.jsonl"
    assert (export.rows, export.unparsable) == (20, 1)
    rows = [json.loads(line) for line in export.path.open()]
    assert all(list(row) == PAIR_KEYS for row in rows)
    assert {(r["model_1"], r["model_2"]) for r in rows} == {("cand", "base")}
    assert {r["g1_winner"] for r in rows} <= {"model_1", "model_2", "tie", "error"}

    table = fastchat_show_pairwise(export.path)
    ours = {r.group: r for r in win_rates(results, "cand", "base")}["overall"]
    assert table["cand"] == {"win": ours.wins, "loss": ours.losses, "tie": ours.ties}
    assert ours.unparsable == 1 and ours.wins + ours.losses + ours.ties == 19
    assert ours.ties > 0 and ours.wins > 0  # the scripted judge disagrees with itself sometimes

    back = read_pair_judgments(export.path)
    assert [(r.question_id, r.turn, r.g1_winner, r.g2_winner) for r in back] == [
        (r["question_id"], r["turn"], r["g1_winner"], r["g2_winner"]) for r in rows
    ]
    assert read_judgments(export.path) == ([], back)


def test_pair_import_serves_both_orders_whichever_way_the_file_lists_the_models(
    official, tmp_path: Path
) -> None:
    results = _pair_results(official)
    export = write_pair_judgments(tmp_path, "gpt-4", results)
    rows = [json.loads(line) for line in export.path.open()]
    # FastChat may list the pair the other way round: game 1 of that file is our game 2.
    flipped = [
        {
            **r,
            "model_1": r["model_2"],
            "model_2": r["model_1"],
            "g1_user_prompt": r["g2_user_prompt"],
            "g2_user_prompt": r["g1_user_prompt"],
            "g1_judgment": r["g2_judgment"],
            "g2_judgment": r["g1_judgment"],
        }
        for r in rows
    ]
    export.path.write_text("".join(json.dumps(r) + "\n" for r in flipped))
    imported = ImportedJudgments.read([export.path], judge="gpt-4")
    expected = {}
    for r in results:
        for game, verdict in ((1, r.g1), (2, r.g2)):
            expected[
                JudgmentSlot.pair(r.question_id, r.model_a, r.model_b, r.turn, verdict.prompt.name, game)
            ] = verdict.prompt.user
            found = imported.find(verdict.prompt.system, verdict.prompt.user, 0)
            assert found is not None and found.text == verdict.text
    check = imported.check(expected)
    assert (check.rows, check.reusable, check.differing) == (40, 40, 0)


def test_answer_file_round_trip_and_names(judged, tmp_path: Path, official) -> None:
    questions, _, _ = official
    path, _ = write_answer_file(tmp_path, "my-model", judged.values())
    read = read_answer_file(path, [questions[q] for q in SUBSET])
    assert read.problems == [] and read.model == "my-model" and read.model_ids == ("my-model",)
    assert read.answers == {qid: tuple(t.answer for t in r.turns) for qid, r in judged.items()}
    assert fastchat_name("openai/gpt-4") == "gpt-4"
    assert fastchat_name("openai/meta-llama/Llama-3.1-8B-Instruct") == "Llama-3.1-8B-Instruct"
    assert fastchat_name("hf/models/my-model/") == "my-model"
    assert fastchat_name("models/tiny.gguf") == "tiny"
    assert fastchat_name("replay/answers/vicuna-13b.jsonl") == "vicuna-13b"
    assert fastchat_name("fake/judge-7") == "judge-7"
