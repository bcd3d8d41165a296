"""`@job`: a typed function plus its options, the unit the supervisor schedules.

The input type is the first parameter's annotation and the output type the return annotation:
each is anything `pydantic.TypeAdapter` validates (a `BaseModel`, a dataclass, a `TypedDict`,
`int`, `str`, `pathlib.Path`, `bytes`, `list[str]`, `None`...). An optional second parameter
receives the run's `Context`. Inputs are validated at `submit` (in the caller) and outputs in
the worker, so the supervisor only moves JSON text.

Each side travels as a `Payload`: validators and serializers built from the type's pydantic
core schema, copied with two changes, so that what is stored reads back as what was sent:
- `bytes` are base64 in JSON, also inside models, dataclasses and TypedDicts whatever their own
  `ser_json_bytes` says (pydantic's default writes bytes as UTF-8 text, which fails on a PNG).
- On the input side, a model, dataclass or TypedDict that does not set `extra` itself in its
  config refuses keys it does not know (`extra_forbidden`), so a typo in a dict (`{"widht": 3}`)
  is an error at submit instead of a silently dropped field; one that says `extra="ignore"` or
  `"allow"` keeps pydantic's behaviour. A model instance is not validated again. Computed fields
  of an input are not stored (they are computed again from the fields).
A type that cannot travel as JSON (an arbitrary class such as `PIL.Image.Image`, `type[...]`, a
callable) is a TypeError when the job is declared, naming the job and the type.

JSON has no NaN or infinity and pydantic writes both as `null`, so a float that is not finite
would come back as something else or fail its own model when read. Both sides refuse it with a
`pydantic.ValidationError` (type `finite_number`) instead: at submit, and in the worker where
it fails the run as `OutputValidationError`. The check costs a substring search on the JSON
text; only text that holds a `null` is looked at further.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import math
import types
import typing
from collections.abc import Callable, Coroutine, Hashable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypedDict, TypeVar, Unpack, overload

import pydantic_core
from pydantic import BaseModel, PydanticSchemaGenerationError, TypeAdapter, ValidationError
from pydantic_core import CoreConfig, PydanticCustomError, SchemaSerializer, SchemaValidator

from .durations import Duration, optional_duration, parse_rate
from .retry import Retry

In = TypeVar("In")
Out = TypeVar("Out")

if TYPE_CHECKING:
    from .context import Context

    # a job function as a type checker sees it: (input) or (input, ctx), returning the output
    # or, for an `async def`, a coroutine whose result is the output
    JobFunction = Callable[[In], Out] | Callable[[In, Context], Out]
    AsyncJobFunction = JobFunction[In, Coroutine[Any, Any, Out]]


class Priority:
    """Named priorities; any int works, higher runs first."""

    LOW = -10
    NORMAL = 0
    HIGH = 10
    CRITICAL = 100


class Limit:
    """At most `n` runs of a job running at once per key: `@job(concurrency=Limit(1, key="tenant"))`.

    The key is computed once per run, when the supervisor first considers starting it: runs
    with different keys never wait for each other, so one key's backlog never holds up another
    key's runs. A plain int `concurrency=n` is `Limit(n)`: one key for the whole job.

    Args:
        n: the most runs running at once per key, an int >= 1.
        key: None (default: the job as a whole), "tenant" (the run's `tenant=` given at submit;
            runs without one share the key None), or a function of the validated input whose
            value (hashable, else its repr) is the key. A key function that raises fails that
            run (`LimitKeyError`), never the supervisor.
    """

    __slots__ = ("n", "key")

    def __init__(self, n: int, key: str | Callable[[Any], Any] | None = None) -> None:
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"invalid Limit {n!r}: expected an int >= 1")
        if isinstance(key, str) and key != "tenant":
            raise ValueError(f"invalid Limit key {key!r}: expected \"tenant\" (the run's stored tenant) or a function "
                             "of the input")
        if key is not None and not isinstance(key, str) and not callable(key):
            raise TypeError(f"invalid Limit key {key!r}: expected \"tenant\" or a function of the input")
        self.n = n
        self.key = key

    def describe(self) -> str | None:
        """The key as JSON data shows it: None, "tenant", or the function's name."""
        if self.key is None or isinstance(self.key, str):
            return self.key
        return getattr(self.key, "__qualname__", None) or repr(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Limit) and (self.n, self.key) == (other.n, other.key)

    def __hash__(self) -> int:
        return hash((self.n, id(self.key)))

    def __repr__(self) -> str:
        return f"Limit({self.n})" if self.key is None else f"Limit({self.n}, key={self.describe()!r})"


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


# -- payloads: how an input or an output travels as JSON ------------------------------------------

BYTES_AS_BASE64: CoreConfig = {"ser_json_bytes": "base64", "val_json_bytes": "base64"}
_STRUCTURED = ("model", "dataclass", "typed-dict")  # core schema types that carry a class and a config
_NOT_JSON = ("is-instance", "is-subclass", "callable")  # validators that cannot read JSON
_USER_FUNCTIONS = ("function-before", "function-wrap", "function-plain")  # the user's code reads the input
_NOT_SCHEMAS = ("metadata", "default", "expected", "config", "cls", "ref")  # values, not schemas: kept as is


class _Never:
    """A type no input has (the fast path of `validate_input` is for model instances only)."""


def type_name(kind: Any) -> str:
    """A type as a message names it: `PIL.Image.Image`, `int`, `list[tests.Made]`."""
    if isinstance(kind, type) and not isinstance(kind, types.GenericAlias):
        module = getattr(kind, "__module__", "builtins")
        return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"
    return kind if isinstance(kind, str) else repr(kind).replace("typing.", "")


def _sets_extra(cls: type) -> bool:
    """Whether a model, dataclass or TypedDict says `extra=` in its own config."""
    config = getattr(cls, "model_config" if issubclass(cls, BaseModel) else "__pydantic_config__", None)
    return isinstance(config, dict) and "extra" in config


def _rewrite(node: Any, is_input: bool, checking: bool, blocked: list[Any]) -> Any:
    """A copy of the core schema `node` (dicts and lists copied, nothing mutated) where every
    model, dataclass and TypedDict stores bytes as base64 and, for an input that does not set
    `extra` itself, forbids unknown keys and stores no computed field. What cannot read JSON
    (while `checking`: not under a user's validator function, nor a python-only branch) is added
    to `blocked`."""
    if isinstance(node, list):
        return [_rewrite(item, is_input, checking, blocked) for item in node]
    if not isinstance(node, dict):
        return node
    kind = node.get("type")
    if checking and kind in _NOT_JSON and node.get("cls") is not Hashable:
        blocked.append(node.get("cls", kind))
    copy: dict[str, Any] = {}
    for key, value in node.items():
        if key in _NOT_SCHEMAS or not isinstance(value, dict | list):
            copy[key] = value
        elif is_input and key == "computed_fields":
            continue  # serialized only: stored, they would be unknown keys when the worker reads the input
        else:
            inner = checking and key != "serialization" and not (key == "python_schema" and kind == "json-or-python") \
                and not (key == "schema" and kind in _USER_FUNCTIONS)
            copy[key] = _rewrite(value, is_input, inner, blocked)
    cls = node.get("cls")
    if kind in _STRUCTURED and isinstance(cls, type):
        config: dict[str, Any] = {**(node.get("config") or {}), **BYTES_AS_BASE64}
        if is_input and not _sets_extra(cls):
            if kind != "typed-dict":
                config["extra_fields_behavior"] = "forbid"
            elif copy.get("extra_behavior", "ignore") == "ignore":  # not closed, no extra_items
                copy["extra_behavior"] = "forbid"
        copy["config"] = config
    return copy


def _fields(kind: Any) -> frozenset[str] | None:
    """The field names (and string aliases) of a model, dataclass or TypedDict; None for a type
    without fields (an int, a str, a list...)."""
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        fields = kind.model_fields
        return frozenset(fields) | {f.alias for f in fields.values() if isinstance(f.alias, str)}
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        return frozenset(f.name for f in dataclasses.fields(kind))
    if isinstance(kind, type) and issubclass(kind, dict) and hasattr(kind, "__required_keys__"):  # a TypedDict
        return frozenset(kind.__annotations__)
    return None


class Payload:
    """One side of a job (`role`: "input" or "output") as it travels: validated by its type and
    stored as JSON text. See the module docstring for what differs from the type's own pydantic
    validation; a type that cannot travel as JSON is a TypeError naming the job and the type."""

    def __init__(self, kind: Any, role: str, job_name: str) -> None:
        self.kind = kind
        blocked: list[Any] = []
        try:
            schema = _rewrite(TypeAdapter(kind).core_schema, role == "input", True, blocked)
        except PydanticSchemaGenerationError as exc:
            raise TypeError(_not_json(job_name, role, kind, None)) from exc
        if blocked:
            raise TypeError(_not_json(job_name, role, kind, blocked[0]))
        try:  # built from the rewritten schema, not from the classes' own prebuilt validators
            self.validator = SchemaValidator(schema, BYTES_AS_BASE64, _use_prebuilt=False)
            self.serializer = SchemaSerializer(schema, BYTES_AS_BASE64, _use_prebuilt=False)
        except TypeError:  # a pydantic-core without `_use_prebuilt`: nested classes keep their own config
            self.validator = SchemaValidator(schema, BYTES_AS_BASE64)
            self.serializer = SchemaSerializer(schema, BYTES_AS_BASE64)
        self.fields = _fields(kind)
        self.model: type = kind if isinstance(kind, type) and issubclass(kind, BaseModel) else _Never
        self.title = getattr(kind, "__name__", None) or repr(kind)

    def dump(self, value: Any, job_name: str) -> str:
        """A validated value as JSON text; a NaN or an infinity anywhere in it is a ValidationError
        (pydantic writes both as null, so only text holding a null is looked at further)."""
        text: str = self.serializer.to_json(value).decode()
        if "null" in text:
            _refuse_nonfinite(self.serializer.to_python(value), self.title, job_name)
        return text


def _fn_name(fn: Callable[..., Any] | None) -> str | None:
    return None if fn is None else getattr(fn, "__qualname__", None) or repr(fn)


def _not_json(job_name: str, role: str, kind: Any, inner: Any) -> str:
    holds = "" if inner is None or inner is kind else f" (it holds {type_name(inner)})"
    verb = "return" if role == "output" else "take"
    return (f"job {job_name!r}: its {role} type {type_name(kind)} cannot be stored as JSON{holds}; "
            f"{verb} a path to a file (str or pathlib.Path) or bytes instead")


class Job(Generic[In, Out]):
    """A registered job: the function, its name, its input and output types and its options.

    Made by `@job` (see `job` for what each option means, its units and its default); calling
    it calls the function in this process. Invalid options raise ValueError or TypeError here,
    when the job is declared, naming the job.

    Args:
        fn: the function, `(input)` or `(input, ctx)`, plain or `async def`.
        name: the job's name in the store (default: the function's `__qualname__`).
        input: the input type (default: the first parameter's annotation).
        output: the output type (default: the return annotation, `Any` without one).
        timeout: the wall-clock limit of one attempt, or a function of the input that returns
            one, computed at submit (default None: no limit).
        soft_timeout: when `SoftTimeout` is raised inside the job (default None).
        retry: a `Retry`, or an int of attempts in all (default None: the supervisor's).
        priority: higher runs first, or a function of the input that returns the priority,
            computed at submit (default `Priority.NORMAL`, 0).
        concurrency: the most runs of this job at once, an int or a `Limit` (per key; default
            None: no limit).
        rate: the most starts per period, "10/s" (default None: no limit).
        throttle: the same as `rate` (one mechanism), also in words: "2 per second".
        debounce: a duration: submits with the same `key=` within it become one run, with the
            last input (default None).
        unique: one live run per input, or per the value of a function of it (default False).
        cron: a cron expression the serving supervisor submits a run at (default None).
        version: the job's version stored with each run (default 1).
        min_version: runs stored by an older version are cancelled (default None).
        setup: called once per worker process; its result is `ctx.resource` (default None).
        before_run: called with the `Context` before each attempt (default None).
        after_run: called with the `Context` and the exception or None after each attempt.
        before_step: called with the `Context` and the step's name before a step runs.
        after_step: called with the `Context`, the step's name and the exception or None after it.
        trigger: `event(name, transform=...)`: a run per event `name` (default None).

    Attributes:
        input_type: the input type; `input_model` is its older name.
        output_type: the output type.
        takes_context: whether the function takes a second parameter, the `Context`.
        rate_limit: `rate` parsed: (count, period in seconds), or None.
        concurrency_key: the `Limit` key of `concurrency` (None: per job, "tenant", a function).
        priority_fn: the function given as `priority`, or None (then `priority` is
            `Priority.NORMAL` for runs that do not compute theirs).
        timeout_fn: the function given as `timeout`, or None (then `timeout` is None for runs
            that do not compute theirs).
    """

    def __init__(
        self,
        fn: Callable[..., Out],
        *,
        name: str | None = None,
        input: Any = None,
        output: Any = inspect.Parameter.empty,
        timeout: Duration | Callable[[Any], Duration | None] | None = None,
        soft_timeout: Duration | None = None,
        retry: Retry | int | None = None,
        priority: int | Callable[[Any], int] = Priority.NORMAL,
        concurrency: int | Limit | None = None,
        rate: str | None = None,
        throttle: str | None = None,
        debounce: Duration | None = None,
        unique: bool | Callable[[Any], Any] = False,
        cron: str | None = None,
        version: int = 1,
        min_version: int | None = None,
        setup: Callable[[], Any] | None = None,
        before_run: Callable[[Any], Any] | None = None,
        after_run: Callable[[Any, BaseException | None], Any] | None = None,
        before_step: Callable[[Any, str], Any] | None = None,
        after_step: Callable[[Any, str, BaseException | None], Any] | None = None,
        trigger: Any = None,
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
        kind = input if input is not None else hints.get(params[0].name, inspect.Parameter.empty)
        if kind is inspect.Parameter.empty:
            raise TypeError(
                f"job {self.name!r}: annotate the first parameter with the input type (a pydantic model, a "
                "dataclass, a TypedDict, int, str... anything pydantic validates) or pass input=..."
            )
        if isinstance(kind, str):  # a forward reference get_type_hints could not resolve
            raise TypeError(f"job {self.name!r}: cannot resolve the annotation {kind!r} of its first parameter: "
                            "define the type at module level, or pass input=...")
        # the input type; `input_model` is its older name, kept for code that reads it
        self.input_type: Any = kind
        self.input_model: Any = kind
        if output is inspect.Parameter.empty:
            output = hints.get("return", Any)
        self.output_type = output
        self._input = Payload(kind, "input", self.name)
        self._output = Payload(output, "output", self.name)
        self.timeout_fn: Callable[[Any], Any] | None = timeout if callable(timeout) else None
        self.timeout = None if callable(timeout) else optional_duration(timeout, what=f"timeout of job {self.name!r}")
        self.soft_timeout = optional_duration(soft_timeout, what=f"soft_timeout of job {self.name!r}")
        if self.soft_timeout is not None and self.timeout is not None and self.soft_timeout >= self.timeout:
            raise ValueError(f"job {self.name!r}: soft_timeout must be below timeout")
        if isinstance(retry, int) and not isinstance(retry, bool):
            retry = Retry(attempts=retry)
        if retry is not None and not isinstance(retry, Retry):
            raise TypeError(f"job {self.name!r}: retry must be a Retry or an int, got {retry!r}")
        self.retry: Retry | None = retry
        self.priority_fn: Callable[[Any], int] | None = priority if callable(priority) else None
        if callable(priority):
            priority = Priority.NORMAL
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise TypeError(f"job {self.name!r}: priority must be an int or a function of the input, got {priority!r}")
        self.priority = priority
        self.concurrency_key: str | Callable[[Any], Any] | None = None
        if isinstance(concurrency, Limit):
            self.concurrency_key = concurrency.key
            concurrency = concurrency.n
        if concurrency is not None and (not isinstance(concurrency, int) or concurrency < 1):
            raise ValueError(f"job {self.name!r}: invalid concurrency {concurrency!r}: expected an int >= 1 or a Limit")
        self.concurrency = concurrency
        if rate is not None and throttle is not None:
            raise ValueError(f"job {self.name!r}: give rate= or throttle= (the same limit), not both")
        self.rate = rate if rate is not None else throttle
        self.rate_limit = parse_rate(self.rate) if self.rate is not None else None
        self.debounce = optional_duration(debounce, what=f"debounce of job {self.name!r}")
        if self.debounce is not None and self.debounce <= 0:
            raise ValueError(f"job {self.name!r}: debounce must be a positive duration")
        if self.debounce is not None and (unique is not False or cron is not None):
            raise ValueError(f"job {self.name!r}: debounce= cannot be combined with unique= or cron=")
        if not (isinstance(unique, bool) or callable(unique)):
            raise TypeError(f"job {self.name!r}: unique must be True or a function of the input")
        self.unique = unique
        if cron is not None:
            check_cron(cron, self.name)
            try:
                self.validate_input({})  # what each tick submits
            except Exception as exc:
                raise ValueError(f"job {self.name!r}: each tick of a cron job submits {{}}, so its input must be a "
                                 "model (or dataclass, TypedDict) with defaults for every field") from exc
        self.cron = cron
        if not isinstance(version, int) or version < 1:
            raise ValueError(f"job {self.name!r}: invalid version {version!r}: expected an int >= 1")
        self.version = version
        self.min_version = min_version
        self.limited = concurrency is not None or self.rate_limit is not None
        for hook_name, hook in (("setup", setup), ("before_run", before_run), ("after_run", after_run),
                                ("before_step", before_step), ("after_step", after_step)):
            if hook is not None and not callable(hook):
                raise TypeError(f"job {self.name!r}: {hook_name} must be callable, got {hook!r}")
        self.setup = setup
        self.before_run = before_run
        self.after_run = after_run
        self.before_step = before_step
        self.after_step = after_step
        from .events import Trigger

        if trigger is not None and not isinstance(trigger, Trigger):
            raise TypeError(f"job {self.name!r}: trigger must be event(name, ...), got {trigger!r}")
        self.trigger: Trigger | None = trigger

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_input"], state["_output"]  # rebuilt on the other side of the pipe
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._input = Payload(self.input_type, "input", self.name)
        self._output = Payload(self.output_type, "output", self.name)

    @property
    def input_fields(self) -> frozenset[str] | None:
        """The field names (and aliases) of the input type; None for an input without fields."""
        return self._input.fields

    def __call__(self, *args: Any, **kwargs: Any) -> Out:
        return self.fn(*args, **kwargs)

    def options(self) -> dict[str, Any]:
        """The job's options as JSON data: what a store records of it (`Store.record_jobs`) and
        `actors jobs` shows. Durations in seconds; `attempts` from its own retry (None: the
        supervisor's default); `unique` whether it has one; `concurrency_key` the `Limit`'s key
        (None, "tenant" or the function's name) and `concurrency_by` what it is (None, "tenant"
        or "input": a function of the input); `priority_fn` / `timeout_fn` the names of the
        functions that compute them at submit, if any; `rate` also what `throttle=` gave."""
        return {"timeout": self.timeout, "soft_timeout": self.soft_timeout,
                "attempts": self.retry.attempts if self.retry else None, "priority": int(self.priority),
                "concurrency": self.concurrency, "rate": self.rate, "unique": bool(self.unique),
                "version": self.version, "min_version": self.min_version, "cron": self.cron,
                "concurrency_key": Limit(1, self.concurrency_key).describe(),
                "concurrency_by": None if self.concurrency_key is None else
                "tenant" if isinstance(self.concurrency_key, str) else "input", "debounce": self.debounce,
                "priority_fn": _fn_name(self.priority_fn), "timeout_fn": _fn_name(self.timeout_fn)}

    def priority_for(self, input_json: str) -> int:
        """The priority of a run of the validated input JSON `input_json`: the job's `priority`,
        or what its priority function returns for the input (ValueError naming the job when it
        raises, TypeError when it returns no int)."""
        if self.priority_fn is None:
            return self.priority
        value = self._call("priority", self.priority_fn, input_json)
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"job {self.name!r}: its priority= function returned {value!r}, not an int")
        return value

    def timeout_for(self, input_json: str) -> float | None:
        """The timeout in seconds of a run of the validated input JSON `input_json`: the job's
        `timeout`, or what its timeout function returns for the input (a duration or None;
        ValueError naming the job when it raises or returns no duration)."""
        if self.timeout_fn is None:
            return self.timeout
        value = self._call("timeout", self.timeout_fn, input_json)
        return optional_duration(value, what=f"timeout returned by the timeout= function of job {self.name!r}")

    def limit_key(self, input_json: str, tenant: str | None) -> Any:
        """The key of `concurrency=Limit(n, key=...)` for a run of input JSON `input_json`
        stored with `tenant`: None without a key, the tenant for "tenant", else what the key
        function returns (its repr when it is not hashable); ValueError naming the job when it
        raises."""
        key = self.concurrency_key
        if key is None:
            return None
        if isinstance(key, str):
            return tenant
        value = self._call("concurrency Limit key", key, input_json)
        try:
            hash(value)
        except TypeError:
            return repr(value)
        return value

    def _call(self, what: str, fn: Callable[[Any], Any], input_json: str) -> Any:
        try:
            return fn(self.parse_input(input_json))
        except Exception as exc:  # the user's function: say whose it is
            raise ValueError(f"job {self.name!r}: its {what} function raised {type(exc).__name__}: {exc}") from exc

    def __repr__(self) -> str:
        return f"<Job {self.name} ({self._input.title}) -> {self._output.title}>"

    def validate_input(self, value: Any) -> str:
        """The input as JSON text, validated by the input type (raises pydantic.ValidationError,
        also for a key that a model, dataclass or TypedDict does not know, or a NaN or an infinity
        anywhere in it). A model instance is taken as valid.

        Args:
            value: the input: a value of the input type or what validates as one (a dict).
        """
        payload = self._input
        if type(value) is not payload.model:
            value = payload.validator.validate_python(value)
        return payload.dump(value, self.name)

    def parse_input(self, text: str) -> In:
        """Stored input JSON `text` back as the input type (what the worker calls the function
        with); raises pydantic.ValidationError when it does not validate."""
        return self._input.validator.validate_json(text)

    def unique_key(self, input_json: str) -> str | None:
        """The key that makes a run unique while live (`unique=`), from its validated input JSON
        `input_json`: None without `unique`, the SHA-256 of the JSON for `unique=True`, else the
        repr of what the `unique` function returns (ValueError naming the job when it raises)."""
        if self.unique is False:
            return None
        if self.unique is True:
            return hashlib.sha256(input_json.encode()).hexdigest()
        try:
            return repr(self.unique(self.parse_input(input_json)))
        except Exception as exc:  # the user's function: say whose it is
            raise ValueError(f"job {self.name!r}: its unique= function raised {type(exc).__name__}: {exc}") from exc

    def output_json(self, value: Any) -> str:
        """Validate a returned `value` against the output type and serialize it as JSON text
        (runs in the worker); a mismatch, or a NaN or an infinity anywhere in it, raises
        pydantic.ValidationError."""
        payload = self._output
        return payload.dump(payload.validator.validate_python(value), self.name)

    def parse_output(self, text: str) -> Out:
        """The stored JSON output `text` back as the output type (bytes: from base64)."""
        return self._output.validator.validate_json(text)


class JobOptions(TypedDict, total=False):
    """The options of `@job` besides `input=` / `output=` (see `Job`), as type checkers see them."""

    name: str | None
    timeout: Duration | Callable[[Any], Duration | None] | None
    soft_timeout: Duration | None
    retry: Retry | int | None
    priority: int | Callable[[Any], int]
    concurrency: int | Limit | None
    rate: str | None
    throttle: str | None
    debounce: Duration | None
    unique: bool | Callable[[Any], Any]
    cron: str | None
    version: int
    min_version: int | None
    setup: Callable[[], Any] | None
    before_run: Callable[[Any], Any] | None
    after_run: Callable[[Any, BaseException | None], Any] | None
    before_step: Callable[[Any, str], Any] | None
    after_step: Callable[[Any, str, BaseException | None], Any] | None
    trigger: Any


class JobDecorator(Protocol):
    """What `job(**options)` returns: a decorator typed as bare `@job` is."""

    @overload
    def __call__(self, fn: AsyncJobFunction[In, Out], /) -> Job[In, Out]: ...
    @overload
    def __call__(self, fn: JobFunction[In, Out], /) -> Job[In, Out]: ...


# Typing: `Job[In, Out]` takes In from the first parameter's annotation and Out from the return
# annotation, the result of the coroutine for an `async def`; `input=` and `output=` given both
# set them (a lambda). With only one of them, or values that are not classes, it is Job[Any, Any].
@overload
def job(fn: AsyncJobFunction[In, Out], /, **options: Unpack[JobOptions]) -> Job[In, Out]: ...
@overload
def job(fn: JobFunction[In, Out], /, **options: Unpack[JobOptions]) -> Job[In, Out]: ...
@overload
def job(fn: Callable[..., Any], /, *, input: type[In], output: type[Out],
        **options: Unpack[JobOptions]) -> Job[In, Out]: ...
@overload
def job(fn: Callable[..., Any], /, *, input: Any = ..., output: Any = ...,
        **options: Unpack[JobOptions]) -> Job[Any, Any]: ...
@overload
def job(*, input: type[In], output: type[Out],
        **options: Unpack[JobOptions]) -> Callable[[Callable[..., Any]], Job[In, Out]]: ...
@overload
def job(**options: Unpack[JobOptions]) -> JobDecorator: ...
@overload
def job(*, input: Any = ..., output: Any = ...,
        **options: Unpack[JobOptions]) -> Callable[[Callable[..., Any]], Job[Any, Any]]: ...
def job(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Declare a job, bare (`@job`) or with options (`@job(timeout="30s", retry=Retry(3))`).

    The function takes the input (its type from the first parameter's annotation: anything
    pydantic validates, a model, a dataclass, a TypedDict, `int`, `str`, `bytes`...) and
    optionally a second parameter, the run's `Context`; it returns the output (its type from the
    return annotation). An `async def` function works too: each attempt runs the coroutine to
    its end with `asyncio.run` in the worker. Durations below are seconds (int or float), a
    `datetime.timedelta`, or a string: "250ms", "30s", "5m", "2h", "1d".

    Args:
        fn: the function, when used bare (`@job`) or called (`job(fn, ...)`).
        name: the job's name, what the store and `submit("name")` know it by (default: the
            function's `__qualname__`). Names are unique within a supervisor.
        input: the input type, instead of the first parameter's annotation (a lambda).
        output: the output type, instead of the return annotation (default `Any`).
        timeout: the wall-clock limit of one attempt; past it the worker is killed and the
            attempt ends `timed_out` (default None: no limit). A submit can override it. It may
            also be a function of the validated input returning a duration (or None), called at
            submit: `timeout=lambda img: 5 + img.megapixels`.
        soft_timeout: after this long `SoftTimeout` is raised inside the job, so it can clean
            up before `timeout` kills it; must be below `timeout` (default None).
        retry: a `Retry` policy, or an int: that many attempts in all, `Retry(attempts=n)`
            (default None: the supervisor's `retry=`, which defaults to one attempt).
        priority: higher runs first; any int, see `Priority` (default `Priority.NORMAL`, 0).
            A submit can override it. It may also be a function of the validated input returning
            an int, called at submit: `priority=lambda order: 10 if order.express else 0`.
        concurrency: the most runs of this job running at once in the pool, an int >= 1
            (default None: no limit but the workers), or a `Limit` for a limit per key:
            `Limit(1, key="tenant")` (the run's `tenant=`) or `Limit(2, key=lambda inp:
            inp.account)`: at most that many running per key, and one key's backlog never
            holds up another key's runs.
        rate: the most starts per period: "10/s", "100/m", "5/10s", also in words, "2 per
            second", "100 per minute" (default None: no limit). At most N starts in any window
            of the period (a sliding window, no burst after idling); runs beyond it wait their
            turn, none is dropped.
        throttle: another name for `rate`, the same mechanism ("2/s", "2 per second"); give
            one of the two.
        debounce: a duration ("5s"): a burst of submits of this job with the same `key=` becomes
            one run, with the last input. The first submit stores a run due after the window; a
            later one with that key, while that run is queued and not due yet, replaces its
            input (and metadata, tenant, priority, timeout) and pushes its start to a window
            from now, returning the same run's handle. Once the run is due (or started) the next
            submit starts a new burst (a new run, which takes the key over). Needs `key=` at
            every submit (ValueError without), and a submitter that knows the job (a `Client`
            given it in `jobs=`); not with `unique` or `cron`, nor with `delay`, `at` or `rerun`
            at submit (default None).
        unique: True: while a run of the same input is queued or running, submitting it again
            returns that run's handle; a function of the input: the same for inputs for which
            it returns the same value (default False).
        cron: a cron expression (UTC, croniter's syntax, `"*/5 * * * *"`): the serving
            supervisor submits a run with input `{}` at each tick, so the input's fields all
            need defaults (default None).
        version: an int >= 1 stored with each run (default 1).
        min_version: a stored run of a version below it is cancelled (`StaleVersion`) rather
            than run (default None).
        setup: a function of no arguments called once in each worker process; what it returns
            is `ctx.resource` for every run there (default None).
        before_run: called as `before_run(ctx)` in the worker before each attempt; an
            exception fails the attempt (default None).
        after_run: called as `after_run(ctx, error)` in the worker after each attempt, with
            the exception or None; an exception it raises is logged (default None).
        before_step: called as `before_step(ctx, name)` before a `ctx.step` runs its function
            (not when a replay returns the stored value); an exception fails the step.
        after_step: called as `after_step(ctx, name, error)` after it, with the exception or None.
        trigger: `event("name", transform=...)`: the serving supervisor starts a run of this job
            for each such event (`emit`), with input `transform(payload)` (default: the payload).

    Returns:
        The `Job`, or, without `fn`, a decorator that makes one.

    Raises:
        TypeError: for a function or an option of the wrong kind, or an input or output type
            that cannot travel as JSON (naming the job and the type).
        ValueError: for a malformed duration, rate or cron expression, or a value out of range.
    """
    if fn is not None:
        return Job(fn, **options)
    return lambda f: Job(f, **options)
