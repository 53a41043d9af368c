"""The one list of kernels (``fixtures/kernels.toml``) that every kernel matrix reads.

``bindlab vm --all`` boots each entry in turn on this machine; the GitHub workflow's first
job prints :func:`matrix` as JSON (``python -m bindlab.vm.kernel_list --matrix-json``) and
feeds it to ``strategy.matrix`` with ``fromJSON``, so the kernels are spelled once::

    [[kernel]]
    name = "bookworm-6.1"                  # [A-Za-z0-9._-]+, unique: results go in DIR/NAME/
    package = "linux-image-amd64"          # a Debian package ... or: bzimage = "path"
    container = "debian:bookworm"          # the apt sources the package resolves against (CI)
    purpose = "Debian 12's LTS kernel: the oldest the suite supports"
    ci = true                              # in the workflow's matrix (default: packages only)

This module reads and checks the list and runs a list sequentially with a runner it is
given (``bindlab.vm.boot`` passes its own); it imports nothing that boots, so the workflow
can call it with the standard library alone (``PYTHONPATH=harness``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from bindlab.errors import ConfigError

DEFAULT_LIST = os.path.join("fixtures", "kernels.toml")
DEFAULT_CONTAINER = "debian:bookworm"
_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
_KEYS = {"name", "package", "bzimage", "container", "purpose", "ci", "args"}


class KernelListError(ConfigError):
    """A kernel list that cannot be read or has a bad entry; the message names file and key."""


@dataclass(frozen=True)
class KernelEntry:
    """One kernel of the list: how to get it and what it is for."""

    name: str
    kernel: str  # what ``bindlab vm --kernel`` takes: a package name or a bzImage path
    purpose: str
    container: str = DEFAULT_CONTAINER
    ci: bool = True
    args: tuple[str, ...] = ()  # the command inside the guest (default: the suite)
    is_package: bool = True


def _entry(path: str, i: int, raw: Any) -> KernelEntry:
    where = f"{path}: kernel[{i}]"
    if not isinstance(raw, dict):
        raise KernelListError(f"{where}: expected a table, got {type(raw).__name__}")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise KernelListError(
            f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_KEYS))})"
        )
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise KernelListError(f"{where}: name must match [A-Za-z0-9._-]+, got {name!r}")
    where = f"{path}: kernel {name!r}"
    has = [k for k in ("package", "bzimage") if k in raw]
    if len(has) != 1:
        raise KernelListError(f"{where}: give exactly one of package or bzimage")
    kernel = raw[has[0]]
    if not isinstance(kernel, str) or not kernel:
        raise KernelListError(f"{where}: {has[0]} must be a non-empty string")
    is_package = has[0] == "package"
    if is_package and not kernel.startswith("linux-image-"):
        raise KernelListError(f"{where}: package {kernel!r} is not a linux-image-* package")
    if not is_package and not os.path.isabs(kernel):  # relative to the list's directory
        kernel = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(path)), kernel))
    purpose = raw.get("purpose")
    if not isinstance(purpose, str) or not purpose.strip():
        raise KernelListError(f"{where}: purpose (what this kernel is for) is required")
    ci = raw.get("ci", is_package)
    if not isinstance(ci, bool):
        raise KernelListError(f"{where}: ci must be true or false, got {ci!r}")
    if ci and not is_package:
        raise KernelListError(f"{where}: ci = true needs a package (CI has no local bzImage)")
    container = raw.get("container", DEFAULT_CONTAINER)
    if not isinstance(container, str) or not re.match(r"^[a-z0-9./:_-]+$", container):
        raise KernelListError(f"{where}: container must be an image name, got {container!r}")
    args = raw.get("args", [])
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise KernelListError(f"{where}: args must be a list of strings")
    return KernelEntry(name, kernel, purpose.strip(), container, ci, tuple(args), is_package)


def load(path: str = DEFAULT_LIST) -> list[KernelEntry]:
    """The entries of the kernel list at ``path``, checked; KernelListError names the culprit."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise KernelListError(f"{path}: no such kernel list") from None
    except OSError as err:
        raise KernelListError(f"{path}: cannot read: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise KernelListError(f"{path}: {err}") from None
    unknown = sorted(set(data) - {"kernel"})
    if unknown:
        raise KernelListError(f"{path}: unknown top-level key {unknown[0]!r} (expected [[kernel]])")
    raw = data.get("kernel")
    if not isinstance(raw, list) or not raw:
        raise KernelListError(f"{path}: no [[kernel]] entries")
    entries = [_entry(path, i, r) for i, r in enumerate(raw)]
    seen: set[str] = set()
    for e in entries:
        if e.name in seen:
            raise KernelListError(f"{path}: kernel {e.name!r} is listed twice")
        seen.add(e.name)
    return entries


def matrix(entries: Sequence[KernelEntry]) -> dict[str, list[dict[str, str]]]:
    """The workflow's ``strategy.matrix``: one ``include`` row per entry with ``ci = true``."""
    rows = [
        {"name": e.name, "kernel": e.kernel, "container": e.container, "purpose": e.purpose}
        for e in entries
        if e.ci
    ]
    if not rows:
        raise KernelListError("no kernel of the list has ci = true: the matrix would be empty")
    return {"include": rows}


# -- a sequential run over the list (bindlab vm --all) -----------------------------------


@dataclass
class Outcome:
    """How one entry's run ended, as the summary table shows it."""

    name: str
    kernel: str
    outcome: str  # the VM run's outcome (exited, panic, ...); "error" or "skipped" unbooted
    exit_code: int
    seconds: float
    detail: str = ""  # the kernel's key (release+config) or the error


def os_codename(path: str = "/etc/os-release") -> str | None:
    """This machine's distribution codename (``bookworm``), or None if it does not say."""
    try:
        with open(path) as f:
            info = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
    except OSError:
        return None
    return info.get("VERSION_CODENAME", "").strip('"') or None


def not_here(e: KernelEntry, codename: str | None) -> str | None:
    """Why entry ``e`` cannot be fetched on this machine, or None.

    A meta package (``linux-image-amd64``) means a different kernel in each Debian release:
    an entry for ``debian:trixie`` run on a bookworm machine would silently test bookworm's.
    """
    if not e.is_package or not e.container.startswith("debian:"):
        return None
    want = e.container.split(":", 1)[1]
    if codename is not None and want != codename:
        return f"{e.kernel} of {e.container}: this machine's apt sources are {codename}'s"
    return None


def run_all(
    entries: Sequence[KernelEntry],
    run_one: Callable[[KernelEntry], Outcome],
    out: TextIO | None = None,
) -> list[Outcome]:
    """Run ``run_one`` for every entry in order, with a progress line before and after each
    (on ``out``, default stderr)."""
    out = out or sys.stderr
    done: list[Outcome] = []
    codename = os_codename()
    for i, e in enumerate(entries, 1):
        print(f"# [{i}/{len(entries)}] {e.name}: {e.kernel} ({e.purpose})", file=out, flush=True)
        start = time.monotonic()
        why = not_here(e, codename)
        o = Outcome(e.name, e.kernel, "skipped", 0, 0.0, why) if why else run_one(e)
        o.seconds = o.seconds or round(time.monotonic() - start, 1)
        print(
            f"# [{i}/{len(entries)}] {e.name}: {o.outcome} {o.exit_code} in {o.seconds:g} s",
            file=out,
            flush=True,
        )
        done.append(o)
    return done


def summary(outcomes: Sequence[Outcome]) -> str:
    """The table printed after ``bindlab vm --all``: one line per kernel, then a total."""
    rows = [("KERNEL", "SPEC", "OUTCOME", "EXIT", "SECONDS", "DETAIL")]
    rows += [
        (o.name, o.kernel, o.outcome, str(o.exit_code), f"{o.seconds:g}", o.detail)
        for o in outcomes
    ]
    w = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = [
        "  ".join(f"{c:<{w[i]}}" for i, c in enumerate(r[:5])) + f"  {r[5]}".rstrip() for r in rows
    ]
    skipped = sum(o.outcome == "skipped" for o in outcomes)
    ok = sum(o.exit_code == 0 for o in outcomes) - skipped
    lines.append(f"# {ok} of {len(outcomes)} kernel(s) passed, {skipped} skipped")
    return "\n".join(lines) + "\n"


def exit_code(outcomes: Sequence[Outcome]) -> int:
    """0 when every kernel's run exited 0; else the first non-zero exit code."""
    return next((o.exit_code for o in outcomes if o.exit_code != 0), 0)


def cli(argv: Sequence[str] | None = None) -> int:
    """``python -m bindlab.vm.kernel_list [--matrix-json] [FILE]``: check or print the list."""
    p = argparse.ArgumentParser(
        prog="python -m bindlab.vm.kernel_list",
        description="Check the kernel list and print it, or print the workflow's matrix.",
    )
    p.add_argument("file", nargs="?", default=DEFAULT_LIST, help=f"default: {DEFAULT_LIST}")
    p.add_argument(
        "--matrix-json", action="store_true", help="print the CI matrix as one line of JSON"
    )
    a = p.parse_args(argv)
    try:
        entries = load(a.file)
        if a.matrix_json:
            print(json.dumps(matrix(entries), separators=(",", ":")))
            return 0
    except KernelListError as err:
        print(f"bindlab: {err}", file=sys.stderr)
        return 2
    for e in entries:
        print(f"{e.name:16} {'ci ' if e.ci else '   '} {e.kernel:40} {e.purpose}")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
