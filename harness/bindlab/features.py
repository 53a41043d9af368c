"""What the running kernel supports: socket options, link kinds, BPF sk_lookup, IPv6.

Each feature is detected once per process, inside a throwaway namespace, by doing the
thing (setsockopt, link creation, a libbpf probe) and recording what the kernel said.
A missing feature yields a precise reason, e.g.
``IP_LOCAL_PORT_RANGE: setsockopt(SOL_IP, 51) -> ENOPROTOOPT on 6.1.0-13-amd64``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os
import shutil
import socket
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bindlab import preflight
from bindlab.errors import ConfigError, FeatureMissing, errname
from bindlab.netns import NetNS
from bindlab.sockets import (
    IP_BIND_ADDRESS_NO_PORT,
    IP_FREEBIND,
    IP_LOCAL_PORT_RANGE,
    IP_TRANSPARENT,
    SO_BINDTOIFINDEX,
)

BPF_PROG_TYPE_SK_LOOKUP = 30  # <linux/bpf.h> enum bpf_prog_type
# features that load BPF programs: unsupported, with the reason, when bpf() is refused
BPF_PRIVILEGED = {"BPF_SK_LOOKUP"}
RELEASE = os.uname().release


@dataclass(frozen=True)
class Support:
    """Whether the kernel has ``name``, and what the probe saw (``detail``)."""

    name: str
    ok: bool
    detail: str

    @property
    def reason(self) -> str:
        return f"{self.name}: {self.detail} on {RELEASE}"


def _sockopt(level: int, optname: int, value: int | bytes, label: str) -> Callable[[NetNS], str]:
    def probe(ns: NetNS) -> str:
        with ns.enter():
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with s:
            s.setsockopt(level, optname, value)
        return f"setsockopt({label}) ok"

    return probe


def _port_range(ns: NetNS) -> str:
    with ns.enter():
        s = socket.socket()
    with s:
        s.setsockopt(socket.IPPROTO_IP, IP_LOCAL_PORT_RANGE, struct.pack("I", 40511 << 16 | 40000))
        got = struct.unpack("I", s.getsockopt(socket.IPPROTO_IP, IP_LOCAL_PORT_RANGE, 4))[0]
    if got != 40511 << 16 | 40000:
        raise OSError(errno.EINVAL, f"getsockopt returned {got:#x}")
    return "setsockopt/getsockopt(SOL_IP, 51) ok"


KCONFIG = {
    "dummy": "CONFIG_DUMMY",
    "ifb": "CONFIG_IFB",
    "veth": "CONFIG_VETH",
    "vrf": "CONFIG_NET_VRF",
}


def _link(kind: str) -> Callable[[NetNS], str]:
    def probe(ns: NetNS) -> str:
        from pyroute2.netlink.exceptions import NetlinkError

        kw: dict[str, object] = {"ifname": "blprobe0", "kind": kind}
        if kind == "veth":
            kw["peer"] = "blprobe1"
        if kind == "vrf":
            kw["vrf_table"] = 10
        try:
            ns.ipr.link("add", **kw)
        except NetlinkError as e:
            code = errno.errorcode.get(e.code, str(e.code))
            raise OSError(
                e.code, f"link add type {kind} -> {code} ({KCONFIG[kind]} missing?)"
            ) from None
        return f"link add type {kind} ok"

    return probe


def _live_rename(ns: NetNS) -> str:
    from pyroute2.netlink.exceptions import NetlinkError

    ns.ipr.link("add", ifname="blprobe0", kind="ifb")
    index = ns.ipr.link_lookup(ifname="blprobe0")[0]
    ns.ipr.link("set", index=index, state="up")
    try:
        ns.ipr.link("set", index=index, ifname="blprobe1")
    except NetlinkError as e:
        code = errno.errorcode.get(e.code, str(e.code))
        raise OSError(e.code, f"renaming a link that is up -> {code} (Linux >= 6.2)") from None
    return "rename of an up link ok"


def _tun(ns: NetNS) -> str:
    from bindlab.inject import Injector

    Injector(ns, "blprobe0").close()
    return "TUNSETIFF ok"


def _ipv6(ns: NetNS) -> str:
    if not os.path.exists("/proc/sys/net/ipv6"):
        raise OSError(errno.EAFNOSUPPORT, "no /proc/sys/net/ipv6 (ipv6.disable=1 or CONFIG_IPV6=n)")
    with ns.enter():
        socket.socket(socket.AF_INET6, socket.SOCK_STREAM).close()
    return "AF_INET6 sockets ok"


def _proto(number: int, kconfig: str) -> Callable[[NetNS], str]:
    def probe(ns: NetNS) -> str:
        try:
            with ns.enter():
                socket.socket(socket.AF_INET, socket.SOCK_STREAM, number).close()
        except OSError as e:
            raise OSError(e.errno, f"socket(AF_INET, SOCK_STREAM, {number}) ({kconfig})") from None
        return f"socket(AF_INET, SOCK_STREAM, {number}) ok"

    return probe


def _mptcp_port_range(ns: NetNS) -> str:
    _proto(262, "CONFIG_MPTCP, or net.mptcp.enabled=0")(ns)
    with ns.enter():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
    with s:
        try:
            s.setsockopt(
                socket.IPPROTO_IP, IP_LOCAL_PORT_RANGE, struct.pack("I", 40511 << 16 | 40000)
            )
        except OSError as e:
            raise OSError(
                e.errno, "setsockopt(SOL_IP, IP_LOCAL_PORT_RANGE=51) on an MPTCP socket"
            ) from None
    return "IP_LOCAL_PORT_RANGE on an MPTCP socket ok"


@functools.cache
def _libbpf() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("bpf")
    return ctypes.CDLL(name, use_errno=True) if name else None


def _sk_lookup(ns: NetNS) -> str:
    lib = _libbpf()
    if lib is None:
        raise OSError(errno.ENOENT, "libbpf not found (apt install libbpf1)")
    ret = lib.libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_SK_LOOKUP, None)
    if ret == 1:
        return "libbpf_probe_bpf_prog_type(SK_LOOKUP) ok"
    if ret == 0:
        raise OSError(
            errno.EINVAL, "BPF_PROG_TYPE_SK_LOOKUP not supported (Linux >= 5.9, CONFIG_BPF_SYSCALL)"
        )
    raise OSError(-ret, f"libbpf_probe_bpf_prog_type -> {os.strerror(-ret)}")


def _clang_bpf(ns: NetNS) -> str:
    clang = shutil.which("clang")
    if clang is None:
        raise OSError(errno.ENOENT, "clang not found (apt install clang llvm libbpf-dev)")
    out = subprocess.run([clang, "-print-targets"], capture_output=True, text=True).stdout
    if " bpf " not in out and "bpf" not in out.split():
        raise OSError(errno.ENOENT, f"{clang} has no bpf target")
    if not os.path.exists("/usr/include/bpf/bpf_helpers.h"):
        raise OSError(errno.ENOENT, "no /usr/include/bpf/bpf_helpers.h (apt install libbpf-dev)")
    return "clang -target bpf and libbpf headers ok"


def _evidence(*programs: str) -> Callable[[NetNS], str]:
    """An evidence tier: its programs of ``evidence.bpf.c`` load (and attach) here."""

    def probe(ns: NetNS) -> str:
        from bindlab.bpf.evidence import SECTIONS, TRACEPOINTS, tiers

        have = tiers()
        for prog in programs:
            if have[prog] is not None:
                raise OSError(errno.EOPNOTSUPP, f"{SECTIONS[prog]}: {have[prog]}")
        how = "loads and attaches" if programs[0] in TRACEPOINTS else "loads"
        return f"{' + '.join(SECTIONS[p] for p in programs)} {how}"

    return probe


TPROXY_PROBE_RULESET = """
table inet bindlab_probe {
  chain pre {
    type filter hook prerouting priority mangle; policy accept;
    meta l4proto tcp tproxy ip to :1
  }
}
"""


def _nft_tproxy(ns: NetNS) -> str:
    if shutil.which("nft") is None:
        raise OSError(errno.ENOENT, "nft(8) not found (apt install nftables)")
    proc = ns.run(["nft", "-f", "-"], input=TPROXY_PROBE_RULESET, check=False)
    if proc.returncode != 0:
        why = proc.stderr.strip().splitlines()[0] if proc.stderr.strip() else "refused"
        raise OSError(errno.EOPNOTSUPP, f"nft tproxy rule refused (CONFIG_NFT_TPROXY?): {why}")
    return "nft tproxy rule loaded"


PROBES: dict[str, tuple[str, Callable[[NetNS], str]]] = {
    "IPV6": ("IPv6 sockets", _ipv6),
    "SO_REUSEPORT": (
        "SO_REUSEPORT (3.9)",
        _sockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1, "SOL_SOCKET, SO_REUSEPORT"),
    ),
    "SO_BINDTODEVICE": (
        "SO_BINDTODEVICE",
        _sockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"lo", "SOL_SOCKET, SO_BINDTODEVICE"),
    ),
    "SO_BINDTOIFINDEX": (
        "SO_BINDTOIFINDEX (5.0)",
        _sockopt(socket.SOL_SOCKET, SO_BINDTOIFINDEX, 1, "SOL_SOCKET, 62"),
    ),
    "IP_FREEBIND": ("IP_FREEBIND", _sockopt(socket.IPPROTO_IP, IP_FREEBIND, 1, "SOL_IP, 15")),
    "IP_TRANSPARENT": (
        "IP_TRANSPARENT",
        _sockopt(socket.IPPROTO_IP, IP_TRANSPARENT, 1, "SOL_IP, 19"),
    ),
    "IP_BIND_ADDRESS_NO_PORT": (
        "IP_BIND_ADDRESS_NO_PORT (4.2)",
        _sockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1, "SOL_IP, 24"),
    ),
    "IP_LOCAL_PORT_RANGE": ("IP_LOCAL_PORT_RANGE (6.3)", _port_range),
    "MPTCP": ("MPTCP sockets (5.6)", _proto(262, "CONFIG_MPTCP, or net.mptcp.enabled=0")),
    "MPTCP_LOCAL_PORT_RANGE": ("IP_LOCAL_PORT_RANGE on MPTCP sockets", _mptcp_port_range),
    "SCTP": ("SCTP sockets", _proto(socket.IPPROTO_SCTP, "CONFIG_IP_SCTP")),
    "TUN": ("TUN devices (injection)", _tun),
    "LINK_DUMMY": ("dummy links (CONFIG_DUMMY)", _link("dummy")),
    "LINK_IFB": ("ifb links (CONFIG_IFB)", _link("ifb")),
    "LINK_VETH": ("veth links (CONFIG_VETH)", _link("veth")),
    "LINK_VRF": ("VRF links (CONFIG_NET_VRF)", _link("vrf")),
    "LINK_LIVE_RENAME": ("renaming a link while it is up (6.2)", _live_rename),
    "NFT_TPROXY": ("nftables tproxy (CONFIG_NFT_TPROXY + nft)", _nft_tproxy),
    "BPF_SK_LOOKUP": ("BPF sk_lookup programs (5.9)", _sk_lookup),
    "CLANG_BPF": (
        "clang with the bpf target + libbpf headers (builds sk_lookup programs)",
        _clang_bpf,
    ),
    "EVIDENCE": (
        "kernel evidence: tp_btf kfree_skb + ring buffer (no-socket drops)",
        _evidence("on_drop"),
    ),
    "EVIDENCE_TCP": (
        "evidence for TCP: tp_btf net_dev_queue (SYN-ACK's listener)",
        _evidence("on_synack"),
    ),
    "EVIDENCE_UDP": ("evidence for UDP: tp_btf sk_data_ready (6.3)", _evidence("on_ready")),
    "EVIDENCE_SK_LOOKUP": (
        "evidence of sk_lookup steering: an observer program",
        _evidence("on_lookup"),
    ),
    "EVIDENCE_ITER": ("competing sockets: iter/tcp + iter/udp", _evidence("iter_tcp", "iter_udp")),
}


@functools.cache
def detect(name: str) -> Support:
    """Detect feature ``name`` (one of :data:`PROBES`) once per process."""
    if name not in PROBES:
        raise ConfigError(f"unknown feature {name!r}; known: {', '.join(PROBES)}")
    pre = preflight.check()
    if pre.sentence is not None:
        return Support(name, False, pre.sentence)
    if name in BPF_PRIVILEGED and pre.bpf_reason is not None:
        return Support(name, False, pre.bpf_reason)
    try:
        with NetNS() as ns:
            detail = PROBES[name][1](ns)
    except OSError as e:
        return Support(name, False, _describe_failure(name, e))
    return Support(name, True, detail)


def _describe_failure(name: str, e: OSError) -> str:
    """A precise sentence for a failed probe: which call, which errno."""
    calls = {
        "IP_LOCAL_PORT_RANGE": "setsockopt(SOL_IP, IP_LOCAL_PORT_RANGE=51)",
        "IP_BIND_ADDRESS_NO_PORT": "setsockopt(SOL_IP, IP_BIND_ADDRESS_NO_PORT=24)",
        "SO_BINDTOIFINDEX": "setsockopt(SOL_SOCKET, SO_BINDTOIFINDEX=62)",
        "SO_BINDTODEVICE": "setsockopt(SOL_SOCKET, SO_BINDTODEVICE)",
        "SO_REUSEPORT": "setsockopt(SOL_SOCKET, SO_REUSEPORT)",
        "IP_FREEBIND": "setsockopt(SOL_IP, IP_FREEBIND=15)",
        "IP_TRANSPARENT": "setsockopt(SOL_IP, IP_TRANSPARENT=19)",
        "TUN": "open(/dev/net/tun) + TUNSETIFF",
    }
    if name in calls:
        return f"{calls[name]} -> {errname(e)}"
    return f"{e.strerror} (-> {errname(e)})" if e.strerror else f"-> {errname(e)}"


def detect_all() -> list[Support]:
    return [detect(n) for n in PROBES]


def require(*names: str) -> None:
    """Raise :class:`FeatureMissing` with the precise reason if any of ``names`` is missing."""
    for n in names:
        s = detect(n)
        if not s.ok:
            raise FeatureMissing(s.reason)


def table() -> str:
    """The feature table ``bindlab features`` prints."""
    rows = [f"# kernel {RELEASE}"]
    for s in detect_all():
        rows.append(f"{'yes' if s.ok else 'NO ':4} {s.name:24} {s.detail}")
    return "\n".join(rows)


def kernel_facts() -> dict[str, Any]:
    """The running kernel's release, machine and detected features."""
    u = os.uname()
    return {
        "release": u.release,
        "version": u.version,
        "machine": u.machine,
        "features": {s.name: {"ok": s.ok, "detail": s.detail} for s in detect_all()},
    }
