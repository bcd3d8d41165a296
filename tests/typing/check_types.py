"""What a type checker sees of `actors`: `tests/test_typing.py` runs `mypy --strict` on this file.

Not a test module (pytest collects `test_*.py` only) and never run: each `assert_type` is
checked statically, and each `# type: ignore[code]` marks a line that must be an error with that
code (the project's mypy config sets `warn_unused_ignores`, so an ignore that is no longer needed
is an error of its own).
"""

from __future__ import annotations

from typing import Any, assert_type

from pydantic import BaseModel

from actors import Client, Context, Handle, Job, Supervisor, job


class Thumb(BaseModel):
    src: str
    size: int = 128


class Made(BaseModel):
    path: str


@job(timeout="30s", retry=3)
def thumbnail(thumb: Thumb) -> Made:  # a model in, a model out
    return Made(path=thumb.src)


@job
def square(n: int, ctx: Context) -> int:  # an int in and out, with the run's context
    return n * n


@job
async def fetch(thumb: Thumb) -> bytes:  # async: the output is the coroutine's result
    return thumb.src.encode()


@job(name="fetch_all", priority=10)
async def fetch_all(thumbs: list[str], ctx: Context) -> list[bytes]:
    return [src.encode() for src in thumbs]


total = job(lambda thumb: thumb.size, input=Thumb, output=int)  # no annotations: input=, output=


def declared() -> None:
    assert_type(thumbnail, Job[Thumb, Made])
    assert_type(square, Job[int, int])
    assert_type(fetch, Job[Thumb, bytes])
    assert_type(fetch_all, Job[list[str], list[bytes]])
    assert_type(total, Job[Thumb, int])


def submitted(supervisor: Supervisor, client: Client) -> None:
    assert_type(supervisor.submit(thumbnail, Thumb(src="a.jpg")).result(), Made)
    assert_type(supervisor.submit(thumbnail, {"src": "a.jpg"}).result(), Made)
    assert_type(supervisor.submit(thumbnail, src="a.jpg", priority=5).result(), Made)
    assert_type(supervisor.submit(square, 7).result(timeout=1.0), int)
    assert_type(supervisor.submit(fetch, Thumb(src="a.jpg")).result(), bytes)
    assert_type(supervisor.submit(fetch_all, ["a.jpg"]).result(), list[bytes])
    assert_type(supervisor.submit(total, Thumb(src="a.jpg")).result(), int)
    assert_type(supervisor.submit_many(square, range(3)), list[Handle[int]])
    assert_type(supervisor.submit("thumbnail", {"src": "a.jpg"}), Handle[Any])  # a bare name
    assert_type(client.submit(thumbnail, Thumb(src="a.jpg")).result(), Made)
    assert_type(client.submit_many(thumbnail, [{"src": "a.jpg"}]), list[Handle[Made]])
    assert_type(client.submit("thumbnail", src="a.jpg"), Handle[Any])
    assert_type(client.handle(1).result(), Any)
    assert_type(client.handle(1, thumbnail).result(), Made)
    assert_type(supervisor.handle(1).result(), Any)


async def awaited(supervisor: Supervisor) -> None:
    assert_type(await supervisor.submit(thumbnail, Thumb(src="a.jpg")), Made)


def refused(supervisor: Supervisor, client: Client) -> None:
    # mypy reports a wrong input as a type parameter it cannot infer: [misc]
    supervisor.submit(thumbnail, 42)  # type: ignore[misc]
    client.submit(square, "7")  # type: ignore[misc]
