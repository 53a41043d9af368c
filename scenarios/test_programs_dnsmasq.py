"""dnsmasq as the subject: per-address UDP sockets, checked against dnsmasq's own answers.

``fixtures/scenarios/programs/dnsmasq.toml`` runs dnsmasq with ``bind-interfaces`` (a socket
per interface address) and ``localise-queries`` (the answer for ``whoami.test`` is the
address of the interface the query arrived on). Every UDP row whose verdict names a dnsmasq
socket is replayed as a real query from the same source address and port: the answer must
be that socket's address. Then ``bind-interfaces`` and ``bind-dynamic`` differ where the
dnsmasq manual says they do: an address added after start gets a socket only with
``bind-dynamic``.
"""

from __future__ import annotations

import dataclasses
import socket
import struct
from pathlib import Path

import pytest
from bindlab.flow import ICMP, Flow
from bindlab.namespace import Namespace
from bindlab.programs import program_socket
from bindlab.results import PASS
from bindlab.scenario.load import load
from bindlab.scenario.model import Scenario
from bindlab.scenario.run import prepared, run, skip_reason

SCENARIO = Path(__file__).parent.parent / "fixtures" / "scenarios" / "programs" / "dnsmasq.toml"


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    sc = load(SCENARIO)
    reason = skip_reason(sc)
    if reason is not None:
        pytest.skip(reason)
    return sc


def query(ns: Namespace, flow: Flow, name: str = "whoami.test") -> str | None:
    """Ask ``flow``'s destination for ``name``'s A record from the flow's own source address
    and port; the address answered, or None if nothing came back (refused or silence)."""
    q = struct.pack("!6H", 0x2B1D, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    q += struct.pack("!HH", 1, 1)  # type A, class IN
    with ns.enter():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with s:
        s.settimeout(1)
        s.bind((str(flow.src), flow.sport))
        s.connect((str(flow.dst), flow.dport))  # connected: an ICMP error ends the wait
        s.send(q)
        try:
            answer = s.recv(512)
        except (TimeoutError, ConnectionRefusedError):
            return None
    return socket.inet_ntoa(answer[-4:])  # one answer: its A record ends the message


def test_the_dnsmasq_scenario_passes(scenario: Scenario) -> None:
    result = run(scenario)
    assert [(r.name, r.status, r.observed) for r in result.rows if r.status != PASS] == []
    assert len(result.rows) >= 10


def test_verdicts_agree_with_dnsmasqs_answers(scenario: Scenario) -> None:
    with prepared(scenario) as (ns, _):
        # NONE rows are packets the kernel drops on the wire (martians, not local): a local
        # sender cannot replay those, so they are left out here.
        rows = [e.flow for e in scenario.expect if e.flow.proto == "udp" and e.flow.version == 4]
        verdicts = ns.probe(rows)
        ns.add_local_route("198.18.0.0/15")  # the clients' addresses, to send real queries
        log = Path(ns.programs[0].workdir, "dnsmasq.log")
        checked = 0
        for flow in rows:
            verdict = verdicts[flow]
            if verdict == "NONE":
                continue
            answer = query(ns, flow)
            if verdict == ICMP:
                assert answer is None, f"{flow}: the probe saw ICMP, dnsmasq answered {answer}"
            else:
                sock = program_socket(ns, verdict)
                assert sock is not None, f"{flow}: {verdict!r} is no dnsmasq socket"
                assert f"{answer}:53" == sock.addr, f"{flow}: {verdict}, dnsmasq said {answer}"
                assert f"query[A] whoami.test from {flow.src}" in log.read_text()
            checked += 1
        assert checked >= 5


@pytest.mark.parametrize(
    ("mode", "verdict"),
    [
        ("bind-interfaces", ICMP),  # bound at start only: the new address has no socket
        ("bind-dynamic", "dnsmasq:192.0.2.7:53/udp"),  # follows the interface's addresses
    ],
)
def test_an_address_added_later(scenario: Scenario, mode: str, verdict: str) -> None:
    (prog,) = scenario.programs
    argv = tuple("--" + mode if a == "--bind-interfaces" else a for a in prog.argv)
    sc = dataclasses.replace(scenario, programs=(dataclasses.replace(prog, argv=argv),))
    with prepared(sc) as (ns, _):
        ns.add_addr("lan0", "192.0.2.7/24")
        wait = ["udp 192.0.2.7:53"] if mode == "bind-dynamic" else []
        ns.programs[0].rescan(wait_for=wait)
        row = {"udp 198.18.0.1:1000 -> 192.0.2.7:53": verdict}
        assert ns.probe(row) == row
