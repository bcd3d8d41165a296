"""Executing one run inside a worker: validate input, call the job, validate and serialize output.

Input and output go through the job's payloads (`Job.parse_input`, `Job.output_json`): whatever
type pydantic validates, bytes as base64 (see `actors.job`).

Whatever the job raises or returns becomes a `Done` or `Failed` message made of plain strings,
so a bad value can only fail its own run, never the pipe or the supervisor. Those strings are
made storable here (`protocol.storable`): a lone surrogate in an exception's message would
otherwise fail the supervisor's write of the run's end.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import resource
import signal
import time
import traceback
from typing import Any

from pydantic import ValidationError

from ..context import Context, Suspended
from ..errors import NondeterministicRun, SoftTimeout
from ..job import Job
from ..protocol import Done, Failed, Order, Suspend, storable
from ..retry import Retry

MAX_ERROR_TEXT = 64 * 1024  # characters of an error message or traceback kept


def _clip(text: str) -> str:
    if len(text) <= MAX_ERROR_TEXT:
        return text
    half = MAX_ERROR_TEXT // 2
    return f"{text[:half]}\n... [{len(text) - MAX_ERROR_TEXT} characters cut] ...\n{text[-half:]}"


def _describe(exc: BaseException) -> tuple[str, str, str]:
    """(type name, message, traceback text) of an exception, never raising itself, each storable
    (lone surrogates escaped); long texts are cut in the middle so an error can never outgrow the
    pipe's frame limit."""
    kind = type(exc).__qualname__
    try:
        message = str(exc)
    except Exception as inner:  # a __str__ that raises
        message = f"<str() of the exception failed: {type(inner).__name__}>"
    try:
        text = "".join(traceback.format_exception(exc))
    except Exception:
        text = f"{kind}: {message}\n"
    return storable(kind), storable(_clip(message)), storable(_clip(text))


def _raise_soft_timeout(signum: int, frame: Any) -> None:
    raise SoftTimeout("soft timeout expired")


def peak_rss() -> int:
    """The worker's peak resident memory, in bytes."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def execute(job: Job[Any, Any], order: Order, inbox: Any, resource: Any, max_result_size: int,
            default_retry: Retry, jobs: dict[str, Job[Any, Any]] | None = None) -> Done | Failed | Suspend:
    """Run one attempt of `order` (a run of `job`) and describe how it ended; never raises."""
    run_id, attempt, soft_timeout = order.run_id, order.attempt, order.soft_timeout
    started = time.perf_counter()
    if run_id in inbox.cancelled:
        return Failed(run_id, attempt, "RunCancelled", "cancelled before it started", "", False, 0.0, peak_rss())
    try:
        value = job.parse_input(order.input)
    except ValidationError as exc:
        kind, message, text = _describe(exc)
        return Failed(run_id, attempt, kind, f"invalid input for job {job.name!r}: {message}", text, False,
                      time.perf_counter() - started, peak_rss())
    ctx = Context(run_id, attempt, job.name, resource=resource, steps=order.steps, send=inbox.send,
                  is_cancelled=inbox.is_cancelled, max_size=max_result_size, positions=order.positions,
                  call=inbox.call, jobs=jobs, hooks=(job.before_step, job.after_step))
    if soft_timeout:
        signal.signal(signal.SIGALRM, _raise_soft_timeout)
        signal.setitimer(signal.ITIMER_REAL, soft_timeout)
    error: BaseException | None = None
    pid = os.getpid()
    try:
        if job.before_run is not None:
            job.before_run(ctx)
        result = job.fn(value, ctx) if job.takes_context else job.fn(value)
        if inspect.isawaitable(result):
            result = asyncio.run(_await(result))
    except Suspended as suspended:  # a durable wait: not an end, and no after_run hook
        if soft_timeout:
            signal.setitimer(signal.ITIMER_REAL, 0)
        if os.getpid() != pid:
            os._exit(0)
        return Suspend(run_id, attempt, json.dumps(suspended.wait), suspended.wake_at, time.perf_counter() - started,
                       peak_rss())
    except BaseException as exc:  # SystemExit and KeyboardInterrupt from a job fail the run, not the worker
        error = exc
    finally:
        if os.getpid() != pid:  # a child the job forked got here: it must never speak for the worker
            os._exit(0 if error is None or isinstance(error, SystemExit) and not error.code else 1)
        if soft_timeout:
            signal.setitimer(signal.ITIMER_REAL, 0)
    if job.after_run is not None:
        try:
            job.after_run(ctx, error)
        except Exception:
            ctx.log.exception("after_run hook of job %r raised", job.name)
    if error is not None:
        kind, message, text = _describe(error)
        retryable = not isinstance(error, NondeterministicRun) and (job.retry or default_retry).retries_exception(error)
        if run_id in inbox.cancelled:
            kind, message, retryable = "RunCancelled", f"cancelled while running ({kind}: {message})", False
        return Failed(run_id, attempt, kind, message, text, retryable, time.perf_counter() - started, peak_rss())
    try:
        output = job.output_json(result)
    except ValidationError as exc:
        kind, message, text = _describe(exc)
        finite = all(error["type"] != "finite_number" for error in exc.errors())
        problem = f"does not match {_type_name(job.output_type)}" if finite else "holds a NaN or an infinity"
        return Failed(run_id, attempt, "OutputValidationError", f"output of job {job.name!r} {problem}: {message}",
                      text, False, time.perf_counter() - started, peak_rss())
    except Exception as exc:
        kind, message, text = _describe(exc)
        return Failed(run_id, attempt, "OutputSerializationError",
                      f"output of job {job.name!r} cannot be serialized to JSON ({kind}: {message})",
                      text, False, time.perf_counter() - started, peak_rss())
    if len(output) * 4 > max_result_size and len(output.encode()) > max_result_size:  # UTF-8: up to 4 bytes a char
        return Failed(run_id, attempt, "ResultTooLarge",
                      f"output of job {job.name!r} is {len(output.encode())} bytes of JSON, over max_result_size "
                      f"({max_result_size} bytes): return a path to a file instead", "", False,
                      time.perf_counter() - started, peak_rss())
    return Done(run_id, attempt, output, time.perf_counter() - started, peak_rss())


async def _await(awaitable: Any) -> Any:
    return await awaitable


def _type_name(kind: Any) -> str:
    return getattr(kind, "__name__", None) or repr(kind)
