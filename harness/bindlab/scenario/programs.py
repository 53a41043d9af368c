"""The ``[[program]]`` tables of a scenario at run time: skip when one is not installed,
start each (after setup, before the file's own sockets) with :func:`bindlab.programs.spawn`."""

from __future__ import annotations

import shutil

from bindlab.errors import HarnessError
from bindlab.namespace import Namespace
from bindlab.programs import ProgramError, program_socket
from bindlab.scenario.model import Scenario


def missing(sc: Scenario) -> str | None:
    """Why a program of ``sc`` cannot run here (its executable is not installed), or None."""
    for p in sc.programs:
        if shutil.which(p.argv[0]) is None:
            pkg = f" (apt-get install {p.package})" if p.package else ""
            return f"program {p.label!r}: {p.argv[0]!r} is not installed{pkg}"
    return None


def start(ns: Namespace, sc: Scenario) -> None:
    """Spawn every program of ``sc`` in ``ns`` and wait until its sockets are bound."""
    for i, p in enumerate(sc.programs):
        try:
            ns.spawn(
                p.argv, p.label, files=dict(p.files), wait_for=p.wait_for,
                labels=dict(p.labels), timeout=p.timeout,
            )  # fmt: skip
        except ProgramError as e:
            raise HarnessError(f"{sc.path}:{p.line}: program[{i}] {p.label!r}: {e}") from e


def describe(ns: Namespace, verdict: str) -> str:
    """For a verdict naming a program's socket: which program, socket and processes
    (``program nginx, tcp 0.0.0.0:80, held by pid 12 (main), 14 (child), polled by 14``);
    "" for any other verdict."""
    sock = program_socket(ns, verdict)
    return "" if sock is None else sock.describe()
