"""The bindlab pytest plugin: the ``netns`` fixture, the ``requires`` marker, host safety.

Registered through the ``pytest11`` entry point, so any project that installs bindlab gets
the fixtures. It is the only pytest11 module; the files a run writes are plugin objects of
:mod:`bindlab.pytest_outputs` that it registers.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from bindlab import families, hostguard, preflight, process, reaper
from bindlab.families import FAMILIES
from bindlab.pytest_outputs import (
    JUnitProperties,
    PcapWriter,
    ResultsRecorder,
)
from bindlab.results import (
    EVIDENCE_PROPERTY,
    EXPECTED_PROPERTY,
    PACKETS_PROPERTY,
    PROPERTIES,
    VERDICTS_PROPERTY,
)

# Imported when first needed, so that a pytest run pays for what it uses (bench_case.py):
# the Namespace stack with the first netns fixture, features with the first `requires`
# marker, the scenario loader and runner with the first *.toml file.
if TYPE_CHECKING:
    from bindlab.namespace import Namespace
    from bindlab.scenario.collect import ScenarioFile

PRIVILEGED_FIXTURES = {"netns", "netns_factory"}
_substitutes: pytest.StashKey[Counter[str]] = pytest.StashKey()
_guard: pytest.StashKey[hostguard.Guard] = pytest.StashKey()
_PREFLIGHT = "bindlab_preflight"  # the key of an xdist worker's output carrying the sentence
# The packets of a netns test's flows, for --bindlab-pcap (scenario items keep their own).
_packets: pytest.StashKey[list[Any]] = pytest.StashKey()
_pcaps: pytest.StashKey[PcapWriter] = pytest.StashKey()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("bindlab", "bindlab: socket dispatch in disposable namespaces")
    group.addoption(
        "--bindlab-no-hostguard",
        action="store_true",
        help="do not fail the run when the host namespace changed during it",
    )
    group.addoption(
        "--bindlab-bindtoprefix-optname",
        "--bindtoprefix-optname",  # the old spelling, deprecated: kept for one release
        dest="bindlab_bindtoprefix_optname",
        type=int,
        default=None,
        metavar="N",
        help="run SO_BINDTOPREFIX scenarios (Python and scenario files) with "
        "setsockopt(SOL_SOCKET, N) of a patched kernel instead of the sk_lookup emulation "
        "(--bindtoprefix-optname is the deprecated spelling)",
    )
    group.addoption(
        "--bindlab-evidence",
        action="store_true",
        help="record the kernel's evidence (BPF tracepoints) beside every verdict of the run: "
        "shown in failures and results files; a verdict the evidence contradicts fails the test",
    )
    group.addoption(
        "--bindlab-pcap",
        metavar="DIR",
        help="write the packets each test injected and got back to DIR/<test id>.pcap "
        "(raw IP link type; DIR/index.json maps test ids to files)",
    )
    group.addoption(
        "--bindlab-results",
        metavar="PATH",
        help="write every test's outcome and observed verdicts, keyed by kernel, to PATH (JSON)",
    )
    parser.addini(
        "bindlab_scenarios",
        type="paths",
        default=[],
        help="files or directories whose *.toml files are bindlab scenario files "
        "(besides files named *.bindlab.toml and files given on the command line)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "requires(*features): skip unless the kernel has them, with the precise reason; "
        'e.g. @pytest.mark.requires("IP_LOCAL_PORT_RANGE"). `bindlab features` lists names.',
    )
    config.addinivalue_line(
        "markers",
        "privileged: needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) though it uses no netns fixture",
    )
    config.addinivalue_line(
        "markers", "scale: a long scale experiment, outside the default run (-m scale to run it)"
    )
    config.addinivalue_line(
        "markers",
        "families(*names): run a test using the `family` fixture only as these variants "
        '(ipv4, ipv6, v4mapped; default all three); e.g. @pytest.mark.families("ipv4", "ipv6")',
    )
    config.addinivalue_line(
        "markers",
        "stress: a race hunted by repetition (thousands of rounds), outside the default run "
        "(-m stress to run it); e.g. @pytest.mark.stress",
    )
    if any(a.startswith("--bindtoprefix-optname") for a in config.invocation_params.args):
        config.issue_config_time_warning(
            pytest.PytestDeprecationWarning(
                "--bindtoprefix-optname is deprecated: use --bindlab-bindtoprefix-optname"
            ),
            stacklevel=2,
        )
    config.stash[_substitutes] = Counter()
    path = config.getoption("bindlab_results", None)
    if path:
        config.pluginmanager.register(ResultsRecorder(path), "bindlab-results")
    if config.getoption("xmlpath", None):  # --junitxml: bindlab's facts as suite properties
        config.pluginmanager.register(JUnitProperties(config), "bindlab-junit")
    pcap_dir = config.getoption("bindlab_pcap", None)
    if pcap_dir:
        config.stash[_pcaps] = PcapWriter(pcap_dir)


def _parametrized_directly(metafunc: pytest.Metafunc, name: str) -> bool:
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0] if mark.args else mark.kwargs.get("argnames", ())
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",")]
        if name in names:
            return True
    return False


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test using the ``family`` fixture runs once per variant: ``[ipv4]``, ``[ipv6]``,
    ``[v4mapped]`` (or those its ``families`` marker names)."""
    if "family" not in metafunc.fixturenames or _parametrized_directly(metafunc, "family"):
        return
    mark = metafunc.definition.get_closest_marker("families")
    names = list(mark.args) if mark is not None and mark.args else list(FAMILIES)
    metafunc.parametrize("family", [families.family(n) for n in names], ids=names, indirect=True)


@pytest.fixture
def family(request: pytest.FixtureRequest) -> families.Family:
    """The address-family variant this test runs as (one of ``ipv4``, ``ipv6``,
    ``v4mapped``; the test id names it): write addresses once in IPv4 form and map them.

    Example::

        def test_web(netns, family):
            netns.add_local_route(family.prefix("192.0.2.0/24"))
            netns.tcp_listener(family.endpoint("192.0.2.1:80"), label="web")
            assert list(netns.probe([family.flow("tcp 198.18.0.1:9 -> 192.0.2.1:80")]).values()) == ["web"]
    """
    return request.param


def _needs_privilege(item: pytest.Item) -> bool:
    names = set(getattr(item, "fixturenames", ()))
    return bool(names & PRIVILEGED_FIXTURES) or item.get_closest_marker("privileged") is not None


OPT_IN_MARKERS = ("scale", "stress")  # left out of a run unless ``-m`` names them


def _deselect_opt_in(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave ``scale`` and ``stress`` tests out unless the ``-m`` expression names them."""
    markexpr = config.getoption("markexpr") or ""
    for marker in OPT_IN_MARKERS:
        if marker in markexpr:
            continue
        dropped = [i for i in items if i.get_closest_marker(marker) is not None]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = [i for i in items if i.get_closest_marker(marker) is None]


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    _deselect_opt_in(config, items)
    if not any(_needs_privilege(i) for i in items):
        return
    why = preflight.check().sentence
    if why is not None:
        if _xdist_worker(config):  # the controller stops the whole run with it, once
            config.workeroutput[_PREFLIGHT] = why  # type: ignore[attr-defined]
        pytest.exit(why, returncode=pytest.ExitCode.USAGE_ERROR)
    gone = reaper.reap()
    if gone:
        print(f"# bindlab: reaped {len(gone)} namespace(s) left by dead runs: {' '.join(gone)}")
    killed = process.reap()
    if killed:
        print(
            f"# bindlab: killed {len(killed)} program group(s) left by dead runs: {' '.join(killed)}"
        )


def _xdist_worker(config: pytest.Config) -> bool:
    """True in a pytest-xdist worker (the controller and plain runs hold the host guard)."""
    return hasattr(config, "workerinput")


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """The host guard's one snapshot: in the controller under xdist, in every plain run."""
    config = session.config
    if not _xdist_worker(config) and not config.getoption("bindlab_no_hostguard"):
        config.stash[_guard] = hostguard.Guard()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """An xdist worker stopped for want of privileges: stop the run with its one sentence."""
    why = getattr(node, "workeroutput", {}).get(_PREFLIGHT)
    if why:
        pytest.exit(why, returncode=pytest.ExitCode.USAGE_ERROR)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodeready(node: Any) -> None:
    """An xdist worker started: its process (the controller's child) is part of this run."""
    guard = node.config.stash.get(_guard, None)
    if guard is not None:
        for pid in reaper.children():
            guard.add_owner(reaper.owner_id(pid))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Move bindlab's properties off ``user_properties``: pytest's JUnit writer would put
    them inside ``<testcase>``, which the xunit2 schema forbids (they go on the test suite,
    as JSON, see :class:`JUnitProperties`)."""
    report = yield
    mine = [(k, v) for k, v in report.user_properties if k in PROPERTIES]
    if mine:
        report.user_properties = [(k, v) for k, v in report.user_properties if k not in PROPERTIES]
        report.bindlab_properties = mine
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    """After the fixtures are gone, write the test's pcap (``--bindlab-pcap``)."""
    try:
        return (yield)
    finally:
        writer = item.config.stash.get(_pcaps, None)
        packets = item.stash.get(_packets, None)
        if packets is None:  # a scenario file's row: its own flow's packets, if recorded
            packets = getattr(item, "packets", None)
        if writer is not None and packets is not None:
            writer.write(item.nodeid, packets)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The host guard's one comparison: a change fails the run (exit 1) and is named."""
    guard = session.config.stash.get(_guard, None)
    if guard is None:
        return
    changes = guard.finish()
    tr = session.config.pluginmanager.get_plugin("terminalreporter")
    if changes:
        title = "bindlab: the HOST namespace changed during this run"
        if tr is not None:
            tr.write_line("")  # xdist's progress line may not have ended
            tr.write_sep("!", title, red=True, bold=True)
            for line in changes:
                tr.write_line(line, red=True)
        else:
            print("\n".join([title + ":", *changes]), file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    elif tr is not None and tr.verbosity >= 0:
        tr.write_line(
            f"bindlab: host guard: unchanged ({guard.describe()}; {guard.cost_ms:.0f} ms)"
        )
    if tr is not None:
        for line in guard.notes:
            tr.write_line(f"bindlab: host guard: note: {line}")


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> ScenarioFile | None:
    """Scenario files as tests (:mod:`bindlab.scenario.collect` says which ``*.toml``)."""
    if file_path.suffix != ".toml":
        return None
    from bindlab.scenario.collect import pytest_collect_file as collect_scenario

    return collect_scenario(file_path, parent)


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("requires"):
        from bindlab import features

        for name in mark.args:
            support = features.detect(name)
            if not support.ok:  # reported at the test's location, not this hook's
                raise pytest.skip.Exception(support.reason, _use_item_location=True)


def pytest_report_header(config: pytest.Config) -> str:
    return f"bindlab: kernel {os.uname().release}"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    subs = config.stash.get(_substitutes, Counter())
    for what, n in sorted(subs.items()):
        terminalreporter.write_line(f"bindlab: link stand-in used {n}x: {what}")


def pytest_assertrepr_compare(config: pytest.Config, op: str, left: Any, right: Any) -> Any:
    """``assert ns.probe(rows) == rows`` with evidence on: each differing flow's evidence."""
    probe = sys.modules.get("bindlab.probe")  # not imported: no Verdicts exist
    if probe is None:
        return None
    verdicts = probe.Verdicts
    got = left if isinstance(left, verdicts) else right if isinstance(right, verdicts) else None
    want = right if got is left else left
    if op != "==" or got is None or not isinstance(want, dict):
        return None
    lines = [f"verdicts differ from what was expected ({len(got)} flows):"]
    for flow, verdict in got.items():
        if want.get(flow, verdict) != verdict:
            lines.append(f"{flow}: expected {want[flow]!r}, got {verdict!r}")
            lines.append(f"  kernel evidence: {got.evidence.get(flow, '(none)')}")
    return lines if len(lines) > 1 else None


def _evidence_of(ns: Namespace) -> list[tuple[Any, str, Any]]:
    if not ns.evidence:
        return []
    from bindlab.bpf.why import entries

    return list(entries(ns))


def _start(request: pytest.FixtureRequest, ns: Namespace) -> None:
    """With ``--bindlab-pcap``, keep every probed flow's packets from the start."""
    if request.config.stash.get(_pcaps, None) is not None:
        from bindlab import probe

        probe.record_packets(ns)
        request.node.stash.setdefault(_packets, [])


def _record(request: pytest.FixtureRequest, ns: Namespace) -> list[str]:
    """Keep what the namespace saw: link stand-ins for the summary, verdicts (and evidence),
    the expected verdicts of probed ``{flow: verdict}`` dicts and the packets of their
    mismatches for results, every packet for pcaps; return the verdicts the kernel's
    evidence contradicts."""
    config = request.config
    props = request.node.user_properties
    if ns.observations:
        props.append((VERDICTS_PROPERTY, list(ns.observations)))
    contradicted = []
    if entries := _evidence_of(ns):
        from bindlab.bpf.why import disagreement

        request.node.user_properties.append(
            (EVIDENCE_PROPERTY, [(str(f), str(e)) for f, _, e in entries])
        )
        for flow, verdict, ev in entries:
            why = disagreement(verdict, ev)
            if why is not None:
                contradicted.append(f"{flow}: {why}")
    from bindlab import probe
    from bindlab.packets import summaries

    expected = probe.expectations(ns)
    if expected:
        props.append((EXPECTED_PROPERTY, dict(expected)))
    bad = probe.mismatched_packets(ns)
    if bad:
        props.append(
            (PACKETS_PROPERTY, {f: summaries(t) or "(no packets)" for f, t in bad.items()})
        )
    if _packets in request.node.stash:
        for _, trace in probe.record_packets(ns):
            request.node.stash[_packets].extend(trace)
    for link in ns.links.values():
        if link.substitute:
            config.stash[_substitutes][
                f"{link.requested_kind} -> {link.kind} ({link.substitute})"
            ] += 1
    return contradicted


def _contradicted(found: list[str]) -> None:
    if found:
        pytest.fail("bindlab: the kernel's evidence contradicts verdicts:\n" + "\n".join(found))


@pytest.fixture
def netns(request: pytest.FixtureRequest) -> Iterator[Namespace]:
    """A fresh anonymous network namespace with ``lo`` up, closed after the test.

    Example::

        def test_web(netns):
            netns.add_local_route("192.0.2.0/24")
            netns.tcp_listener("192.0.2.1:80", label="web")
            assert netns.probe(["tcp 198.18.0.1:9 -> 192.0.2.1:80"]) == {...: "web"}
    """
    from bindlab.namespace import Namespace

    ns = Namespace()
    ns.evidence = request.config.getoption("bindlab_evidence", False)
    found: list[str] = []
    _start(request, ns)
    try:
        yield ns
    finally:
        found = _record(request, ns)
        ns.close()
    _contradicted(found)


@pytest.fixture
def netns_factory(request: pytest.FixtureRequest) -> Iterator[Callable[..., Namespace]]:
    """A function making more namespaces (``named=True`` for a ``bl-`` name), all closed
    after the test.

    Example::

        def test_two(netns_factory):
            a, b = netns_factory(), netns_factory(named=True)
            b.run(["ip", "-br", "link"])
    """
    from bindlab.namespace import Namespace

    made: list[Namespace] = []
    evidence = request.config.getoption("bindlab_evidence", False)

    def make(**kw: Any) -> Namespace:
        ns = Namespace(**kw)
        ns.evidence = evidence
        made.append(ns)
        _start(request, ns)
        return ns

    found: list[str] = []
    try:
        yield make
    finally:
        for ns in reversed(made):
            found += _record(request, ns)
            ns.close()
    _contradicted(found)
