"""``Steer``: one configurable sk_lookup program (``steer.bpf.c``) attached to a namespace.

Each instance loads its own copy (its own maps) and attaches it; several instances run in
the order they were attached, which is how tests combine pass / drop / redirect programs.
After traffic, ``runs``, ``ret`` (``bpf_sk_assign``'s return value, ``-errno``) and
``preselected`` tell what the program saw.

Example::

    Steer(ns, "pass", target=sock, no_reuseport=True)
    Steer(ns, "drop")                       # runs second
"""

from __future__ import annotations

import socket
import struct
from typing import TYPE_CHECKING

from bindlab.bpf import build, query
from bindlab.bpf.keys import PROTOCOLS
from bindlab.bpf.libbpf import BpfObject, LibbpfError, lib
from bindlab.errors import ConfigError
from bindlab.flow import Flow

if TYPE_CHECKING:
    from bindlab.netns import NetNS

# <linux/bpf.h>
SK_DROP, SK_PASS = 0, 1
BPF_SK_LOOKUP_F_REPLACE = 1 << 0
BPF_SK_LOOKUP_F_NO_REUSEPORT = 1 << 1
ASSIGN_NONE, ASSIGN_TARGET, ASSIGN_NULL = 0, 1, 2  # enum in steer.bpf.c
_CONFIG = struct.Struct("=IIIIQ")
_RESULT = struct.Struct("=QqQ")
_ZERO = struct.pack("=I", 0)


class Steer:
    """``steer.bpf.c`` attached to ``ns``: return ``verdict`` ("pass"/"drop") after assigning
    ``target`` (or NULL with ``assign_null``) with the given flags, for flows of ``proto``
    to local ``port`` (None/0: all)."""

    def __init__(
        self,
        ns: NetNS,
        verdict: str = "pass",
        target: socket.socket | None = None,
        *,
        assign_null: bool = False,
        no_reuseport: bool = False,
        replace: bool = False,
        proto: str | None = None,
        port: int | None = None,
    ) -> None:
        if verdict not in ("pass", "drop"):
            raise ConfigError(f"steer verdict {verdict!r}: use 'pass' or 'drop'")
        if target is not None and assign_null:
            raise ConfigError("steer: give a target or assign_null, not both")
        if proto is not None and proto not in PROTOCOLS:
            raise ConfigError(f"steer: unknown protocol {proto!r}: use 'tcp' or 'udp'")
        self.ns = ns
        self.assign = (
            ASSIGN_TARGET if target is not None else ASSIGN_NULL if assign_null else ASSIGN_NONE
        )
        flags = (BPF_SK_LOOKUP_F_REPLACE if replace else 0) | (
            BPF_SK_LOOKUP_F_NO_REUSEPORT if no_reuseport else 0
        )
        self._obj = BpfObject(build.object_path("steer"))
        try:
            self._obj.map("config", 4, _CONFIG.size).update(
                _ZERO,
                _CONFIG.pack(
                    PROTOCOLS.get(proto or "", 0),
                    port or 0,
                    self.assign,
                    SK_PASS if verdict == "pass" else SK_DROP,
                    flags,
                ),
            )
            self._result = self._obj.map("result", 4, _RESULT.size)
            if target is not None:
                self._obj.map("target", 4, 8).update(_ZERO, struct.pack("=Q", target.fileno()))
            self._link = self._obj.attach_netns("steer", ns.fd)
        except BaseException:
            self._obj.close()
            raise
        self.desc = f"{verdict}{'+assign' if self.assign else ''}"
        ns.defer(self.close)

    def __repr__(self) -> str:
        return f"<Steer {self.desc} {'attached' if self._link.attached else 'detached'}>"

    def _read(self) -> tuple[int, int, int]:
        raw = self._result.lookup(_ZERO)
        if raw is None:
            raise LibbpfError("steer result", 2)
        runs, ret, pre = _RESULT.unpack(raw)
        return runs, ret, pre

    @property
    def runs(self) -> int:
        """How many lookups (of the selected protocol/port) ran this program."""
        return self._read()[0]

    @property
    def ret(self) -> int | None:
        """``bpf_sk_assign``'s return value in the last run (``-errno``), None if it does not
        assign; ``-ENOENT`` when the target left the SOCKMAP (closed)."""
        return self._read()[1] if self.assign != ASSIGN_NONE else None

    @property
    def preselected(self) -> bool:
        """An earlier program had selected a socket when this one last ran."""
        return bool(self._read()[2])

    def test_run(self, flow: str | Flow) -> tuple[str, str | None]:
        """Run this one program on ``flow``'s context without a packet
        (``BPF_PROG_TEST_RUN``): ``(verdict, label of the selected socket or None)``."""
        return query.test_run(self.ns, int(lib().bpf_program__fd(self._obj.program("steer"))), flow)

    def detach(self) -> None:
        """Detach (the maps stay readable until ``close()``)."""
        self._link.destroy()

    def close(self) -> None:
        """Detach and free the program and its maps (idempotent)."""
        self._link.destroy()
        self._obj.close()
