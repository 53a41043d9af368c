"""The ``bindlab`` command: run scenario files and print their dispatch matrix.

Subcommands: ``run`` (the main job), ``rfc`` (the shipped patch examples), ``report``
(render a results file), ``explain`` (one flow's verdict and packets), ``features``,
``reap``, and ``vm`` / ``diff`` (delegated to :mod:`bindlab.vm.boot` and :mod:`bindlab.diff`).
Imports are lazy so that ``bindlab --help`` stays quick. Exit status: 0 every row as
expected, 1 a row failed or errored, 2 bad input or no privilege, 4 every row skipped
(kselftest's KSFT_SKIP; also ``-f ktap`` without privilege, every row skipped saying why).
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bindlab import __version__

if TYPE_CHECKING:
    from bindlab.results import ScenarioResult
    from bindlab.scenario.load import Scenario

FORMATS = ("table", "md", "json", "html", "ktap", "junit", "kcidb")  # bindlab.report.FORMATS, kcidb
DELEGATED = {"vm": "bindlab.vm.boot", "diff": "bindlab.diff"}
PROGRESS_MIN_FLOWS = 1000  # runs with fewer flows print no progress
USAGE, FAILED = 2, 1


RFC_DIR = Path(__file__).resolve().parent / "data" / "rfc"  # package data: the patch examples


def configured_scenarios(start: Path | None = None) -> list[str] | None:
    """The ``bindlab_scenarios`` paths of the nearest ``pyproject.toml`` (its
    ``[tool.pytest.ini_options]``), relative to the current directory; None if none is set."""
    import tomllib

    here = (start or Path()).resolve()
    for d in (here, *here.parents):
        f = d / "pyproject.toml"
        if f.is_file():
            try:
                ini = tomllib.loads(f.read_text()).get("tool", {}).get("pytest", {})
            except (OSError, tomllib.TOMLDecodeError):
                return None
            paths = ini.get("ini_options", {}).get("bindlab_scenarios")
            if isinstance(paths, str):
                paths = paths.split()
            if not paths:
                return None
            return [os.path.relpath(d / p) for p in paths]
    return None


def find(paths: Sequence[str]) -> list[Path]:
    """Scenario files named by ``paths``: files as given, directories searched for ``*.toml``."""
    from bindlab.scenario.load import ScenarioError

    out: list[Path] = []
    for p in map(Path, paths):
        try:
            if p.is_dir():
                out += sorted(p.rglob("*.toml"))
            elif p.is_file():
                out.append(p)
            else:
                raise ScenarioError(f"{p}: no such file or directory")
        except OSError as e:
            raise ScenarioError(f"{p}: cannot read: {e.strerror}") from None
    if not out:
        raise ScenarioError(f"no scenario files (*.toml) in {' '.join(paths)}")
    return out


def _err(msg: str) -> None:
    print(f"bindlab: {msg}", file=sys.stderr)


def _capable(quiet: bool = False) -> bool:
    from bindlab.preflight import check

    why = check().sentence
    if why is not None and not quiet:
        _err(why)
    return why is None


def _kernel() -> dict[str, Any]:
    u = os.uname()
    return {"release": u.release, "version": u.version, "machine": u.machine}


def _load_all(paths: Sequence[str]) -> list[Scenario] | None:
    """Every scenario file (each of its family variants), or None (each problem printed)
    if any fails to load."""
    from bindlab.scenario.load import ScenarioError, load
    from bindlab.scenario.variants import variants

    try:
        files = find(paths)
    except ScenarioError as e:
        _err(str(e))
        return None
    loaded, bad = [], 0
    for f in files:
        try:
            loaded.extend(variants(load(f)))
        except ScenarioError as e:
            _err(str(e))
            bad += 1
    return None if bad else loaded


def run_all(
    scenarios: list[Scenario],
    quiet: bool = False,
    prefix_optname: int | None = None,
    evidence: bool = False,
) -> list[ScenarioResult]:
    """Run each scenario in its own namespace; progress on stderr for runs of many flows."""
    from bindlab.scenario.run import run

    total = sum(len(s.expect) for s in scenarios)
    show = not quiet and (total >= PROGRESS_MIN_FLOWS or sys.stderr.isatty())
    results = []
    for i, sc in enumerate(scenarios, 1):
        if show:
            print(f"# [{i}/{len(scenarios)}] {sc.path}: {len(sc.expect)} flows", file=sys.stderr)

        def progress(done: int, n: int, sc: Scenario = sc) -> None:
            if show and n >= PROGRESS_MIN_FLOWS:
                print(f"#   {sc.name}: {done}/{n} flows probed", file=sys.stderr)

        results.append(run(sc, progress=progress, prefix_optname=prefix_optname, evidence=evidence))
    return results


def _emit(
    args: argparse.Namespace,
    results: list[ScenarioResult],
    kernel: dict[str, Any],
    text: str | None = None,
) -> int:
    from bindlab import report

    if text is None and args.format == "kcidb":  # KernelCI's schema: bindlab.kcidb
        from bindlab import kcidb

        try:
            text = kcidb.dumps(kcidb.from_scenarios(results, kernel))
        except ValueError as e:  # a malformed $BINDLAB_KCIDB_ORIGIN
            _err(str(e))
            return USAGE
    if text is None:
        text = report.render(args.format, results, kernel)
    if args.output:
        Path(args.output).write_text(text)
        print(f"# wrote {args.output}: {report.summary(results)}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return report.exit_status(results)


def _unprivileged(args: argparse.Namespace, scenarios: list[Scenario]) -> int:
    """No privilege: exit 2, or with ``-f ktap`` every row skipped saying why and exit 4
    (kselftest's KSFT_SKIP, what kernel CI expects of a test that cannot run here)."""
    from bindlab.preflight import check
    from bindlab.results import SKIP, ScenarioResult
    from bindlab.scenario.run import expected_rows

    why = check().sentence or "no privilege"
    _err(why)
    if args.format != "ktap":
        return USAGE
    results = []
    for sc in scenarios:
        rows = expected_rows(sc)
        for r in rows:
            r.status, r.detail = SKIP, why
        results.append(ScenarioResult(sc.name, sc.path, rows, sc.claim, sc.source, sc.prefixes))
    return _emit(args, results, _kernel())


def cmd_run(args: argparse.Namespace) -> int:
    paths = args.paths or configured_scenarios()
    if not paths:
        print(
            "bindlab run: no scenario files given: pass FILES|DIRS, or set "
            "bindlab_scenarios in pyproject.toml's [tool.pytest.ini_options]",
            file=sys.stderr,
        )
        return USAGE
    scenarios = _load_all(paths)
    if scenarios is None:
        return USAGE
    return _run_and_emit(args, scenarios)


def _run_and_emit(args: argparse.Namespace, scenarios: list[Scenario]) -> int:
    """Run ``scenarios`` (or, without privileges, report them skipped) and print the report."""
    if not _capable(quiet=True):
        return _unprivileged(args, scenarios)
    return _emit(
        args,
        run_all(scenarios, args.quiet, args.bindlab_bindtoprefix_optname, args.evidence),
        _kernel(),
    )


def cmd_rfc(args: argparse.Namespace) -> int:
    scenarios = _load_all([str(args.dir or RFC_DIR)])
    if scenarios is None:
        return USAGE
    if args.list:
        for sc in scenarios:
            print(
                f"{sc.path}\n    claim:  {sc.claim or '(none)'}\n    source: {sc.source or '(none)'}"
            )
        return 0
    return _run_and_emit(args, scenarios)


def cmd_report(args: argparse.Namespace) -> int:
    from bindlab import report
    from bindlab.results import Results

    try:
        res = Results.load(args.results)
    except (OSError, ValueError) as e:
        _err(f"cannot read results file: {e}")
        return USAGE
    text = None
    if args.format == "kcidb":  # a test per pytest test, not per row: bindlab.kcidb
        from bindlab import kcidb

        try:
            text = kcidb.dumps(kcidb.from_results(res))
        except ValueError as e:  # a malformed $BINDLAB_KCIDB_ORIGIN
            _err(str(e))
            return USAGE
    return _emit(args, report.from_results(res), res.kernel, text)


def cmd_explain(args: argparse.Namespace) -> int:
    from bindlab import Flow, FlowSyntaxError
    from bindlab.packets import dissect, write_pcap
    from bindlab.scenario import programs
    from bindlab.scenario.load import ScenarioError, load
    from bindlab.scenario.run import prepared, skip_reason

    try:
        sc = load(args.file)
        flow = Flow.parse(args.flow)
    except (ScenarioError, FlowSyntaxError, ValueError) as e:
        _err(str(e))
        return USAGE
    injectors = {i.name for i in sc.setup.injectors}
    if flow.dev is not None and flow.dev not in injectors:
        _err(
            f"flow {flow}: {sc.path} has no injector {flow.dev!r} (it has: {', '.join(sorted(injectors)) or 'none'})"
        )
        return USAGE
    if args.pcap and not os.access(os.path.dirname(os.path.abspath(args.pcap)), os.W_OK):
        _err(f"--pcap {args.pcap}: cannot write there (no such directory, or not writable)")
        return USAGE
    if not _capable():
        return USAGE
    reason = skip_reason(sc)
    if reason is not None:
        _err(f"{sc.path} cannot run here: {reason}")
        return USAGE
    expected = next((e for e in sc.expect if e.flow == flow), None)
    trace: dict[Any, list[Any]] = {}
    evidence: dict[Any, Any] = {}
    try:
        with prepared(sc) as (ns, steps):
            verdict = ns.probe([flow], trace=trace, evidence=evidence)[flow]
            held = programs.describe(ns, verdict)
            started = [f"{p.label}: pid {p.pid}, {shlex.join(p.process.argv)}" for p in ns.programs]
    except Exception as e:  # a setup refusal: name it, no traceback
        _err(f"{sc.path}: setup failed: {type(e).__name__}: {e}")
        return FAILED
    print(f"# scenario {sc.name} ({sc.path})")
    for step, (observed, call) in steps.items():
        print(f"# socket {step}: {observed}{f' ({call})' if call else ''}")
    for line in started:
        print(f"# program {line}")
    print(f"flow:     {flow}")
    if expected is not None:
        print(f"expected: {expected.expected}   ({sc.path}:{expected.line})")
    print(f"observed: {verdict}")
    if held:
        print(f"socket:   {held}")
    _explain_evidence(evidence[flow])
    print("packets:")
    for direction, pkt, _ in trace[flow]:
        p = dissect(pkt)
        print(f"  {'->' if direction == 'in' else '<-'} {p.summary()}")
        if args.verbose:
            print("\n".join(f"       {line}" for line in p.show(dump=True).splitlines()))
    if not trace[flow]:
        print("  (none)")
    if args.pcap:
        write_pcap(args.pcap, trace[flow])
        print(f"# wrote {args.pcap}: {len(trace[flow])} packets", file=sys.stderr)
    return 0 if expected is None or verdict in expected.verdicts else FAILED


def _explain_evidence(ev: Any) -> None:
    """The kernel's evidence for ``explain``: the summary, then the fields it was read from."""
    print(f"kernel:   {ev}")
    if ev.fields:
        print(f"          read at {ev.hook}:")
        for k, v in ev.fields.items():
            print(f"            {k} = {v}")


def cmd_features(args: argparse.Namespace) -> int:
    from bindlab import features

    if not _capable():
        return USAGE
    print(features.table())
    return 0


def cmd_reap(args: argparse.Namespace) -> int:
    from bindlab import process, reaper

    if not _capable():
        return USAGE
    gone = reaper.reap()
    print(f"# reaped {len(gone)} namespace(s)" + (f": {' '.join(gone)}" if gone else ""))
    killed = process.reap()
    print(f"# killed {len(killed)} program group(s)" + (f": {' '.join(killed)}" if killed else ""))
    return 0


def delegate(command: str, argv: list[str]) -> int:
    """``bindlab vm|diff ARGS``: import the module another part of bindlab provides, call cli."""
    module = DELEGATED[command]
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module:
            raise
        _err(f"'bindlab {command}' is not available: this installation has no {module} module")
        return USAGE
    fn = getattr(mod, "cli", None)
    if not callable(fn):
        _err(f"'bindlab {command}' is not available: {module} has no cli(argv) function")
        return USAGE
    return int(fn(argv) or 0)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bindlab",
        description="Which socket receives this flow? Scenario runs in disposable network namespaces.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def output_opts(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "-f",
            "--format",
            choices=FORMATS,
            default="table",
            help="report format (default: table)",
        )
        sp.add_argument(
            "-o", "--output", metavar="FILE", help="write the report to FILE instead of stdout"
        )

    def prefix_opt(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--bindlab-bindtoprefix-optname",
            "--bindtoprefix-optname",  # deprecated spelling, kept for one release
            dest="bindlab_bindtoprefix_optname",
            type=int,
            metavar="N",
            help="bind_prefix sockets use setsockopt(SOL_SOCKET, N) of a patched kernel "
            "instead of the sk_lookup emulation of SO_BINDTOPREFIX",
        )

    def evidence_opt(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--evidence",
            action="store_true",
            help="record the kernel's evidence (BPF tracepoints) beside every verdict",
        )

    sp = sub.add_parser("run", help="run scenario files and print the dispatch matrix")
    sp.add_argument(
        "paths",
        nargs="*",
        metavar="FILE|DIR",
        help="scenario files or directories (default: the bindlab_scenarios paths of "
        "pyproject.toml's [tool.pytest.ini_options])",
    )
    sp.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    evidence_opt(sp)
    prefix_opt(sp)
    output_opts(sp)
    sp.set_defaults(fn=cmd_run)

    sp = sub.add_parser("rfc", help="reproduce the patch examples shipped with bindlab")
    sp.add_argument(
        "--list", action="store_true", help="print the claim -> scenario index and exit"
    )
    sp.add_argument("--dir", help="the directory of RFC scenario files")
    sp.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    evidence_opt(sp)
    prefix_opt(sp)
    output_opts(sp)
    sp.set_defaults(fn=cmd_rfc)

    sp = sub.add_parser(
        "report", help="render a results file (pytest --bindlab-results) as a matrix"
    )
    sp.add_argument("results", metavar="RESULTS.json")
    output_opts(sp)
    sp.set_defaults(fn=cmd_report)

    sp = sub.add_parser(
        "explain",
        help="set up one scenario, probe FLOW, show the verdict, the kernel's evidence and packets",
    )
    sp.add_argument("file", metavar="FILE")
    sp.add_argument("flow", metavar="FLOW", help="e.g. 'tcp 198.18.0.1:40000 -> 192.0.2.10:80'")
    sp.add_argument(
        "-v", "--verbose", action="store_true", help="dissect every packet field by field"
    )
    sp.add_argument(
        "--pcap", metavar="FILE", help="also write the packets to FILE (pcap, raw IP link type)"
    )
    sp.set_defaults(fn=cmd_explain)

    sub.add_parser("features", help="what this kernel supports").set_defaults(fn=cmd_features)
    sub.add_parser("reap", help="remove namespaces left by dead runs").set_defaults(fn=cmd_reap)
    for name, module in DELEGATED.items():
        what = (
            "run a command inside another kernel (virtme-ng)"
            if name == "vm"
            else "compare two results files"
        )
        sub.add_parser(name, help=f"{what}; see 'bindlab {name} --help' ({module})", add_help=False)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] in DELEGATED:
        return delegate(args_list[0], args_list[1:])
    args = parser().parse_args(args_list)
    try:
        return int(args.fn(args))
    except BrokenPipeError:  # `bindlab ... | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return FAILED


if __name__ == "__main__":
    sys.exit(main())
