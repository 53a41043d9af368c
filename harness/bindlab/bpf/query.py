"""Ask the kernel about sk_lookup programs: run one against a synthetic context without a
packet (``BPF_PROG_TEST_RUN``), and list what is attached to a namespace.

- :func:`test_run` fills a ``struct bpf_sk_lookup`` from a :class:`~bindlab.flow.Flow`
  (and an ingress ifindex), runs the program once and returns ``(verdict, label)``: the
  verdict ``"pass"``/``"drop"`` and the label of the socket it selected (matched by socket
  cookie among the namespace's labelled sockets; ``fdN``-less sockets show as
  ``cookie:N``; None when it selected none). The kernel runs that one program only (not
  the namespace's chain), and refuses (EOPNOTSUPP) when the selected socket is in a
  SO_REUSEPORT group and the program did not assign with BPF_SK_LOOKUP_F_NO_REUSEPORT,
  because the group's choice would need a packet.
- :func:`attached` lists the programs and links attached to a namespace's sk_lookup hook
  (``BPF_PROG_QUERY`` + the kernel's link table), with ids, names and the namespace inode.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import socket
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bindlab.bpf.libbpf import LibbpfError, lib
from bindlab.errors import ConfigError
from bindlab.flow import Flow
from bindlab.sockets import labels

if TYPE_CHECKING:
    from bindlab.netns import NetNS

BPF_SK_LOOKUP = 36  # <linux/bpf.h> enum bpf_attach_type
BPF_LINK_TYPE_NETNS = 5  # enum bpf_link_type
SO_COOKIE = 57  # <asm-generic/socket.h>
SK_DROP, SK_PASS = 0, 1
# struct bpf_sk_lookup as user space fills it: cookie, family, protocol, remote_ip4,
# remote_ip6[4], remote_port (__be16 + pad), local_ip4, local_ip6[4], local_port (host
# order), ingress_ifindex; 8-byte aligned.
_CTX = struct.Struct("=QII4s16sHxx4s16sII4x")
_IPPROTO = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}


class _TestRunOpts(ctypes.Structure):
    """libbpf's ``struct bpf_test_run_opts``."""

    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("data_in", ctypes.c_void_p),
        ("data_out", ctypes.c_void_p),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_void_p),
        ("ctx_out", ctypes.c_void_p),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("repeat", ctypes.c_int),
        ("duration", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
    ]


def _ctx(flow: Flow, ifindex: int) -> bytes:
    family = socket.AF_INET if flow.src.version == 4 else socket.AF_INET6
    src, dst = flow.src.packed, flow.dst.packed
    v4 = (src, dst) if family == socket.AF_INET else (bytes(4), bytes(4))
    v6 = (src, dst) if family == socket.AF_INET6 else (bytes(16), bytes(16))
    return _CTX.pack(
        0,
        family,
        _IPPROTO[flow.proto],
        v4[0],
        v6[0],
        socket.htons(flow.sport),
        v4[1],
        v6[1],
        flow.dport,
        ifindex,
    )


def cookie(sock: socket.socket) -> int:
    """The socket's cookie (SO_COOKIE), the id test runs name it by."""
    return int(struct.unpack("Q", sock.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8))[0])


def label_of_cookie(ns: NetNS, value: int) -> str:
    """The label of ``ns``'s labelled socket with cookie ``value`` (``cookie:N`` if none)."""
    for name, sock in list(labels(ns).values()):
        with contextlib.suppress(OSError):
            if sock.fileno() >= 0 and cookie(sock) == value:
                return name
    return f"cookie:{value}"


def test_run(ns: NetNS, prog_fd: int, flow: str | Flow, ifindex: int = 0) -> tuple[str, str | None]:
    """Run the sk_lookup program ``prog_fd`` once on ``flow``'s context (no packet):
    ``(verdict, label of the selected socket or None)``; see the module docstring."""
    f = Flow.parse(flow)
    if not isinstance(ifindex, int) or ifindex < 0:
        raise ConfigError(f"test_run: ifindex {ifindex!r} is not an index")
    ctx_in = ctypes.create_string_buffer(_ctx(f, ifindex), _CTX.size)
    ctx_out = ctypes.create_string_buffer(_CTX.size)
    opts = _TestRunOpts(
        sz=ctypes.sizeof(_TestRunOpts),
        ctx_in=ctypes.cast(ctx_in, ctypes.c_void_p),
        ctx_out=ctypes.cast(ctx_out, ctypes.c_void_p),
        ctx_size_in=_CTX.size,
        ctx_size_out=_CTX.size,
        repeat=1,
    )
    ret = lib().bpf_prog_test_run_opts(prog_fd, ctypes.byref(opts))
    if ret == -errno.EINVAL and ifindex:
        raise ConfigError(
            f"test_run({f}, ifindex={ifindex}): the kernel's BPF_PROG_TEST_RUN for sk_lookup "
            "takes no ingress_ifindex (the context must be zero after local_port: EINVAL); "
            "check an interface binding by injecting the flow on that link"
        )
    if ret == -errno.EOPNOTSUPP:
        raise ConfigError(
            f"test_run({f}): the program selected a socket in a SO_REUSEPORT group without "
            "BPF_SK_LOOKUP_F_NO_REUSEPORT; the group's choice needs a packet, so the kernel "
            "refuses (EOPNOTSUPP): bind with no_reuseport=True, or inject the flow"
        )
    if ret < 0:
        raise LibbpfError(f"BPF_PROG_TEST_RUN of sk_lookup program fd {prog_fd} on {f}", -ret)
    selected = _CTX.unpack(ctx_out.raw)[0]
    verdict = {SK_PASS: "pass", SK_DROP: "drop"}.get(opts.retval, str(opts.retval))
    return verdict, (label_of_cookie(ns, selected) if selected else None)


@dataclass(frozen=True)
class Attached:
    """One program on a namespace's sk_lookup hook, in run order, and its link."""

    prog_id: int
    name: str
    link_id: int | None  # None: attached without a link (never, from bindlab)
    netns_ino: int


def netns_inode(ns: NetNS) -> int:
    """The inode number of ``ns`` (what ``ls -i /proc/PID/ns/net`` and link info show)."""
    return os.fstat(ns.fd).st_ino


def _prog_name(prog_id: int) -> str:
    fd = lib().bpf_prog_get_fd_by_id(prog_id)
    if fd < 0:
        return "?"
    try:
        info = ctypes.create_string_buffer(256)
        size = ctypes.c_uint32(256)
        if lib().bpf_obj_get_info_by_fd(fd, info, ctypes.byref(size)) < 0:
            return "?"
        return info.raw[64:80].split(b"\0", 1)[0].decode(errors="replace")  # bpf_prog_info.name
    finally:
        os.close(fd)


def _netns_links(ino: int) -> dict[int, int]:
    """prog id -> link id of the sk_lookup links of the namespace with inode ``ino``."""
    out: dict[int, int] = {}
    link_id = ctypes.c_uint32(0)
    while lib().bpf_link_get_next_id(link_id.value, ctypes.byref(link_id)) == 0:
        fd = lib().bpf_link_get_fd_by_id(link_id.value)
        if fd < 0:  # gone meanwhile
            continue
        try:
            info = ctypes.create_string_buffer(256)
            size = ctypes.c_uint32(256)
            if lib().bpf_obj_get_info_by_fd(fd, info, ctypes.byref(size)) < 0:
                continue
            kind, lid, prog_id = struct.unpack_from("=III", info.raw)
            netns_ino, attach_type = struct.unpack_from("=II", info.raw, 16)
            if kind == BPF_LINK_TYPE_NETNS and netns_ino == ino and attach_type == BPF_SK_LOOKUP:
                out[prog_id] = lid
        finally:
            os.close(fd)
    return out


def attached(ns: NetNS) -> list[Attached]:
    """The sk_lookup programs attached to ``ns``, in the order they run."""
    ids = (ctypes.c_uint32 * 64)()
    count = ctypes.c_uint32(64)
    flags = ctypes.c_uint32(0)
    ret = lib().bpf_prog_query(
        ns.fd, BPF_SK_LOOKUP, 0, ctypes.byref(flags), ids, ctypes.byref(count)
    )
    if ret < 0:
        raise LibbpfError(f"BPF_PROG_QUERY(sk_lookup) of {ns!r}", -ret)
    ino = netns_inode(ns)
    links = _netns_links(ino)
    return [Attached(pid, _prog_name(pid), links.get(pid), ino) for pid in list(ids)[: count.value]]
