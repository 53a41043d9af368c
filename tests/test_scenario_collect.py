"""Scenario files as pytest tests: ids, outcomes, skips, load errors, results and JUnit."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import xunit2

ROOT = Path(__file__).resolve().parent.parent
FILE = """\
[setup]
local_routes = ["192.0.2.0/24"]

[[socket]]
label = "web"
bind = "192.0.2.10:80"

[[socket]]
label = "dup"
bind = "192.0.2.10:80"
expect_errno = "EADDRINUSE"

[expect]
"tcp 198.18.0.1:40000 -> 192.0.2.10:80" = "web"
"tcp [2001:db8:ffff::1]:40001 -> [2001:db8::1]:81" = "NONE"
"""


def opt_in(tmp_path: Path, *paths: str) -> None:
    """A downstream project's opt-in: its ``bindlab_scenarios`` ini option."""
    (tmp_path / "pytest.ini").write_text(f"[pytest]\nbindlab_scenarios = {' '.join(paths)}\n")


def test_the_default_run_collects_every_scenario_file(run_pytest: Callable[..., Any]) -> None:
    p = run_pytest("--collect-only", "-q", cwd=ROOT)
    assert p.returncode == 0, p.stdout[-3000:]
    files = {line.split("::")[0] for line in p.stdout.splitlines() if ".toml::" in line}
    shipped = {
        str(f.relative_to(ROOT))
        for d in ("fixtures/scenarios", "harness/bindlab/data/rfc")  # bindlab_scenarios
        for f in (ROOT / d).rglob("*.toml")
    }
    assert shipped and files == shipped
    assert (
        "fixtures/scenarios/reuseport.toml::flow[tcp 198.18.0.1:40000 -> 192.0.2.10:80]" in p.stdout
    )
    assert (
        "fixtures/scenarios/reuseport.toml::socket[loner: tcp bind 192.0.2.10:80 listen]"
        in p.stdout
    )


@pytest.mark.privileged
def test_outcomes_results_file_and_junit(tmp_path: Path, run_pytest: Callable[..., Any]) -> None:
    d = tmp_path / "scenarios"
    d.mkdir()
    (d / "good.toml").write_text(FILE)
    (d / "wrong.toml").write_text(
        FILE.replace('81" = "NONE"', '81" = "web"').replace('"EADDRINUSE"', '"EPERM"')
    )
    (d / "bad.toml").write_text(FILE.replace('label = "dup"', 'label = "dup"\nlisten = "yes"'))
    (d / "notmine.json").write_text("{}")
    opt_in(tmp_path, "scenarios")
    results, junit = tmp_path / "results.json", tmp_path / "junit.xml"
    p = run_pytest(
        str(d),
        f"--bindlab-results={results}",
        f"--junitxml={junit}",
        "-rA",
        "--continue-on-collection-errors",
        cwd=tmp_path,
    )
    assert p.returncode == 1, p.stdout
    out = p.stdout
    # a file that fails to load: one message (file, line, key, what was expected), no traceback
    assert (
        "\nscenarios/bad.toml:10: socket[1].listen: expected true or false, got a string ('yes')\n"
        in out
    )
    assert "Traceback" not in out
    assert (
        "PASSED scenarios/good.toml::flow[tcp [2001:db8:ffff::1]:40001 -> [2001:db8::1]:81]" in out
    )
    assert "PASSED scenarios/good.toml::socket[dup: tcp bind 192.0.2.10:80 listen]" in out
    assert (
        "scenarios/wrong.toml:15 (tcp [2001:db8:ffff::1]:40001 -> [2001:db8::1]:81): expected 'web', got 'NONE'"
    ) in out
    assert (
        "scenarios/wrong.toml:8 (dup: tcp bind 192.0.2.10:80 listen): expected 'EPERM', got 'EADDRINUSE'"
        in out
    )
    tests = json.loads(results.read_text())["tests"]
    row = tests["scenarios/wrong.toml::flow[tcp 198.18.0.1:40000 -> 192.0.2.10:80]"]
    assert row["outcome"] == "passed"
    assert row["expected"] == row["verdicts"] == {"tcp 198.18.0.1:40000 -> 192.0.2.10:80": "web"}
    step = tests["scenarios/wrong.toml::socket[dup: tcp bind 192.0.2.10:80 listen]"]
    assert step["outcome"] == "failed" and step["errnos"] == {
        "dup: tcp bind 192.0.2.10:80 listen": "EPERM"
    }
    assert step["verdicts"] == {"dup: tcp bind 192.0.2.10:80 listen": "EADDRINUSE"}
    xunit2.validate(junit)  # no <properties> inside a <testcase>
    root = ET.parse(junit).getroot()
    cases = {(c.get("classname"), c.get("name")): c for c in root.iter("testcase")}
    assert len(cases) == 6 + 1  # six rows, and the collection error of bad.toml
    # the row is the item's parameter: pytest's JUnit writer keeps an IPv6 flow whole
    v6 = cases[("scenarios.wrong.toml", "flow[tcp [2001:db8:ffff::1]:40001 -> [2001:db8::1]:81]")]
    assert "expected 'web', got 'NONE'" in v6.find("failure").get("message")
    # bindlab's facts are JSON properties of the test suite
    props = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert json.loads(props["bindlab.kernel"])["release"] == os.uname().release
    assert json.loads(
        props["bindlab:scenarios/wrong.toml::socket[dup: tcp bind 192.0.2.10:80 listen]"]
    ) == {
        "errnos": {"dup: tcp bind 192.0.2.10:80 listen": "EPERM"},
        "verdicts": {"dup: tcp bind 192.0.2.10:80 listen": "EADDRINUSE"},
    }


@pytest.mark.privileged
def test_requires_skips_with_the_reason_and_k_selects_by_flow(
    tmp_path: Path, run_pytest: Callable[..., Any]
) -> None:
    from bindlab import features

    d = tmp_path / "scenarios"
    d.mkdir()
    missing = next((s for s in features.detect_all() if not s.ok), None)
    if missing is not None:
        (d / "skip.toml").write_text(f'requires = ["{missing.name}"]\n' + FILE)
    (d / "good.toml").write_text(FILE)
    opt_in(tmp_path, "scenarios")
    p = run_pytest(str(d), "-rs", "-v", "-k", "40000", cwd=tmp_path)
    assert p.returncode == 0, p.stdout
    assert "good.toml::flow[tcp 198.18.0.1:40000 -> 192.0.2.10:80] PASSED" in p.stdout
    assert "2001:db8" not in p.stdout.split("short test summary")[0].split("collected")[1]
    if missing is not None:
        assert "1 passed, 1 skipped" in p.stdout and f": {missing.reason}\n" in p.stdout


def test_a_toml_named_on_the_command_line_is_collected_anywhere(
    tmp_path: Path, run_pytest: Callable[..., Any]
) -> None:
    f = tmp_path / "elsewhere.toml"
    f.write_text(FILE)
    (tmp_path / "not_a_scenario.toml").write_text("[tool]\n")
    p = run_pytest("--collect-only", "-q", str(f), cwd=tmp_path)
    assert p.returncode == 0, p.stdout
    assert "elsewhere.toml::flow[tcp 198.18.0.1:40000 -> 192.0.2.10:80]" in p.stdout
    p = run_pytest("--collect-only", "-q", str(tmp_path), cwd=tmp_path)  # not opted in
    assert p.returncode == 5 and "no tests collected" in p.stdout


def test_only_declared_or_configured_toml_files_are_scenarios(
    tmp_path: Path, run_pytest: Callable[..., Any]
) -> None:
    """A downstream project's unrelated ``scenarios/*.toml`` is never taken for a scenario."""
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / "foo.toml").write_text("[tool.other]\nx = 1\n")
    (tmp_path / "web.bindlab.toml").write_text(FILE)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "split.toml").write_text(FILE)
    p = run_pytest("--collect-only", "-q", cwd=tmp_path)
    assert p.returncode == 0, p.stdout
    assert "web.bindlab.toml::flow[tcp 198.18.0.1:40000 -> 192.0.2.10:80]" in p.stdout
    assert "foo.toml" not in p.stdout and "split.toml" not in p.stdout
    opt_in(tmp_path, "mine")
    p = run_pytest("--collect-only", "-q", cwd=tmp_path)
    assert "mine/split.toml::flow[tcp 198.18.0.1:40000 -> 192.0.2.10:80]" in p.stdout
    assert "foo.toml" not in p.stdout


@pytest.mark.privileged
def test_a_setup_error_is_one_line_at_the_scenario_and_the_report_shows_it(
    tmp_path: Path, run_pytest: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    # It was 539 lines of pytest and pluggy internals, and `bindlab report` showed the
    # reason as ".../collect.py:106: ScenarioRunError"
    d = tmp_path / "scenarios"
    d.mkdir()
    broken = FILE.replace("[setup]", '[setup]\nsysctls = { "net.ipv4.no_such_key" = 1 }')
    (d / "broken.toml").write_text(broken)
    opt_in(tmp_path, "scenarios")
    results = tmp_path / "results.json"
    p = run_pytest(str(d), f"--bindlab-results={results}", cwd=tmp_path)
    assert p.returncode == 1, p.stdout
    why = (
        "scenario setup failed: HarnessError: scenarios/broken.toml: setup.sysctls "
        "net.ipv4.no_such_key = 1: SysctlError: unknown sysctl 'net.ipv4.no_such_key': "
        "no /proc/sys/net/ipv4/no_such_key in this network namespace"
    )
    # the short summary repeats the message in full when pytest sees CI=true (it truncates
    # to the terminal's width otherwise): count the error sections' lines only
    errors = [
        line for line in p.stdout.splitlines() if why in line and not line.startswith("ERROR ")
    ]
    # each of the 3 rows: one line at its own location in the file, nothing else
    assert [e.split(": ")[0] for e in errors] == [
        "scenarios/broken.toml:9",
        "scenarios/broken.toml:15",
        "scenarios/broken.toml:16",
    ], p.stdout
    assert "Traceback" not in p.stdout and "pluggy/" not in p.stdout and "_pytest/" not in p.stdout
    assert len(p.stdout.splitlines()) < 25, p.stdout
    tests = json.loads(results.read_text())["tests"]
    assert {t["outcome"] for t in tests.values()} == {"error"}
    assert all(why in t["reason"] for t in tests.values()), tests
    from bindlab.cli import main

    capsys.readouterr()
    assert main(["report", str(results)]) == 1  # the run had errors
    report = capsys.readouterr().out
    assert why in report and "collect.py" not in report, report
