"""Progress of long steps (generation, scoring, fine-tuning): counts, rate and ETA.

On a terminal, progress shows as tqdm bars (callers pass ``enabled=True``). In a non-terminal
CLI log (CI), :func:`configure` switches on plain lines instead, at most one per ``every``
seconds per step: ``[llm+lora] generate: 24/60 batch, 3.1 s/batch, ETA 1 min 52 s``. Library
use prints nothing unless asked.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Iterable, Iterator, TypeVar

T = TypeVar("T")

_LOG = {"on": False, "every": 30.0}


def configure(*, log: bool, every: float = 30.0) -> None:
    """Turn the plain-line progress log on or off (the CLI does, for non-terminal stderr)."""
    _LOG["on"], _LOG["every"] = bool(log), float(every)


def log_enabled() -> bool:
    return bool(_LOG["on"])


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {s} s"
    h, m = divmod(minutes, 60)
    return f"{h} h {m} min"


def track(items: Iterable[T], desc: str, unit: str, *, total: int | None = None, enabled: bool = False,
          ) -> Iterator[T]:
    """Yield ``items`` with a tqdm bar (``enabled``), else log lines (when configured), else silently."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if enabled:
        from tqdm.auto import tqdm

        yield from tqdm(items, desc=desc, unit=unit, total=total, leave=False, mininterval=2.0)
        return
    if not _LOG["on"]:
        yield from items
        return
    t0 = last = time.perf_counter()
    done = 0
    for item in items:
        yield item
        done += 1
        now = time.perf_counter()
        if now - last >= _LOG["every"] or (total is not None and done == total and now - t0 >= _LOG["every"]):
            last = now
            rate = (now - t0) / done
            eta = f", ETA {_duration(rate * (total - done))}" if total else ""
            of = f"/{total}" if total else ""
            print(f"  {desc}: {done}{of} {unit}, {rate:.2f} s/{unit}{eta}", file=sys.stderr, flush=True)




def progress_log(desc: str, unit: str, total: int | None) -> Any:
    """A primed generator for loops that cannot be wrapped: ``log.send(done)`` after each unit
    logs like :func:`track` (None when the log is off)."""
    if not _LOG["on"]:
        return None

    def run() -> Iterator[None]:
        t0 = last = time.perf_counter()
        while True:
            done = yield
            now = time.perf_counter()
            if now - last >= _LOG["every"]:
                last = now
                rate = (now - t0) / max(done, 1)
                eta = f", ETA {_duration(rate * (total - done))}" if total else ""
                print(f"  {desc}: {done}{'/' + str(total) if total else ''} {unit}, {rate:.2f} s/{unit}{eta}",
                      file=sys.stderr, flush=True)

    gen = run()
    next(gen)
    return gen
