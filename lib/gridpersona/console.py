"""Console output: log set-up, plain-text tables, stage timers."""

from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator, Sequence

log = logging.getLogger("gridpersona")

# The stage running now, so that progress lines from deeper down (lake writes) say whose they are.
_current_stage: ContextVar[str | None] = ContextVar("gridpersona_stage", default=None)


def stage_prefix() -> str:
    """'[clean] ' while a stage runs (see stage_scope), else ''."""
    name = _current_stage.get()
    return f"[{name}] " if name else ""


@contextmanager
def stage_scope(name: str) -> Iterator[None]:
    token = _current_stage.set(name)
    try:
        yield
    finally:
        _current_stage.reset(token)


def setup_logging(verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-5s %(message)s", "%H:%M:%S"))
    root = logging.getLogger("gridpersona")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False
    # py4j chatters at INFO on every gateway call.
    logging.getLogger("py4j").setLevel(logging.WARNING)


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _display_width(text: str) -> int:
    # CJK characters take two terminal columns.
    return sum(2 if ord(ch) >= 0x2E80 else 1 for ch in text)


def render_table(headers: Sequence[str], rows: Sequence[Sequence[object]], align_right: Sequence[int] = ()) -> str:
    """A plain fixed-width text table; numbers right-aligned in the columns listed."""
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(_display_width(r[i]) for r in cells) for i in range(len(headers))]

    def fmt(row: list[str]) -> str:
        out = []
        for i, value in enumerate(row):
            pad = " " * (widths[i] - _display_width(value))
            out.append(pad + value if i in align_right else value + pad)
        return "  ".join(out).rstrip()

    lines = [fmt(cells[0]), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in cells[1:]]
    return "\n".join(lines)


@contextmanager
def timed(label: str) -> Iterator[dict]:
    """Log the start and the wall time of a step; the yielded dict collects figures to report."""
    info: dict = {}
    log.info("%s ...", label)
    start = time.perf_counter()
    try:
        yield info
    except BaseException:
        info["seconds"] = time.perf_counter() - start
        log.error("%s failed after %.1f s", label, info["seconds"])
        raise
    info["seconds"] = time.perf_counter() - start
    extra = ", ".join(f"{k}={v:,}" if isinstance(v, int) else f"{k}={v}" for k, v in info.items() if k != "seconds")
    log.info("%s done in %.1f s%s", label, info["seconds"], f" ({extra})" if extra else "")
