"""Without CAP_SYS_ADMIN/CAP_NET_ADMIN a run stops at once with one sentence, no tracebacks."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs util-linux setpriv")

TESTS = """
def test_a(netns):
    pass

def test_b(netns_factory):
    pass
"""


def run_unprivileged(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_x.py").write_text(TESTS)
    # root minus the two capabilities: unshare(CLONE_NEWNET) is refused, as for a plain user
    argv = ["setpriv", "--bounding-set=-sys_admin,-net_admin", "--", sys.executable]
    return subprocess.run([*argv, *args], cwd=tmp_path, capture_output=True, text=True, timeout=120)


def test_pytest_run_stops_with_one_message(tmp_path: Path) -> None:
    proc = run_unprivileged(tmp_path, "-m", "pytest", "-q", "-p", "no:cacheprovider", ".")
    out = proc.stdout + proc.stderr
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, out
    assert out.count("bindlab needs root") == 1, out
    assert "Traceback" not in out and "passed" not in out


def test_library_refuses_with_the_same_sentence(tmp_path: Path) -> None:
    code = "from bindlab.netns import running_as_capable; print(running_as_capable())"
    proc = run_unprivileged(tmp_path, "-c", code)
    assert proc.returncode == 0 and proc.stdout.startswith("bindlab needs root"), proc.stderr
