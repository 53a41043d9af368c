"""One "which socket" case three ways, side by side in one run: medians and ratios.

The case: a fresh namespace, a local route for 192.0.2.0/24, two SO_REUSEPORT TCP
listeners on port 80 (192.0.2.1, "specific", and 0.0.0.0, "wildcard"), two flows (to
192.0.2.1, which the specific listener must get, and to 192.0.2.2, the wildcard's).

- the shell way, as kselftest ``lib.sh``-style tests do it: ``ip netns add``, ``ip link set
  lo up``, ``ip route add local``, two ``socat`` listeners answering with their label, a
  wait until both listen (polling /proc/net/tcp* as lib.sh's ``wait_local_port_listen``
  does, but every 5 ms rather than 100), two ``socat`` connects, cleanup. socat is
  installed with apt if missing.
- bindlab in-process: ``with Namespace() as ns: ...; ns.probe(flows)``, with the cost of
  each step.
- bindlab as a whole ``pytest`` process running that case as a test (the ``netns``
  fixture), as installed here (with the hypothesis plugin the test extras bring) and with
  ``-p no:hypothesispytest`` (what a project without hypothesis pays).

The rounds interleave the three. Run: ``python bench/bench_case.py [--rounds N]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from bindlab import Namespace
from bindlab.reaper import make_name

SPECIFIC, WILDCARD = "tcp 198.18.0.1:40000 -> 192.0.2.1:80", "tcp 198.18.0.1:40001 -> 192.0.2.2:80"
EXPECTED = {SPECIFIC: "specific", WILDCARD: "wildcard"}

SHELL = r"""
set -eu
ns="$1"  # a bl-<pid>-<starttime>-<hex> name: other runs' host guards know it is a run's
cleanup() {
    if [ -n "${pids:-}" ]; then kill $pids 2>/dev/null || true; wait $pids 2>/dev/null || true; fi
    ip netns del "$ns"
}
# the port (hex) with state 0A (LISTEN), as lib.sh's wait_local_port_listen looks for it
wait_listen() {
    for _ in $(seq 200); do
        n=$(ip netns exec "$ns" awk '$4 == "0A" && $2 ~ /:0050$/' /proc/net/tcp /proc/net/tcp6 | wc -l)
        [ "$n" -ge 2 ] && return 0
        sleep 0.005
    done
    echo "listeners did not come up" >&2; return 1
}
ip netns add "$ns"
trap cleanup EXIT
ip -n "$ns" link set lo up
ip -n "$ns" route add local 192.0.2.0/24 dev lo
ip netns exec "$ns" socat TCP4-LISTEN:80,bind=192.0.2.1,reuseport,fork SYSTEM:'echo specific' &
pids="$!"
ip netns exec "$ns" socat TCP4-LISTEN:80,bind=0.0.0.0,reuseport,fork SYSTEM:'echo wildcard' &
pids="$pids $!"
wait_listen
a=$(ip netns exec "$ns" socat -u TCP4:192.0.2.1:80,sourceport=40000 -)
b=$(ip netns exec "$ns" socat -u TCP4:192.0.2.2:80,sourceport=40001 -)
echo "$a $b"
"""

TEST = f"""
def test_which_socket(netns):
    netns.add_local_route("192.0.2.0/24")
    netns.tcp_listener("192.0.2.1:80", label="specific", reuseport=True)
    netns.tcp_listener("0.0.0.0:80", label="wildcard", reuseport=True)
    assert netns.probe([{SPECIFIC!r}, {WILDCARD!r}]) == {EXPECTED!r}
"""


def ensure_socat() -> None:
    if shutil.which("socat"):
        return
    print("# bench_case: apt-get install socat", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", "socat"],
        check=True,
        capture_output=True,
        env=env,
    )


def shell_case(script: Path) -> float:
    # named as bindlab names its own (reaper.make_name): the host guard of a pytest run going
    # on beside this bench takes any other name coming and going under /run/netns for a
    # change of the host, and the reaper removes these if the bench dies mid-case
    name = make_name()
    t = time.perf_counter()
    p = subprocess.run(["bash", str(script), name], capture_output=True, text=True)
    took = time.perf_counter() - t
    if p.returncode != 0 or p.stdout.split() != ["specific", "wildcard"]:
        raise SystemExit(f"the shell case failed: {p.stdout!r} {p.stderr!r}")
    return took


STEPS = ("Namespace()", "route", "listeners", "injector", "probe", "close")


def inprocess_case(steps: dict[str, list[float]]) -> float:
    t0 = t = time.perf_counter()
    laps = []
    ns = Namespace()
    laps.append(time.perf_counter())
    ns.add_local_route("192.0.2.0/24")
    laps.append(time.perf_counter())
    ns.tcp_listener("192.0.2.1:80", label="specific", reuseport=True)
    ns.tcp_listener("0.0.0.0:80", label="wildcard", reuseport=True)
    laps.append(time.perf_counter())
    ns.injector  # noqa: B018 - made by probe() anyway; timed apart here
    laps.append(time.perf_counter())
    got = ns.probe([SPECIFIC, WILDCARD])
    laps.append(time.perf_counter())
    ns.close()
    laps.append(time.perf_counter())
    if got != EXPECTED:
        raise SystemExit(f"bindlab misclassified: {got}")
    for name, lap in zip(STEPS, laps, strict=True):
        steps[name].append(lap - t)
        t = lap
    return laps[-1] - t0


def pytest_case(d: Path, extra: list[str]) -> float:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra, "test_case.py"]
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=d, capture_output=True, text=True)
    took = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"the pytest case failed:\n{p.stdout[-2000:]}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--inner", type=int, default=20, help="in-process cases per round")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_case: namespaces need root")
    ensure_socat()
    med = statistics.median
    with tempfile.TemporaryDirectory(prefix="bl-bench-case-") as tmp:
        d = Path(tmp)
        script = d / "case.sh"
        script.write_text(textwrap.dedent(SHELL))
        (d / "test_case.py").write_text(TEST)
        shell, inproc, whole, whole_nohyp = [], [], [], []
        steps: dict[str, list[float]] = {s: [] for s in STEPS}
        shell_case(script)  # warm up: page cache, imports, the first namespace
        inprocess_case({s: [] for s in STEPS})
        pytest_case(d, [])
        for _ in range(args.rounds):
            shell.append(shell_case(script))
            inproc.append(med(inprocess_case(steps) for _ in range(args.inner)))
            whole.append(pytest_case(d, []))
            whole_nohyp.append(pytest_case(d, ["-p", "no:hypothesispytest"]))
    s, i, w, wn = (med(x) * 1000 for x in (shell, inproc, whole, whole_nohyp))
    print(f"# one which-socket case, {args.rounds} interleaved rounds, medians")
    print(f"shell way (ip netns, socat x4):        {s:8.2f} ms")
    print(
        f"bindlab in-process:                    {i:8.2f} ms   shell / in-process = {s / i:5.1f}x"
    )
    print("  of which " + ", ".join(f"{k} {med(v) * 1000:.2f}" for k, v in steps.items()) + " ms")
    print(f"bindlab whole pytest process:          {w:8.2f} ms   shell / pytest = {s / w:5.2f}x")
    print(f"  with -p no:hypothesispytest:         {wn:8.2f} ms   shell / pytest = {s / wn:5.2f}x")
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        print("# note: PYTHONDONTWRITEBYTECODE is set: every pytest process recompiles (and")
        print("# assertion-rewrites) bindlab and the test; unset, those are cached in __pycache__")


if __name__ == "__main__":
    main()
