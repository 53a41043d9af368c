"""bindlab.programs: a real program's sockets get labels and verdicts, even when the program
takes every connection and datagram it can (it is frozen while a probe runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bindlab import ConfigError, Namespace
from bindlab.process import Session
from bindlab.programs import ProgramError, program_socket
from bindlab.results import PASS, SKIP
from bindlab.scenario.load import ScenarioError, load_text
from bindlab.scenario.run import run

# A greedy server: binds what its arguments say (proto,ip,port[,reuseport]), optionally forks
# a worker, then busily accepts every connection and reads every datagram it can, saying so.
GREEDY = r"""
import os, socket, sys
socks = []
for spec in sys.argv[1:]:
    if spec == "fork":
        continue
    proto, ip, port, *opts = spec.split(",")
    fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
    if "reuseport" in opts:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((ip, int(port)))
    if proto == "tcp":
        s.listen()
    s.setblocking(False)
    socks.append(s)
if "fork" in sys.argv:
    os.fork()
while True:  # busy: it gets to a connection as soon as the kernel queues it
    for s in socks:
        try:
            if s.type == socket.SOCK_STREAM:
                c, peer = s.accept()
                print("accepted", peer, flush=True)
                c.close()
            else:
                print("read", s.recvfrom(2048)[1], flush=True)
        except BlockingIOError:
            pass
"""


def greedy(*specs: str) -> list[str]:
    return [sys.executable, "-c", GREEDY, *specs]


@pytest.fixture
def lab(netns: Namespace) -> Namespace:
    netns.add_local_route("192.0.2.0/24")
    return netns


def test_a_programs_sockets_are_labelled_by_address(lab: Namespace) -> None:
    prog = lab.spawn(
        greedy("tcp,192.0.2.1,80,reuseport", "udp,192.0.2.1,53", "tcp,0.0.0.0,80,reuseport",
               "tcp,0.0.0.0,80,reuseport", "tcp,192.0.2.2,80,reuseport"),
        "srv",
    )  # fmt: skip
    assert sorted(s.label for s in prog.sockets) == [
        "srv:0.0.0.0:80#1",  # a reuseport group: numbered in the order of the program's fds
        "srv:0.0.0.0:80#2",
        "srv:192.0.2.1:53",
        "srv:192.0.2.1:80",
        "srv:192.0.2.2:80",
    ]
    member = program_socket(lab, "srv:0.0.0.0:80#1")
    assert member is not None and member.proto == "tcp" and member.holders == ((prog.pid, "main"),)
    labels = {lbl for lbl, _ in lab.sockets.values()}
    assert {s.label for s in prog.sockets} <= labels  # the test's own registry holds them


@pytest.mark.parametrize("kind", ["default", "session"])
def test_verdicts_name_the_programs_sockets_although_it_takes_everything(
    lab: Namespace, kind: str
) -> None:
    group = Session() if kind == "session" else None  # the fallback where cgroups are not ours
    # beside a wildcard on the same port a specific TCP listener needs SO_REUSEPORT on both
    srv = greedy("tcp,192.0.2.1,80,reuseport", "udp,192.0.2.1,53", "tcp,0.0.0.0,80,reuseport")
    prog = lab.spawn(srv, "srv", group=group)
    rows = {
        "tcp 198.18.0.1:1000 -> 192.0.2.1:80": "srv:192.0.2.1:80",
        "tcp 198.18.0.1:1001 -> 192.0.2.9:80": "srv:0.0.0.0:80",
        "udp 198.18.0.1:1002 -> 192.0.2.1:53": "srv:192.0.2.1:53",
        "udp 198.18.0.1:1003 -> 192.0.2.9:53": "ICMP",
        "tcp 198.18.0.1:1004 -> 192.0.2.1:81": "RST",
    }
    for _ in range(5):  # a program left running would win some of these races
        assert lab.probe(rows) == rows
    assert "accepted" not in prog.output() and "read" not in prog.output()


def test_a_worker_holding_the_socket_is_its_child(lab: Namespace) -> None:
    prog = lab.spawn(greedy("udp,192.0.2.1,53", "fork"), "dns")
    (s,) = prog.sockets
    worker = next(p for p in prog.pids() if p != prog.pid)
    assert s.holders == ((prog.pid, "main"), (worker, "child"))
    assert "held by pid" in s.describe()
    rows = {"udp 198.18.0.1:1000 -> 192.0.2.1:53": "dns:192.0.2.1:53"}
    assert lab.probe(rows) == rows


def test_labels_mapping_renames_derived_labels(lab: Namespace) -> None:
    lab.spawn(greedy("tcp,192.0.2.1,80"), "srv", labels={"srv:192.0.2.1:80": "web"})
    rows = {"tcp 198.18.0.1:1000 -> 192.0.2.1:80": "web"}
    assert lab.probe(rows) == rows


def test_a_mapping_key_it_does_not_hold_is_an_error(lab: Namespace) -> None:
    with pytest.raises(ConfigError, match=r"srv:192.0.2.1:8080.*it holds srv:192.0.2.1:80"):
        lab.spawn(greedy("tcp,192.0.2.1,80"), "srv", labels={"srv:192.0.2.1:8080": "web"})
    (prog,) = lab.programs
    assert prog.pids() == []  # stopped: nothing left behind


def test_a_program_that_exits_is_named_with_what_it_printed(lab: Namespace) -> None:
    with pytest.raises(ProgramError, match=r"(?s)'broken' \(sh -c .*status 3.*\| no config"):
        lab.spawn(["sh", "-c", "echo no config; exit 3"], "broken")


def test_a_missing_executable_is_named(lab: Namespace) -> None:
    with pytest.raises(ProgramError, match=r"(?s)'ghost'.*status 127.*no-such-server"):
        lab.spawn(["no-such-server", "-d"], "ghost")


def test_timeout_says_what_it_waited_for_and_what_it_holds(lab: Namespace) -> None:
    with pytest.raises(
        ProgramError, match=r"waited for tcp 192.0.2.9:80, it holds tcp 192.0.2.1:80"
    ):
        lab.spawn(greedy("tcp,192.0.2.1,80"), "srv", wait_for=["tcp 192.0.2.9:80"], timeout=1)


def test_bad_wait_for_is_refused_before_anything_starts(lab: Namespace) -> None:
    with pytest.raises(ConfigError, match=r"wait_for 'sctp 192\.0\.2\.1:80'"):
        lab.spawn(greedy("tcp,192.0.2.1,80"), "srv", wait_for=["sctp 192.0.2.1:80"])
    assert lab.programs == []


def test_programs_and_their_workdirs_go_with_the_namespace() -> None:
    with Namespace() as ns:
        ns.add_local_route("192.0.2.0/24")
        prog = ns.spawn(greedy("udp,192.0.2.1,53", "fork"), "dns")
        pids, workdir = prog.pids(), prog.workdir
        assert len(pids) == 2 and os.path.isdir(workdir)
    assert not any(_running(p) for p in pids)
    assert not os.path.exists(workdir)


def test_a_stopped_programs_sockets_leave_the_verdicts(lab: Namespace) -> None:
    prog = lab.spawn(greedy("tcp,192.0.2.1,80"), "srv")
    prog.stop()
    # this process's duplicate is closed too: nothing holds the listener any more
    assert lab.probe(["tcp 198.18.0.1:1000 -> 192.0.2.1:80"]) == {
        "tcp 198.18.0.1:1000 -> 192.0.2.1:80": "RST"
    }


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# -- [[program]] in scenario files -------------------------------------------------------------

PROGRAM_FILE = """
[setup]
local_routes = ["192.0.2.0/24"]

[[program]]
label = "srv"
argv = {argv}
package = "srv-package"
wait_for = ["tcp 192.0.2.1:80"]
labels = {{ "srv:192.0.2.1:80" = "web" }}

[expect]
"tcp 198.18.0.1:1000 -> 192.0.2.1:80" = "web"
"udp 198.18.0.1:1000 -> 192.0.2.1:53" = "srv:192.0.2.1:53"
"""


def test_a_scenario_files_program_gets_its_verdicts() -> None:
    argv = greedy("tcp,192.0.2.1,80", "udp,192.0.2.1,53")
    sc = load_text(PROGRAM_FILE.format(argv=json.dumps(argv)), "srv.toml")
    result = run(sc)
    assert [(r.observed, r.status) for r in result.rows] == [
        ("web", PASS),
        ("srv:192.0.2.1:53", PASS),
    ]


def test_a_scenario_file_whose_program_is_missing_skips_with_the_package() -> None:
    sc = load_text(PROGRAM_FILE.format(argv='["no-such-server", "-d"]'), "srv.toml")
    result = run(sc)
    assert {(r.status, r.detail) for r in result.rows} == {
        (SKIP, "program 'srv': 'no-such-server' is not installed (apt-get install srv-package)")
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("package =", "pakage ="),
            "srv.toml:8: program[0].pakage: unknown key 'pakage'; did you mean 'package'?",
        ),
        (('argv = ["x"]', "argv = []"), "srv.toml:7: program[0].argv: an empty command line"),
        (('"tcp 192.0.2.1:80"]', '"sctp 192.0.2.1:80"]'), "program[0].wait_for[0]: wait_for 'sctp"),
        (
            ('= "srv:192.0.2.1:53"', '= "other:192.0.2.1:53"'),
            "'other:192.0.2.1:53' names no socket",
        ),
    ],
)
def test_bad_program_tables_name_the_key(change: tuple[str, str], message: str) -> None:
    text = PROGRAM_FILE.format(argv='["x"]').replace(*change)
    with pytest.raises(ScenarioError) as e:
        load_text(text, "srv.toml")
    assert message in str(e.value)


def test_a_failed_rows_detail_names_the_program_socket_it_got() -> None:
    argv = greedy("tcp,192.0.2.1,80", "udp,192.0.2.1,53")
    text = PROGRAM_FILE.format(argv=json.dumps(argv)).replace(
        '-> 192.0.2.1:80" = "web"', '-> 192.0.2.1:80" = "RST"'
    )
    result = run(load_text(text, "srv.toml"))
    (failed,) = [r for r in result.rows if r.status != PASS]
    assert failed.observed == "web"
    assert failed.detail.startswith("web: program srv, tcp 192.0.2.1:80, held by pid ")


@pytest.mark.privileged
def test_explain_names_the_program_and_its_socket(tmp_path: Path) -> None:
    argv = greedy("tcp,192.0.2.1,80", "udp,192.0.2.1,53")
    f = tmp_path / "srv.toml"
    f.write_text(PROGRAM_FILE.format(argv=json.dumps(argv)))
    flow = "udp 198.18.0.1:1000 -> 192.0.2.1:53"
    p = subprocess.run(
        [sys.executable, "-m", "bindlab", "explain", str(f), flow], capture_output=True, text=True
    )
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert any(ln.startswith("# program srv: pid ") for ln in lines)
    assert "observed: srv:192.0.2.1:53" in lines
    (sock,) = [ln for ln in lines if ln.startswith("socket:")]
    assert sock.startswith("socket:   program srv, udp 192.0.2.1:53, held by pid ")


def _flags(pid: int, inode: int) -> int:
    """The file status flags of ``pid``'s descriptor of socket ``inode``."""
    for fd in os.listdir(f"/proc/{pid}/fd"):
        if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
            text = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
            return int(
                next(ln for ln in text.splitlines() if ln.startswith("flags:")).split()[1], 8
            )
    raise AssertionError(f"{pid} holds no socket {inode}")


def test_probing_leaves_the_programs_sockets_as_they_were(lab: Namespace) -> None:
    # The duplicate shares the program's open file: its O_NONBLOCK (the greedy server's
    # sockets are non-blocking), and the probe's SO_LINGER must be undone.
    prog = lab.spawn(greedy("tcp,192.0.2.1,80", "udp,192.0.2.1,53"), "srv")
    before = {s.inode: _flags(prog.pid, s.inode) for s in prog.sockets}
    assert all(f & os.O_NONBLOCK for f in before.values())
    lab.probe(["tcp 198.18.0.1:1000 -> 192.0.2.1:80", "udp 198.18.0.1:1000 -> 192.0.2.1:53"])
    assert {s.inode: _flags(prog.pid, s.inode) for s in prog.sockets} == before


def test_tcp_and_udp_on_one_address_are_told_apart_by_protocol(lab: Namespace) -> None:
    lab.spawn(greedy("tcp,192.0.2.1,53", "udp,192.0.2.1,53", "udp,192.0.2.1,54"), "dns")
    rows = {
        "tcp 198.18.0.1:1000 -> 192.0.2.1:53": "dns:192.0.2.1:53/tcp",
        "udp 198.18.0.1:1000 -> 192.0.2.1:53": "dns:192.0.2.1:53/udp",
        "udp 198.18.0.1:1001 -> 192.0.2.1:54": "dns:192.0.2.1:54",  # UDP only: no suffix
    }
    assert lab.probe(rows) == rows
