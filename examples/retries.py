"""Retries: a flaky job, an exponential backoff with jitter, and the attempt log of every run.

    python examples/retries.py

Each run is told how many of its attempts fail. With `Retry(attempts=4, ...)` a run may fail
three times and still succeed; one that fails more often ends `failed`. The store
(retries.db, in the current directory) keeps every attempt: number, outcome, error, timing.
"""

from pydantic import BaseModel

from actors import Context, Retry, Supervisor, job


class Flaky(BaseModel):
    name: str
    failures: int  # how many attempts fail before one succeeds


class Fetched(BaseModel):
    name: str
    attempt: int


class TransientError(Exception):
    """What a flaky network or disk raises; worth another try."""


@job(retry=Retry(attempts=4, backoff="exponential", base="100ms", jitter=0.1))
def fetch(item: Flaky, ctx: Context) -> Fetched:
    if ctx.attempt <= item.failures:
        raise TransientError(f"{item.name}: attempt {ctx.attempt} hit a transient error")
    return Fetched(name=item.name, attempt=ctx.attempt)


if __name__ == "__main__":
    items = [Flaky(name="steady", failures=0), Flaky(name="hiccup", failures=1),
             Flaky(name="wobbly", failures=3), Flaky(name="broken", failures=9)]
    with Supervisor([fetch], workers=2, store="retries.db") as sup:
        handles = sup.submit_many(fetch, items)
        sup.serve(until="drained")  # returns once every run succeeded or ran out of attempts
        for item, handle in zip(items, handles, strict=True):
            record = sup.run(handle.id, attempts=True)
            print(f"run {record.id} {item.name} (fails {item.failures}x): {record.status} "
                  f"after {len(record.attempt_log)} attempt(s)")
            previous = None
            for attempt in record.attempt_log:
                waited = "" if previous is None else f" (+{attempt.started_at - previous:.2f} s)"
                error = f" {attempt.error_type}: {attempt.message}" if attempt.error_type else ""
                print(f"  attempt {attempt.number}: {attempt.outcome}{waited}{error}")
                previous = attempt.finished_at
        succeeded = sum(sup.run(h.id).status == "succeeded" for h in handles)
        print(f"{succeeded} of {len(handles)} runs succeeded")
