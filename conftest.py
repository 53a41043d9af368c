"""Repository-only wiring for bindlab's own suite. The plugin itself (fixtures, markers,
``scale`` deselection, host guard) comes from the installed package's ``pytest11`` entry
point, exactly as in a downstream project."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

# pytester runs pytest in this process: the plugin's own tests (collection, options,
# outcomes, results files) need no second interpreter, pytest and plugin import each time
pytest_plugins = ["pytester"]

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # the test extras are not installed: the property tests skip
    pass
else:
    # Property and fuzz tests stay bounded to seconds: no per-example deadline (a namespace
    # costs milliseconds on a noisy runner), a fixed example budget.
    settings.register_profile(
        "bindlab", deadline=None, max_examples=100, suppress_health_check=[HealthCheck.too_slow]
    )
    settings.load_profile("bindlab")

# tests/downstream/project is another project's suite: ci/run downstream runs it from a wheel
collect_ignore = ["tests/downstream"]


@dataclass
class InnerRun:
    """What a pytest run printed and returned (as ``subprocess.CompletedProcess`` has it)."""

    returncode: int
    stdout: str


@pytest.fixture
def run_pytest(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A function running pytest in this process from directory ``cwd``, as a user's
    ``python -m pytest ARGS`` there would (plugins from their entry points, the directory's
    ini file), and returning its exit code and output.

    Example::

        def test_collects(tmp_path, run_pytest):
            p = run_pytest("--collect-only", "-q", cwd=tmp_path)
            assert p.returncode == 5
    """

    def run(*args: str, cwd: Path) -> InnerRun:
        monkeypatch.chdir(cwd)
        r = pytester.runpytest_inprocess("-p", "no:cacheprovider", *args)
        return InnerRun(int(r.ret), "\n".join(r.outlines) + "\n")

    return run
