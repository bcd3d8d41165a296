"""Inputs and outputs of any type pydantic validates, run for real (issue 11, items 4 and 5).

- bytes travel as base64 JSON: a PNG made with Pillow comes back from `result()` byte for byte,
  alone, inside an output model, and inside an input model;
- an input may be an int, a str path, a dataclass or a TypedDict, not only a model;
- `submit(job, **fields)` submits a model's fields by keyword; an option name that is also a
  field, or an input and fields together, is a TypeError;
- a dict key the model does not know is refused at submit, naming it, and nothing is stored;
- a type that cannot travel as JSON (`PIL.Image.Image`) is refused when the job is declared.

Each run starts real workers on a real SQLite file (`serve(until="drained")`).
"""

from __future__ import annotations

import io
import pathlib
from dataclasses import dataclass

import pytest
from PIL import Image
from pydantic import BaseModel, ValidationError
from typing_extensions import TypedDict

from actors import Client, RunStatus, Supervisor, job

pytestmark = pytest.mark.timeout(60)


def png_bytes(size: int) -> bytes:
    """A real PNG: a gradient, so its bytes are not valid UTF-8 (they start with 0x89)."""
    image = Image.new("RGB", (size, size))
    image.putdata([(x * 7 % 256, y * 13 % 256, (x ^ y) % 256) for y in range(size) for x in range(size)])
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


class Picture(BaseModel):
    name: str
    png: bytes


class Blob(BaseModel):
    data: bytes


class Thumb(BaseModel):
    src: str
    width: int = 256


class Keyed(BaseModel):
    src: str
    key: str = "k"  # also the name of submit's idempotency option


@dataclass
class Area:
    w: int
    h: int = 1


class Point(TypedDict):
    x: int
    y: int


@job(timeout="30s")
def render(size: int) -> bytes:
    return png_bytes(size)


@job(timeout="30s")
def render_named(thumb: Thumb) -> Picture:
    return Picture(name=thumb.src, png=png_bytes(thumb.width))


@job(timeout="30s")
def reverse(blob: Blob) -> Blob:
    return Blob(data=blob.data[::-1])


@job(timeout="30s")
def square(n: int) -> int:
    return n * n


@job(timeout="30s")
def suffix(path: str) -> str:
    return pathlib.Path(path).suffix


@job(timeout="30s")
def area(a: Area) -> int:
    assert isinstance(a, Area)
    return a.w * a.h


@job(timeout="30s")
def manhattan(p: Point) -> int:
    return abs(p["x"]) + abs(p["y"])


@job(timeout="30s")
def describe(thumb: Thumb) -> str:
    return f"{thumb.src}@{thumb.width}"


@job(timeout="30s")
def keyed(k: Keyed) -> str:
    return k.key


def test_a_png_returned_as_bytes_reads_back_identical(db: str):
    with Supervisor([render], workers=1, store=db) as sup:
        handle = sup.submit(render, 48)
        sup.serve(until="drained")
        png = handle.result(timeout=5)
        record = sup.run(handle.id)
    assert isinstance(png, bytes) and png == png_bytes(48)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert Image.open(io.BytesIO(png)).size == (48, 48)
    assert record.status is RunStatus.SUCCEEDED and record.output.startswith('"iVBORw0KGgo')  # base64 JSON


def test_bytes_inside_models_travel_both_ways(db: str):
    raw = bytes(range(256))  # every byte value, not UTF-8
    with Supervisor([render_named, reverse], workers=1, store=db) as sup:
        named = sup.submit(render_named, Thumb(src="a.jpg", width=16))
        reversed_ = sup.submit(reverse, {"data": raw})
        reversed_model = sup.submit(reverse, Blob(data=raw))
        sup.serve(until="drained")
        assert named.result(timeout=5) == Picture(name="a.jpg", png=png_bytes(16))
        assert reversed_.result(timeout=5) == Blob(data=raw[::-1])
        assert reversed_model.result(timeout=5) == Blob(data=raw[::-1])


def test_int_str_dataclass_and_typeddict_inputs_are_submitted_and_run(db: str):
    with Supervisor([square, suffix, area, manhattan], workers=2, store=db) as sup:
        handles = [
            sup.submit(square, 12),
            sup.submit(suffix, "photos/a.jpg"),
            sup.submit(area, Area(w=3, h=4)),
            sup.submit(area, {"w": 5}),
            sup.submit(manhattan, {"x": -2, "y": 5}),
            *sup.submit_many(square, [1, 2, 3]),
        ]
        sup.serve(until="drained")
        assert [h.result(timeout=5) for h in handles] == [144, ".jpg", 12, 5, 7, 1, 4, 9]
    with Supervisor([square], workers=1, store=db) as sup, pytest.raises(ValidationError):
        sup.submit(square, "twelve")


def test_a_model_input_can_be_submitted_by_keywords_beside_the_options(db: str):
    with Supervisor([describe], workers=1, store=db) as sup:
        by_keywords = sup.submit(describe, src="a.jpg")
        with_options = sup.submit(describe, src="b.jpg", width=64, priority=5, key="b")
        again = sup.submit(describe, src="other.jpg", key="b")  # the key names the run: given back
        sup.serve(until="drained")
        assert by_keywords.result(timeout=5) == "a.jpg@256"
        assert with_options.result(timeout=5) == "b.jpg@64"
        assert again.id == with_options.id
        assert sup.run(with_options.id).priority == 5


def test_keyword_submits_refuse_ambiguity_and_store_nothing(db: str):
    with Supervisor([describe, keyed, square], workers=1, store=db) as sup:
        with pytest.raises(TypeError, match=r"'key' is an option of submit\(\) and also a field of the input of job "
                                            r"'keyed'"):
            sup.submit(keyed, src="a", key="mine")
        with pytest.raises(TypeError, match="not both"):
            sup.submit(describe, Thumb(src="a"), width=3)
        with pytest.raises(TypeError, match="no fields"):
            sup.submit(square, n=3)
        assert sup.runs() == []
        positional = sup.submit(keyed, {"src": "a", "key": "mine"})
        plain = sup.submit(keyed, src="b")  # no clash when the option is not given
        sup.serve(until="drained")
        assert (positional.result(timeout=5), plain.result(timeout=5)) == ("mine", "k")


def test_a_typo_in_a_dict_input_is_refused_naming_the_key_and_nothing_is_stored(db: str):
    with Supervisor([describe], workers=1, store=db) as sup:
        with pytest.raises(ValidationError) as raised:
            sup.submit(describe, {"src": "a.jpg", "widht": 64})
        assert "widht" in str(raised.value) and "Extra inputs are not permitted" in str(raised.value)
        with pytest.raises(ValidationError, match="widht"):
            sup.submit(describe, src="a.jpg", widht=64)
        with pytest.raises(ValidationError, match="widht"):
            sup.submit_many(describe, [{"src": "a.jpg"}, {"src": "b.jpg", "widht": 64}])  # all or nothing
        with Client(store=db, jobs=[describe]) as client, pytest.raises(ValidationError, match="widht"):
            client.submit("describe", {"src": "a.jpg", "widht": 64})
        assert sup.runs() == []


def test_a_typo_in_a_run_submitted_by_name_fails_that_run_in_the_worker(db: str):
    Supervisor([describe], workers=1, store=db).close()  # makes the store
    with Client(store=db) as client:  # knows no job: the worker validates
        bad = client.submit("describe", {"src": "a.jpg", "widht": 64})
        good = client.submit("describe", src="b.jpg")
    with Supervisor([describe], workers=1, store=db) as sup:
        sup.serve(until="drained")
        record = sup.run(bad.id)
        assert record.status is RunStatus.FAILED and "widht" in record.message, record.message
        assert sup.run(good.id).result == "b.jpg@256"


def test_an_image_output_is_refused_when_the_job_is_declared():
    def thumb(t: Thumb) -> Image.Image:
        raise NotImplementedError

    with pytest.raises(TypeError) as raised:
        job(name="thumb")(thumb)
    assert str(raised.value) == ("job 'thumb': its output type PIL.Image.Image cannot be stored as JSON; return a "
                                 "path to a file (str or pathlib.Path) or bytes instead")
