"""Progress of long work on stderr: a tqdm bar on a terminal, plain ``# `` lines elsewhere.

CI logs are not terminals: there a bar's carriage returns become noise, so the same
:class:`Progress` prints one line every ``every`` seconds (and one at the end) instead.
:meth:`Progress.beat` is the heartbeat of work with no count (a boot, a silent command).

Example::

    with Progress("download linux-image-6.1.0-57-amd64", total=size, unit="B") as p:
        while fetching:
            p.update(bytes_so_far)
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

EVERY = 5.0  # seconds between plain lines


def _human(n: float, unit: str) -> str:
    if unit == "B":
        for scale, name in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
            if n >= scale:
                return f"{n / scale:.1f} {name}"
        return f"{n:.0f} B"
    return f"{n:,.0f}{' ' + unit if unit else ''}"


class Progress:
    """One piece of long work: ``update(done)`` with a count, ``beat()`` without one."""

    def __init__(
        self,
        what: str,
        total: float | None = None,
        unit: str = "",
        *,
        every: float = EVERY,
        stream: TextIO | None = None,
        tty: bool | None = None,
    ) -> None:
        self.what, self.total, self.unit, self.every = what, total, unit, every
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.start = time.monotonic()
        self.last = self.start
        self.done = 0.0
        self.note = ""
        self.bar: Any = None
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, desc=what, unit=unit or "it", unit_scale=bool(unit),
                unit_divisor=1024 if unit == "B" else 1000, file=self.stream,
                mininterval=0.2, leave=True, dynamic_ncols=True,
            )  # fmt: skip

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def line(self) -> str:
        """The plain line: what, how far, the rate, the note."""
        parts = [f"{self.elapsed:.0f} s"]
        if self.done or self.total:
            got = _human(self.done, self.unit)
            of = f"/{_human(self.total, self.unit)}" if self.total else ""
            pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
            rate = self.done / self.elapsed if self.elapsed > 0 else 0.0
            parts = [f"{got}{of}{pct}", f"{_human(rate, self.unit)}/s", *parts]
        if self.note:
            parts.append(self.note)
        return f"# {self.what}: {', '.join(parts)}"

    def update(self, done: float, note: str = "") -> None:
        """Set how far the work got (absolute), with an optional note (memory, phase)."""
        self.done, self.note = done, note or self.note
        if self.bar is not None:
            self.bar.n = done
            if note:
                self.bar.set_postfix_str(note, refresh=False)
            self.bar.refresh()
            return
        self._maybe_print()

    def beat(self, note: str = "") -> None:
        """A heartbeat: work goes on with nothing to count."""
        self.note = note or self.note
        if self.bar is not None:
            if note:
                self.bar.set_postfix_str(note, refresh=False)
            self.bar.refresh()
            return
        self._maybe_print()

    def _maybe_print(self) -> None:
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            print(self.line(), file=self.stream, flush=True)

    def close(self, final: str | None = None) -> None:
        """End the work: the bar closes, or one last plain line (``final`` if given)."""
        if self.bar is not None:
            if final:
                self.bar.set_postfix_str(final, refresh=False)
            self.bar.close()
            self.bar = None
        elif final is not None:
            print(f"# {self.what}: {final}", file=self.stream, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
