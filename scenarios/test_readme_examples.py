"""The README's examples, verbatim, so that the README cannot rot."""

import shutil
from pathlib import Path

import pytest
from bindlab.results import PASS
from bindlab.scenario.load import load_text
from bindlab.scenario.run import run


def test_prefix_split(netns):  # a fresh namespace, lo up
    netns.add_local_route("192.0.2.0/24")  # ip route add local ... dev lo
    netns.add_local_route("198.51.100.0/24")
    netns.tcp_listener("192.0.2.10:80", label="nginx", reuseport=True)
    netns.tcp_listener("0.0.0.0:80", label="apache", reuseport=True)
    rows = {
        "tcp 198.18.0.1:40000 -> 192.0.2.10:80": "nginx",
        "tcp 198.18.0.1:40001 -> 198.51.100.7:80": "apache",
        "tcp 198.18.0.1:40002 -> 198.51.100.7:81": "RST",
    }
    assert netns.probe(rows) == rows


@pytest.mark.requires("BPF_SK_LOOKUP", "CLANG_BPF")
def test_two_http_servers_share_port_80(netns):
    netns.add_local_route("192.0.2.0/24")
    netns.add_local_route("198.51.100.0/24")
    nginx = netns.tcp_listener("127.0.0.1:8080", label="nginx")
    apache = netns.tcp_listener("127.0.0.1:8081", label="apache")
    d = netns.sk_lookup()  # BPF sk_lookup program, attached to this namespace
    d.bind("tcp", "192.0.2.0/24", 80, nginx)
    d.bind("tcp", "198.51.100.0/24", 80, apache)
    rows = {
        "tcp 198.18.0.1:1000 -> 192.0.2.7:80": "nginx",
        "tcp 198.18.0.1:1001 -> 198.51.100.7:80": "apache",
        "tcp 198.18.0.1:1002 -> 198.51.100.7:81": "RST",  # no binding for port 81
    }
    assert netns.probe(rows) == rows


@pytest.mark.skipif(shutil.which("socat") is None, reason="socat is not installed")
def test_my_daemon(netns):
    netns.add_local_route("192.0.2.0/24")
    prog = netns.spawn(
        ["socat", "UDP4-RECVFROM:53,bind=192.0.2.1,fork", "SYSTEM:echo hi"],
        "dns",
        labels={"dns:192.0.2.1:53": "resolver"},  # rename a derived label
    )
    assert netns.probe(["udp 198.18.0.1:1000 -> 192.0.2.1:53"]) == {
        "udp 198.18.0.1:1000 -> 192.0.2.1:53": "resolver"
    }
    assert prog.sockets[0].label == "resolver"


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed (nginx-light)")
def test_the_readmes_nginx_scenario_file():
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## Test your server's bind config", 1)[1]
    text = section.split("```toml\n", 1)[1].split("```", 1)[0]
    result = run(load_text(text, "README.md"))
    assert [(r.name, r.status) for r in result.rows if r.status != PASS] == []
    assert len(result.rows) == 3
