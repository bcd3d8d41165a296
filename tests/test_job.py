"""actors.job: @job reads models from annotations, validates options, and moves JSON."""

from __future__ import annotations

import hashlib
import inspect
from dataclasses import dataclass
from typing import Any

import dill
import pytest
from PIL import Image as PILImage
from pydantic import BaseModel, ConfigDict, ValidationError
from typing_extensions import TypedDict

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


def unannotated(a):
    return a


def takes_a_class(a: type[Thumb]) -> int:
    return 1


@pytest.mark.parametrize(
    ("fn", "options", "error", "match"),
    [
        (no_params, {}, TypeError, "0 parameters"),
        (three_params, {}, TypeError, "3 parameters"),
        (unannotated, {}, TypeError, "annotate the first parameter"),
        (takes_a_class, {}, TypeError, "cannot be stored as JSON"),
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
    ids=["no-params", "three-params", "unannotated", "class-input", "timeout", "soft-timeout", "negative-timeout",
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
    assert "_output" not in with_context.__getstate__() and "_input" not in with_context.__getstate__()
    assert clone.validate_input({"src": "a"}) == '{"src":"a","width":256}'
    with pytest.raises(ValidationError, match="widht"):
        clone.validate_input({"src": "a", "widht": 3})


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


# -- any input type, bytes as base64, unknown keys refused --------------------------------------


class Strict(BaseModel):
    model_config = ConfigDict(extra="ignore")  # said by the model itself: pydantic's behaviour
    src: str


class Loose(BaseModel):
    model_config = ConfigDict(extra="allow")
    src: str


class Inner(BaseModel):
    n: int = 0


class Outer(BaseModel):
    inner: Inner = Inner()


@dataclass
class Area:
    w: int
    h: int = 1


class Point(TypedDict):
    x: int
    y: int


class Image(BaseModel):
    name: str
    data: bytes


def test_an_input_key_the_model_does_not_know_is_refused_unless_the_model_sets_extra():
    with pytest.raises(ValidationError) as raised:
        thumbnail.validate_input({"src": "a", "widht": 3})
    assert raised.value.errors()[0]["type"] == "extra_forbidden" and raised.value.errors()[0]["loc"] == ("widht",)
    assert job(lambda s: 1, name="strict", input=Strict).validate_input({"src": "a", "x": 1}) == '{"src":"a"}'
    assert job(lambda s: 1, name="loose", input=Loose).validate_input({"src": "a", "x": 1}) == '{"src":"a","x":1}'
    nested = job(lambda o: 1, name="nested", input=Outer)
    with pytest.raises(ValidationError, match="nn"):
        nested.validate_input({"inner": {"nn": 1}})  # nested models too
    assert thumbnail.validate_input(Thumb(src="a")) == '{"src":"a","width":256}'  # an instance is not validated again


@pytest.mark.parametrize(
    ("kind", "value", "text", "back"),
    [
        (int, 3, "3", 3),
        (str, "a.jpg", '"a.jpg"', "a.jpg"),
        (Area, {"w": 2}, '{"w":2,"h":1}', Area(2, 1)),
        (Area, Area(3, 4), '{"w":3,"h":4}', Area(3, 4)),
        (Point, {"x": 1, "y": 2}, '{"x":1,"y":2}', {"x": 1, "y": 2}),
        (bytes, b"\x89PNG\xff", '"iVBOR_8="', b"\x89PNG\xff"),
        (list[bytes], [b"\x00", b"\xff"], '["AA==","_w=="]', [b"\x00", b"\xff"]),
    ],
    ids=["int", "str", "dataclass-dict", "dataclass", "typeddict", "bytes", "list-of-bytes"],
)
def test_any_type_pydantic_validates_is_an_input(kind, value, text, back):
    taking = job(lambda v: v, name="taking", input=kind, output=kind)
    assert taking.validate_input(value) == text
    assert taking.parse_input(text) == back
    assert taking.parse_output(taking.output_json(back)) == back


@pytest.mark.parametrize(("kind", "value"), [(Area, {"w": 1, "d": 2}), (Point, {"x": 1, "y": 2, "z": 3})],
                         ids=["dataclass", "typeddict"])
def test_unknown_keys_are_refused_for_dataclasses_and_typeddicts_too(kind, value):
    with pytest.raises(ValidationError) as raised:
        job(lambda v: v, name="taking", input=kind).validate_input(value)
    assert raised.value.errors()[0]["loc"] in (("d",), ("z",))


def test_bytes_in_a_model_travel_as_base64_both_ways():
    png = b"\x89PNG\r\n\x1a\n\x00\xff"
    echo = job(lambda image: image, name="echo", input=Image, output=Image)
    text = echo.validate_input({"name": "a", "data": png})
    assert text == '{"name":"a","data":"iVBORw0KGgoA_w=="}'
    assert echo.parse_input(text) == Image(name="a", data=png)
    assert echo.parse_output(echo.output_json(Image(name="a", data=png))) == Image(name="a", data=png)
    assert Image.model_config.get("ser_json_bytes") is None  # the user's model is left as it was


def test_an_output_type_that_cannot_be_json_is_refused_when_the_job_is_declared():
    def thumb(t: Thumb) -> PILImage.Image:
        raise NotImplementedError

    with pytest.raises(TypeError) as raised:
        job(name="thumb")(thumb)
    assert str(raised.value) == ("job 'thumb': its output type PIL.Image.Image cannot be stored as JSON; return a "
                                 "path to a file (str or pathlib.Path) or bytes instead")


def test_a_model_holding_an_arbitrary_class_is_refused_naming_the_class():
    class Holder(BaseModel):
        model_config = ConfigDict(arbitrary_types_allowed=True)
        image: PILImage.Image

    with pytest.raises(TypeError, match=r"job 'holder': its input type .*Holder cannot be stored as JSON "
                                        r"\(it holds PIL.Image.Image\); take a path"):
        job(lambda h: 1, name="holder", input=Holder)


def test_a_cron_job_needs_an_input_with_defaults():
    job(lambda o: 1, name="tick", input=Outer, cron="* * * * *")  # every field has a default
    with pytest.raises(ValueError, match="defaults for every field"):
        job(lambda t: 1, name="tock", input=Thumb, cron="* * * * *")
    with pytest.raises(ValueError, match="defaults for every field"):
        job(lambda n: 1, name="tack", input=int, cron="* * * * *")


def test_input_fields_name_the_fields_of_structured_inputs_only():
    assert thumbnail.input_fields == {"src", "width"}
    assert job(lambda p: 1, name="p", input=Point).input_fields == {"x", "y"}
    assert job(lambda a: 1, name="a", input=Area).input_fields == {"w", "h"}
    assert job(lambda n: 1, name="n", input=int).input_fields is None
