"""Can bindlab run here? Every missing privilege or device, found by trying, named in one
sentence.

The core needs CAP_SYS_ADMIN (``unshare(CLONE_NEWNET)``), CAP_NET_ADMIN (a netlink change
inside that namespace: bringing ``lo`` up) and ``/dev/net/tun`` (injection). The BPF parts
also need CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN, in the initial user namespace (a
container or a user namespace may hold every capability and still be refused ``bpf()``):
without them only the BPF features report unsupported, and the rest runs.

Example::

    pre = check()
    if pre.sentence is not None:
        sys.exit(pre.sentence)
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import platform
import struct
from dataclasses import dataclass

from bindlab.errors import errname
from bindlab.netns import NetNS, set_lo_up

# <linux/capability.h>
CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 12, 21, 38, 39
TUN = "/dev/net/tun"
# bpf(2): BPF_PROG_LOAD of `r0 = 1; exit` as an sk_lookup program (<linux/bpf.h>)
BPF_PROG_LOAD, BPF_PROG_TYPE_SK_LOOKUP, BPF_SK_LOOKUP = 5, 30, 36
_SYS_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "ppc64le": 361, "s390x": 351}
_PROGRAM = struct.pack("<BBhi", 0xB7, 0, 0, 1) + struct.pack("<BBhi", 0x95, 0, 0, 0)

_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class Gap:
    """A missing privilege or device (``what``) and what the kernel said (``why``)."""

    what: str
    why: str

    def __str__(self) -> str:
        return f"{self.what} ({self.why})"


def _join(gaps: tuple[Gap, ...]) -> str:
    parts = [str(g) for g in gaps]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


@dataclass(frozen=True)
class Preflight:
    """What this process lacks: ``core`` gaps stop every run, ``bpf`` gaps only BPF parts."""

    core: tuple[Gap, ...]
    bpf: tuple[Gap, ...]

    @property
    def sentence(self) -> str | None:
        """None if the core can run, else one sentence naming every core gap."""
        if not self.core:
            return None
        return (
            f"bindlab cannot run here: it lacks {_join(self.core)}; "
            "run it as root with these capabilities (a privileged runner or container)."
        )

    @property
    def bpf_reason(self) -> str | None:
        """None if ``bpf()`` may load programs, else why not (a skip reason)."""
        if self.core:
            return self.sentence
        if not self.bpf:
            return None
        return f"bpf() refused: this process lacks {_join(self.bpf)}"


def effective_caps() -> int:
    """The effective capability set of this process (``CapEff`` of /proc/self/status)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def _has(caps: int, cap: int) -> bool:
    return bool(caps >> cap & 1)


def _namespace_gaps(caps: int) -> list[Gap]:
    try:
        ns = NetNS(lo_up=False)
    except OSError as e:
        name = errname(e)
        gaps = [Gap("CAP_SYS_ADMIN", f"unshare(CLONE_NEWNET) -> {name}")]
        if not _has(caps, CAP_NET_ADMIN):
            gaps.append(Gap("CAP_NET_ADMIN", "not in the effective capability set"))
        return gaps
    try:
        with ns.enter():
            set_lo_up()  # SIOCSIFFLAGS: what CAP_NET_ADMIN allows (no pyroute2 import)
    except OSError as e:
        name = errname(e)
        return [Gap("CAP_NET_ADMIN", f"bringing lo up in a new namespace -> {name}")]
    finally:
        ns.close()
    return []


def _tun_gap() -> Gap | None:
    try:
        os.close(os.open(TUN, os.O_RDWR | os.O_CLOEXEC))
    except FileNotFoundError:
        return Gap(TUN, "no such device: load the tun module or pass the device to the container")
    except OSError as e:
        return Gap(TUN, f"open -> {errname(e)}")
    return None


def _bpf_gap() -> Gap | None:
    nr = _SYS_BPF.get(platform.machine())
    if nr is None:
        return None  # no syscall number known here: the BPF features' own probes decide
    insns = ctypes.create_string_buffer(_PROGRAM)
    lic = ctypes.create_string_buffer(b"GPL")
    # union bpf_attr, BPF_PROG_LOAD: prog_type, insn_cnt, insns, license, log_level,
    # log_size, log_buf, kern_version, prog_flags, prog_name[16], prog_ifindex,
    # expected_attach_type
    attr = bytearray(128)
    struct.pack_into(
        "<IIQQ", attr, 0, BPF_PROG_TYPE_SK_LOOKUP, 2, ctypes.addressof(insns), ctypes.addressof(lic)
    )
    struct.pack_into("<I", attr, 68, BPF_SK_LOOKUP)
    buf = (ctypes.c_char * len(attr)).from_buffer(attr)
    fd = _libc.syscall(nr, BPF_PROG_LOAD, buf, len(attr))
    if fd >= 0:
        os.close(fd)
        return None
    err = ctypes.get_errno()
    if err in (errno.EPERM, errno.EACCES):
        return Gap(
            "CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN) in the initial user namespace",
            f"bpf(BPF_PROG_LOAD, sk_lookup) -> {errno.errorcode[err]}",
        )
    return None  # EINVAL & co: the kernel's answer on sk_lookup, which features.py reports


@functools.cache
def check() -> Preflight:
    """Try each privilege and device once per process; see :class:`Preflight`."""
    caps = effective_caps()
    core = _namespace_gaps(caps)
    tun = _tun_gap()
    if tun is not None:
        core.append(tun)
    bpf = _bpf_gap()
    return Preflight(core=tuple(core), bpf=() if bpf is None else (bpf,))
