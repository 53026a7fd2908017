"""CLEVR-Ref+ mask run lengths round-trip and refuse malformed strings."""

from __future__ import annotations

import numpy as np
import pytest

from nas.rle import decode_rle, encode_rle


def test_random_masks_round_trip() -> None:
    rng = np.random.default_rng(0)
    for density in (0.05, 0.5, 0.95):
        mask = rng.random((32, 48)) < density
        text = encode_rle(mask)
        assert sum(int(r) for r in text.split(",")) == 32 * 48
        np.testing.assert_array_equal(decode_rle(text, 32, 48), mask)


def test_a_hand_written_mask() -> None:
    mask = np.array([[0, 0, 1], [1, 1, 0]], bool)  # row-major: 0 0 1 1 1 0
    assert encode_rle(mask) == "2,3,1"
    np.testing.assert_array_equal(decode_rle("2,3,1", 2, 3), mask)


def test_a_mask_starting_with_foreground_has_an_empty_first_run() -> None:
    mask = np.array([[1, 1, 0, 0]], bool)
    assert encode_rle(mask) == "0,2,2"
    np.testing.assert_array_equal(decode_rle("0,2,2", 1, 4), mask)


def test_all_background_and_all_foreground() -> None:
    assert encode_rle(np.zeros((320, 480), bool)) == "153600"
    assert encode_rle(np.ones((320, 480), bool)) == "0,153600"
    assert not decode_rle("153600", 320, 480).any()
    assert decode_rle("0,153600", 320, 480).all()


@pytest.mark.parametrize("text, message", [
    ("2,x,1", "run 2 is 'x', not a whole number"),
    ("2,1.5,1", "run 2 is '1.5', not a whole number"),
    ("4,-1,3", "run 2 is negative"),
    ("2,3", "add up to 5 pixels, the 2x3 image has 6"),
    ("", "run 1 is '', not a whole number"),
])
def test_malformed_strings_are_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_rle(text, 2, 3)
