"""bindlab as a package: its import name, its doors, and what report/diff leave unloaded."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
MATRIX = ROOT / "docs" / "matrix"


def py(
    *args: str, cwd: Path | None = None, drop_caps: bool = False
) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, *args]
    if drop_caps:  # root without any capability: no namespace could be made
        argv = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--", *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=cwd)


def test_version_from_python_m_and_the_command() -> None:
    import bindlab

    p = py("-m", "bindlab", "--version")
    assert p.returncode == 0 and p.stdout.strip() == f"bindlab {bindlab.__version__}", p.stderr


def test_no_top_level_harness_module_comes_from_bindlab(tmp_path: Path) -> None:
    """A project's own ``harness`` package is what ``import harness`` finds."""
    (tmp_path / "harness").mkdir()
    (tmp_path / "harness" / "__init__.py").write_text("WHO = 'mine'\n")
    p = py("-c", "import harness, bindlab.plugin; print(harness.WHO)", cwd=tmp_path)
    assert p.returncode == 0 and p.stdout.strip() == "mine", p.stderr


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs util-linux setpriv")
@pytest.mark.parametrize(
    "argv",
    [
        ["report", str(MATRIX / "6.18.44-fc-v669.json")],
        [
            "diff",
            str(MATRIX / "6.1.0-56-amd64+e92259fcc840.json"),
            str(MATRIX / "6.18.44-fc-v669.json"),
        ],
    ],
    ids=["report", "diff"],
)
def test_report_and_diff_run_unprivileged_without_the_namespace_stack(argv: list[str]) -> None:
    code = (
        "import sys, json\n"
        "from bindlab.cli import main\n"
        f"rc = main({argv!r})\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('pyroute2', 'scapy'))\n"
        "ours = sorted(m for m in sys.modules if m in ('bindlab.namespace', 'bindlab.netns', 'bindlab.probe'))\n"
        "print(json.dumps({'rc': rc, 'heavy': heavy, 'ours': ours}), file=sys.stderr)\n"
    )
    p = py("-c", code, drop_caps=True)
    assert "Traceback" not in p.stderr, p.stderr
    facts = json.loads(p.stderr.strip().splitlines()[-1])
    assert facts["heavy"] == [] and facts["ours"] == [], facts
    assert facts["rc"] in (0, 1) and p.stdout.strip(), p.stdout  # 1: diff found regressions


def test_a_bare_run_without_configured_scenarios_says_what_to_pass(tmp_path: Path) -> None:
    p = py("-m", "bindlab", "run", cwd=tmp_path)
    assert p.returncode == 2, p.stdout + p.stderr
    assert (
        p.stderr.count("\n") == 1 and "bindlab_scenarios" in p.stderr and "FILES|DIRS" in p.stderr
    )


def test_a_bare_run_reads_the_configured_scenarios(tmp_path: Path) -> None:
    from bindlab.cli import configured_scenarios

    (tmp_path / "sub").mkdir()
    (tmp_path / "pyproject.toml").write_text(
        '[tool.pytest.ini_options]\nbindlab_scenarios = ["bl", "more/x.toml"]\n'
    )
    assert configured_scenarios(tmp_path / "sub") is not None
    found = configured_scenarios(tmp_path)
    assert found is not None and [Path(p).resolve() for p in found] == [
        tmp_path / "bl",
        tmp_path / "more" / "x.toml",
    ]


def test_rfc_runs_from_the_package_data_outside_the_repository(tmp_path: Path) -> None:
    p = py("-m", "bindlab", "rfc", "--list", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("claim:") >= 6 and "bindlab/data/rfc/" in p.stdout


def test_the_old_option_spelling_still_works_and_warns(
    tmp_path: Path, run_pytest: Callable[..., Any]
) -> None:
    (tmp_path / "test_o.py").write_text(
        "def test_o(request):\n"
        "    assert request.config.getoption('bindlab_bindtoprefix_optname') == 77\n"
    )
    p = run_pytest("-q", "--bindtoprefix-optname=77", cwd=tmp_path)
    assert p.returncode == 0, p.stdout
    assert "--bindtoprefix-optname is deprecated" in p.stdout
    p = run_pytest("-q", "--bindlab-bindtoprefix-optname=77", cwd=tmp_path)
    assert p.returncode == 0 and "deprecated" not in p.stdout, p.stdout


def test_a_scale_test_is_deselected_by_the_plugin_itself(
    tmp_path: Path, run_pytest: Callable[..., Any]
) -> None:
    (tmp_path / "test_s.py").write_text(
        "import pytest\n\n@pytest.mark.scale\ndef test_big():\n    raise AssertionError\n\n"
        "def test_small():\n    pass\n"
    )
    p = run_pytest("-q", cwd=tmp_path)
    assert p.returncode == 0 and "1 passed, 1 deselected" in p.stdout, p.stdout
    p = run_pytest("-q", "-m", "scale", cwd=tmp_path)
    assert p.returncode == 1 and "1 failed" in p.stdout, p.stdout
