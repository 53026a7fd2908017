"""Tests for tasks.nlvr2: the annotation format, the official metrics and test_predict.csv.

The metric rules come from lil-lab/nlvr@e6a286aa77 ``nlvr2/eval/metrics.py``; every expected
number below is counted by hand in the comment next to it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nas.errors import UserError
from tasks.nlvr2.annotations import Nlvr2Example, parse_identifier, read_annotations, write_annotations
from tasks.nlvr2.metric import Nlvr2Scores, consistency_key, evaluate_nlvr2_files, nlvr2_scores
from tasks.nlvr2.predictions import SUBMISSION_NAME, read_predictions, write_predictions


def _ex(identifier: str, label: bool | None = True, sentence: str = "Two dogs.") -> Nlvr2Example:
    return Nlvr2Example(identifier, sentence, label)


def _line(**record: object) -> str:
    return json.dumps(record)


GOOD = _line(identifier="dev-850-0-0", sentence="The right image shows a walkway.", label="False")


def _user_error(call, *args) -> str:
    with pytest.raises(UserError) as error:
        call(*args)
    message = str(error.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------
# Records and identifiers
# --------------------------------------------------------------------------

def test_image_ids_drop_the_sentence_id_like_lxmert_obj36_rows() -> None:
    example = _ex("test1-0012-3-1")
    assert (example.left_image, example.right_image) == ("test1-0012-3-img0", "test1-0012-3-img1")
    assert parse_identifier("test1-0012-3-1") == ("test1", "0012", "3", "1")  # leading zeros kept


@pytest.mark.parametrize("identifier", ["dev-850-0", "dev-850-0-0-0", "dev-a-0-0", "-850-0-0", "dev-850-0-0 ",
                                        "dev-٨٥٠-0-0"])
def test_malformed_identifiers_are_refused(identifier: str) -> None:
    with pytest.raises(ValueError):
        parse_identifier(identifier)
    with pytest.raises(ValueError):
        _ex(identifier)


def test_consistency_key_blanks_only_the_pair_id() -> None:
    assert consistency_key("dev-850-1-0") == "dev-850--0"
    assert consistency_key("dev-850-0-0") == consistency_key("dev-850-3-0")
    assert consistency_key("dev-850-0-0") != consistency_key("dev-851-0-0")  # other set: other sentence
    assert consistency_key("dev-850-0-0") != consistency_key("dev-850-0-1")


# --------------------------------------------------------------------------
# Metric
# --------------------------------------------------------------------------

def test_one_wrong_pair_makes_its_sentence_inconsistent() -> None:
    examples = [_ex("dev-1-0-0", True), _ex("dev-1-1-0", False),   # sentence dev-1--0, two pairs
                _ex("dev-2-0-1", True), _ex("dev-2-1-1", False)]   # sentence dev-2--1, two pairs
    predictions = {"dev-1-0-0": "True", "dev-1-1-0": "True",       # second pair wrong
                   "dev-2-0-1": "true", "dev-2-1-1": "FALSE"}      # both right, in other cases
    scores = nlvr2_scores(examples, predictions)
    # accuracy: 3 correct of 4 -> 75%; consistency: 1 of 2 sentences all correct -> 50%.
    assert scores == Nlvr2Scores(accuracy=75.0, consistency=50.0, num_examples=4, num_correct=3,
                                 num_sentences=2, num_consistent=1)
    assert scores.to_dict() == {"accuracy": 75.0, "consistency": 50.0, "num_examples": 4, "num_correct": 3,
                                "num_sentences": 2, "num_consistent": 1}


def test_uneven_groups_and_boolean_predictions() -> None:
    examples = [_ex("dev-5-0-0", True), _ex("dev-5-1-0", True), _ex("dev-5-2-0", False),  # 3 pairs, all right
                _ex("dev-6-0-0", False),                                                  # wrong
                _ex("dev-7-0-2", True), _ex("dev-7-1-2", False)]                          # first wrong
    predictions = {"dev-5-0-0": True, "dev-5-1-0": "tRuE", "dev-5-2-0": False,
                   "dev-6-0-0": "True", "dev-7-0-2": "yes", "dev-7-1-2": "false",
                   "test1-9-9-9": True}  # not an example: ignored, as the official script does
    scores = nlvr2_scores(examples, predictions)
    # accuracy: 4 correct of 6 -> 66.66...%; consistency: only dev-5--0 of 3 sentences -> 33.33...%.
    assert scores.num_correct == 4 and scores.num_consistent == 1 and scores.num_sentences == 3
    assert scores.accuracy == 100 * (4 / 6)
    assert scores.consistency == 100 * (1 / 3)


def test_missing_predictions_name_the_count_and_the_first_ids() -> None:
    examples = [_ex(f"dev-1-{pair}-0") for pair in range(5)]
    message = _user_error(nlvr2_scores, examples, {"dev-1-0-0": "True"})
    assert "missing for 4 of 5 examples" in message
    assert "dev-1-1-0, dev-1-2-0, dev-1-3-0)" in message  # the first three only


def test_unlabeled_or_empty_examples_cannot_be_scored() -> None:
    assert "no label" in _user_error(nlvr2_scores, [_ex("test2-1-0-0", None)], {"test2-1-0-0": "True"})
    assert "no NLVR2 examples" in _user_error(nlvr2_scores, [], {})


def test_non_text_prediction_is_a_user_error() -> None:
    assert "got integer 1" in _user_error(nlvr2_scores, [_ex("dev-1-0-0")], {"dev-1-0-0": 1})


# --------------------------------------------------------------------------
# Annotation files
# --------------------------------------------------------------------------

def test_reader_keeps_order_labels_and_ignores_other_keys(tmp_path: Path) -> None:
    path = tmp_path / "dev.json"
    path.write_text(GOOD + "\n\n" + _line(identifier="dev-850-1-0", sentence="S", label="True",
                                          left_url="http://x/a.jpg", validation={"61": "False"})
                    + "\r\n" + _line(identifier="test2-3-0-0", sentence="T") + "\n")
    examples = read_annotations(path)
    assert [(e.identifier, e.label) for e in examples] == [("dev-850-0-0", False), ("dev-850-1-0", True),
                                                           ("test2-3-0-0", None)]
    assert examples[0].sentence == "The right image shows a walkway."
    assert examples[1].left_image == "dev-850-1-img0"


@pytest.mark.parametrize("bad, expected", [
    ("{not json", "line 2: not valid JSON"),
    ('["dev-1-0-0"]', "line 2: expected a JSON object, got list"),
    (_line(sentence="S", label="True"), "line 2: no key 'identifier'"),
    (_line(identifier=7, sentence="S"), "line 2: 'identifier' must be a string, got integer 7"),
    (_line(identifier="dev-1-0-0", label="True"), "line 2: no key 'sentence'"),
    (_line(identifier="dev-1-0-0", sentence=None), "line 2: 'sentence' must be a string, got null"),
    (_line(identifier="dev-1-0-0", sentence="S", label="true"),
     "line 2: 'label' must be the string \"True\" or \"False\", got string 'true'"),
    (_line(identifier="dev-1-0-0", sentence="S", label=True),
     "line 2: 'label' must be the string \"True\" or \"False\", got boolean true"),
    (_line(identifier="dev-1-0-0", sentence="S", label=None), "'label' must be the string"),
    (_line(identifier="dev-1-0", sentence="S"),
     "line 2: 'identifier' 'dev-1-0' is not of the form split-setId-pairId-sentenceId"),
    (GOOD, "line 2: 'identifier' 'dev-850-0-0' already appeared on line 1"),
])
def test_bad_annotation_line_is_one_line_naming_file_line_key_and_value(tmp_path: Path, bad: str,
                                                                       expected: str) -> None:
    path = tmp_path / "dev.json"
    path.write_text(GOOD + "\n" + bad + "\n")
    message = _user_error(read_annotations, path)
    assert message.startswith(f"{path}, line 2: ")
    assert expected in message


@pytest.mark.parametrize("content, expected", [(None, "not found"), ("\n\n", "has no examples"),
                                               (b"\xff\xfe", "not UTF-8")])
def test_unreadable_annotation_file(tmp_path: Path, content: str | bytes | None, expected: str) -> None:
    path = tmp_path / "train.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    assert expected in _user_error(read_annotations, path)


def test_writer_round_trips_and_keeps_the_release_shape(tmp_path: Path) -> None:
    examples = [_ex("train-10171-0-0", True, "An image shows one leather pencil case."),
                _ex("train-10171-1-0", False, "Ünïcode \u2028 sentence"), _ex("test2-1-0-3", None)]
    path = write_annotations(tmp_path / "sub" / "train.json", examples,
                             extra={"train-10171-0-0": {"left_url": "http://x/a.jpg", "directory": 41}})
    assert read_annotations(path) == examples
    lines = path.read_text().splitlines()
    assert len(lines) == 3
    first, last = json.loads(lines[0]), json.loads(lines[2])
    assert first["label"] == "True" and first["directory"] == 41 and "label" not in last
    assert [p.name for p in path.parent.iterdir()] == ["train.json"]  # no temporary left behind


def test_writer_refuses_duplicates_and_extra_keys_that_replace_fields(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="given twice"):
        write_annotations(tmp_path / "a.json", [_ex("dev-1-0-0"), _ex("dev-1-0-0")])
    with pytest.raises(ValueError, match="would replace"):
        write_annotations(tmp_path / "a.json", [_ex("dev-1-0-0")], extra={"dev-1-0-0": {"label": "False"}})
    assert not (tmp_path / "a.json").exists()


# --------------------------------------------------------------------------
# test_predict.csv
# --------------------------------------------------------------------------

def test_submission_lines_follow_the_examples_order(tmp_path: Path) -> None:
    examples = [_ex("test1-2-0-0"), _ex("test1-1-0-0"), _ex("test1-1-1-0")]
    predictions = {"test1-1-1-0": np.bool_(False), "test1-1-0-0": True, "test1-2-0-0": False}
    path = write_predictions(tmp_path / SUBMISSION_NAME, examples, predictions)
    assert path.read_text() == "test1-2-0-0,False\ntest1-1-0-0,True\ntest1-1-1-0,False\n"
    assert read_predictions(path) == {"test1-2-0-0": False, "test1-1-0-0": True, "test1-1-1-0": False}


@pytest.mark.parametrize("predictions, expected", [
    ({"dev-1-0-0": True}, "predictions are missing for 1 of 2 examples (first: dev-1-1-0)"),
    ({"dev-1-0-0": True, "dev-1-1-0": True, "dev-9-0-0": False}, "1 predictions are for identifiers that are not"),
    ({"dev-1-0-0": True, "dev-1-1-0": 1}, "must be a boolean, got integer 1"),
])
def test_incomplete_submission_is_refused_and_nothing_is_written(tmp_path: Path, predictions: dict,
                                                                 expected: str) -> None:
    examples = [_ex("dev-1-0-0"), _ex("dev-1-1-0")]
    message = _user_error(write_predictions, tmp_path / SUBMISSION_NAME, examples, predictions)
    assert "not written" in message and expected in message
    assert list(tmp_path.iterdir()) == []


def test_refused_submission_leaves_an_earlier_file_untouched(tmp_path: Path) -> None:
    path = tmp_path / SUBMISSION_NAME
    path.write_text("dev-1-0-0,True\n")
    _user_error(write_predictions, path, [_ex("dev-1-0-0"), _ex("dev-1-1-0")], {"dev-1-0-0": False})
    assert path.read_text() == "dev-1-0-0,True\n" and len(list(tmp_path.iterdir())) == 1


def test_reader_accepts_any_case_crlf_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_bytes(b"dev-1-0-0,true\r\n\r\ndev-1-1-0,FALSE\r\n")
    assert read_predictions(path) == {"dev-1-0-0": True, "dev-1-1-0": False}


@pytest.mark.parametrize("bad, expected", [
    ("dev-1-1-0", "expected 'identifier,True' or 'identifier,False', got 'dev-1-1-0'"),
    ("dev-1-1-0,True,0.9", "got 'dev-1-1-0,True,0.9'"),
    ("dev-1-1,True", "identifier 'dev-1-1' is not of the form split-setId-pairId-sentenceId"),
    ("dev-1-1-0,yes", "prediction for 'dev-1-1-0' must be True or False, got 'yes'"),
    ("dev-1-1-0, True", "got ' True'"),
    ("dev-1-0-0,False", "identifier 'dev-1-0-0' already appeared on line 1"),
])
def test_bad_prediction_line_is_one_line_naming_it(tmp_path: Path, bad: str, expected: str) -> None:
    path = tmp_path / "p.csv"
    path.write_text("dev-1-0-0,True\n" + bad + "\n")
    message = _user_error(read_predictions, path)
    assert message.startswith(f"{path}, line 2: ") and expected in message


def test_files_end_to_end(tmp_path: Path) -> None:
    examples = [_ex("dev-1-0-0", True), _ex("dev-1-1-0", False), _ex("dev-2-0-0", False)]
    annotations = write_annotations(tmp_path / "dev.json", examples)
    predictions = write_predictions(tmp_path / SUBMISSION_NAME, examples,
                                    {"dev-1-0-0": True, "dev-1-1-0": True, "dev-2-0-0": False})
    scores = evaluate_nlvr2_files(predictions, annotations)
    # 2 of 3 correct; sentence dev-1--0 has a wrong pair, dev-2--0 is right -> 1 of 2 consistent.
    assert (scores.num_correct, scores.num_consistent, scores.num_sentences) == (2, 1, 2)
    assert scores.accuracy == 100 * (2 / 3) and scores.consistency == 50.0
    assert "not found" in _user_error(evaluate_nlvr2_files, tmp_path / "nope.csv", annotations)
    partial = tmp_path / "partial.csv"
    partial.write_text("dev-1-0-0,True\n")
    assert _user_error(evaluate_nlvr2_files, partial, annotations) == \
        f"{partial}: predictions are missing for 2 of 3 examples (first: dev-1-1-0, dev-2-0-0)"
