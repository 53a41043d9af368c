"""Missing privileges stop a run with one sentence naming each gap, never a traceback:
pytest exits 4, every privileged ``bindlab`` command prints one line and exits 2; a
BPF-only gap skips the BPF features with the reason and runs the rest.

Each case runs a child process with fewer privileges: root minus CAP_NET_ADMIN or
CAP_SYS_ADMIN (``capsh --drop``), the ``nobody`` user (``setpriv``), and root inside a user
namespace (every capability there, none in the initial namespace: ``bpf()`` is refused).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# The child runs hold no property test: spare them the ~0.2 s the hypothesis plugin spends
# importing hypothesis for its terminal summary.
NO_HYPOTHESIS = "no:hypothesispytest"

pytestmark = pytest.mark.skipif(
    shutil.which("capsh") is None or shutil.which("setpriv") is None,
    reason="needs capsh (apt install libcap2-bin) and setpriv (util-linux)",
)

BINDLAB = str(Path(sys.executable).with_name("bindlab"))
SCENARIO = Path(__file__).resolve().parents[1] / "fixtures" / "scenarios" / "reuseport.toml"
TESTS = """
def test_a(netns):
    pass

def test_b(netns_factory):
    pass
"""
# who, how to become them, what the sentence must name
MODES = {
    "no-net-admin": (
        ["capsh", "--drop=cap_net_admin", "--", "-c"],
        ["CAP_NET_ADMIN (bringing lo up"],
    ),
    "no-sys-admin": (["capsh", "--drop=cap_sys_admin", "--", "-c"], ["CAP_SYS_ADMIN (unshare"]),
    # nobody keeps CAP_DAC_READ_SEARCH alone: the interpreter may live under a 0700 /root
    "nobody": (
        [
            *("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"),
            *("--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search", "--"),
            *("sh", "-c"),
        ],
        ["CAP_SYS_ADMIN (unshare", "CAP_NET_ADMIN (not in the effective", "/dev/net/tun"],
    ),
}
SENTENCE = "bindlab cannot run here: it lacks "


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    """A directory everybody can read (``nobody`` included) with the child's test file."""
    d = Path(tempfile.mkdtemp(prefix="bl-priv-"))
    try:
        d.chmod(0o755)
        (d / "test_x.py").write_text(TESTS)
        (d / "test_x.py").chmod(0o644)
        yield d
    finally:
        shutil.rmtree(d)


def run_as(mode: str, argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    become, _ = MODES[mode]
    return subprocess.run(
        [*become, shlex.join(argv)], cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("mode", "xdist"),
    [*((m, ()) for m in MODES), ("no-net-admin", ("-n", "2"))],
    ids=[*MODES, "no-net-admin-xdist"],
)
def test_pytest_stops_with_one_sentence_and_exit_4(mode: str, xdist, workdir: Path) -> None:
    argv = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        NO_HYPOTHESIS,
        *xdist,
        ".",
    ]
    proc = run_as(mode, argv, workdir)
    out = proc.stdout + proc.stderr
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, out
    assert out.count(SENTENCE) == 1, out
    sentence = next(line for line in out.splitlines() if SENTENCE in line)
    for gap in MODES[mode][1]:
        assert gap in sentence, out
    assert "Traceback" not in out and "passed" not in out and "INTERNALERROR" not in out


COMMANDS = {
    "run": ["run", str(SCENARIO)],
    "rfc": ["rfc"],
    "explain": ["explain", str(SCENARIO), "tcp 198.18.0.1:40000 -> 192.0.2.10:80"],
    "features": ["features"],
    "reap": ["reap"],
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("mode", MODES)
def test_cli_prints_one_line_and_exits_2(mode: str, command: str, workdir: Path) -> None:
    proc = run_as(mode, [BINDLAB, *COMMANDS[command]], workdir)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert out.count("\n") == 1 and out.startswith("bindlab: " + SENTENCE), out
    for gap in MODES[mode][1]:
        assert gap in out, out


BPF_TESTS = """
import pytest

def test_core(netns):
    netns.add_local_route("192.0.2.0/24")
    netns.tcp_listener("192.0.2.1:80", label="web")
    assert netns.probe(["tcp 198.18.0.1:1 -> 192.0.2.1:80"]) == {
        "tcp 198.18.0.1:1 -> 192.0.2.1:80": "web"
    }

@pytest.mark.requires("BPF_SK_LOOKUP")
def test_bpf(netns):
    pass
"""


def test_a_bpf_only_gap_skips_the_bpf_features_and_runs_the_rest(tmp_path: Path) -> None:
    (tmp_path / "test_bpf.py").write_text(BPF_TESTS)
    # root of a user namespace: CAP_SYS_ADMIN and CAP_NET_ADMIN over its own network and
    # mount namespaces (its own /run/netns too), no capability where bpf() checks them
    setup = 'mkdir -p /run/netns && mount -t tmpfs bl-priv /run/netns && exec "$@"'
    argv = [
        *("unshare", "--user", "--map-root-user", "--net", "--mount", "--"),
        *("sh", "-c", setup, "userns"),
        *(
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
            "-p",
            NO_HYPOTHESIS,
            ".",
        ),
    ]
    proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    if "unshare failed" in out and proc.returncode != 0:
        pytest.skip(f"no user namespaces here: {out.strip()}")
    assert proc.returncode == 0, out
    assert "1 passed, 1 skipped" in out, out
    assert "BPF_SK_LOOKUP: bpf() refused: this process lacks CAP_BPF and CAP_PERFMON" in out, out
    assert "Traceback" not in out


def test_library_names_the_gap_without_raising() -> None:
    code = "from bindlab import features; print(features.detect('TUN').detail)"
    proc = run_as("no-net-admin", [sys.executable, "-c", code], Path(os.getcwd()))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(SENTENCE) and "CAP_NET_ADMIN" in proc.stdout, proc.stdout
