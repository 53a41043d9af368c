"""Run a :class:`~bindlab.scenario.load.Scenario` in a fresh namespace and return its rows.

One namespace per scenario: setup (links, addresses, local routes, injectors, sysctls), then
the sockets in file order (each socket's steps: options, bind or prefix bind, listen,
connect), then the sk_lookup dispatch bindings, then every expected flow probed in one go.
Each expectation becomes a :class:`Row` (expected, observed, status); a socket whose steps
fail where the file expects no failure is a setup error of the whole scenario.
"""

from __future__ import annotations

import contextlib
import errno
import resource
import select
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

from bindlab import features
from bindlab.errors import ConfigError, HarnessError, SockOptError, errname
from bindlab.namespace import Namespace
from bindlab.packets import TraceEntry, summaries
from bindlab.results import ERROR, FAIL, PASS, SKIP, Row, ScenarioResult
from bindlab.scenario import programs
from bindlab.scenario.load import OK, Scenario, SocketSpec
from bindlab.sockets import make_socket

DISPATCH_FEATURES = ("BPF_SK_LOOKUP", "CLANG_BPF")
CONNECT_WAIT = 0.2  # s a non-blocking connect may take to complete (loopback: microseconds)
Progress = Callable[[int, int], None]


def expected_rows(sc: Scenario) -> list[Row]:
    """The scenario's rows before a run: checked sockets first (file order), then flows."""
    rows = [Row("step", s.step, s.expected, line=s.line) for s in sc.sockets if s.checked]
    return rows + [Row("flow", str(e.flow), e.expected, line=e.line) for e in sc.expect]


def skip_reason(sc: Scenario) -> str | None:
    """Why ``sc`` cannot run on this kernel/machine (a precise sentence), or None."""
    for name in sc.requires:
        s = features.detect(name)
        if not s.ok:
            return s.reason
    if (why := programs.missing(sc)) is not None:
        return why
    if sc.needs_dispatcher:
        for name in DISPATCH_FEATURES:
            s = features.detect(name)
            if not s.ok:
                return f"sk_lookup dispatcher not available: {s.reason}"
        try:
            import bindlab.bpf  # noqa: F401
        except ImportError as e:
            return f"sk_lookup dispatcher not available: {e}"
    return None


def _connect(sock: socket.socket, addr: tuple[Any, ...]) -> None:
    """connect() without hanging on a peer that never answers: in progress counts as done."""
    sock.setblocking(False)
    try:
        sock.connect(addr)
    except BlockingIOError:
        select.select([], [sock], [], CONNECT_WAIT)
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err not in (0, errno.EINPROGRESS):
            raise OSError(err, f"connect: {errno.errorcode.get(err, err)}") from None
    finally:
        sock.setblocking(True)


def make(
    ns: Namespace,
    spec: SocketSpec,
    prefix_optname: int | None = None,
    made: dict[str, socket.socket] | None = None,
) -> tuple[socket.socket | None, str, str]:
    """Make one scenario socket: (socket or None, observed outcome, which call failed).

    ``bind_prefix`` sockets use the sk_lookup emulation of SO_BINDTOPREFIX, or with
    ``prefix_optname`` the real option of a patched kernel.

    The outcome is ``OK``, ``port N`` (with ``expect_port``) or the errno name of the first
    call that failed (that socket is then closed and counts in no verdict).
    """
    opts = dict(spec.options)
    sockaddr = spec.bind_sockaddr
    if spec.bind_port_of is not None and sockaddr is not None:
        other = (made or {}).get(spec.bind_port_of)
        if other is None:
            raise HarnessError(
                f"socket {spec.label!r}: bind_port_of {spec.bind_port_of!r}, which was not made"
            )
        sockaddr = (sockaddr[0], other.getsockname()[1], *sockaddr[2:])
    if isinstance(opts.get("bindtoifindex"), str):
        opts["bindtoifindex"] = ns.link_index(opts["bindtoifindex"])
    try:
        sock = make_socket(ns, spec.proto, spec.family, **opts)
    except SockOptError as e:
        return None, errname(e), f"setsockopt({e.option}) -> {errname(e)}"
    call = ""
    try:
        ns.label(sock, spec.label)
        if sockaddr is not None:
            call = f"bind({spec.bind})"
            sock.bind(sockaddr)
        if spec.bind_prefix is not None:
            from bindlab.bpf import bind_to_prefix

            call = f"bind_to_prefix({spec.bind_prefix[0]}, {spec.bind_prefix[1]})"
            bind_to_prefix(ns, sock, *spec.bind_prefix, optname=prefix_optname)
        if spec.listen:
            call = "listen()"
            sock.listen(4096)
        if spec.connect_sockaddr is not None:
            call = f"connect({spec.connect})"
            _connect(sock, spec.connect_sockaddr)
    except OSError as e:
        sock.close()
        return None, errname(e), f"{call} -> {errname(e)}"
    return sock, f"port {sock.getsockname()[1]}" if spec.expect_port else OK, ""


def _judge(spec: SocketSpec, observed: str) -> bool:
    if spec.expect_port is None:
        return observed == spec.expected
    lo, hi = spec.expect_port
    return observed.startswith("port ") and lo <= int(observed[5:]) <= hi


def _set_up(ns: Namespace, sc: Scenario) -> None:
    """Apply ``sc.setup``; a refusal names the step (``setup.local_routes[1] ...: ...``)."""
    ns.injector  # noqa: B018 - its default routes make outside peers reachable for connect()
    u = sc.setup
    steps: list[tuple[str, Callable[[], Any]]] = [
        *((f"setup.links[{i}] {x.name}", lambda x=x: ns.add_link(x.name, x.kind, x.addrs)) for i, x in enumerate(u.links)),
        *((f"setup.addrs[{i}] {x.cidr} dev {x.dev}", lambda x=x: ns.add_addr(x.dev, x.cidr)) for i, x in enumerate(u.addrs)),
        *((f"setup.injectors[{i}] {x.name}", lambda x=x: ns.add_injector(x.name, clients=x.clients)) for i, x in enumerate(u.injectors)),
        *((f"setup.local_routes[{i}] {x.prefix} dev {x.dev}", lambda x=x: ns.add_local_route(x.prefix, x.dev)) for i, x in enumerate(u.local_routes)),
        *((f"setup.sysctls {k} = {v}", lambda k=k, v=v: ns.sysctl(k, v)) for k, v in u.sysctls),
    ]  # fmt: skip
    for what, fn in steps:
        try:
            fn()
        except Exception as e:
            raise HarnessError(f"{sc.path}: {what}: {type(e).__name__}: {e}") from e


@contextlib.contextmanager
def prepared(
    sc: Scenario, prefix_optname: int | None = None
) -> Iterator[tuple[Namespace, dict[str, tuple[str, str]]]]:
    """A namespace set up as ``sc`` says, its sockets made and dispatch bound.

    Yields ``(ns, steps)``: ``steps`` maps each checked socket's step name to (observed,
    failing call). An unchecked socket that fails raises HarnessError naming it.
    """
    with Namespace() as ns:
        _set_up(ns, sc)
        programs.start(ns, sc)
        made: dict[str, socket.socket] = {}
        steps: dict[str, tuple[str, str]] = {}
        for i, spec in enumerate(sc.sockets):
            try:
                sock, observed, call = make(ns, spec, prefix_optname, made)
            except (ConfigError, OSError) as e:  # not the kernel's answer to a step: the file's
                raise HarnessError(
                    f"{sc.path}:{spec.line}: socket[{i}] {spec.label!r}: {_why(sc, e)}"
                ) from e
            if spec.checked:
                steps[spec.step] = (observed, call)
            elif sock is None:
                raise HarnessError(
                    f"{sc.path}:{spec.line}: socket[{i}] {spec.label!r}: {call}, which the file "
                    f"does not expect (add expect_errno = {observed!r} if it should)"
                )
            if sock is not None:
                made[spec.label] = sock
        if sc.dispatch:
            from bindlab.bpf import sk_lookup

            d = sk_lookup(ns)
            for b in sc.dispatch:
                if b.label not in made:
                    raise HarnessError(f"dispatch to {b.label!r}: that socket failed to be made")
                d.bind(b.proto, b.prefix, b.port, made[b.label])
        yield ns, steps


def _contradiction(row: Row, ev: Any) -> str:
    """With evidence on, a verdict the kernel's evidence contradicts fails its row."""
    from bindlab.bpf.why import disagreement

    why = disagreement(row.observed, ev)
    if why is None:
        return row.detail
    row.status = FAIL
    return f"evidence contradicts the verdict: {why}"


def _why(sc: Scenario, e: BaseException) -> str:
    """``e`` as one line; running out of file descriptors says which limit and how many."""
    if isinstance(e, OSError) and e.errno in (errno.EMFILE, errno.ENFILE):
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return (
            f"{errname(e)}: out of file descriptors: {len(sc.sockets)} sockets plus the probe's "
            f"exceed RLIMIT_NOFILE = {soft} (raise it with `ulimit -n`, or split the file)"
        )
    text = " | ".join(line.strip() for line in str(e).splitlines() if line.strip())
    return f"{type(e).__name__}: {text}"


def _packets(trace: list[TraceEntry]) -> str:
    """The packets of one probe, one scapy summary a line."""
    return summaries(trace) or "(no packets)"


def run(
    sc: Scenario,
    *,
    progress: Progress | None = None,
    chunk: int = 2048,
    prefix_optname: int | None = None,
    evidence: bool = False,
    packets: dict[str, list[TraceEntry]] | None = None,
) -> ScenarioResult:
    """Run ``sc`` and return its rows, filled: skipped, errored, passed or failed.

    ``evidence`` (or the file's ``evidence = true``): each flow row carries the kernel's
    evidence for its verdict (:mod:`bindlab.bpf.why`).

    ``prefix_optname``: run ``bind_prefix`` sockets with a patched kernel's real
    SO_BINDTOPREFIX (this option number) instead of the sk_lookup emulation. ``packets``:
    record every flow's packets there, by flow (for pcaps; off by default, it costs)."""
    t0 = time.monotonic()
    rows = expected_rows(sc)
    result = ScenarioResult(sc.name, sc.path, rows, sc.claim, sc.source, sc.prefixes)
    reason = skip_reason(sc)
    if reason is not None:
        for r in rows:
            r.status, r.detail = SKIP, reason
        return result
    specs = {s.step: s for s in sc.sockets}
    try:
        with prepared(sc, prefix_optname) as (ns, steps):
            for r in rows[: len(steps)]:
                r.observed, r.detail = steps[r.name]
                r.status = PASS if _judge(specs[r.name], r.observed) else FAIL
            flow_rows = rows[len(steps) :]
            verdicts: dict[Any, str] = {}
            why: dict[Any, Any] = {}
            on = evidence or sc.evidence
            flows = [e.flow for e in sc.expect]
            trace: dict[Any, list[TraceEntry]] | None = {} if packets is not None else None
            for i in range(0, len(flows), chunk):
                verdicts.update(
                    ns.probe(flows[i : i + chunk], trace=trace, evidence=why if on else False)
                )
                if progress is not None:
                    progress(min(i + chunk, len(flows)), len(flows))
            if packets is not None and trace is not None:
                packets.update((str(f), t) for f, t in trace.items())
            failed = []
            for r, e in zip(flow_rows, sc.expect, strict=True):
                r.observed = verdicts[e.flow]
                r.status = PASS if r.observed in e.verdicts else FAIL
                if why:
                    r.evidence = str(why[e.flow])
                    r.detail = _contradiction(r, why[e.flow])
                if r.status == FAIL:
                    failed.append((r, e.flow))
            if failed:  # probe the failures again, recording their packets for the report
                again: dict[Any, list[TraceEntry]] = {}
                ns.probe([f for _, f in failed], trace=again)
                for r, f in failed:
                    held = programs.describe(ns, r.observed)  # a real program's socket
                    r.detail = (f"{r.observed}: {held}\n" if held else "") + _packets(again[f])
    except Exception as e:  # setup failed (a kernel refusal, a netlink error): every row errs
        for r in rows:
            if not r.status:
                r.status, r.detail = ERROR, _why(sc, e)
    result.seconds = time.monotonic() - t0
    return result
