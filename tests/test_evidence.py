"""The kernel's evidence beside each verdict (``probe(evidence=True)``, bpf/why.py).

The done-when check is the first test: over every flow of every shipped scenario file, the
evidence's socket is the verdict's label and every RST/ICMP verdict has a no-socket drop, so
a hook that reads the wrong socket (or the wrong flow) fails it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from bindlab import features
from bindlab.bpf.why import Evidence, disagreement
from bindlab.flow import ICMP, RESERVED_VERDICTS, RST, Flow
from bindlab.namespace import Namespace
from bindlab.probe import Verdicts
from bindlab.scenario.load import load
from bindlab.scenario.run import prepared, skip_reason
from bindlab.scenario.variants import variants

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = sorted(
    [
        *(ROOT / "harness" / "bindlab" / "data" / "rfc").glob("*.toml"),
        *(ROOT / "fixtures" / "scenarios").rglob("*.toml"),
    ]
)
CASES = [
    pytest.param(p, v.family, id=f"{p.name}[{v.family}]" if v.family else p.name)
    for p in SCENARIOS
    for v in variants(load(p))
]
pytestmark = pytest.mark.requires("EVIDENCE", "EVIDENCE_TCP", "EVIDENCE_ITER")


def udp_missing(flow: Flow, ev: Evidence) -> bool:
    """A UDP flow on a kernel without EVIDENCE_UDP (< 6.3): its evidence says why."""
    if flow.proto != "udp" or features.detect("EVIDENCE_UDP").ok:
        return False
    assert ev.missing.startswith("EVIDENCE_UDP unavailable: no sk_data_ready"), ev
    return True


def probe_file(name: str, family: str | None = "ipv4") -> tuple[Verdicts, dict[str, str]]:
    """Probe every flow of scenario file ``name`` (as ``family``) with evidence on:
    (result, {flow: expected})."""
    path = next(p for p in SCENARIOS if p.name == name)
    sc = next(v for v in variants(load(path)) if v.family in (family, None))
    if (why := skip_reason(sc)) is not None:
        pytest.skip(why)
    with prepared(sc) as (ns, _):
        res = ns.probe([e.flow for e in sc.expect], evidence=True)
    assert isinstance(res, Verdicts)
    return res, {str(e.flow): e.expected for e in sc.expect}


@pytest.mark.parametrize(("path", "family"), CASES)
def test_evidence_names_the_verdicts_socket_for_every_flow(path: Path, family: str) -> None:
    res, expected = probe_file(path.name, family)
    udp = features.detect("EVIDENCE_UDP")
    checked = 0
    for flow, verdict in res.items():
        ev = res.evidence[flow]
        if flow.proto == "udp" and not udp.ok and verdict not in (RST, ICMP):
            assert ev.missing.startswith("EVIDENCE_UDP unavailable"), ev
            continue
        if verdict in (RST, ICMP):
            assert ev.no_socket, f"{flow}: {verdict} without a no-socket record: {ev}"
            assert ev.fields["reason"] == "NO_SOCKET"
            checked += 1
        elif verdict not in RESERVED_VERDICTS:  # a label
            assert not ev.missing, f"{flow}: {ev}"
            assert ev.socket == verdict, f"{flow}: verdict {verdict}, evidence {ev}"
            checked += 1
        assert disagreement(verdict, ev) is None
    if expected:  # files of socket steps only have no flows
        assert checked, "no flow of the file was checked"


@pytest.mark.parametrize("family", ["ipv4", "ipv6", "v4mapped"])
def test_reuseport_evidence_is_k_of_n_with_n_right(family: str) -> None:
    res, _ = probe_file("reuseport.toml", family)
    seen: dict[tuple[int, str], str] = {}  # (proto, k) -> label
    for flow, verdict in res.items():
        ev = res.evidence[flow]
        if udp_missing(flow, ev):
            continue
        if flow.dport == 8080:
            assert not any(p.startswith("reuseport") for p in ev.path), ev
            continue
        assert ev.path[-1].startswith("reuseport ") and ev.path[-1].endswith(" of 2"), ev
        assert ev.fields["reuseport_n"] == 2
        k = ev.fields["reuseport_k"]
        assert k in (0, 1)
        # the index names one member: the same k is always the same socket
        assert seen.setdefault((ev.fields["proto"], k), verdict) == verdict
        others = [o for o in ev.others if "reuseport group of 2" in o]
        assert len(others) == 1, ev  # the other member, in the same group of 2


def test_a_group_of_three_and_the_competitors() -> None:
    with Namespace() as ns:
        ns.add_local_route("192.0.2.0/24")
        ns.tcp_listener("192.0.2.10:80", "spec4", reuseport=True)
        for x in "abc":
            ns.tcp_listener("0.0.0.0:80", f"wild4-{x}", reuseport=True)
        flows = [f"tcp 198.18.0.{i}:4000 -> 192.0.2.{10 + i % 2}:80" for i in range(1, 41)]
        res = ns.probe(flows, evidence=True)
    assert isinstance(res, Verdicts)
    by_k: dict[int, set[str]] = {}
    for flow, verdict in res.items():
        ev = res.evidence[flow]
        text = str(ev)
        if verdict == "spec4":
            assert text.startswith("won: spec4 (exact 192.0.2.10:80, reuseport 0 of 1)"), text
            assert (
                "also listening: wild4-a, wild4-b, wild4-c (0.0.0.0:80, reuseport group of 3)"
                in text
            )
        else:
            assert ev.path[0] == "wildcard 0.0.0.0:80" and ev.path[1].endswith(" of 3"), text
            by_k.setdefault(ev.fields["reuseport_k"], set()).add(verdict)
            assert "spec4 (192.0.2.10:80, reuseport group of 1)" in text
    assert all(len(labels) == 1 for labels in by_k.values()), by_k  # k -> one socket
    assert len({lbl for s in by_k.values() for lbl in s}) == len(by_k)  # and back


@pytest.mark.parametrize("family", ["ipv4", "ipv6", "v4mapped"])
def test_sk_lookup_names_the_binding(family: str) -> None:
    res, _ = probe_file("inet_lookup_two_servers.toml", family)
    for flow, verdict in res.items():
        ev = res.evidence[flow]
        if verdict in ("nginx", "apache"):
            assert ev.path[0].startswith("sk_lookup binding tcp "), ev
            assert ev.fields["sk_lookup"] is True
            assert not ev.path[1].startswith("exact " + str(flow.dst))  # steered elsewhere
        if verdict == "nginx" and family == "ipv4":
            assert ev.path[0] == "sk_lookup binding tcp 192.0.2.0/24 port 80", ev
            assert ev.path[1] == "exact 127.0.0.1:8080"
        elif verdict == "apache" and family == "ipv4":
            assert ev.path[0] == "sk_lookup binding tcp 198.51.100.0/24 port 80", ev
        elif verdict not in ("nginx", "apache"):
            assert not any("sk_lookup" in p for p in ev.path)


def test_device_bound_sockets_are_named_with_their_device() -> None:
    res, _ = probe_file("so_bindtoifindex.toml", "ipv4")
    ev = {str(f): e for f, e in res.evidence.items()}
    a = ev["tcp 198.18.1.1:40000 -> 192.0.2.10:80 dev inj1"]
    assert a.socket == "a" and "device-bound inj1" in a.path, a
    assert any(o.startswith("b (0.0.0.0:80, device inj2") for o in a.others), a
    dns = ev["udp 198.18.1.1:40000 -> 192.0.2.10:53 dev inj1"]
    if not dns.missing:
        assert dns.socket == "dns" and "device-bound inj1" in dns.path, dns
    rst = ev["tcp 198.18.0.1:40000 -> 192.0.2.10:80"]  # no device-bound socket on blinj0
    assert rst.no_socket and len(rst.others) == 2, rst


@pytest.mark.parametrize("family", ["ipv4", "ipv6", "v4mapped"])
def test_exact_wildcard_and_connected(family: str) -> None:
    res, _ = probe_file("specific_vs_wildcard.toml", family)
    for flow, verdict in res.items():
        ev = res.evidence[flow]
        if ev.missing or ev.no_socket or verdict in RESERVED_VERDICTS:
            continue
        kind = {"spec": "exact ", "wild": "wildcard ", "udp-spec": "exact "}.get(verdict)
        kind = kind or {"udp-wild": "wildcard ", "udp-conn": "connected "}[verdict]
        assert ev.path[0].startswith(kind), (flow, ev)
    if family != "ipv4":
        return
    ev = {str(f): e for f, e in res.evidence.items()}
    assert ev["tcp 198.18.0.1:40000 -> 192.0.2.10:80"].path[0] == "exact 192.0.2.10:80"
    assert ev["tcp 198.18.0.1:40001 -> 192.0.2.20:80"].path[0] == "wildcard 0.0.0.0:80"
    conn = ev["udp 198.18.0.1:5353 -> 192.0.2.10:53"]
    if not conn.missing:
        assert conn.path[0] == "connected 192.0.2.10:53 <- 198.18.0.1:5353", conn


def test_an_ipv4_flow_on_a_dual_stack_socket() -> None:
    res, _ = probe_file("v4mapped.toml", None)
    dual = {str(f): e for f, e in res.evidence.items()}["tcp 198.18.0.1:40000 -> 192.0.2.10:80"]
    assert dual.socket == "dual" and dual.path[0] == "wildcard [::]:80 (an IPv6 socket taking IPv4)"


def test_evidence_is_matched_by_tuple_not_by_order() -> None:
    """Flows probed in one batch, answered by different sockets in an interleaved order."""
    with Namespace() as ns:
        ns.add_local_route("192.0.2.0/24")
        for i in range(8):
            ns.tcp_listener(f"192.0.2.{i + 1}:80", f"t{i}")
            ns.udp_socket(f"192.0.2.{i + 1}:53", f"u{i}")
        flows = [
            f"{p} 198.18.{j}.{i + 1}:{1000 + j} -> 192.0.2.{(i * 5 + j) % 8 + 1}:{port}"
            for j in range(4)
            for i in range(8)
            for p, port in (("tcp", 80), ("udp", 53))
        ]
        got: dict[str, Evidence] = {}
        res = ns.probe(flows, evidence=got)
    assert got == res.evidence  # the out-parameter holds the same
    for flow, verdict in res.items():
        if not udp_missing(Flow.parse(flow), got[flow]):
            assert got[flow].socket == verdict, (flow, got[flow])


def test_off_by_default_nothing_loads() -> None:
    code = (
        "import sys\n"
        "from bindlab.namespace import Namespace\n"
        "with Namespace() as ns:\n"
        "    ns.add_local_route('192.0.2.0/24')\n"
        "    ns.tcp_listener('192.0.2.1:80', 'web')\n"
        "    r = ns.probe(['tcp 198.18.0.1:1 -> 192.0.2.1:80'])\n"
        "assert type(r) is dict and r == {'tcp 198.18.0.1:1 -> 192.0.2.1:80': 'web'}, r\n"
        "print(sorted(m for m in sys.modules if m.startswith(('bindlab.bpf.evidence', "
        "'bindlab.bpf.why', 'bindlab.bpf.ringbuf'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout  # no evidence module, so no BPF of it


def test_verdicts_compare_as_a_dict_and_features_rows() -> None:
    with Namespace() as ns:
        ns.add_local_route("192.0.2.0/24")
        ns.udp_socket("192.0.2.1:53", "dns")
        flows = ["udp 198.18.0.1:1 -> 192.0.2.1:53", "udp 198.18.0.1:2 -> 192.0.2.1:54"]
        res = ns.probe(flows, evidence=True)
        assert res == ns.probe(flows) == dict(zip(flows, ["dns", ICMP], strict=True))
    for name in ("EVIDENCE", "EVIDENCE_TCP", "EVIDENCE_UDP", "EVIDENCE_SK_LOOKUP", "EVIDENCE_ITER"):
        s = features.detect(name)
        assert s.ok or s.detail, s  # a missing tier says why
    if not features.detect("EVIDENCE_UDP").ok:
        assert "sk_data_ready" in features.detect("EVIDENCE_UDP").detail


def test_disagreement() -> None:
    won = Evidence("web", ("exact 192.0.2.1:80",), "net_dev_queue")
    none = Evidence(None, ("no socket (drop reason NO_SOCKET)",), "kfree_skb")
    assert disagreement("web", won) is None
    assert disagreement("other", won) is not None
    assert disagreement(RST, none) is None and disagreement(ICMP, none) is None
    assert disagreement(RST, won) is not None
    assert disagreement("web", none) is not None
    assert disagreement("web", Evidence(None, missing="EVIDENCE_UDP unavailable")) is None
    assert disagreement("A", none) is not None  # an upper-case label is still a label


FAILING = """\
import pytest

def test_wrong(netns):
    netns.add_local_route("192.0.2.0/24")
    netns.tcp_listener("192.0.2.1:80", "web")
    assert netns.probe(["tcp 198.18.0.1:9 -> 192.0.2.1:80"]) == {
        "tcp 198.18.0.1:9 -> 192.0.2.1:80": "api"
    }
"""


def test_plugin_option_puts_evidence_in_the_failure_and_results(tmp_path: Path) -> None:
    (tmp_path / "test_x.py").write_text(FAILING)
    results = tmp_path / "r.json"
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly"]
    p = subprocess.run(
        [*cmd, "--bindlab-evidence", f"--bindlab-results={results}", "test_x.py"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert p.returncode == 1, p.stdout
    assert "tcp 198.18.0.1:9 -> 192.0.2.1:80: expected 'api', got 'web'" in p.stdout, p.stdout
    assert "kernel evidence: won: web (exact 192.0.2.1:80) [net_dev_queue]" in p.stdout
    text = results.read_text()
    assert '"evidence": {' in text and "won: web (exact 192.0.2.1:80)" in text
