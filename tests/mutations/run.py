"""``ci/run mutate``: put each curated bug into a copy of bindlab and check the suite kills it.

Each ``[[mutation]]`` of ``mutations.toml`` replaces one exact snippet of one source file
(``old`` must occur exactly once, so a mutation that no longer applies is reported, never
skipped) and names the tests that must fail with it in place, and the harm it stands for.
The mutant is a copy of ``harness/`` put first on ``PYTHONPATH``; the repository's own tree is
never changed. Exit 0 when every mutant is killed, 1 when one survives (named), 2 when the
list itself is stale or the unmutated tests fail.

    python tests/mutations/run.py [--only ID ...] [--list]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIST = Path(__file__).with_name("mutations.toml")
HARMS = {"wrong verdict", "lost regression", "silent host change", "leak", "accepted garbage",
         "unclear failure", "wrong report"}  # fmt: skip
TIMEOUT = 600  # s per mutant


@dataclass(frozen=True)
class Mutation:
    id: str
    file: str
    old: str
    new: str
    harm: str
    tests: tuple[str, ...]
    why: str = ""


def load(path: Path = LIST) -> list[Mutation]:
    data = tomllib.loads(path.read_text())
    out = []
    for i, m in enumerate(data.get("mutation", [])):
        try:
            mut = Mutation(**{**m, "tests": tuple(m["tests"])})
        except TypeError as e:
            raise SystemExit(f"{path.name}: mutation[{i}]: {e}") from None
        if mut.harm not in HARMS:
            raise SystemExit(f"{path.name}: {mut.id}: harm {mut.harm!r} not one of {sorted(HARMS)}")
        out.append(mut)
    ids = [m.id for m in out]
    if len(set(ids)) != len(ids):
        raise SystemExit(f"{path.name}: duplicate ids")
    return out


def stale(m: Mutation) -> str | None:
    """Why ``m`` no longer applies to the tree, or None."""
    f = ROOT / "harness" / "bindlab" / m.file
    if not f.is_file():
        return f"{m.file} does not exist"
    n = f.read_text().count(m.old)
    return None if n == 1 else f"its 'old' snippet occurs {n} times in {m.file} (must be once)"


def pytest(tests: tuple[str, ...], pythonpath: str) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": pythonpath, "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    try:
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        return -1, f"timed out after {TIMEOUT} s"
    tail = (p.stdout.strip().splitlines() or [""])[-1]
    return p.returncode, tail


def run_one(m: Mutation) -> tuple[bool, str]:
    with tempfile.TemporaryDirectory(prefix=f"bindlab-mutant-{m.id}-") as tmp:
        shutil.copytree(ROOT / "harness", Path(tmp) / "harness",
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
        f = Path(tmp) / "harness" / "bindlab" / m.file
        f.write_text(f.read_text().replace(m.old, m.new, 1))
        rc, tail = pytest(m.tests, str(Path(tmp) / "harness"))
    # 1: a test failed; -1 (hang) and other codes count as killed but are shown as such
    return rc != 0, f"rc={rc} {tail}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", metavar="ID", help="run only these mutations")
    ap.add_argument("--list", action="store_true", help="list the mutations and exit")
    args = ap.parse_args(argv)
    muts = load()
    if args.only:
        unknown = set(args.only) - {m.id for m in muts}
        if unknown:
            print(f"mutate: unknown ids: {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        muts = [m for m in muts if m.id in args.only]
    if args.list:
        for m in muts:
            print(f"{m.id:32} {m.harm:18} {m.file}: {m.why}")
        return 0
    problems = [f"{m.id}: {why}" for m in muts if (why := stale(m))]
    if problems:
        print("mutate: stale mutations (update mutations.toml):\n  " + "\n  ".join(problems))
        return 2
    every = tuple(sorted({t for m in muts for t in m.tests}))
    rc, tail = pytest(every, str(ROOT / "harness"))
    if rc != 0:
        print(f"mutate: the tests fail without any mutation ({tail}): fix them first")
        return 2
    survivors = []
    start = time.monotonic()
    for i, m in enumerate(muts, 1):
        t0 = time.monotonic()
        killed, how = run_one(m)
        mark = "killed  " if killed else "SURVIVED"
        print(f"[{i:2}/{len(muts)}] {mark} {m.id} ({m.harm}; {time.monotonic() - t0:.1f} s): {how}",
              flush=True)  # fmt: skip
        if not killed:
            survivors.append(m)
    print(f"mutate: {len(muts) - len(survivors)} of {len(muts)} mutations killed "
          f"in {time.monotonic() - start:.0f} s")  # fmt: skip
    for m in survivors:
        print(f"  SURVIVOR {m.id}: {m.harm} in {m.file}: {m.why}")
    return 1 if survivors else 0


if __name__ == "__main__":
    raise SystemExit(main())
