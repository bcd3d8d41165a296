"""A durable workflow per image: fingerprint, three child jobs in parallel, a human approval, a stored result.

    .venv/bin/pip install -e ".[examples,cli]"             # Pillow; click and rich for `actors emit`
    python examples/workflow.py --auto-approve             # sample images in ./workflow-images
    python examples/workflow.py ~/Pictures --out reviewed  # then approve each from another terminal

Each image is one parent run of `review`, which
  (a) fingerprints the file: a step, the sha256 of its bytes, stored once;
  (b) starts three child runs in parallel with `ctx.dispatch` and waits for all of them with
      `ctx.wait_for`: a thumbnail, a colour palette with a luminance histogram, and a size and
      EXIF summary. The children are throttled (at most 2 starts a second per child job);
  (c) waits for an event "approved" whose payload holds its fingerprint, for at most
      --approval-timeout (then the run fails as NotApproved and nothing is stored);
  (d) stores the result: a step that writes <out>/<image>.json beside the thumbnail.

While it waits, for the children or for the approval, the parent holds no worker: its attempt
ends `suspended`, its status is `waiting`, and it runs again from the top when the wait is over,
every step, child and wait it recorded returning its stored value. So a Ctrl-C (or a crash)
while runs wait loses nothing: run the same command again and it goes on where it stopped
(each image's run is kept under an idempotency key; one that failed is run again).

The approval comes from another process. The script prints, for each run that waits, the
command that approves it:

    approve run 4 (sample-000.jpg): actors emit approved '{"fingerprint": "9f2c...", "by": "ann"}' --store workflow.db

`actors.Client("workflow.db").emit("approved", {"fingerprint": ...})` does the same from Python.
With --auto-approve the script runs that command itself, in a subprocess, for each waiting run,
so it runs unattended. Exit status: 0 when every image was approved and stored, 1 otherwise.
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import json
import os
import random
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

from PIL import ExifTags, Image, ImageDraw, ImageOps
from pydantic import BaseModel

from actors import Context, RunStatus, Supervisor, job, parse_duration

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
EVENT = "approved"


# -- the children ------------------------------------------------------------------------------


class ThumbIn(BaseModel):
    src: str
    dst: str
    size: int = 256


class ThumbOut(BaseModel):
    dst: str
    width: int
    height: int
    bytes: int


class PaletteIn(BaseModel):
    src: str
    dst: str  # a swatch image of the palette
    colours: int = 5


class Palette(BaseModel):
    colours: list[str]  # "#rrggbb", the most common first
    shares: list[float]  # of the pixels, per colour
    histogram: list[int]  # luminance, 16 bins of 16 levels
    swatch: str


class DescribeIn(BaseModel):
    src: str


class Description(BaseModel):
    format: str
    mode: str
    width: int
    height: int
    bytes: int
    exif: dict[str, str]


def _write_atomically(dst: Path, write) -> None:
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")  # write, then rename: never a half file
    write(tmp)
    os.replace(tmp, dst)


@job(timeout="30s", throttle="2/s")
def thumbnail(spec: ThumbIn) -> ThumbOut:
    with Image.open(spec.src) as img:
        img.draft("RGB", (spec.size * 2, spec.size * 2))  # JPEG: decode at a smaller scale
        img = ImageOps.exif_transpose(img).convert("RGB")
    img.thumbnail((spec.size, spec.size), Image.Resampling.LANCZOS)  # keeps the aspect ratio
    dst = Path(spec.dst)
    _write_atomically(dst, lambda tmp: img.save(tmp, format="JPEG", quality=85))
    return ThumbOut(dst=str(dst), width=img.width, height=img.height, bytes=dst.stat().st_size)


def _distance(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    return sum(abs(x - y) for x, y in zip(a, b, strict=True))


@job(timeout="30s", throttle="2/s")
def palette(spec: PaletteIn) -> Palette:
    with Image.open(spec.src) as img:
        small = img.convert("RGB").resize((128, 128))
    luma = small.convert("L").histogram()
    quantized = small.quantize(colors=spec.colours * 3, method=Image.Quantize.MEDIANCUT)
    rgb = quantized.getpalette() or []
    counts: list[tuple[int, tuple[int, ...]]] = []  # (pixels, colour), most common first
    for pixels, i in sorted(quantized.getcolors() or [], reverse=True):
        colour = tuple(rgb[3 * i: 3 * i + 3])
        near = next((n for n, (_, kept) in enumerate(counts) if _distance(kept, colour) < 60), None)
        if near is None:  # a new colour, not a JPEG artefact's shade of one already kept
            counts.append((pixels, colour))
        else:
            counts[near] = (counts[near][0] + pixels, counts[near][1])
    counts = sorted(counts, reverse=True)[: spec.colours]
    colours = [c for _, c in counts]
    swatch = Image.new("RGB", (40 * len(colours), 40))
    draw = ImageDraw.Draw(swatch)
    for n, colour in enumerate(colours):
        draw.rectangle((40 * n, 0, 40 * n + 39, 39), fill=colour)
    dst = Path(spec.dst)
    _write_atomically(dst, lambda tmp: swatch.save(tmp, format="PNG"))
    total = sum(pixels for pixels, _ in counts) or 1
    return Palette(colours=["#" + "".join(f"{v:02x}" for v in c) for c in colours], shares=[round(p / total, 4) for p, _ in counts],
                   histogram=[sum(luma[b: b + 16]) for b in range(0, 256, 16)], swatch=str(dst))


@job(timeout="30s", throttle="2/s")
def describe(spec: DescribeIn) -> Description:
    with Image.open(spec.src) as img:
        exif = {ExifTags.TAGS.get(tag, str(tag)): str(value)[:200] for tag, value in img.getexif().items()}
        return Description(format=img.format or "unknown", mode=img.mode, width=img.width, height=img.height,
                           bytes=os.path.getsize(spec.src), exif=exif)


# -- the parent ----------------------------------------------------------------------------------


class Review(BaseModel):
    src: str
    out: str
    thumb_size: int = 256
    approval_timeout: float = 600.0  # seconds


class Reviewed(BaseModel):
    src: str
    fingerprint: str
    approved_by: str
    thumbnail: ThumbOut
    palette: Palette
    description: Description
    stored: str  # the JSON file


class NotApproved(Exception):
    """Raised when no approval came within the review's approval_timeout."""


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def store_result(path: Path, data: dict) -> str:
    _write_atomically(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n"))
    return str(path)


@job(timeout="60s")
def review(item: Review, ctx: Context) -> Reviewed:
    src, out = Path(item.src), Path(item.out)
    fingerprint = ctx.step("fingerprint", lambda: sha256_of(item.src))  # (a)
    ctx.progress(0.25, "fingerprinted")
    children = [  # (b) three children at once; the parent holds no worker while they run
        ctx.dispatch(thumbnail, ThumbIn(src=item.src, dst=str(out / f"{src.stem}.thumb.jpg"), size=item.thumb_size)),
        ctx.dispatch(palette, PaletteIn(src=item.src, dst=str(out / f"{src.stem}.palette.png"))),
        ctx.dispatch(describe, DescribeIn(src=item.src)),
    ]
    thumb, colours, about = ctx.wait_for(children)
    ctx.progress(0.75, "waiting for approval")
    approval = ctx.wait_for_event(EVENT, match={"fingerprint": fingerprint}, timeout=item.approval_timeout)  # (c)
    if approval is None:
        raise NotApproved(f"{src.name} (sha256 {fingerprint[:12]}) was not approved within {item.approval_timeout:g} s")
    by = str(approval.get("by", "someone"))
    result = {"src": item.src, "fingerprint": fingerprint, "approved_by": by, "approval": approval,
              "run": ctx.run_id, "thumbnail": thumb.model_dump(), "palette": colours.model_dump(),
              "description": about.model_dump()}
    stored = ctx.step("store", lambda: store_result(out / f"{src.stem}.json", result))  # (d)
    return Reviewed(src=item.src, fingerprint=fingerprint, approved_by=by, thumbnail=thumb, palette=colours,
                    description=about, stored=stored)


JOBS = [review, thumbnail, palette, describe]


# -- the script ----------------------------------------------------------------------------------


def make_samples(folder: Path, count: int) -> list[Path]:
    """Deterministic, distinct test images with a little EXIF, made once and kept."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"sample-{i:03d}.jpg"
        paths.append(path)
        if path.exists():
            continue
        rnd = random.Random(i)
        w, h = 640, 480
        img = Image.new("RGB", (w, h), tuple(rnd.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(img)
        for _ in range(10):
            x, y = rnd.randrange(w), rnd.randrange(h)
            box = (x, y, x + rnd.randrange(40, w // 2), y + rnd.randrange(40, h // 2))
            colour = tuple(rnd.randrange(256) for _ in range(3))
            (draw.ellipse if rnd.random() < 0.5 else draw.rectangle)(box, fill=colour)
        exif = Image.Exif()
        exif[0x010F] = "actors"  # Make
        exif[0x0110] = f"sample camera {i}"  # Model
        exif[0x0132] = f"2026:01:{i + 1:02d} 12:00:00"  # DateTime
        exif[0x010E] = f"sample image {i}"  # ImageDescription
        img.save(path, quality=90, exif=exif)
    return paths


def approve_command(match: dict, by: str, store: Path) -> list[str]:
    """The `actors emit` command that approves a run waiting with `match`."""
    return ["actors", "emit", EVENT, json.dumps({**match, "by": by}), "--store", str(store)]


class Approvals:
    """Watches the parents (in a thread of this process) and, for each that waits for its approval,
    prints the command that approves it; with `auto`, runs that command in a subprocess."""

    def __init__(self, sup: Supervisor, runs: dict[int, str], store: Path, auto: bool) -> None:
        self.sup, self.runs, self.store, self.auto = sup, runs, store, auto
        self.seen: set[int] = set()
        self.approvers: list[subprocess.Popen[str]] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="approvals", daemon=True)

    def _watch(self) -> None:
        while not self.done.wait(0.05):  # one read of the store per tick, whatever the number of runs
            for record in self.sup.runs(status=RunStatus.WAITING, job=review.name, limit=100_000):
                wait = record.wait or {}
                if record.id in self.runs and record.id not in self.seen and wait.get("event") == EVENT:
                    self.seen.add(record.id)
                    self._announce(record.id, self.runs[record.id], wait.get("match") or {})

    def _announce(self, run_id: int, name: str, match: dict) -> None:
        by = "auto-approve" if self.auto else getpass.getuser()
        command = approve_command(match, by, self.store)
        print(f"approve run {run_id} ({name}): {shlex.join(command)}", flush=True)
        if self.auto:  # the same command, from another process: `python -m actors` is `actors`
            self.approvers.append(subprocess.Popen([sys.executable, "-m", *command],
                                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))

    def __enter__(self) -> Approvals:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()
        for approver in self.approvers:
            _, err = approver.communicate()
            if approver.returncode:
                print(f"an approver failed (exit {approver.returncode}): {err.strip()}", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", nargs="?", type=Path, help="folder of images (default: make samples)")
    parser.add_argument("--out", type=Path, default=Path("workflow-out"), help="where results go")
    parser.add_argument("--store", type=Path, default=Path("workflow.db"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--count", type=int, default=None, help="sample images to make (4), or at most N from SRC")
    parser.add_argument("--thumb-size", type=int, default=256)
    parser.add_argument("--approval-timeout", type=lambda t: parse_duration(t, what="--approval-timeout"),
                        default=600.0, help="how long each run waits for its approval (600s, 10m)")
    parser.add_argument("--auto-approve", action="store_true", help="approve every run from a subprocess")
    args = parser.parse_args()

    if args.src is None:
        print(f"no SRC: using {args.count or 4} sample images in ./workflow-images")
        sources = make_samples(Path("workflow-images"), args.count or 4)
    else:
        sources = sorted(p for p in args.src.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[: args.count]
    out, store = args.out.resolve(), args.store.resolve()
    out.mkdir(parents=True, exist_ok=True)

    with Supervisor(JOBS, workers=args.workers, store=str(store)) as sup:
        ours: dict[int, str] = {}
        already = 0
        for src in sources:
            src = src.resolve()
            item = Review(src=str(src), out=str(out), thumb_size=args.thumb_size,
                          approval_timeout=args.approval_timeout)
            # one run per image and output folder: a stored one is reused (done, or waiting still);
            # one that failed (not approved in time, say) is run again
            handle = sup.submit(review, item, key=f"review|{src}|{out}", rerun="failed")
            if handle.status() is RunStatus.SUCCEEDED:
                already += 1
            else:
                ours[handle.id] = src.name
        if ours and not args.auto_approve:
            print(f"{len(ours)} run(s) will wait for approval (at most {args.approval_timeout:g} s each): run the "
                  "commands printed below from another terminal, or start again with --auto-approve", flush=True)
        sup.prefork()  # before the watcher's thread: the fork server is then a fork, ready at once
        started = time.monotonic()
        if ours:
            with Approvals(sup, ours, store, args.auto_approve):
                sup.serve(until="drained")  # waits for the waiting runs too; Ctrl-C: a graceful stop
        seconds = time.monotonic() - started

        counts = {"approved": 0, "not_approved": 0, "failed": 0, "left": 0}
        for run_id, name in ours.items():
            record = sup.run(run_id, attempts=False)
            if record.status is RunStatus.SUCCEEDED:
                counts["approved"] += 1
                done = Reviewed.model_validate(record.result)
                print(f"{name}: approved by {done.approved_by}; thumbnail {done.thumbnail.width}x"
                      f"{done.thumbnail.height}, palette {' '.join(done.palette.colours)}, "
                      f"{done.description.format} {done.description.width}x{done.description.height} with "
                      f"{len(done.description.exif)} EXIF tags -> {done.stored}")
            elif record.status.is_terminal:
                counts["not_approved" if record.error_type == NotApproved.__name__ else "failed"] += 1
                print(f"{name}: {record.status} {record.error_type}: {record.message}")
            else:
                counts["left"] += 1
                print(f"{name}: still {record.status} (run {run_id}): run the same command again to go on")
        children = sum(1 for j in JOBS[1:] for r in sup.runs(job=j.name, limit=10_000) if r.parent_id in ours)

    print(f"summary: approved={counts['approved']} not_approved={counts['not_approved']} failed={counts['failed']} "
          f"left={counts['left']} already_done={already} children={children} seconds={seconds:.2f} out={out}")
    return 0 if counts["approved"] == len(ours) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C outside serve(): while making samples or submitting
        print("interrupted; run the same command again to go on", file=sys.stderr)
        sys.exit(130)
