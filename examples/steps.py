"""Memoized steps: a run that crashes half-way resumes after its last completed step.

    python examples/steps.py

`ctx.step(name, fn)` runs `fn` once per run and stores its (JSON) result as soon as it returns.
Here the worker dies (`os._exit`) on the first attempt, right after the "download" stage; the
retry finds "download" in the store, skips it, and goes on with "transform". Each stage appends
a line to stages.log, so the output shows how often each one really ran.
"""

import hashlib
import os

from pydantic import BaseModel

from actors import Context, Retry, Supervisor, job

STAGES_LOG = "stages.log"


class Document(BaseModel):
    url: str


class Summary(BaseModel):
    url: str
    digest: str
    words: int


def record_stage(name: str, attempt: int) -> None:
    with open(STAGES_LOG, "a") as f:
        f.write(f"{name} attempt={attempt} pid={os.getpid()}\n")


def download(url: str, attempt: int) -> str:
    record_stage("download", attempt)
    return " ".join(f"{url}-word{i}" for i in range(1000))  # stands in for a slow fetch


def transform(text: str, attempt: int) -> dict[str, object]:
    record_stage("transform", attempt)
    return {"digest": hashlib.sha256(text.encode()).hexdigest()[:16], "words": len(text.split())}


@job(retry=Retry(attempts=3, backoff="immediate"))
def summarize(doc: Document, ctx: Context) -> Summary:
    text = ctx.step("download", lambda: download(doc.url, ctx.attempt))
    if ctx.attempt == 1:
        os._exit(1)  # the worker dies without a word: the supervisor records a crash and retries
    summary = ctx.step("transform", lambda: transform(text, ctx.attempt))
    return Summary(url=doc.url, digest=summary["digest"], words=summary["words"])


if __name__ == "__main__":
    if os.path.exists(STAGES_LOG):
        os.remove(STAGES_LOG)
    with Supervisor([summarize], workers=1, store="steps.db") as sup:
        handle = sup.submit(summarize, Document(url="https://example.org/report"))
        sup.serve(until="drained")
        record = sup.run(handle.id, attempts=True)
        for attempt in record.attempt_log:
            print(f"attempt {attempt.number}: {attempt.outcome} {attempt.error_type or ''}".rstrip())
        print("result:", handle.result())
        print("stored steps:", ", ".join(sorted(record.steps)))
    with open(STAGES_LOG) as f:
        stages = [line.split()[0] for line in f]
    for stage in ("download", "transform"):
        print(f"{stage} ran {stages.count(stage)} time(s)")
