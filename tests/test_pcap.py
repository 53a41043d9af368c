"""``pytest --bindlab-pcap DIR`` and ``bindlab explain --pcap FILE``: the packets of each
test (or flow), injected and sent back, in pcap files that scapy reads back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PY_TESTS = """
def test_split(netns):
    netns.add_local_route("192.0.2.0/24")
    netns.tcp_listener("192.0.2.10:80", label="web")
    rows = {
        "tcp 198.18.0.1:40000 -> 192.0.2.10:80": "web",
        "udp 198.18.0.1:40001 -> 192.0.2.10:53": "ICMP",
    }
    assert netns.probe(rows) == rows


def test_wrong(netns):
    netns.add_local_route("2001:db8::/64")
    rows = {"tcp [2001:db8:ffff::1]:40000 -> [2001:db8::10]:80": "web"}
    assert netns.probe(rows) == rows


def test_no_namespace():
    pass
"""


def read(path: Path) -> list:
    import scapy.layers.inet6  # noqa: F401 - registers the raw-IP link type (101) with rdpcap
    from scapy.utils import rdpcap

    return list(rdpcap(str(path)))


def layer(pkt: object) -> str:
    """``TCP`` of ``IP / TCP 198.18.0.1:1 > ...``."""
    return pkt.summary().split(" / ")[1].split()[0]  # type: ignore[attr-defined]


@pytest.mark.privileged
def test_pytest_leaves_one_readable_pcap_per_test(tmp_path: Path) -> None:
    (tmp_path / "test_mine.py").write_text(PY_TESTS)
    reuse = tmp_path / "reuseport.bindlab.toml"  # declares itself a scenario file
    reuse.write_text((ROOT / "fixtures" / "scenarios" / "reuseport.toml").read_text())
    out, results = tmp_path / "pcaps", tmp_path / "r.json"
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", f"--bindlab-pcap={out}",
           f"--bindlab-results={results}", "test_mine.py", reuse.name]  # fmt: skip
    p = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert p.returncode == 1, p.stdout  # test_wrong fails
    index = json.loads((out / "index.json").read_text())
    assert "test_mine.py::test_no_namespace" not in index  # no namespace, no packets, no file
    assert sorted(index.values()) == sorted(p.name for p in out.glob("*.pcap"))
    # two tests, and eight scenario rows in each of the file's three families
    assert len(index) == 2 + 3 * 8 == len(set(index.values()))
    split = read(out / index["test_mine.py::test_split"])
    summary = [pkt.summary() for pkt in split]
    # in the order they went: SYN and datagram in, SYN-ACK out, ACK in; ICMP unreachable out
    tcp = [s for s in summary if " / TCP " in s]
    assert sorted(map(layer, split)) == ["ICMP", "TCP", "TCP", "TCP", "UDP"], summary
    assert "198.18.0.1:40000 > 192.0.2.10:http S" in summary[0]
    assert "192.0.2.10:http > 198.18.0.1:40000 SA" in tcp[1] and tcp[2].endswith(" A")
    assert [pkt.time for pkt in split] == sorted(pkt.time for pkt in split)
    wrong = read(out / index["test_mine.py::test_wrong"])
    assert "IPv6" in wrong[0].summary() and "R" in wrong[-1].sprintf("%TCP.flags%")  # SYN, RST
    flow = next(k for k in index if "flow[tcp 198.18.0.1:40000 -> 192.0.2.10:80][ipv4]" in k)
    assert len(read(out / index[flow])) == 3  # the handshake the reuseport group completed
    step = next(k for k in index if "socket[loner" in k)
    assert read(out / index[step]) == []  # a socket row sends nothing: an empty, valid pcap
    # and the results file holds the dict's expectations and the mismatch's packets
    tests = json.loads(results.read_text())["tests"]
    w = tests["test_mine.py::test_wrong"]
    assert w["expected"] == {"tcp [2001:db8:ffff::1]:40000 -> [2001:db8::10]:80": "web"}
    assert w["verdicts"] == {"tcp [2001:db8:ffff::1]:40000 -> [2001:db8::10]:80": "RST"}
    assert w["packets"]["tcp [2001:db8:ffff::1]:40000 -> [2001:db8::10]:80"].startswith(
        "-> IPv6 / TCP 2001:db8:ffff::1:40000 > 2001:db8::10:http S"
    )


@pytest.mark.privileged
def test_explain_writes_the_flows_packets(tmp_path: Path) -> None:
    f = ROOT / "harness" / "bindlab" / "data" / "rfc" / "so_bindtoifindex.toml"
    pcap = tmp_path / "flow.pcap"
    cmd = [sys.executable, "-m", "bindlab.cli", "explain", "--pcap", str(pcap), str(f),
           "udp 198.18.2.1:40000 -> 192.0.2.10:53 dev inj2"]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    pkts = read(pcap)
    assert [layer(x) for x in pkts] == ["UDP", "ICMP"]
    assert f"# wrote {pcap}: 2 packets" in p.stderr
    cmd[5] = str(tmp_path / "no" / "such" / "dir.pcap")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "--pcap" in p.stderr and "cannot write there" in p.stderr
