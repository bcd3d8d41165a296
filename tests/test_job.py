"""actors.job: @job reads models from annotations, validates options, and moves JSON."""

from __future__ import annotations

import hashlib
import inspect
from typing import Any

import dill
import pytest
from pydantic import BaseModel, ValidationError

from actors import Context, Job, Priority, Retry, job


class Thumb(BaseModel):
    src: str
    width: int = 256


class Tick(BaseModel):
    note: str = "tick"


class Made(BaseModel):
    dst: str
    bytes: int


@job
def thumbnail(thumb: Thumb) -> Made:
    return Made(dst=thumb.src + ".png", bytes=thumb.width)


@job(timeout="30s", soft_timeout="10s", retry=Retry(attempts=4), priority=Priority.HIGH)
def with_context(thumb: Thumb, ctx: Context) -> list[int]:
    return [ctx.attempt]


def test_bare_job_takes_models_from_annotations():
    assert isinstance(thumbnail, Job)
    assert thumbnail.name == "thumbnail"
    assert thumbnail.input_model is Thumb
    assert thumbnail.output_type is Made
    assert not thumbnail.takes_context
    assert (thumbnail.timeout, thumbnail.soft_timeout, thumbnail.retry, thumbnail.priority) == (None, None, None, 0)


def test_job_options_are_parsed():
    assert with_context.takes_context
    assert with_context.timeout == 30.0
    assert with_context.soft_timeout == 10.0
    assert with_context.retry == Retry(attempts=4)
    assert with_context.priority == Priority.HIGH
    assert with_context.output_type == list[int]


def test_calling_a_job_calls_its_function():
    assert thumbnail(Thumb(src="a")) == Made(dst="a.png", bytes=256)


def test_a_lambda_job_takes_name_and_models_as_options():
    double = job(lambda n: n.width * 2, name="double", input=Thumb, output=int)
    assert (double.name, double.input_model, double.output_type) == ("double", Thumb, int)
    assert double(Thumb(src="s", width=3)) == 6


def test_a_job_without_return_annotation_outputs_any():
    @job
    def anything(thumb: Thumb):
        return thumb

    assert anything.output_type is Any
    assert anything.name.endswith("anything")


def test_an_int_retry_means_that_many_attempts():
    @job(retry=3)
    def thrice(thumb: Thumb) -> int:
        return 1

    assert thrice.retry == Retry(attempts=3)


def test_limits_schedules_and_unique_keys_are_parsed():
    @job(concurrency=2, rate="10/m", unique=lambda t: t.src, version=2)
    def limited(thumb: Thumb) -> int:
        return 1

    @job(cron="*/5 * * * *")
    def every_five_minutes(tick: Tick) -> None:
        return None

    assert (limited.concurrency, limited.rate_limit, limited.version) == (2, (10.0, 60.0), 2)
    assert every_five_minutes.cron == "*/5 * * * *"
    assert limited.unique_key('{"src": "a", "width": 1}') == repr("a")
    assert thumbnail.unique_key('{"src": "a"}') is None
    whole = job(unique=True)(thumbnail.fn)
    assert whole.unique_key('{"src":"a"}') == hashlib.sha256(b'{"src":"a"}').hexdigest()  # fixed size, any input


def test_priorities_are_ordered_ints():
    assert Priority.LOW < Priority.NORMAL < Priority.HIGH < Priority.CRITICAL
    assert Priority.NORMAL == 0


# -- declaring a job wrongly fails at once, with a clear error ---------------------------------


def no_params() -> int:
    return 1


def three_params(a: Thumb, b: Context, c: int) -> int:
    return 1


def not_a_model(a: int) -> int:
    return a


def unannotated(a):
    return a


@pytest.mark.parametrize(
    ("fn", "options", "error", "match"),
    [
        (no_params, {}, TypeError, "0 parameters"),
        (three_params, {}, TypeError, "3 parameters"),
        (not_a_model, {}, TypeError, "pydantic BaseModel"),
        (unannotated, {}, TypeError, "pydantic BaseModel"),
        (thumbnail.fn, {"timeout": "5 parsecs"}, ValueError, "'5 parsecs'"),
        (thumbnail.fn, {"soft_timeout": "soon"}, ValueError, "'soon'"),
        (thumbnail.fn, {"timeout": -1}, ValueError, "-1"),
        (thumbnail.fn, {"timeout": "10s", "soft_timeout": "10s"}, ValueError, "soft_timeout must be below timeout"),
        (thumbnail.fn, {"retry": "3"}, TypeError, "retry must be a Retry or an int"),
        (thumbnail.fn, {"priority": "high"}, TypeError, "priority must be an int"),
        (thumbnail.fn, {"priority": True}, TypeError, "priority must be an int"),
        (thumbnail.fn, {"name": 123}, ValueError, "invalid job name"),
        (thumbnail.fn, {"concurrency": 0}, ValueError, "invalid concurrency 0"),
        (thumbnail.fn, {"rate": "fast"}, ValueError, "'fast'"),
        (thumbnail.fn, {"cron": "every day"}, ValueError, "'every day'"),
        (thumbnail.fn, {"version": 0}, ValueError, "invalid version 0"),
        (thumbnail.fn, {"setup": 5}, TypeError, "setup must be callable"),
        (thumbnail.fn, {"unique": 5}, TypeError, "unique must be"),
    ],
    ids=["no-params", "three-params", "int-input", "unannotated", "timeout", "soft-timeout", "negative-timeout",
         "soft-not-below-hard", "retry-type", "priority-str", "priority-bool", "name-not-str", "concurrency", "rate",
         "cron", "version", "setup", "unique"],
)
def test_a_badly_declared_job_raises_a_clear_error(fn, options, error, match):
    with pytest.raises(error, match=match):
        job(**options)(fn)


def test_a_malformed_timeout_error_names_the_job_and_the_value():
    with pytest.raises(ValueError) as caught:

        @job(timeout="5 parsecs")
        def measured(thumb: Thumb) -> int:
            return 1

    assert "'5 parsecs'" in str(caught.value)
    assert "measured" in str(caught.value)


def test_job_rejects_something_not_callable():
    with pytest.raises(TypeError, match="expects a function"):
        Job(42)  # type: ignore[arg-type]


# -- JSON in, JSON out ----------------------------------------------------------------------


def test_validate_input_accepts_a_model_or_plain_data_and_gives_json():
    assert thumbnail.validate_input(Thumb(src="a")) == '{"src":"a","width":256}'
    assert thumbnail.validate_input({"src": "a", "width": 3}) == '{"src":"a","width":3}'


@pytest.mark.parametrize("value", [{"width": 3}, {"src": "a", "width": "wide"}, "a.jpg", None])
def test_validate_input_rejects_bad_input(value):
    with pytest.raises(ValidationError):
        thumbnail.validate_input(value)


def test_output_is_validated_serialized_and_parsed_back():
    text = thumbnail.output_json(Made(dst="x", bytes=3))
    assert text == '{"dst":"x","bytes":3}'
    assert thumbnail.output_json({"dst": "x", "bytes": "3"}) == text  # coerced by the model
    assert thumbnail.parse_output(text) == Made(dst="x", bytes=3)
    assert with_context.output_json([1, 2]) == "[1,2]"


def test_an_output_that_violates_its_model_raises_validation_error():
    with pytest.raises(ValidationError):
        thumbnail.output_json({"dst": "x"})
    with pytest.raises(ValidationError):
        with_context.output_json(["a"])


def test_a_job_survives_dill_pickling_with_its_output_adapter_rebuilt():
    clone = dill.loads(dill.dumps(with_context, recurse=True, byref=True))
    assert clone.name == with_context.name
    assert clone.output_json([7]) == "[7]"
    assert "output_adapter" not in with_context.__getstate__()


def test_repr_names_the_job_and_its_models():
    assert repr(thumbnail) == "<Job thumbnail (Thumb) -> Made>"


def test_job_signature_check_uses_the_real_signature():
    assert list(inspect.signature(with_context.fn).parameters) == ["thumb", "ctx"]


def test_a_unique_function_that_raises_is_a_value_error_naming_the_job():
    @job(name="picky", unique=lambda t: t.missing_attribute)
    def picky(t: Thumb) -> int:
        return 1

    with pytest.raises(ValueError, match=r"job 'picky': its unique= function raised AttributeError"):
        picky.unique_key('{"src": "a"}')
