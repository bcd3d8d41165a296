"""actors.durations: "250ms" / "30s" / "5m" / "2h" / seconds / timedelta, and rates ("10/s")."""

from __future__ import annotations

from datetime import timedelta

import pytest

from actors.durations import optional_duration, parse_duration, parse_rate


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("250ms", 0.25),
        ("30s", 30.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("1.5s", 1.5),
        (".5s", 0.5),
        ("0s", 0.0),
        ("45", 45.0),  # a bare number in a string is seconds
        (" 30s ", 30.0),
        ("30 s", 30.0),
        (1.5, 1.5),
        (2, 2.0),
        (0, 0.0),
        (timedelta(minutes=2, milliseconds=500), 120.5),
    ],
)
def test_parse_duration_accepts_units_numbers_and_timedeltas(value, seconds):
    result = parse_duration(value)
    assert result == pytest.approx(seconds)
    assert isinstance(result, float)


@pytest.mark.parametrize(
    "value",
    ["5 parsecs", "", "   ", "abc", "s", "1.2.3s", "10x", "-1s", "1e3s", "5mm", -1, -0.001,
     timedelta(seconds=-1), float("nan"), float("inf"), True, False, None, [1], b"5s"],
    ids=repr,
)
def test_parse_duration_rejects_malformed_values_naming_them(value):
    with pytest.raises(ValueError) as caught:
        parse_duration(value)
    assert repr(value) in str(caught.value)


def test_parse_duration_error_names_the_option():
    with pytest.raises(ValueError, match=r"kill_grace 'x'"):
        parse_duration("x", what="kill_grace")


def test_optional_duration_lets_none_through_and_parses_the_rest():
    assert optional_duration(None) is None
    assert optional_duration("250ms") == pytest.approx(0.25)
    with pytest.raises(ValueError, match="'soon'"):
        optional_duration("soon")


@pytest.mark.parametrize(
    ("value", "rate"),
    [("10/s", (10.0, 1.0)), ("100/m", (100.0, 60.0)), ("5/10s", (5.0, 10.0)), ("1/250ms", (1.0, 0.25)),
     (" 3 / h ", (3.0, 3600.0))],
)
def test_parse_rate_gives_count_and_period(value, rate):
    assert parse_rate(value) == pytest.approx(rate)


@pytest.mark.parametrize("value", ["fast", "10", "0/s", "10/0s", "10/x", "/s", 10], ids=repr)
def test_parse_rate_rejects_malformed_rates_naming_them(value):
    with pytest.raises(ValueError) as caught:
        parse_rate(value)
    assert repr(value) in str(caught.value)
