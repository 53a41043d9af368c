"""``ci/run fuzz``: 10,000 generated scenario files and 10,000 flow strings against the loader
and the flow parser, and a sample against ``bindlab run``, each in a subprocess with a timeout.

Counts, each of which must be 0 (the exit status is 1 otherwise):

- tracebacks: any exception but ScenarioError / FlowSyntaxError, or "Traceback" in output;
- hangs: a file or flow that takes longer than ``--timeout`` s (default 5);
- exit-0-on-garbage: a file refused by the loader, or damaged on purpose, that loads, or on
  which ``bindlab run`` exits 0;
- unclear messages: not one line, over 400 characters, or not starting with the file and its
  line (``bad flow ...`` for flows); see :mod:`generate`'s oracle.

Also times ``Flow.parse`` on a 100 KB string (median of 20; the bound is 50 ms).
Run: ``python tests/fuzz/run_fuzz.py [--files N] [--flows N] [--sample N] [--seed S]``.
The loader runs in worker processes that are killed and replaced when a case overruns.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import select
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import contextlib

from generate import (
    file_case,
    flow_case,
    unclear_file_message,
    unclear_flow_message,
)

HERE = Path(__file__).resolve()


def worker() -> None:
    """Answer one JSON request per line: {"file": PATH} or {"flow": PATH of the flow's text}."""
    from bindlab import Flow, FlowSyntaxError
    from bindlab.scenario.load import ScenarioError, load

    for line in sys.stdin:
        req = json.loads(line)
        t0 = time.perf_counter()
        try:
            if "file" in req:
                load(req["file"])
            else:
                Flow.parse(Path(req["flow"]).read_bytes().decode())
            out: dict[str, Any] = {"outcome": "ok"}
        except (ScenarioError, FlowSyntaxError) as e:
            out = {"outcome": "refused", "message": str(e)}
        except BaseException as e:  # the finding this job exists for
            out = {"outcome": "traceback", "message": "".join(traceback.format_exception(e))}
        out["seconds"] = time.perf_counter() - t0
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()


class Worker:
    """A worker process, replaced when it overruns a case's timeout."""

    def __init__(self) -> None:
        self.p: subprocess.Popen[str] | None = None

    def ask(self, req: dict[str, str], timeout: float) -> dict[str, Any]:
        if self.p is None:
            self.p = subprocess.Popen(
                [sys.executable, str(HERE), "--worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        assert self.p.stdin is not None and self.p.stdout is not None
        self.p.stdin.write(json.dumps(req) + "\n")
        self.p.stdin.flush()
        ready, _, _ = select.select([self.p.stdout], [], [], timeout)
        line = self.p.stdout.readline() if ready else ""
        if not line:
            self.close()
            return {"outcome": "hang" if not ready else "traceback", "message": "worker died"}
        return json.loads(line)  # type: ignore[no-any-return]

    def close(self) -> None:
        if self.p is not None:
            self.p.kill()
            self.p.wait()
            self.p = None


def run_cli(path: str, timeout: float) -> tuple[str, int, str]:
    """``bindlab run PATH``: (outcome, exit status, output)."""
    try:
        p = subprocess.run(
            [sys.executable, "-m", "bindlab", "run", "-q", path],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return "hang", -1, ""
    out = p.stdout + p.stderr
    return ("traceback" if "Traceback" in out else "ok"), p.returncode, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--flows", type=int, default=10_000)
    ap.add_argument("--sample", type=int, default=200, help="files also run by `bindlab run`")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--json", help="write the counts here")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker()
        return 0

    counts: collections.Counter[str] = collections.Counter()
    kinds: collections.Counter[str] = collections.Counter()
    findings: list[str] = []
    slowest = (0.0, "")

    def finding(what: str, kind: str, seed: int, detail: str) -> None:
        counts[what] += 1
        if len(findings) < 50:
            findings.append(f"{what}: {kind} seed {seed}: {detail[:300]}")

    t0 = time.monotonic()
    w = Worker()
    refused_files: list[str] = []
    loaded_files: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bindlab-fuzz-") as tmp:
        for i in range(args.files):
            seed = args.seed * 1_000_003 + i
            case = file_case(seed)
            path = os.path.join(tmp, f"f{i}.toml")
            data = case.text.encode() if isinstance(case.text, str) else case.text
            Path(path).write_bytes(data)
            r = w.ask({"file": path}, args.timeout)
            kinds[f"{case.kind} {r['outcome']}"] += 1
            slowest = max(slowest, (r.get("seconds", args.timeout), f"{case.kind} seed {seed}"))
            if r["outcome"] in ("traceback", "hang"):
                finding(r["outcome"] + "s", case.kind, seed, r["message"])
            elif r["outcome"] == "ok" and case.must_fail:
                finding("exit-0-on-garbage", case.kind, seed, "loaded")
            elif r["outcome"] == "refused":
                why = unclear_file_message(r["message"], path)
                if why:
                    finding("unclear messages", case.kind, seed, f"{why}: {r['message']}")
            keep = (
                args.sample > 0 and i % max(1, args.files // max(1, args.sample)) == 0
            )  # a sample spread over the run
            if keep and r["outcome"] == "refused":
                refused_files.append(path)
            elif keep and r["outcome"] == "ok" and len(data) < 20_000:
                loaded_files.append(path)
            else:
                os.unlink(path)
        for i in range(args.flows):
            seed = args.seed * 1_000_003 + i
            fcase = flow_case(seed)
            flow_path = os.path.join(tmp, "flow.txt")  # a path, not the text: a stuck worker
            Path(flow_path).write_bytes(str(fcase.text).encode())  # must not block our pipe
            r = w.ask({"flow": flow_path}, args.timeout)
            kinds[f"{fcase.kind} {r['outcome']}"] += 1
            if r["outcome"] in ("traceback", "hang"):
                finding(r["outcome"] + "s", fcase.kind, seed, r["message"])
            elif r["outcome"] == "ok" and fcase.must_fail:
                finding("exit-0-on-garbage", fcase.kind, seed, "parsed")
            elif r["outcome"] == "refused":
                why = unclear_flow_message(r["message"])
                if why:
                    finding("unclear messages", fcase.kind, seed, f"{why}: {r['message']}")
        w.close()
        cli: collections.Counter[str] = collections.Counter()
        for path in refused_files + loaded_files:
            outcome, rc, out = run_cli(path, args.timeout)
            garbage = path in refused_files
            cli[f"{'refused' if garbage else 'loaded'} files, exit {rc}"] += 1
            if outcome != "ok":
                finding(f"{outcome}s", "bindlab run", 0, f"{path}: {out}")
            elif garbage and rc == 0:
                finding("exit-0-on-garbage", "bindlab run", 0, f"{path}: {out}")
            elif garbage and (rc != 2 or len(out.strip().splitlines()) != 1):
                finding("unclear messages", "bindlab run", 0, f"{path}: exit {rc}: {out}")

    from bindlab import Flow, FlowSyntaxError

    big = "tcp " + "a->" * 33_333 + " x y"  # 100 KB
    times = []
    for _ in range(20):
        t = time.perf_counter()
        with contextlib.suppress(FlowSyntaxError):
            Flow.parse(big)
        times.append(time.perf_counter() - t)
    parse_ms = statistics.median(times) * 1000
    if parse_ms >= 50:
        counts["slow 100 KB parse"] += 1

    result = {
        "files": args.files,
        "flows": args.flows,
        "bindlab_run_sample": sum(cli.values()),
        "tracebacks": counts["tracebacks"],
        "hangs": counts["hangs"],
        "exit_0_on_garbage": counts["exit-0-on-garbage"],
        "unclear_messages": counts["unclear messages"],
        "slowest_load_s": round(slowest[0], 3),
        "slowest_case": slowest[1],
        "flow_parse_100kb_ms_median": round(parse_ms, 3),
        "seconds": round(time.monotonic() - t0, 1),
    }
    print("# outcomes by class:")
    for k, v in sorted(kinds.items()):
        print(f"#   {k:32} {v}")
    print("# bindlab run sample:", dict(cli))
    for f in findings:
        print(f"# FINDING {f}")
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    bad = sum(counts.values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
