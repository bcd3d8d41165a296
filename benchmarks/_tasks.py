"""Task functions shared by the benchmarks.

Everything here must be importable in every worker process (pool workers,
Huey consumer workers, actors workers), so it lives in a plain module rather
than in the benchmark scripts.

- ``noop(x) -> x + 1``: the cheapest possible task (throughput, latency).
- ``spin(ms)``: a pure-Python loop doing a fixed amount of work, ~``ms``
  milliseconds on the reference machine (fixed iteration count, not a timer,
  so every system does exactly the same work).
- ``pillow_pipeline(seed)``: resize a cached 2000x1500 RGB image to 400x300
  (LANCZOS), blur it, encode it as JPEG in memory and return the byte count.

The ``actors_*`` jobs wrap the same functions for the ``actors`` library; they
are only defined if ``actors`` imports (``ACTORS_IMPORT_ERROR`` says why not).
"""

import io
from functools import lru_cache

SPIN_ITERS_PER_MS = 30_000  # ~1 ms of pure-Python loop per 30k iterations


def noop(x):
    return x + 1


def spin(ms=50):
    n = 0
    for i in range(ms * SPIN_ITERS_PER_MS):
        n += i
    return n


@lru_cache(maxsize=1)
def _source_image():
    """A deterministic 2000x1500 RGB image, built once per process."""
    from PIL import Image

    size = (2000, 1500)
    g = Image.linear_gradient("L").resize(size)
    r = Image.radial_gradient("L").resize(size)
    b = g.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return Image.merge("RGB", (r, g, b))


def pillow_pipeline(seed):
    from PIL import Image, ImageFilter

    o = seed % 50  # vary the crop a little so outputs differ per seed
    small = _source_image().resize(
        (400, 300), Image.Resampling.LANCZOS, box=(o, o, o + 1900, o + 1425)
    )
    small = small.filter(ImageFilter.GaussianBlur(2))
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=85)
    return buf.tell()


TASKS = {"noop": noop, "spin": spin, "pillow": pillow_pipeline}


# --- Huey ---------------------------------------------------------------------


def make_huey(path):
    """A SqliteHuey on ``path`` with TASKS registered; returns (huey, {name: task})."""
    from huey import SqliteHuey

    huey = SqliteHuey("bench", filename=path)
    return huey, {name: huey.task()(fn) for name, fn in TASKS.items()}


def huey_consumer_main(path, workers, poll):
    """Child-process entry point: run a process-worker Huey consumer on ``path``."""
    import logging

    from huey.consumer import Consumer

    logging.basicConfig(level=logging.WARNING)
    huey, _ = make_huey(path)
    Consumer(
        huey,
        workers=workers,
        worker_type="process",
        initial_delay=poll,  # queue polling interval when idle ...
        backoff=1.0,  # ... never backed off ...
        max_delay=poll,  # ... (the default starts at 0.1 s and grows to 10 s)
        periodic=False,
    ).run()


# --- actors -------------------------------------------------------------------

ACTORS_IMPORT_ERROR = None
ACTOR_JOBS = {}  # name -> (job, input field name)
try:
    from pydantic import BaseModel

    from actors import job

    class NoopIn(BaseModel):
        x: int

    class SpinIn(BaseModel):
        ms: int

    class PillowIn(BaseModel):
        seed: int

    @job
    def actors_noop(n: NoopIn) -> int:
        return noop(n.x)

    @job
    def actors_spin(s: SpinIn) -> int:
        return spin(s.ms)

    @job
    def actors_pillow(p: PillowIn) -> int:
        return pillow_pipeline(p.seed)

    ACTOR_JOBS = {
        "noop": (actors_noop, "x"),
        "spin": (actors_spin, "ms"),
        "pillow": (actors_pillow, "seed"),
    }
except Exception as exc:  # the library may not exist / work yet
    ACTORS_IMPORT_ERROR = exc
