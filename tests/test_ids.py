"""The one id rule (activekd.ids) and the short echo of callers' strings (errors.shown)."""

from __future__ import annotations

import pytest

from activekd import ids
from activekd.errors import InvalidArgument, shown
from activekd.state import round_records
from activekd.store import pool_store

LONG = "x" * 5000

#: (checker, value, accepted)
CASES = [
    (ids.check_pool_id, "a", True),
    (ids.check_pool_id, "golden/sel-pool", True),
    (ids.check_pool_id, "teacher/0123abcd/fashion-mnist-test-first20", True),
    (ids.check_pool_id, "datasets/fashion-mnist:train/x.y_z", True),
    (ids.check_pool_id, "x" * 200, True),
    (ids.check_pool_id, "x" * 201, False),
    (ids.check_pool_id, "", False),
    (ids.check_pool_id, "a/../b", False),
    (ids.check_pool_id, "../x", False),
    (ids.check_pool_id, "a..b", False),
    (ids.check_pool_id, "a//b", False),
    (ids.check_pool_id, "/abs", False),
    (ids.check_pool_id, "a/", False),
    (ids.check_pool_id, "a\n", False),  # `$` of the old regex let a trailing newline through
    (ids.check_pool_id, "a\x00b", False),
    (ids.check_pool_id, "caf\u00e9", False),
    (ids.check_pool_id, "a b", False),
    (ids.check_pool_id, LONG, False),
    (ids.check_request_id, "golden-r1", True),
    (ids.check_request_id, "golden-exp/round-3", True),
    (ids.check_request_id, "0f8e1d2c3b4a59687766554433221100", True),
    (ids.check_request_id, "a/../b", False),
    (ids.check_request_id, "x" * 201, False),
    (ids.check_request_id, "r\x00", False),
    (ids.check_request_id, "{tag}", False),  # would change the Redis hash tag
    (ids.check_experiment_id, "golden-exp", True),
    (ids.check_experiment_id, "e.1_2-3", True),
    (ids.check_experiment_id, "x" * 128, True),
    (ids.check_experiment_id, "x" * 129, False),
    (ids.check_experiment_id, "", False),
    (ids.check_experiment_id, "-x", False),
    (ids.check_experiment_id, "a/b", False),
    (ids.check_experiment_id, "a:b", False),
    (ids.check_experiment_id, "a}b", False),
    (ids.check_experiment_id, "\u00e9", False),
    (ids.check_experiment_id, "e\n", False),
    (ids.check_array_name, "probs", True),
    (ids.check_array_name, "a" * 64, True),
    (ids.check_array_name, "a" * 65, False),
    (ids.check_array_name, "1x", False),
    (ids.check_array_name, "x.npy", False),
    (ids.check_array_name, "../x", False),
]


@pytest.mark.parametrize(("check", "value", "accepted"), CASES)
def test_one_table_of_ids(check, value: str, accepted: bool) -> None:  # type: ignore[no-untyped-def]
    if accepted:
        assert check(value) == value
        return
    with pytest.raises(InvalidArgument) as exc:
        check(value)
    assert len(str(exc.value)) <= 200
    assert exc.value.field is not None


@pytest.mark.parametrize(
    ("check", "field"),
    [
        (ids.check_pool_id, "pool_id"),
        (ids.check_request_id, "request_id"),
        (ids.check_experiment_id, "experiment_id"),
        (ids.check_array_name, "chunk.arrays"),
    ],
)
def test_a_5000_char_id_is_echoed_as_a_short_prefix(check, field: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidArgument) as exc:
        check(LONG)
    text = str(exc.value)
    assert len(text) <= 200 and "(5000 chars)" in text and "x" * 65 not in text
    assert exc.value.field == field


def test_messages_are_word_for_word_the_old_ones() -> None:
    """The golden masters pin these texts: only an over-long value is shortened."""
    with pytest.raises(InvalidArgument) as exc:
        ids.check_pool_id("../x")
    assert str(exc.value) == (
        "pool id '../x' is invalid: use 1-200 chars of letters, digits, '._:-', "
        "segments separated by '/'"
    )
    with pytest.raises(InvalidArgument) as exc:
        ids.check_experiment_id("bad id")
    assert str(exc.value) == (
        "experiment id 'bad id' is invalid: use 1-128 letters, digits, '._-', "
        "starting with a letter or digit"
    )
    with pytest.raises(InvalidArgument) as exc:
        ids.check_segment("a/b", "dataset", "dataset")
    assert (
        str(exc.value) == "dataset 'a/b' must be 1-100 chars of letters, digits and '._:-' (no '/')"
    )


def test_the_old_names_are_the_one_rule() -> None:
    assert round_records.check_experiment_id is ids.check_experiment_id
    assert pool_store._check_pool_id is ids.check_pool_id


def test_segment_is_the_documented_pattern() -> None:
    import re

    segment = re.compile(ids.ID_SEGMENT)
    assert segment.fullmatch("fashion-mnist:test") and segment.fullmatch("x" * 100)
    assert not segment.fullmatch("x" * 101) and not segment.fullmatch(".x")
    assert ids.check_segment("x" * 100, "dataset") == "x" * 100
    with pytest.raises(InvalidArgument):
        ids.check_segment("x" * 101, "dataset")


@pytest.mark.parametrize(
    "value", ["", "abc", "x" * 64, "it's", "\x00\n", "\u00e9\u4e2d", 'q"q', "x" * 63 + "\u4e2d"]
)
def test_shown_is_repr_up_to_64_chars(value: str) -> None:
    assert shown(value) == repr(value)


def test_shown_cuts_long_values() -> None:
    assert shown("x" * 65) == repr("x" * 64) + "… (65 chars)"
    assert shown(LONG, 8) == "'xxxxxxxx'… (5000 chars)"
    assert len(shown(LONG)) < 90
    assert shown(12) == "12" and shown(None) == "None"
    assert shown(["a"] * 100).endswith("chars)") and len(shown(["a"] * 100)) < 90
