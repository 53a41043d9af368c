"""Bind conflicts between IPv4, IPv6 and IPv4-mapped addresses, wildcard and loopback.

In the spirit of the kernel's ``tools/testing/selftests/net/bind_wildcard.c``: a first TCP
socket binds its address on an ephemeral port, a second binds its address on the same port,
and the table says what the kernel answers the second. 7 endpoints, every ordered pair, in
three modes (147 cases), each in a fresh namespace:

- ``plain``: no options. Two binds conflict when their addresses overlap: a v4 wildcard
  covers every IPv4 address and its v4-mapped form; a dual-stack ``::`` covers everything;
  ``::`` with IPV6_V6ONLY and ``::1`` cover only IPv6.
- ``reuseaddr``: SO_REUSEADDR on both and the first not listening: every pair may share the
  port, even the same address twice (the kernel checks reuse before addresses).
- ``reuseaddr_listen``: the same, but the first listens: the plain conflicts are back.

``bench/bench_table.py`` times these cases against the same table in C (bench/bind_table.c).
"""

from __future__ import annotations

import socket
from typing import NamedTuple

import pytest
from bindlab import Namespace
from bindlab.errors import errname


class Endpoint(NamedTuple):
    name: str
    family: int
    ip: str
    v6only: bool = False


ENDPOINTS = [
    Endpoint("v4_any", 4, "0.0.0.0"),
    Endpoint("v4_local", 4, "127.0.0.1"),
    Endpoint("v6_any", 6, "::"),
    Endpoint("v6_any_v6only", 6, "::", v6only=True),
    Endpoint("v6_local", 6, "::1"),
    Endpoint("v4mapped_any", 6, "::ffff:0.0.0.0"),
    Endpoint("v4mapped_local", 6, "::ffff:127.0.0.1"),
]

# The second bind's answer without SO_REUSEADDR (and with it once the first listens):
# X = EADDRINUSE, . = it binds. One row per first socket, one column per second, both in
# ENDPOINTS order.
CONFLICTS = (
    # 4a 4l 6a 6o 6l ma ml   second / first:
    " X  X  X  .  .  X  X",  # v4_any
    " X  X  X  .  .  X  X",  # v4_local: 127.0.0.1 and ::ffff:127.0.0.1 are one address
    " X  X  X  X  X  X  X",  # v6_any: dual stack, the wildcard of both families
    " .  .  X  X  X  .  .",  # v6_any_v6only: v4 and v4-mapped binds pass it by
    " .  .  X  X  X  .  .",  # v6_local
    " X  X  X  .  .  X  X",  # v4mapped_any: ::ffff:0.0.0.0 is the IPv4 wildcard
    " X  X  X  .  .  X  X",  # v4mapped_local
)
MODES = ("plain", "reuseaddr", "reuseaddr_listen")


def _expected(mode: str, first: Endpoint, second: Endpoint) -> str:
    if mode == "reuseaddr":
        return "OK"
    row = CONFLICTS[ENDPOINTS.index(first)].split()
    return "EADDRINUSE" if row[ENDPOINTS.index(second)] == "X" else "OK"


CASES = [
    pytest.param(mode, a, b, _expected(mode, a, b), id=f"{mode}-{a.name}-{b.name}")
    for mode in MODES
    for a in ENDPOINTS
    for b in ENDPOINTS
]


def _socket(ns: Namespace, ep: Endpoint, reuseaddr: bool) -> socket.socket:
    opts = {"v6only": ep.v6only} if ep.family == 6 else {}
    return ns.socket("tcp", ep.family, reuseaddr=reuseaddr or None, **opts)


def _bind(sock: socket.socket, ip: str, port: int) -> str:
    try:
        sock.bind((ip, port))
    except OSError as e:
        return errname(e)
    return "OK"


@pytest.mark.parametrize(("mode", "first", "second", "expected"), CASES)
def test_second_bind_on_the_first_ones_port(
    netns: Namespace, mode: str, first: Endpoint, second: Endpoint, expected: str
) -> None:
    reuse = mode != "plain"
    s1 = _socket(netns, first, reuse)
    s1.bind((first.ip, 0))
    if mode == "reuseaddr_listen":
        s1.listen()
    s2 = _socket(netns, second, reuse)
    assert _bind(s2, second.ip, s1.getsockname()[1]) == expected
