"""The `actors.retry` decorator on plain functions, sync and async: the policy's delays, the
last error propagating, retry_on excluding errors, and async waits that leave the loop free.

No workers here: a fake `sleep` records the delays where the test injects one.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from actors import retry

pytestmark = pytest.mark.timeout(60)


# == the retry decorator on plain functions ========================================================


def test_retry_decorator_retries_a_sync_function_with_the_policys_delays():
    delays: list[float] = []
    calls: list[int] = []

    @retry(attempts=3, backoff="fixed", base="50ms", sleep=delays.append)
    def sometimes(x: int) -> str:
        """Docstring kept."""
        calls.append(x)
        if len(calls) < 3:
            raise OSError("try again")
        return f"ok {x}"

    assert sometimes(7) == "ok 7"
    assert calls == [7, 7, 7]
    assert delays == [pytest.approx(0.05), pytest.approx(0.05)]
    assert sometimes.__name__ == "sometimes" and sometimes.__doc__ == "Docstring kept."


def test_retry_decorator_exponential_delays_and_the_last_error_propagates():
    delays: list[float] = []

    @retry(attempts=4, backoff="exponential", base="100ms", sleep=delays.append)
    def always() -> None:
        raise OSError(f"failure {len(delays) + 1}")

    with pytest.raises(OSError, match="failure 4"):
        always()
    assert delays == [pytest.approx(0.1), pytest.approx(0.2), pytest.approx(0.4)]


def test_retry_decorator_does_not_retry_what_retry_on_excludes():
    delays: list[float] = []
    calls = []

    @retry(attempts=5, backoff="immediate", retry_on=(KeyError,), sleep=delays.append)
    def wrong() -> None:
        calls.append(1)
        raise ValueError("not retried")

    with pytest.raises(ValueError):
        wrong()
    assert len(calls) == 1 and delays == []

    @retry(attempts=3, backoff="fixed", base="1s", retry_on=lambda exc: "again" in str(exc), sleep=delays.append)
    def judged_locally() -> None:
        calls.append(2)
        raise RuntimeError("again" if len(calls) < 3 else "stop")

    with pytest.raises(RuntimeError, match="stop"):
        judged_locally()
    assert calls == [1, 2, 2] and delays == [1.0]


def test_retry_decorator_retries_an_async_function():
    delays: list[float] = []
    calls = []

    @retry(attempts=3, backoff="linear", base="10ms", sleep=delays.append)
    async def flaky_async(x: int) -> int:
        await asyncio.sleep(0)
        calls.append(x)
        if len(calls) < 3:
            raise ConnectionError("flaky")
        return x * 2

    assert asyncio.iscoroutinefunction(flaky_async)
    assert asyncio.run(flaky_async(21)) == 42
    assert calls == [21, 21, 21]
    assert delays == [pytest.approx(0.01), pytest.approx(0.02)]


def test_retry_decorator_async_without_a_fake_sleeps_on_the_event_loop():
    calls = []

    @retry(attempts=3, backoff="fixed", base="30ms")
    async def flaky_async() -> str:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise ConnectionError("flaky")
        return "ok"

    async def main() -> tuple[str, int]:
        ticks = 0

        async def ticker() -> None:  # the loop stays free while the retry waits
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.005)

        other = asyncio.create_task(ticker())
        result = await flaky_async()
        other.cancel()
        return result, ticks

    result, ticks = asyncio.run(main())
    assert result == "ok"
    assert calls[1] - calls[0] >= 0.025 and calls[2] - calls[1] >= 0.025
    assert ticks >= 3
