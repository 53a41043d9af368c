"""A bind-conflict table per case: bindlab pytest cases vs the same table in C.

The table (147 cases: 7 endpoints v4/v6/v4-mapped, wildcard and loopback, every ordered
pair, plain / SO_REUSEADDR / SO_REUSEADDR with the first listening) is written twice:
``scenarios/test_bind_table.py`` (bindlab, a fresh namespace per case) and
``bench/bind_table.c`` (built here with ``cc``; a forked child per case as the kselftest
harness does, with ``--netns`` also a fresh namespace per case). The rounds interleave the
three; per case is what pytest reports (JUnit ``time``: setup + call + teardown) and what the
C program measures around its fork/wait loop. Both must agree with their tables, and the
tables with each other. Run: ``python bench/bench_table.py [--rounds N]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
C_SOURCE = ROOT / "bench" / "bind_table.c"
TEST = "scenarios/test_bind_table.py"


def build(out: Path) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        raise SystemExit("bench_table: no C compiler (cc): apt-get install gcc")
    exe = out / "bind_table"
    subprocess.run([cc, "-O2", "-Wall", "-o", str(exe), str(C_SOURCE)], check=True)
    return exe


def python_table() -> dict[tuple[str, str, str], str]:
    """(mode, first, second) -> expected errno name, from the pytest module's own table."""
    spec = importlib.util.spec_from_file_location("bind_table_cases", ROOT / TEST)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return {
        (mode, a.name, b.name): mod._expected(mode, a, b)
        for mode in mod.MODES
        for a in mod.ENDPOINTS
        for b in mod.ENDPOINTS
    }


def run_c(exe: Path, netns: bool, table: dict[tuple[str, str, str], str]) -> float:
    """Run the C table once; return microseconds per case."""
    p = subprocess.run([str(exe), *(["--netns"] if netns else [])], capture_output=True, text=True)
    seen = {}
    per_case = None
    for line in p.stdout.splitlines():
        if line.startswith("# cases"):
            per_case = float(line.split()[-1])
        elif line.startswith(("ok", "not ok")):
            left, _, got = line.partition(" # ")
            mode, a, b = left.split()[-3:]
            seen[(mode, a, b)] = got
    if p.returncode != 0 or per_case is None:
        raise SystemExit(f"bind_table (C) failed: {p.stdout[-2000:]}{p.stderr}")
    if seen != table:
        diff = sorted(k for k in table if seen.get(k) != table[k])
        raise SystemExit(f"the C and Python tables disagree on {diff[:5]}")
    return per_case


def run_pytest(tmp: Path, extra: list[str]) -> tuple[list[float], float]:
    """Run the pytest cases once; return per-case JUnit times (s) and the whole wall time."""
    junit = tmp / "junit.xml"
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *extra]
    t = time.perf_counter()
    p = subprocess.run(
        [*cmd, f"--junitxml={junit}", TEST], cwd=ROOT, capture_output=True, text=True
    )
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"pytest {TEST} failed:\n{p.stdout[-3000:]}")
    cases = [float(c.get("time", 0)) for c in ET.parse(junit).getroot().iter("testcase")]
    return cases, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_table: namespaces need root")
    table = python_table()
    with tempfile.TemporaryDirectory(prefix="bl-bench-table-") as d:
        tmp = Path(d)
        exe = build(tmp)
        c_fork, c_netns, py_case, py_mean, py_wall = [], [], [], [], []
        for _ in range(args.rounds):
            c_fork.append(run_c(exe, False, table))
            c_netns.append(run_c(exe, True, table))
            cases, wall = run_pytest(tmp, [])
            if len(cases) != len(table):
                raise SystemExit(f"pytest ran {len(cases)} cases, the table has {len(table)}")
            py_case.append(statistics.median(cases) * 1e6)
            py_mean.append(statistics.mean(cases) * 1e6)
            py_wall.append(wall * 1e6 / len(cases))
    med = statistics.median
    cf, cn, pc, pm, pw = (med(x) for x in (c_fork, c_netns, py_case, py_mean, py_wall))
    print(f"# bind-conflict table, {len(table)} cases x {args.rounds} rounds, medians per case")
    print(f"C, fork per case (kselftest harness style):   {cf / 1000:6.3f} ms")
    print(f"C, fork + fresh netns per case:               {cn / 1000:6.3f} ms")
    print(f"bindlab pytest, as pytest reports (median):   {pc / 1000:6.3f} ms")
    print(f"bindlab pytest, as pytest reports (mean):     {pm / 1000:6.3f} ms")
    print(f"bindlab pytest, whole process / cases:        {pw / 1000:6.3f} ms (information)")
    print(f"ratio pytest(mean) / C fork+netns:            {pm / cn:6.2f}")
    print(f"ratio pytest(mean) / C fork:                  {pm / cf:6.2f}")


if __name__ == "__main__":
    main()
