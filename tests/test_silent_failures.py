"""Bugs that once passed the whole suite, each pinned by a test that names the harm.

A mutation run (issue 17) put realistic bugs into bindlab one at a time; these are the ones
nothing caught. Each test fails with its bug in place (``ci/run mutate`` checks that it still
does) and says what a user would have lost.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from bindlab import Namespace, diff, features, report
from bindlab.errors import ConfigError
from bindlab.netns import current_netns_fd
from bindlab.reaper import process_start_time
from bindlab.results import ERROR, FAIL, PASS, Results, Row, ScenarioResult
from bindlab.results import TestResult as Observed
from bindlab.scenario.load import ScenarioError, load_text

FLOW = "tcp 198.18.0.1:40000 -> 192.0.2.10:80"


# -- wrong verdicts --------------------------------------------------------------------------


def test_every_closed_udp_port_answers_icmp_however_many(netns: Namespace) -> None:
    """Harm: with the kernel's ICMP rate limits left on, bulk UDP probes of closed ports
    read NONE for most flows (200 flows: 6 ICMP, 194 NONE)."""
    netns.add_local_route("192.0.2.0/24")
    flows = [f"udp 198.18.0.1:{40000 + i} -> 192.0.2.1:9" for i in range(200)]
    assert set(netns.probe(flows).values()) == {"ICMP"}


def test_a_handshake_nobody_labelled_accepted_is_unlabelled(netns: Namespace) -> None:
    """Harm: a listener the test forgot to label looked like no listener at all (NONE)."""
    netns.add_local_route("192.0.2.0/24")
    netns.tcp_listener("192.0.2.10:81", label="other")
    with netns.enter():
        hidden = socket.socket()
    netns.defer(hidden.close)
    hidden.bind(("192.0.2.10", 80))
    hidden.listen(8)
    rows = {FLOW: "UNLABELLED", "tcp 198.18.0.1:40001 -> 192.0.2.10:81": "other"}
    assert netns.probe(rows) == rows


def test_every_udp_flow_of_a_batch_reaches_its_own_socket(netns: Namespace) -> None:
    """Harm: UDP probes told apart by nothing but their payload gave one flow its socket's
    label and the rest of the batch NONE (found by the curated mutation list)."""
    netns.add_local_route("192.0.2.0/24")
    for i in range(4):
        netns.udp_socket(f"192.0.2.{10 + i}:53", label=f"dns{i}")
    flows = {f"udp 198.18.0.1:{40000 + i} -> 192.0.2.{10 + i}:53": f"dns{i}" for i in range(4)}
    assert netns.probe(flows) == flows


def test_a_flow_given_twice_in_one_probe_is_refused(netns: Namespace) -> None:
    """Harm: the same 4-tuple injected twice in one batch: its two handshakes race, and
    the verdict is whichever answer came last."""
    with pytest.raises(ConfigError, match="given twice in one probe"):
        netns.probe([FLOW, "tcp 198.18.0.2:1 -> 192.0.2.10:80", FLOW.upper().lower()])


# -- lost regressions ------------------------------------------------------------------------


def test_a_scenario_whose_setup_broke_is_not_ok() -> None:
    """Harm: `bindlab run` exited 0 on a scenario that never ran."""
    broken = ScenarioResult("s", "s.toml", [Row("flow", FLOW, "web", "", ERROR, "boom")])
    fine = ScenarioResult("t", "t.toml", [Row("flow", FLOW, "web", "web", PASS)])
    assert report.ok([fine]) and not report.ok([fine, broken])
    failing = ScenarioResult("u", "u.toml", [Row("flow", FLOW, "web", "x", FAIL)])
    assert not report.ok([failing])


@pytest.mark.privileged
def test_bindlab_run_exits_1_when_setup_breaks(tmp_path: Path) -> None:
    f = tmp_path / "broken.toml"
    f.write_text(
        '[setup]\nlocal_routes = ["192.0.2.0/24"]\n'
        'addrs = [{ dev = "nosuch0", cidr = "192.0.2.1/32" }]\n\n'
        '[[socket]]\nlabel = "web"\nbind = "192.0.2.10:80"\n\n'
        f'[expect]\n"{FLOW}" = "web"\n'
    )
    p = subprocess.run(
        [sys.executable, "-m", "bindlab", "run", "-q", str(f)], capture_output=True, text=True
    )
    assert p.returncode == 1, p.stdout + p.stderr
    assert "ERROR" in p.stdout and "nosuch0" in p.stdout


@pytest.mark.privileged
def test_the_results_file_holds_the_verdicts_of_netns_tests(
    tmp_path: Path, run_pytest: Callable[..., Any]
) -> None:
    """Harm: a kernel-matrix run whose results file lacks a test's verdicts cannot show
    that verdict changing (`bindlab diff` compares results files)."""
    (tmp_path / "test_v.py").write_text(
        "def test_split(netns):\n"
        "    netns.add_local_route('192.0.2.0/24')\n"
        "    netns.tcp_listener('192.0.2.10:80', label='web')\n"
        f"    assert netns.probe(['{FLOW}', 'tcp 198.18.0.1:1 -> 192.0.2.9:80'])\n"
    )
    out = tmp_path / "r.json"
    p = run_pytest(f"--bindlab-results={out}", "test_v.py", cwd=tmp_path)
    assert p.returncode == 0, p.stdout
    test = Results.load(str(out)).tests["test_v.py::test_split"]
    assert test.outcome == "passed"
    assert test.verdicts == {FLOW: "web", "tcp 198.18.0.1:1 -> 192.0.2.9:80": "RST"}


def _results(**tests: Observed) -> Results:
    return Results(kernel={"release": "k", "features": {}}, tests=dict(tests))


def test_diff_calls_passed_to_error_a_regression() -> None:
    """Harm: a test that errors on the new kernel (its setup broke) slipped through."""
    rows = diff.diff(_results(t=Observed("passed")), _results(t=Observed("error", "boom")))
    assert [(r.kind, r.a, r.b, r.regression) for r in rows] == [
        ("outcome", "passed", "error", True)
    ]


def test_diff_keeps_a_failing_tests_moved_verdicts_as_regressions() -> None:
    """Harm: a test failing on B whose verdicts moved between its labels was folded into a
    harmless-looking `spread` row."""
    a = Observed("passed", verdicts={FLOW: "r1", "tcp 198.18.0.2:1 -> 192.0.2.10:80": "r2"})
    b = Observed(
        "failed", "wrong", verdicts={FLOW: "r2", "tcp 198.18.0.2:1 -> 192.0.2.10:80": "r1"}
    )
    rows = diff.diff(_results(t=a), _results(t=b))
    assert "spread" not in {r.kind for r in rows}
    assert sum(r.regression for r in rows if r.kind == "verdict") == 2


# -- accepted garbage ------------------------------------------------------------------------

BASE = '[setup]\nlocal_routes = ["192.0.2.0/24"]\n\n[[socket]]\nlabel = "web"\nbind = "192.0.2.10:80"\n'


@pytest.mark.parametrize(
    ("extra", "culprit"),
    [
        (
            '\n[[dispatch]]\nprot = "udp"\nprefix = "192.0.2.0/24"\nport = 80\nlabel = "web"\n',
            "prot",
        ),
        ('\n[[dispatch]]\nprefix = "192.0.2.0/24"\nport = 65536\nlabel = "web"\n', "port"),
        (
            "\n[[socket]]\nlabel = 'e'\nbind = '192.0.2.11:0'\nlisten = false\nexpect_port = 70000\n",
            "expect_port",
        ),
        ("\n[[socket]]\nlabel = 'p'\nbind_prefix = '192.0.2.0/24:65536'\n", "bind_prefix"),
        ("\n[setup.x]\n", "x"),
    ],
    ids=["dispatch-unknown-key", "dispatch-port", "expect_port", "bind_prefix", "setup-key"],
)
def test_bad_keys_and_ports_are_refused_naming_them(extra: str, culprit: str) -> None:
    """Harm: `prot = "udp"` silently became a TCP binding; ports above 65535 were accepted."""
    text = (
        BASE + extra
        if not extra.startswith("\n[setup.")
        else BASE.replace("[setup]", "[setup]\nx = 1")
    )
    with pytest.raises(ScenarioError) as e:
        load_text(text, "bad.toml")
    assert culprit in str(e.value) and "bad.toml" in str(e.value)


@pytest.mark.parametrize(
    "table",
    [
        'links = [{ name = "d0", knid = "dummy" }]',
        'injectors = [{ name = "in1", client = ["198.18.1.0/24"] }]',
    ],
    ids=["link", "injector"],
)
def test_unknown_keys_in_setup_tables_are_refused(table: str) -> None:
    with pytest.raises(ScenarioError, match="unknown key"):
        load_text(BASE.replace("[setup]", f"[setup]\n{table}"), "bad.toml")


@pytest.mark.privileged
def test_the_prefix_optname_option_reaches_scenario_files(
    tmp_path: Path, run_pytest: Callable[..., Any]
) -> None:
    """Harm: with --bindlab-bindtoprefix-optname, scenario files still ran the emulation,
    so a patched kernel's real option was never tested by them."""
    (tmp_path / "p.bindlab.toml").write_text(
        '[setup]\nlocal_routes = ["192.0.2.0/24"]\n\n'
        '[[socket]]\nlabel = "pfx"\nbind_prefix = "192.0.2.0/24:80"\nexpect_errno = "OK"\n'
    )
    # an option number no kernel has: the real setsockopt must be tried, and refused
    p = run_pytest("-q", "--bindlab-bindtoprefix-optname=4095", "p.bindlab.toml", cwd=tmp_path)
    assert p.returncode == 1, p.stdout
    assert "ENOPROTOOPT" in p.stdout


# -- leaks -----------------------------------------------------------------------------------


def _fds_to(target: str) -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            n += os.readlink(f"/proc/self/fd/{fd}").startswith(target)
    return n


@pytest.mark.privileged
def test_closing_a_namespace_closes_its_tun_and_namespace_fds() -> None:
    """Harm: a TUN fd left open keeps its namespace (and every socket in it) alive forever."""
    tuns, nets = _fds_to("/dev/net/tun"), _fds_to("net:[")
    for _ in range(3):
        with Namespace() as ns:
            ns.add_injector("in1")
            ns.probe(["udp 198.18.0.1:1 -> 192.0.2.1:9"])
            assert _fds_to("/dev/net/tun") > tuns
    assert (_fds_to("/dev/net/tun"), _fds_to("net:[")) == (tuns, nets)


@pytest.mark.privileged
def test_feature_detection_leaves_no_namespace_fd() -> None:
    nets = _fds_to("net:[")
    features.detect.cache_clear()
    try:
        features.detect_all()
    finally:
        assert _fds_to("net:[") == nets


def test_namespace_fds_are_close_on_exec() -> None:
    """Harm: an inheritable namespace fd leaks into every program bindlab starts."""
    fd = current_netns_fd()
    try:
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    finally:
        os.close(fd)


@pytest.mark.privileged
def test_the_namespace_fd_itself_is_close_on_exec(netns: Namespace) -> None:
    assert fcntl.fcntl(netns.fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    # and a program started with plain subprocess does not hold it
    ino = os.fstat(netns.fd).st_ino
    out = subprocess.run(
        ["ls", "-l", "/proc/self/fd/"], capture_output=True, text=True, close_fds=False
    ).stdout
    assert f"net:[{ino}]" not in out


@pytest.mark.privileged
def test_the_plugin_reaps_dead_runs_at_session_start(tmp_path: Path) -> None:
    """Harm: named namespaces of SIGKILLed runs piled up under /run/netns for ever."""
    run_dir = tmp_path / "netns"  # a private run dir: other runs on this host reap /run/netns
    run_dir.mkdir()
    dead = run_dir / "bl-4194999-1-abcdef"  # an owner pid that cannot exist
    alive = run_dir / f"bl-{os.getpid()}-{process_start_time(os.getpid())}-abcdef"
    foreign = run_dir / "someone-elses"
    for f in (dead, alive, foreign):
        f.touch()
    (tmp_path / "test_r.py").write_text("def test_r(netns):\n    pass\n")
    env = {**os.environ, "BINDLAB_NETNS_DIR": str(run_dir)}
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-s", "test_r.py"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert p.returncode == 0, p.stdout
    assert f"reaped 1 namespace(s) left by dead runs: {dead.name}" in p.stdout
    assert sorted(os.listdir(run_dir)) == sorted([alive.name, foreign.name])


# -- feature detection both ways ---------------------------------------------------------------


@pytest.mark.privileged
def test_feature_detection_says_unsupported_when_the_probe_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Harm: a detector that always says "supported" turns every missing feature into
    failures (or, worse, passes) instead of skips with a reason."""
    bogus = features._sockopt(socket.IPPROTO_IP, 4095, 1, "SOL_IP, 4095")
    works = features._sockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1, "SOL_SOCKET, SO_REUSEADDR")
    monkeypatch.setitem(features.PROBES, "TEST_BOGUS", ("no such option", bogus))
    monkeypatch.setitem(features.PROBES, "TEST_WORKS", ("SO_REUSEADDR", works))
    features.detect.cache_clear()
    try:
        no, yes = features.detect("TEST_BOGUS"), features.detect("TEST_WORKS")
    finally:
        features.detect.cache_clear()
    assert (no.ok, yes.ok) == (False, True)
    assert "ENOPROTOOPT" in no.reason and no.reason.startswith("TEST_BOGUS")
    with pytest.raises(ConfigError, match="unknown feature"):
        features.detect("NO_SUCH_FEATURE")


def test_results_round_trip_keeps_every_field(tmp_path: Path) -> None:
    r = _results(t=Observed("failed", "why", {FLOW: "a"}, {FLOW: "b"}, {"s": "EPERM"}))
    r.dump(str(tmp_path / "r.json"))
    back = Results.load(str(tmp_path / "r.json"))
    assert back.tests == r.tests and json.loads((tmp_path / "r.json").read_text())["kernel"]
