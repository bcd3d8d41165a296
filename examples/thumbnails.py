"""Thumbnails for a folder of images, on a pool of workers, resumable after Ctrl-C.

    .venv/bin/pip install -e ".[examples]"                 # Pillow and rich
    python examples/thumbnails.py                          # synthetic images in ./sample-images
    python examples/thumbnails.py ~/Pictures --out thumbs --workers 4 --size 400x300 --format webp

Each image is one run: open, resize with LANCZOS keeping the aspect ratio, sharpen (or blur),
stamp a small watermark, encode JPEG or WebP. Runs take paths, not pixels: only a few short
strings cross the pipes and the store. The filters and the watermark are made once per worker
process (`setup=`) and reach the job as `ctx.resource`.

The store (thumbnails.db) remembers every run under an idempotency key (source, size, format,
filter, output folder): press Ctrl-C to stop gracefully (running images finish, a second Ctrl-C
stops at once) and run the same command again to finish only what was left. Images that failed
are tried again by a rerun (`submit(..., key=key, rerun="failed")`: a new run takes the key
over from the one that failed, which keeps its attempt history). Exit status: 0, 1 if some
image failed, 130 after a forced stop.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Literal

from PIL import Image, ImageDraw, ImageFilter
from pydantic import BaseModel
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from actors import Context, Retry, RunStatus, Supervisor, job

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


class Thumb(BaseModel):
    src: str
    dst: str
    width: int = 400
    height: int = 300
    format: Literal["jpeg", "webp"] = "jpeg"
    filter: Literal["sharpen", "blur"] = "sharpen"


class Made(BaseModel):
    dst: str
    width: int
    height: int
    bytes: int


def load_tools() -> dict[str, object]:
    """Once per worker process: the filter kernels and a watermark (its alpha mask)."""
    mark = Image.new("L", (72, 16), 0)
    ImageDraw.Draw(mark).text((2, 2), "actors", fill=150)
    return {"sharpen": ImageFilter.UnsharpMask(radius=1.5, percent=90, threshold=2),
            "blur": ImageFilter.GaussianBlur(1.2), "watermark": mark}


@job(timeout="60s", retry=Retry(attempts=2, base="200ms"), setup=load_tools)
def thumbnail(thumb: Thumb, ctx: Context) -> Made:
    tools = ctx.resource
    with Image.open(thumb.src) as img:
        img.draft("RGB", (thumb.width * 2, thumb.height * 2))  # JPEG: decode at a smaller scale
        img = img.convert("RGB")
    img.thumbnail((thumb.width, thumb.height), Image.Resampling.LANCZOS)  # keeps the aspect ratio
    img = img.filter(tools[thumb.filter])
    mark = tools["watermark"]
    if img.width > mark.width and img.height > mark.height:
        img.paste((255, 255, 255), (img.width - mark.width, img.height - mark.height), mark)
    dst = Path(thumb.dst)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")  # write, then rename: never a half file
    img.save(tmp, format=thumb.format.upper(), quality=85, **({"method": 4} if thumb.format == "webp" else {}))
    os.replace(tmp, dst)
    return Made(dst=str(dst), width=img.width, height=img.height, bytes=dst.stat().st_size)


def make_samples(folder: Path, count: int, size: tuple[int, int]) -> list[Path]:
    """Deterministic test images (gradients, noise, shapes), made once and kept."""
    folder.mkdir(parents=True, exist_ok=True)
    w, h = size
    ramps = [Image.linear_gradient("L").resize(size), Image.radial_gradient("L").resize(size),
             Image.linear_gradient("L").transpose(Image.Transpose.ROTATE_90).resize(size)]
    paths = []
    for i in range(count):
        path = folder / f"sample-{i:03d}-{w}x{h}.jpg"
        paths.append(path)
        if path.exists():
            continue
        rnd = random.Random(i)
        img = Image.merge("RGB", rnd.sample(ramps, 3))
        noise = Image.frombytes("L", (w // 4, h // 4), rnd.randbytes((w // 4) * (h // 4))).resize(size)
        img = Image.blend(img, Image.merge("RGB", (noise, noise, noise)), 0.25)
        draw = ImageDraw.Draw(img)
        for _ in range(12):
            x, y = rnd.randrange(w), rnd.randrange(h)
            box = (x, y, x + rnd.randrange(20, w // 3), y + rnd.randrange(20, h // 3))
            color = tuple(rnd.randrange(256) for _ in range(3))
            (draw.ellipse if rnd.random() < 0.5 else draw.rectangle)(box, fill=color)
        img.save(path, quality=90)
    return paths


class RateColumn(ProgressColumn):
    def render(self, task) -> Text:
        return Text(f"{task.speed or 0:5.1f} img/s", style="cyan")


def size_arg(text: str) -> tuple[int, int]:
    try:
        w, h = (int(part) for part in text.lower().split("x"))
        assert w > 0 and h > 0
        return w, h
    except (ValueError, AssertionError):
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", nargs="?", type=Path, help="folder of images (default: make synthetic ones)")
    parser.add_argument("--out", type=Path, default=Path("thumbnails"))
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--size", type=size_arg, default=(400, 300), help="bounding box, e.g. 400x300")
    parser.add_argument("--format", choices=["jpeg", "webp"], default="jpeg")
    parser.add_argument("--filter", choices=["sharpen", "blur"], default="sharpen")
    parser.add_argument("--store", default="thumbnails.db")
    parser.add_argument("--count", type=int, default=None, help="synthetic images to make (24), or at most N from SRC")
    parser.add_argument("--sample-size", type=size_arg, default=(1600, 1200), help="synthetic image size")
    args = parser.parse_args()
    console = Console()

    if args.src is None:
        console.print(f"no SRC_DIR: using {args.count or 24} synthetic images in ./sample-images")
        sources = make_samples(Path("sample-images"), args.count or 24, args.sample_size)
    else:
        sources = sorted(p for p in args.src.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[: args.count]
    args.out.mkdir(parents=True, exist_ok=True)
    width, height = args.size
    ext = "jpg" if args.format == "jpeg" else "webp"

    counts = {"succeeded": 0, "failed": 0, "timed_out": 0}
    ours: set[int] = set()
    already = 0
    with Supervisor([thumbnail], workers=args.workers, store=args.store) as sup:
        for src in sources:
            src = src.resolve()
            dst = args.out.resolve() / f"{src.stem}.{ext}"
            thumb = Thumb(src=str(src), dst=str(dst), width=width, height=height, format=args.format,
                          filter=args.filter)
            key = f"{src}|{width}x{height}|{args.format}|{args.filter}|{dst.parent}"
            # one run per image and key: a run already stored is reused (done or still queued); one
            # that failed, timed out or was cancelled is run again
            handle = sup.submit(thumbnail, thumb, key=key, rerun="failed")
            if handle.status() is RunStatus.SUCCEEDED:
                already += 1
            else:
                ours.add(handle.id)

        progress = Progress(TextColumn("[bold]thumbnails"), BarColumn(), MofNCompleteColumn(), RateColumn(),
                            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console)
        task = progress.add_task("thumbnails", total=len(ours))
        started = time.monotonic()  # the summary's rate counts starting the workers too
        sup.prefork()  # before the progress display's thread: the fork server is a fork, the workers start now

        def on_end(event: str):
            def callback(record) -> None:  # runs in the supervisor process, on its loop
                if record.id in ours:
                    counts[event] += 1
                    progress.advance(task)
                    if event != "succeeded":
                        src = Path(json.loads(record.input)["src"]).name
                        progress.console.print(f"[red]{event}[/] {src} (run {record.id}): "
                                               f"{record.error_type}: {record.message}")
            return callback

        for event in counts:
            sup.on(event, on_end(event))
        try:
            if ours:
                with progress:
                    sup.serve(until="drained")  # Ctrl-C: graceful stop; a second one: now
        except SystemExit as exc:
            console.print(f"[bold red]stopped at once[/] (exit {exc.code}): interrupted images were put back "
                          f"in the queue; run the same command again to finish them")
            return int(exc.code or 130)
        seconds = time.monotonic() - started
        done = sum(counts.values())
        stopped_early = done < len(ours)

    table = Table(title="thumbnails", show_header=True)
    for column in ("succeeded", "failed", "timed out", "already done", "left", "seconds", "images/s"):
        table.add_column(column, justify="right")
    rate = counts["succeeded"] / seconds if seconds > 0 else 0.0
    table.add_row(str(counts["succeeded"]), str(counts["failed"]), str(counts["timed_out"]), str(already),
                  str(len(ours) - done), f"{seconds:.2f}", f"{rate:.1f}")
    console.print(table)
    console.print(f"summary: succeeded={counts['succeeded']} failed={counts['failed']} "
                  f"timed_out={counts['timed_out']} already_done={already} left={len(ours) - done} "
                  f"seconds={seconds:.2f} images_per_s={rate:.1f} out={args.out}", soft_wrap=True)
    if stopped_early:
        console.print("stopped before the end: run the same command again to finish the rest")
    return 1 if counts["failed"] or counts["timed_out"] else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C outside serve(): while making samples or submitting
        print("interrupted; run the same command again to go on", file=sys.stderr)
        sys.exit(130)
