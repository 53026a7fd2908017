"""GQA: question files, the official balanced accuracy (open/binary, consistency), the submission file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nas.errors import UserError
from tasks.gqa.metric import gqa_scores
from tasks.gqa.questions import load_questions, parse_questions
from tasks.gqa.submission import read_predictions, write_submission


def record(answer: str | None, structural: str = "query", balanced: bool = True, entailed=(), image="n1") -> dict:
    out = {"imageId": image, "question": "What is it?", "isBalanced": balanced, "entailed": list(entailed),
           "types": {"structural": structural, "semantic": "obj", "detailed": "x"},
           "semantic": [{"operation": "select", "dependencies": [], "argument": "scene"},
                        {"operation": "query", "dependencies": [0], "argument": "name"}]}
    if answer is not None:
        out["answer"] = answer
    return out


QUESTIONS = {
    "1": record("bedroom", entailed=["1", "2"]),  # open; entails 2
    "2": record("yes", "verify"),  # binary
    "3": record("no", "logical", entailed=["2", "4"]),  # binary; entails 2 and 4
    "4": record("left", "choose", balanced=False),  # unbalanced: not scored, but entailed by 3
    "5": record("red"),  # open
}


def test_hand_computed_accuracy_open_binary_and_consistency() -> None:
    questions = parse_questions(QUESTIONS, "q.json")
    predictions = {"1": "bedroom", "2": "no", "3": "no", "4": "left", "5": "Red"}  # exact match: 'Red' is wrong
    scores = gqa_scores(questions, predictions, "p.json")
    # balanced: 1 right, 2 wrong, 3 right, 5 wrong -> 2/4; open {1, 5} -> 1/2; binary {2, 3} -> 1/2
    assert (scores.accuracy, scores.open, scores.binary, scores.questions) == (50.0, 50.0, 50.0, 4)
    # correct and entailing: 1 -> [2] wrong: 0; 3 -> [2 wrong, 4 right]: 50. Mean 25.
    assert scores.consistency == 25.0
    predictions["2"] = "yes"
    scores = gqa_scores(questions, predictions, "p.json")
    assert (scores.accuracy, scores.binary, scores.consistency) == (75.0, 100.0, 100.0)


def test_a_balanced_question_without_a_prediction_is_an_error_not_a_zero() -> None:
    questions = parse_questions(QUESTIONS, "q.json")
    with pytest.raises(UserError, match=r"p.json: 1 of the balanced questions has no prediction \('5'\)"):
        gqa_scores(questions, {"1": "bedroom", "2": "yes", "3": "no", "4": "left"}, "p.json")
    with pytest.raises(UserError, match="1 of the questions entailed by '3' has no prediction \\('4'\\)"):
        gqa_scores(questions, {"1": "bedroom", "2": "yes", "3": "no", "5": "red"}, "p.json")


def test_question_file_round_trip_keeps_programs_and_test_files_load_without_answers(tmp_path: Path) -> None:
    path = tmp_path / "testdev_balanced_questions.json"
    test_record = {k: v for k, v in record(None).items() if k != "types"}
    path.write_text(json.dumps({**QUESTIONS, "9": test_record}))
    questions = load_questions(path)
    assert list(questions) == ["1", "2", "3", "4", "5", "9"]
    assert questions["3"].entailed == ("2", "4") and not questions["4"].balanced
    assert [(op.operation, op.dependencies, op.argument) for op in questions["1"].program] == \
        [("select", (), "scene"), ("query", (0,), "name")]
    assert questions["9"].answer is None and questions["9"].structural is None
    with pytest.raises(UserError, match="1 of the balanced questions has no 'answer'"):
        gqa_scores(questions, {q: "x" for q in questions}, "p.json")


@pytest.mark.parametrize("document, message", [
    ([], "expected a JSON object keyed by question id, got list"),
    ({"7": "x"}, "question '7': expected an object"),
    ({"7": {"question": "q", "isBalanced": True}}, "question '7': missing key 'imageId'"),
    ({"7": {"imageId": 5, "question": "q", "isBalanced": True}}, "'imageId' must be a string, got integer 5"),
    ({"7": {"imageId": "n", "question": "q", "isBalanced": "yes"}}, "'isBalanced' must be true or false"),
    ({"7": {**record("a"), "entailed": [8]}}, "'entailed' must be a list of question-id strings"),
    ({"7": {**record("a"), "semantic": [{"operation": "query", "dependencies": [0], "argument": ""}]}},
     r"semantic\[0\]: 'dependencies' must list earlier step numbers"),
])
def test_bad_question_files_name_the_question_and_key(document, message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse_questions(document, "q.json")


def test_submission_is_written_in_question_order_and_refused_when_incomplete(tmp_path: Path) -> None:
    path = tmp_path / "submit.json"
    write_submission(path, {"2": "yes", "1": "bedroom"}, ["1", "2"])
    assert json.loads(path.read_text()) == [{"questionId": "1", "prediction": "bedroom"},
                                            {"questionId": "2", "prediction": "yes"}]
    assert read_predictions(path) == {"1": "bedroom", "2": "yes"}
    refused = tmp_path / "refused.json"
    with pytest.raises(UserError, match="refusing to write an incomplete submission: 1 of 3 questions have no "
                                        "prediction \\(3\\)"):
        write_submission(refused, {"1": "a", "2": "b"}, ["1", "2", "3"])
    with pytest.raises(UserError, match="are not in the split"):
        write_submission(refused, {"1": "a", "2": "b", "x": "c"}, ["1", "2"])
    assert not refused.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["submit.json"]


def test_bad_prediction_files(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps([{"questionId": "1", "prediction": "a"}, {"questionId": "1", "prediction": "b"}]))
    with pytest.raises(UserError, match="question '1' is predicted twice \\(item 1\\)"):
        read_predictions(path)
    path.write_text(json.dumps([{"questionId": 1, "prediction": "a"}]))
    with pytest.raises(UserError, match="item 0 must be"):
        read_predictions(path)
