"""IP_BIND_ADDRESS_NO_PORT (Linux 4.2): bind() the source address now, the port at connect().

Claim ("inet: add IP_BIND_ADDRESS_NO_PORT to overcome bind(0) limitations"): "ask kernel to
ignore the 0 port provided by application in bind(IP, port=0) and only remember the given
IP address. The port will be automatically chosen at connect() time, in a way that allows
sharing a source port as long as the 4-tuples are unique."

Check: getsockname() before and after connect() (the commit's strace), then, with the
namespace's ephemeral range narrowed to N ports and M listeners in the namespace, count
connections from one source IP until the kernel refuses: N without the option (bind:
EADDRINUSE), N x M with it (connect: EADDRNOTAVAIL), each source port shared by M
connections according to ``ss``. UDP: the option defers the port the same way, but
connected UDP sockets never share one (the IP_LOCAL_PORT_RANGE commit says so).
Scale (1M connections): test_scale_bind_address_no_port.py, ``-m scale``.
"""

from __future__ import annotations

import errno
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from bindlab import Namespace
from bindlab.flow import endpoint
from bindlab.sockets import IP_BIND_ADDRESS_NO_PORT

pytestmark = pytest.mark.requires("IP_BIND_ADDRESS_NO_PORT")

N_PORTS = 8  # the namespace's ephemeral range: 40000-40007
M_DESTS = 4


@dataclass(frozen=True)
class Fam:
    """One address family's plan: a local prefix, the source IP, M destinations, a client."""

    v: int
    prefix: str
    src: str
    dsts: tuple[str, ...]
    client: str


FAMILIES = {
    4: Fam(
        4,
        "192.0.2.0/24",
        "192.0.2.100",
        ("192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"),
        "198.18.0.1",
    ),
    6: Fam(
        6,
        "2001:db8:1::/64",
        "2001:db8:1::100",
        ("2001:db8:1::1", "2001:db8:1::2", "2001:db8:1::3", "2001:db8:1::4"),
        "2001:db8:ffff::1",
    ),
}
# The commit's strace: bind(127.0.0.2:0) -> getsockname port 0 -> connect(127.0.0.3).
STRACE = {4: ("127.0.0.2", "127.0.0.3"), 6: ("::1", "::1")}


def ep(fam: int, ip: str, port: int) -> str:
    return endpoint(ip, port)


@pytest.fixture(params=[4, 6], ids=["ipv4", "ipv6"])
def fam(request: pytest.FixtureRequest) -> int:
    return request.param


@pytest.mark.parametrize("option", [True, False], ids=["no_port", "plain"])
def test_strace_example_port_is_chosen_at_connect(netns: Namespace, fam: int, option: bool) -> None:
    src, dst = STRACE[fam]
    netns.tcp_listener(ep(fam, dst, 53174), label="dns")
    s = netns.socket("tcp", fam)
    if option:  # setsockopt(5, SOL_IP, 0x18 /* IP_?? */, [1], 4) = 0
        s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
    s.bind((src, 0))
    after_bind = s.getsockname()[:2]
    s.connect((dst, 53174))
    after_connect = s.getsockname()[:2]
    lo, hi = map(int, netns.sysctl("net.ipv4.ip_local_port_range").split())
    if option:
        assert after_bind == (src, 0)  # only the address is remembered
    else:
        assert after_bind[0] == src and lo <= after_bind[1] <= hi  # bind() took a port
        assert after_connect == after_bind
    assert after_connect[0] == src and lo <= after_connect[1] <= hi


def prepare(ns: Namespace, a: Fam) -> None:
    """The local prefix (bind()-able in IPv6 too) and an N-port ephemeral range."""
    ns.add_local_route(a.prefix)
    if a.v == 6:
        ns.sysctl("net.ipv6.ip_nonlocal_bind", 1)  # bind() to addresses of a local route
    ns.sysctl("net.ipv4.ip_local_port_range", f"40000 {40000 + N_PORTS - 1}")


@pytest.fixture
def lab(netns: Namespace, fam: int) -> tuple[Namespace, Fam]:
    """N ephemeral ports and M TCP listeners (port 80), all inside the namespace."""
    a = FAMILIES[fam]
    prepare(netns, a)
    for i, d in enumerate(a.dsts):
        netns.tcp_listener(ep(fam, d, 80), label=f"dst{i}")
    return netns, a


def connect_until_refused(
    ns: Namespace, a: Fam, option: bool, limit: int = 100
) -> tuple[list[tuple[int, str]], tuple[str, int] | None]:
    """bind(a.src, 0)+connect() round-robin over the destinations until the kernel refuses.

    Returns the (source port, destination) of each connection (kept open) and the
    (call, errno) of the refusal. With ``option`` a destination that refuses is dropped and
    the loop ends when every destination has refused.
    """
    made: list[tuple[int, str]] = []
    live = list(a.dsts)
    i = 0
    while live and len(made) < limit:
        dst = live[i % len(live)]
        i += 1
        s = ns.socket("tcp", a.v, bind_address_no_port=option)
        call = "bind"
        try:
            s.bind((a.src, 0))
            call = "connect"
            s.connect((dst, 80))
        except OSError as e:
            s.close()
            if option and call == "connect" and e.errno == errno.EADDRNOTAVAIL:
                live.remove(dst)
                if live:
                    continue
            return made, (call, e.errno or 0)
        made.append((s.getsockname()[1], dst))
    return made, None


def test_plain_bind_stops_at_the_port_count(lab: tuple[Namespace, Fam]) -> None:
    ns, a = lab
    made, refused = connect_until_refused(ns, a, option=False)
    assert len(made) == N_PORTS  # one port per connection, whatever the destination
    assert len({port for port, _ in made}) == N_PORTS
    assert refused == ("bind", errno.EADDRINUSE)


def ss_source_ports(ns: Namespace, a: Fam) -> Counter[int]:
    """Established TCP connections from the source IP per source port, as ss (sock_diag)
    sees them."""
    src = f"[{a.src}]" if a.v == 6 else a.src  # ss wants IPv6 filter addresses bracketed
    out = ns.run(["ss", "-Htn", f"-{a.v}", "state", "established", "src", src]).stdout
    ports: Counter[int] = Counter()
    for line in out.splitlines():
        local = line.split()[2]  # Recv-Q Send-Q Local:Port Peer:Port
        ports[int(local.rsplit(":", 1)[1])] += 1
    return ports


def test_no_port_shares_each_port_across_destinations(lab: tuple[Namespace, Fam]) -> None:
    ns, a = lab
    made, refused = connect_until_refused(ns, a, option=True)
    assert len(made) == N_PORTS * M_DESTS  # every 4-tuple used ...
    assert len(set(made)) == len(made)
    assert Counter(d for _, d in made) == {d: N_PORTS for d in a.dsts}
    assert refused == ("connect", errno.EADDRNOTAVAIL)  # ... and only then refused
    # sock_diag agrees: each of the N source ports carries M connections.
    assert ss_source_ports(ns, a) == {40000 + p: M_DESTS for p in range(N_PORTS)}


def test_probe_still_reaches_listeners_after_exhaustion(lab: tuple[Namespace, Fam]) -> None:
    """Exhausting outgoing 4-tuples does not touch incoming dispatch (the listeners answer)."""
    ns, a = lab
    connect_until_refused(ns, a, option=True)
    rows = {
        f"tcp {ep(a.v, a.client, 1000)} -> {ep(a.v, d, 80)}": f"dst{i}"
        for i, d in enumerate(a.dsts)
    }
    assert ns.probe(rows) == rows


@pytest.mark.parametrize("option", [True, False], ids=["no_port", "plain"])
def test_udp_port_is_deferred_but_never_shared(
    netns_factory: Callable[..., Namespace], fam: int, option: bool
) -> None:
    """UDP: with the option bind(IP, 0) also leaves port 0, but each connected socket still
    takes a port of its own: N sockets whatever the number of destinations, then connect()
    (or, without the option, bind()) refuses."""
    ns, a = netns_factory(), FAMILIES[fam]
    prepare(ns, a)
    ports, refused = [], None
    for i in range(N_PORTS * M_DESTS):
        s = ns.socket("udp", fam, bind_address_no_port=option)
        call = "bind"
        try:
            s.bind((a.src, 0))
            if option:
                assert s.getsockname()[1] == 0
            call = "connect"
            s.connect((a.dsts[i % M_DESTS], 53))
        except OSError as e:
            refused = (call, e.errno)
            break
        ports.append(s.getsockname()[1])
    assert sorted(ports) == list(range(40000, 40000 + N_PORTS))  # no port twice
    assert refused == (("connect", errno.EAGAIN) if option else ("bind", errno.EADDRINUSE))


def test_udp_manual_port_choice_duplicates_a_4tuple_silently(netns: Namespace, fam: int) -> None:
    """The alternative the commit warns about: with SO_REUSEADDR two UDP sockets bind and
    connect the same 4-tuple without an error, and only the newer one gets the flow."""
    a = FAMILIES[fam]
    prepare(netns, a)
    local, peer = ep(fam, a.src, 40000), ep(fam, a.client, 5353)
    netns.udp_socket(local, label="older", connect=peer, reuseaddr=True)
    netns.udp_socket(local, label="newer", connect=peer, reuseaddr=True)  # no EADDRINUSE
    rows = {f"udp {peer} -> {local}": "newer"}
    assert netns.probe(rows) == rows
    with pytest.raises(OSError) as e:  # without SO_REUSEADDR the duplicate is refused
        netns.udp_socket(local, label="third", connect=peer)
    assert e.value.errno == errno.EADDRINUSE
