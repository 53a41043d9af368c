"""nginx as the subject: the scenario file's verdicts, checked against nginx's own access log.

``fixtures/scenarios/programs/nginx.toml`` runs nginx (two reuseport groups on port 80, a
specific and a wildcard one, plus per-prefix server blocks) and expects a socket per flow.
Here every TCP row is also replayed as a real HTTP request from the same 4-tuple (the
client prefix made local, so the request loops back inside the namespace): nginx must
answer from the server block of the socket the verdict names, in the worker that polls that
socket, and log it; a row that expects RST must be refused and logged nowhere.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from bindlab.flow import Flow
from bindlab.namespace import Namespace
from bindlab.programs import program_socket
from bindlab.results import PASS
from bindlab.scenario.load import load
from bindlab.scenario.run import prepared, run, skip_reason

SCENARIO = Path(__file__).parent.parent / "fixtures" / "scenarios" / "programs" / "nginx.toml"
BLOCK = {  # the server block of each listener in the file's nginx.conf
    "192.0.2.10:80": "edge",
    "192.0.2.10:443": "edge",
    "0.0.0.0:80": "default",
    "[::]:80": "default",
    "203.0.113.5:8080": "internal",
}


@pytest.fixture(scope="module")
def scenario():  # type: ignore[no-untyped-def]
    sc = load(SCENARIO)
    reason = skip_reason(sc)
    if reason is not None:
        pytest.skip(reason)
    return sc


def http_get(ns: Namespace, flow: Flow) -> str | None:
    """GET / from the flow's own source address and port; the body, or None if refused."""
    fam = socket.AF_INET6 if flow.dst.version == 6 else socket.AF_INET
    with ns.enter():
        s = socket.socket(fam, socket.SOCK_STREAM)
    with s:
        s.settimeout(5)
        s.bind((str(flow.src), flow.sport))
        try:
            s.connect((str(flow.dst), flow.dport))
        except ConnectionRefusedError:
            return None
        s.sendall(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return data.split(b"\r\n\r\n", 1)[1].decode().strip()


def test_the_nginx_scenario_passes(scenario) -> None:  # type: ignore[no-untyped-def]
    result = run(scenario)
    assert [(r.name, r.status, r.observed) for r in result.rows if r.status != PASS] == []
    assert len(result.rows) >= 10


def test_verdicts_agree_with_nginxs_access_log(scenario) -> None:  # type: ignore[no-untyped-def]
    with prepared(scenario) as (ns, _):
        (nginx,) = ns.programs
        tcp = [e.flow for e in scenario.expect if e.flow.proto == "tcp"]
        verdicts = ns.probe(tcp)
        # Now let the same 4-tuples reach nginx for real: the clients' prefixes become local.
        ns.add_local_route("198.18.0.0/15")
        ns.add_local_route("2001:db8:ffff::/48")
        ns.sysctl("net.ipv6.ip_nonlocal_bind", 1)
        log = Path(nginx.workdir, "access.log")
        checked = 0
        for flow in tcp:
            verdict = verdicts[flow]
            body = http_get(ns, flow)
            # '$pid $server_name $server_addr:$server_port $remote_addr:$remote_port $status'
            ends = [f"{flow.dst}:{flow.dport}", f"{flow.src}:{flow.sport}"]
            logged = [f for f in map(str.split, log.read_text().splitlines()) if f[2:4] == ends]
            if verdict == "RST":
                assert (body, logged) == (None, []), f"{flow}: refused by the probe, not by nginx"
                continue
            sock = program_socket(ns, verdict)
            assert sock is not None, f"{flow}: {verdict!r} is no nginx socket"
            ((pid, server, _, _, status),) = logged
            assert (body, server, status) == (BLOCK[sock.addr], BLOCK[sock.addr], "200"), flow
            assert int(pid) in sock.pollers, f"{flow}: {verdict} is polled by {sock.pollers}"
            if "#" in verdict:  # a reuseport member is served by exactly one worker
                assert len(sock.pollers) == 1, sock.describe()
            checked += 1
        assert checked >= 8
