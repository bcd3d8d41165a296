"""The cron expressions the README documents read as it says, with the croniter range pinned."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from croniter import croniter


def fires(expression: str, start: datetime, count: int) -> list[str]:
    it = croniter(expression, start)
    return [datetime.fromtimestamp(it.get_next(float), UTC).strftime("%H:%M") for _ in range(count)]


@pytest.mark.parametrize(("expression", "expected"), [
    ("*/5 * * * *", ["12:05", "12:10", "12:15"]),  # README: cron="*/5 * * * *"
    ("0 3 * * *", ["03:00", "03:00"]),  # the config file's example
    ("*/15 9-17 * * *", ["12:15", "12:30", "12:45"]),
])
def test_readme_cron_expressions(expression: str, expected: list[str]) -> None:
    assert fires(expression, datetime(2026, 1, 5, 12, 2, tzinfo=UTC), len(expected)) == expected
