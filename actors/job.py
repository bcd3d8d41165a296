"""`@job`: a typed function plus its options, the unit the supervisor schedules.

The input model is the first parameter's annotation (a pydantic `BaseModel`); the output type
is the return annotation (a model or anything `pydantic.TypeAdapter` validates: `int`,
`list[str]`, `None`...). An optional second parameter receives the run's `Context`. Inputs are
validated at `submit` (in the caller) and outputs in the worker, so the supervisor only moves
JSON text.

JSON has no NaN or infinity and pydantic writes both as `null`, so a float that is not finite
would come back as something else or fail its own model when read. Both sides refuse it with a
`pydantic.ValidationError` (type `finite_number`) instead: at submit, and in the worker where
it fails the run as `OutputValidationError`. The check costs a substring search on the JSON
text; only text that holds a `null` is looked at further.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import typing
from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

import pydantic_core
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import PydanticCustomError

from .durations import Duration, optional_duration, parse_rate
from .retry import Retry

In = TypeVar("In", bound=BaseModel)
Out = TypeVar("Out")


class Priority:
    """Named priorities; any int works, higher runs first."""

    LOW = -10
    NORMAL = 0
    HIGH = 10
    CRITICAL = 100


def check_cron(expression: str, job_name: str) -> None:
    """A malformed cron expression is a ValueError naming it (croniter parses it)."""
    from croniter import croniter

    if not isinstance(expression, str) or not croniter.is_valid(expression):
        raise ValueError(f"job {job_name!r}: invalid cron expression {expression!r}")


def find_nonfinite(data: Any) -> tuple[tuple[int | str, ...], float] | None:
    """Where python data (a python-mode dump: dicts, lists, tuples, sets, floats) holds a NaN or
    an infinity, and that value; None when it holds neither. A dump in C is searched first, so
    the walk in Python runs only when one is there (or a string holds the word)."""
    try:
        text = pydantic_core.to_json(data, inf_nan_mode="constants", bytes_mode="base64", serialize_unknown=True)
    except Exception:  # what only the model's own serializer can write: walk it all
        return _walk(data, ())
    return _walk(data, ()) if b"NaN" in text or b"Infinity" in text else None


def _walk(data: Any, loc: tuple[int | str, ...]) -> tuple[tuple[int | str, ...], float] | None:
    if isinstance(data, float):
        return None if math.isfinite(data) else (loc, data)
    if isinstance(data, dict):
        items: Any = data.items()
    elif isinstance(data, (list, tuple, set, frozenset)):
        items = enumerate(data)
    else:
        return None
    for key, item in items:
        found = _walk(item, (*loc, key if isinstance(key, (int, str)) else repr(key)))
        if found is not None:
            return found
    return None


def _refuse_nonfinite(data: Any, title: str, job_name: str) -> None:
    found = find_nonfinite(data)
    if found is not None:
        error = PydanticCustomError("finite_number", "NaN and Infinity cannot be stored as JSON (job {job})",
                                    {"job": repr(job_name)})
        raise ValidationError.from_exception_data(title, [{"type": error, "loc": found[0], "input": found[1]}])


class Job(Generic[In, Out]):
    """A registered job: the function, its name, models and options. Calling it calls the function."""

    def __init__(
        self,
        fn: Callable[..., Out],
        *,
        name: str | None = None,
        input: type[In] | None = None,
        output: Any = inspect.Parameter.empty,
        timeout: Duration | None = None,
        soft_timeout: Duration | None = None,
        retry: Retry | int | None = None,
        priority: int = Priority.NORMAL,
        concurrency: int | None = None,
        rate: str | None = None,
        unique: bool | Callable[[Any], Any] = False,
        cron: str | None = None,
        version: int = 1,
        min_version: int | None = None,
        setup: Callable[[], Any] | None = None,
        before_run: Callable[[Any], Any] | None = None,
        after_run: Callable[[Any, BaseException | None], Any] | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"@job expects a function, got {fn!r}")
        self.fn = fn
        self.name: str = name or getattr(fn, "__qualname__", None) or repr(fn)
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"invalid job name {self.name!r}")
        params = list(inspect.signature(fn).parameters.values())
        if not params or len(params) > 2:
            raise TypeError(f"job {self.name!r} must take (input) or (input, ctx), not {len(params)} parameters")
        self.takes_context = len(params) == 2
        try:
            hints = typing.get_type_hints(fn)
        except Exception:
            hints = getattr(fn, "__annotations__", {})
        model = input if input is not None else hints.get(params[0].name)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise TypeError(
                f"job {self.name!r}: the first parameter must be annotated with a pydantic BaseModel "
                f"(or pass input=Model), got {model!r}"
            )
        self.input_model: type[In] = model  # type: ignore[assignment]
        if output is inspect.Parameter.empty:
            output = hints.get("return", Any)
        self.output_type = output
        self.output_adapter: TypeAdapter[Out] = TypeAdapter(output)
        self.timeout = optional_duration(timeout, what=f"timeout of job {self.name!r}")
        self.soft_timeout = optional_duration(soft_timeout, what=f"soft_timeout of job {self.name!r}")
        if self.soft_timeout is not None and self.timeout is not None and self.soft_timeout >= self.timeout:
            raise ValueError(f"job {self.name!r}: soft_timeout must be below timeout")
        if isinstance(retry, int) and not isinstance(retry, bool):
            retry = Retry(attempts=retry)
        if retry is not None and not isinstance(retry, Retry):
            raise TypeError(f"job {self.name!r}: retry must be a Retry or an int, got {retry!r}")
        self.retry: Retry | None = retry
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise TypeError(f"job {self.name!r}: priority must be an int, got {priority!r}")
        self.priority = priority
        if concurrency is not None and (not isinstance(concurrency, int) or concurrency < 1):
            raise ValueError(f"job {self.name!r}: invalid concurrency {concurrency!r}: expected an int >= 1")
        self.concurrency = concurrency
        self.rate = rate
        self.rate_limit = parse_rate(rate) if rate is not None else None
        if not (isinstance(unique, bool) or callable(unique)):
            raise TypeError(f"job {self.name!r}: unique must be True or a function of the input")
        self.unique = unique
        if cron is not None:
            check_cron(cron, self.name)
            try:
                self.input_model()
            except Exception as exc:
                raise ValueError(f"job {self.name!r}: a cron job's input model must have defaults for every field") from exc
        self.cron = cron
        if not isinstance(version, int) or version < 1:
            raise ValueError(f"job {self.name!r}: invalid version {version!r}: expected an int >= 1")
        self.version = version
        self.min_version = min_version
        self.limited = concurrency is not None or self.rate_limit is not None
        for hook_name, hook in (("setup", setup), ("before_run", before_run), ("after_run", after_run)):
            if hook is not None and not callable(hook):
                raise TypeError(f"job {self.name!r}: {hook_name} must be callable, got {hook!r}")
        self.setup = setup
        self.before_run = before_run
        self.after_run = after_run

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["output_adapter"]  # rebuilt on the other side of the pipe
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.output_adapter = TypeAdapter(self.output_type)

    def __call__(self, *args: Any, **kwargs: Any) -> Out:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Job {self.name} ({self.input_model.__name__}) -> {getattr(self.output_type, '__name__', self.output_type)}>"

    def validate_input(self, value: Any) -> str:
        """The input as JSON text, validated by the input model (raises pydantic.ValidationError,
        also for a NaN or an infinity anywhere in it)."""
        if type(value) is not self.input_model:
            value = self.input_model.model_validate(value)
        text = value.model_dump_json()
        if "null" in text:  # where a NaN or an infinity would have gone
            _refuse_nonfinite(value.model_dump(), self.input_model.__name__, self.name)
        return text

    def unique_key(self, input_json: str) -> str | None:
        """The key that makes a run unique while live (`unique=`), from its validated input."""
        if self.unique is False:
            return None
        if self.unique is True:
            return hashlib.sha256(input_json.encode()).hexdigest()
        try:
            return repr(self.unique(self.input_model.model_validate_json(input_json)))
        except Exception as exc:  # the user's function: say whose it is
            raise ValueError(f"job {self.name!r}: its unique= function raised {type(exc).__name__}: {exc}") from exc

    def output_json(self, value: Any) -> str:
        """Validate a returned value against the output type and serialize it (runs in the worker);
        a NaN or an infinity anywhere in it raises pydantic.ValidationError."""
        adapter = self.output_adapter
        value = adapter.validate_python(value)
        text = adapter.dump_json(value).decode()
        if "null" in text:  # where a NaN or an infinity would have gone
            _refuse_nonfinite(adapter.dump_python(value), getattr(self.output_type, "__name__", None)
                              or repr(self.output_type), self.name)
        return text

    def parse_output(self, text: str) -> Out:
        """The stored JSON output back as the output type."""
        return self.output_adapter.validate_json(text)


@overload
def job(fn: Callable[..., Out], /) -> Job[Any, Out]: ...
@overload
def job(
    *,
    name: str | None = ...,
    input: type[BaseModel] | None = ...,
    output: Any = ...,
    timeout: Duration | None = ...,
    soft_timeout: Duration | None = ...,
    retry: Retry | int | None = ...,
    priority: int = ...,
    concurrency: int | None = ...,
    rate: str | None = ...,
    unique: bool | Callable[[Any], Any] = ...,
    cron: str | None = ...,
    version: int = ...,
    min_version: int | None = ...,
    setup: Callable[[], Any] | None = ...,
    before_run: Callable[[Any], Any] | None = ...,
    after_run: Callable[[Any, BaseException | None], Any] | None = ...,
) -> Callable[[Callable[..., Out]], Job[Any, Out]]: ...
def job(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Declare a job, bare (`@job`) or with options (`@job(timeout="30s", retry=Retry(3))`)."""
    if fn is not None:
        return Job(fn, **options)
    return lambda f: Job(f, **options)
