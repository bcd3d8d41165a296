"""Retry policies and the pure backoff function used for runs and for worker restarts.

`Retry(attempts=4, backoff="exponential", base="500ms", cap="1m", jitter=0.1)` allows four
attempts in all (the first one included). The delay before attempt n+1 is computed by
`compute_backoff(policy, n)`, a pure function of the policy and the attempt that failed, so it
is tested without a clock. Jitter spreads the delay by +/- the given fraction, then the cap
bounds it.

Which failures are retried: exceptions pass `retry_on` (exception classes or a predicate,
evaluated in the worker where the exception object lives); timeouts when `on_timeout`;
crashes of the worker (a signal, `os._exit`, memory limit) when `on_crash`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .durations import Duration, parse_duration

Backoff = str | Sequence[Duration] | Callable[[int], Duration]
_STRATEGIES = ("immediate", "fixed", "linear", "exponential")


@dataclass(frozen=True)
class Retry:
    """How often and how soon a failed run is tried again. Durations in seconds or "500ms"-style.

    Given to `@job(retry=...)` or `Supervisor(retry=...)`; `compute_backoff` computes each
    delay. Invalid values raise ValueError here.

    Args:
        attempts: attempts in all, the first one included, an int >= 1 (default 1: no retry).
        backoff: "exponential" (default: `base` * 2 ** (n - 1)), "linear" (`base` * n),
            "fixed" (`base`), "immediate" (0), a list of durations (the n-th delay; the last
            one repeats), or a function of the failed attempt's number n returning a duration.
        base: the delay the strategies scale (default 1 s).
        cap: the longest delay (default "1h"; None: no cap).
        jitter: spread each delay by +/- this fraction, from 0 to 1 (default 0), before the cap.
        retry_on: which exceptions are retried: a tuple of classes (default `(Exception,)`)
            or a predicate of the exception (one that raises means no).
        on_timeout: whether an attempt that timed out is retried (default True).
        on_crash: whether an attempt whose worker crashed (a signal, `os._exit`, the memory
            limit) is retried (default True).

    Attributes:
        base_s: `base` in seconds.
        cap_s: `cap` in seconds, or None.
    """

    attempts: int = 1
    backoff: Backoff = "exponential"
    base: Duration = 1.0
    cap: Duration | None = "1h"
    jitter: float = 0.0
    retry_on: tuple[type[BaseException], ...] | Callable[[BaseException], bool] = (Exception,)
    on_timeout: bool = True
    on_crash: bool = True
    base_s: float = field(init=False, repr=False)
    cap_s: float | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.attempts, int) or isinstance(self.attempts, bool) or self.attempts < 1:
            raise ValueError(f"invalid retry attempts {self.attempts!r}: expected an int >= 1")
        if isinstance(self.backoff, str) and self.backoff not in _STRATEGIES:
            raise ValueError(f"invalid retry backoff {self.backoff!r}: expected one of {_STRATEGIES}, a list of durations or a callable")
        if not isinstance(self.backoff, str) and not callable(self.backoff):
            if not isinstance(self.backoff, list | tuple):
                raise ValueError(f"invalid retry backoff {self.backoff!r}: expected one of {_STRATEGIES}, a list of durations or a callable")
            if not self.backoff:
                raise ValueError("invalid retry backoff []: a table needs at least one duration")
            for step in self.backoff:
                parse_duration(step, what="retry backoff step")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"invalid retry jitter {self.jitter!r}: expected a fraction in [0, 1]")
        if isinstance(self.retry_on, type):
            object.__setattr__(self, "retry_on", (self.retry_on,))
        object.__setattr__(self, "base_s", parse_duration(self.base, what="retry base"))
        cap = None if self.cap is None else parse_duration(self.cap, what="retry cap")
        object.__setattr__(self, "cap_s", cap)

    def retries_exception(self, exc: BaseException) -> bool:
        """Whether `exc`, an exception raised by the job, is worth another attempt (by
        `retry_on`; a predicate that raises says no)."""
        if callable(self.retry_on) and not isinstance(self.retry_on, tuple):
            try:
                return bool(self.retry_on(exc))
            except Exception:
                return False
        return isinstance(exc, self.retry_on)


NO_RETRY = Retry(attempts=1)


def compute_backoff(policy: Retry, attempt: int, rng: random.Random | Any = random) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based) before the next one.

    A pure function of the `policy` (a `Retry`) and the attempt, so it is tested without a
    clock; `rng` (default: the `random` module; anything with `uniform(a, b)`) draws the jitter.
    """
    backoff = policy.backoff
    if callable(backoff) and not isinstance(backoff, str | list | tuple):
        delay = parse_duration(backoff(attempt), what="retry backoff result")
    elif not isinstance(backoff, str):
        table = list(backoff)
        delay = parse_duration(table[min(attempt, len(table)) - 1])
    elif backoff == "immediate":
        return 0.0
    elif backoff == "fixed":
        delay = policy.base_s
    elif backoff == "linear":
        delay = policy.base_s * attempt
    else:
        delay = policy.base_s * 2.0 ** min(attempt - 1, 64)
    if policy.jitter:
        delay *= 1.0 + rng.uniform(-policy.jitter, policy.jitter)
    if policy.cap_s is not None:
        delay = min(delay, policy.cap_s)
    return max(delay, 0.0)


def retry(
    attempts: int = 3,
    backoff: Backoff = "exponential",
    base: Duration = 1.0,
    cap: Duration | None = "1h",
    jitter: float = 0.0,
    retry_on: tuple[type[BaseException], ...] | Callable[[BaseException], bool] = (Exception,),
    *,
    sleep: Callable[[float], Any] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The same policy as a decorator for plain in-process functions, sync or async.

    `@retry(attempts=3, backoff="fixed", base="100ms", retry_on=(IOError,))`: the function is
    called again after the backoff while it raises a retryable exception and attempts remain;
    the last exception propagates. `sleep` replaces time.sleep (tests pass a fake).

    Args:
        attempts: calls in all, the first one included (default 3).
        backoff: the strategy, as `Retry`'s (default "exponential").
        base: the delay the strategies scale (default 1 s).
        cap: the longest delay (default "1h"; None: no cap).
        jitter: spread each delay by +/- this fraction (default 0).
        retry_on: exception classes, or a predicate of the exception (default `(Exception,)`).
        sleep: called with the delay in seconds instead of sleeping (default None:
            `time.sleep`, or `asyncio.sleep` for an async function).
    """
    import asyncio
    import functools
    import inspect
    import time

    policy = Retry(attempts=attempts, backoff=backoff, base=base, cap=cap, jitter=jitter, retry_on=retry_on)

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                for attempt in range(1, policy.attempts + 1):
                    try:
                        return await fn(*args, **kwargs)
                    except BaseException as exc:
                        if attempt == policy.attempts or not policy.retries_exception(exc):
                            raise
                        delay = compute_backoff(policy, attempt)
                        if sleep is not None:
                            sleep(delay)
                        else:
                            await asyncio.sleep(delay)
                raise AssertionError("unreachable")

            return run_async

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            for attempt in range(1, policy.attempts + 1):
                try:
                    return fn(*args, **kwargs)
                except BaseException as exc:
                    if attempt == policy.attempts or not policy.retries_exception(exc):
                        raise
                    (sleep or time.sleep)(compute_backoff(policy, attempt))
            raise AssertionError("unreachable")

        return run

    return decorate
