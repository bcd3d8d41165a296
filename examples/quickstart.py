"""The smallest useful actors script: typed jobs, a durable SQLite store, a pool of workers.

    python examples/quickstart.py

Run it twice: the store (quickstart.db) remembers every run and its attempts.
"""

import hashlib

from pydantic import BaseModel

from actors import Context, Retry, Supervisor, job


class Digest(BaseModel):
    text: str
    rounds: int = 20_000


class Hashed(BaseModel):
    text: str
    hex: str


@job(timeout="30s", retry=Retry(attempts=3, backoff="exponential", base="100ms"))
def digest(task: Digest, ctx: Context) -> Hashed:
    """CPU-bound work: hash the text many times over."""
    value = task.text.encode()
    for _ in range(task.rounds):
        value = hashlib.sha256(value).digest()
    return Hashed(text=task.text, hex=value.hex()[:16])


if __name__ == "__main__":
    with Supervisor([digest], workers=2, store="quickstart.db") as sup:
        handles = sup.submit_many(digest, [{"text": f"image-{i}"} for i in range(20)])
        sup.serve(until="drained")  # returns once every run has finished
        for handle in handles[:5]:
            print(handle.id, handle.result())
        print(f"{len(handles)} runs done; the store holds {sum(sup.stats()['jobs']['digest'].values())} in all")
