"""Progress of long work: plain lines when the output is not a terminal (CI), a tqdm bar
when it is."""

from __future__ import annotations

import io
import re

from bindlab.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_off_a_terminal_at_most_every_period() -> None:
    out = io.StringIO()
    p = Progress("download k", total=4 * 2**20, unit="B", every=0.0, stream=out)
    p.update(2**20)
    p.update(2 * 2**20, note="extracting")
    p.beat()
    p.close("done")
    lines = out.getvalue().splitlines()
    assert re.match(r"# download k: 1.0 MiB/4.0 MiB \(25%\), [\d.]+ [KMG]?i?B/s, \d+ s$", lines[0])
    assert lines[1].startswith("# download k: 2.0 MiB/4.0 MiB (50%)") and lines[1].endswith(
        ", extracting"
    )
    assert lines[-1] == "# download k: done"
    quiet = io.StringIO()
    p = Progress("boot", stream=quiet)  # every 5 s: nothing yet
    p.beat("Booting the kernel")
    p.close()
    assert quiet.getvalue() == ""


def test_a_terminal_gets_a_bar() -> None:
    out = Terminal()
    with Progress("connections", total=None, unit="", stream=out) as p:
        p.update(1500, note="2.0 GiB")
    text = out.getvalue()
    assert "\r" in text and "connections: " in text and "1500" in text and "2.0 GiB" in text
    assert "# connections" not in text
