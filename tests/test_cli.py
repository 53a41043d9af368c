"""The ``bindlab`` command, run as a user would: exit codes, output, errors, delegation."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import types
from pathlib import Path

import ktap_check
import pytest
import xunit2
from bindlab import cli
from bindlab.results import Results
from bindlab.results import TestResult as Outcome

ROOT = Path(__file__).resolve().parent.parent
RFC = cli.RFC_DIR
GOOD = """\
[setup]
local_routes = ["192.0.2.0/24"]

[[socket]]
label = "web"
bind = "192.0.2.10:80"

[expect]
"tcp 198.18.0.1:40000 -> 192.0.2.10:80" = "web"
"tcp 198.18.0.1:40001 -> 192.0.2.10:81" = "RST"
"""


def bindlab(
    *args: str, user: str | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "bindlab.cli", *args]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=cwd)


def test_help_imports_neither_scapy_nor_pyroute2() -> None:
    code = (
        "import sys, bindlab.cli as c\n"
        "try:\n    c.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('HEAVY', sorted(m for m in sys.modules if m.split('.')[0] in ('scapy', 'pyroute2')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "usage: bindlab" in out and "explain" in out and "HEAVY []" in out


def test_a_bad_file_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD.replace('"web"\nbind', '"web"\nbnd'))
    p = bindlab("run", str(bad))
    assert p.returncode == 2 and p.stdout == ""
    assert f"bindlab: {bad}:6: socket[0].bnd: unknown key 'bnd'; did you mean 'bind'?" in p.stderr


@pytest.mark.privileged
def test_run_prints_the_matrix_and_exits_by_the_rows(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(GOOD)
    p = bindlab("run", str(good))
    assert p.returncode == 0, p.stderr
    assert "tcp 198.18.0.1:40001 -> 192.0.2.10:81  RST       RST       ok" in p.stdout
    assert p.stdout.rstrip().endswith("# 2 rows in 1 scenarios: 2 pass, 0 fail, 0 skip, 0 error")

    bad = tmp_path / "mismatch.toml"
    bad.write_text(GOOD.replace('81" = "RST"', '81" = "web"'))
    out = tmp_path / "m.json"
    p = bindlab("run", "-f", "json", "-o", str(out), str(bad))
    assert p.returncode == 1
    doc = json.loads(out.read_text())
    assert doc["totals"] == {"pass": 1, "fail": 1, "skip": 0, "error": 0}
    assert f"# wrote {out}: 2 rows in 1 scenarios: 1 pass, 1 fail" in p.stderr


@pytest.mark.privileged
def test_many_flows_report_progress_on_stderr(tmp_path: Path) -> None:
    rows = "\n".join(
        f'"tcp 198.18.{i // 250}.{i % 250 + 1}:1 -> 192.0.2.10:80" = "web"' for i in range(1200)
    )
    f = tmp_path / "many.toml"
    f.write_text(GOOD.split("[expect]")[0] + "[expect]\n" + rows + "\n")
    p = bindlab("run", "-f", "ktap", str(f))
    assert p.returncode == 0
    assert f"# [1/1] {f}: 1200 flows" in p.stderr and "many: 1200/1200 flows probed" in p.stderr
    assert p.stdout.splitlines()[-1] == "# Totals: pass:1200 fail:0 xfail:0 xpass:0 skip:0 error:0"
    assert bindlab("run", "-q", str(f)).stderr == ""


def test_rfc_list_indexes_every_claim() -> None:
    p = bindlab("rfc", "--list")
    assert p.returncode == 0
    for f in RFC.glob("*.toml"):
        assert f"rfc/{f.name}\n    claim:  " in p.stdout
    assert "(none)" not in p.stdout


@pytest.mark.privileged
def test_rfc_reproduces_every_patch_example() -> None:
    p = bindlab("rfc")
    assert p.returncode == 0, p.stdout + p.stderr
    for f in RFC.glob("*.toml"):
        assert f"== {f.stem}[ipv4] (" in p.stdout  # every file runs as each of its families
        assert f"== {f.stem}[ipv6] (" in p.stdout
    assert " 0 fail, 0 skip, 0 error" in p.stdout.splitlines()[-1]
    assert "claim:  It behaves similar to SO_BINDTODEVICE" in p.stdout


@pytest.mark.privileged
def test_explain_shows_verdict_and_packets() -> None:
    f = RFC / "so_bindtoifindex.toml"
    p = bindlab("explain", str(f), "udp 198.18.2.1:40000 -> 192.0.2.10:53 dev inj2")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert "observed: ICMP" in lines and any(ln.startswith("expected: ICMP ") for ln in lines)
    assert "  -> IP / UDP 198.18.2.1:40000 > 192.0.2.10:domain / Raw" in lines
    assert any(
        ln.startswith("  <- IP / ICMP 192.0.2.10 > 198.18.2.1 dest-unreach port-unreachable")
        for ln in lines
    )
    p = bindlab("explain", str(f), "tcp 198.18.0.1:1 -> 192.0.2.10:80 dev nope")
    assert p.returncode == 2
    assert p.stderr == (
        f"bindlab: flow tcp 198.18.0.1:1 -> 192.0.2.10:80 dev nope: {f} has no injector 'nope' "
        "(it has: inj1, inj2)\n"
    )


def test_explain_rejects_a_bad_flow() -> None:
    p = bindlab("explain", str(RFC / "so_bindtoifindex.toml"), "tcp nowhere")
    assert p.returncode == 2 and "bad flow 'tcp nowhere'" in p.stderr


def test_report_renders_a_results_file(tmp_path: Path) -> None:
    r = tmp_path / "results.json"
    Results({"release": "6.1.0"}, {"fixtures/scenarios/x.toml::tcp 198.18.0.1:1 -> 192.0.2.1:80": Outcome(
        "passed", "", {"tcp 198.18.0.1:1 -> 192.0.2.1:80": "a"}, {"tcp 198.18.0.1:1 -> 192.0.2.1:80": "a"})}).dump(str(r))  # fmt: skip
    p = bindlab("report", str(r), "-f", "ktap")
    assert p.returncode == 0
    assert p.stdout.splitlines() == [
        "KTAP version 1", "1..1", "# kernel 6.1.0 (?)", "  KTAP version 1", "  1..1",
        "  # fixtures/scenarios/x.toml", "  ok 1 tcp 198.18.0.1:1 -> 192.0.2.1:80", "ok 1 x",
        "# Totals: pass:1 fail:0 xfail:0 xpass:0 skip:0 error:0",
    ]  # fmt: skip
    ktap_check.parse(p.stdout)
    assert bindlab("report", str(tmp_path / "none.json")).returncode == 2


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) not installed")
def test_without_privilege_one_sentence_and_exit_2() -> None:
    good = ROOT / "fixtures" / "scenarios" / "reuseport.toml"  # readable by anyone
    for args in (["run", str(good)], ["rfc"], ["features"], ["reap"]):
        p = bindlab(*args, user="65534", cwd=Path("/"))
        assert p.returncode == 2, (args, p.stdout, p.stderr)
        assert (
            p.stderr.startswith("bindlab: bindlab cannot run here: it lacks CAP_SYS_ADMIN")
            and p.stderr.count("\n") == 1
        )
        assert p.stdout == ""


def test_vm_and_diff_are_delegated(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = []
    fake = types.ModuleType("bindlab._fake_diff")
    fake.cli = lambda argv: seen.append(argv) or 7  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "bindlab._fake_diff", fake)
    monkeypatch.setitem(cli.DELEGATED, "diff", "bindlab._fake_diff")
    assert cli.main(["diff", "a.json", "b.json", "--help"]) == 7
    assert seen == [["a.json", "b.json", "--help"]]

    monkeypatch.setitem(cli.DELEGATED, "vm", "bindlab._no_such_module")
    assert cli.main(["vm", "--kernel", "6.1"]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == "bindlab: 'bindlab vm' is not available: this installation has no bindlab._no_such_module module\n"
    )


@pytest.mark.privileged
def test_rfc_reports_hold_to_ktap_v1_and_xunit2(tmp_path: Path) -> None:
    p = bindlab("rfc", "-q", "-f", "ktap")
    assert p.returncode == 0, p.stderr
    doc = ktap_check.parse(p.stdout)
    assert {t.name.split("[")[0] for t in doc.tests} == {f.stem for f in RFC.glob("*.toml")}
    assert all(t.status == "pass" for t in doc.tests)
    out = tmp_path / "rfc.xml"
    p = bindlab("rfc", "-q", "-f", "junit", "-o", str(out))
    assert p.returncode == 0, p.stderr
    xunit2.validate(out)


@pytest.mark.privileged
def test_run_writes_junit_and_an_all_skipped_run_exits_4(tmp_path: Path) -> None:
    from bindlab import features

    bad = tmp_path / "mismatch.toml"
    bad.write_text(GOOD.replace('81" = "RST"', '81" = "web"'))
    p = bindlab("run", "-q", "-f", "junit", str(bad))
    assert p.returncode == 1
    xunit2.validate(p.stdout)
    assert "message=\"expected 'web', got 'RST'\"" in p.stdout
    missing = next((s for s in features.detect_all() if not s.ok), None)
    if missing is None:
        pytest.skip("every feature bindlab knows is present: no scenario skips here")
    skipping = tmp_path / "skipping.toml"
    skipping.write_text(f'requires = ["{missing.name}"]\n' + GOOD)
    p = bindlab("run", "-f", "ktap", str(skipping))
    assert p.returncode == 4, p.stdout + p.stderr  # kselftest's KSFT_SKIP
    doc = ktap_check.parse(p.stdout)
    assert [t.status for t in doc.leaves()] == ["skip", "skip"]
    assert doc.tests[0].reason == missing.reason


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) not installed")
def test_ktap_without_privilege_skips_every_row_and_exits_4() -> None:
    good = ROOT / "fixtures" / "scenarios" / "reuseport.toml"
    p = bindlab("run", "-f", "ktap", str(good), user="65534", cwd=Path("/"))
    assert p.returncode == 4, (p.stdout, p.stderr)
    assert p.stderr.startswith("bindlab: bindlab cannot run here") and p.stderr.count("\n") == 1
    doc = ktap_check.parse(p.stdout)
    assert doc.tests[0].status == "skip"
    assert doc.tests[0].reason.startswith("bindlab cannot run here: it lacks CAP_SYS_ADMIN")
