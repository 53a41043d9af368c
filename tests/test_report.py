"""Report formats from rows: terminal table, Markdown, JSON, KTAP, and from a results file."""

from __future__ import annotations

import html
import json
import re
import xml.etree.ElementTree as ET

import ktap_check
import pytest
import xunit2
from bindlab import report
from bindlab.report import addrspace
from bindlab.results import Results
from bindlab.results import TestResult as Outcome
from bindlab.scenario.run import ERROR, FAIL, PASS, SKIP, Row, ScenarioResult


def sample() -> list[ScenarioResult]:
    a = ScenarioResult(
        "split",
        "fixtures/scenarios/split.toml",
        [
            Row("step", "late: tcp bind 192.0.2.10:0", "EADDRINUSE", "EADDRINUSE", PASS),
            Row("flow", "tcp 198.18.0.1:1 -> 192.0.2.10:80", "nginx", "nginx", PASS),
            Row(
                "flow",
                "tcp 198.18.0.1:2 -> 192.0.2.200:80",
                "nginx",
                "apache",
                FAIL,
                "-> IP / TCP S\n<- IP / TCP SA",
            ),
            Row("flow", "tcp 198.18.0.1:3 -> 198.51.100.7:80", "a|b", "b", PASS),
        ],
        claim="two prefixes share a port",
        source="commit 0123456789ab",
        prefixes=("192.0.2.0/24", "198.51.100.0/24"),
    )
    b = ScenarioResult(
        "nobpf",
        "fixtures/scenarios/nobpf.toml",
        [
            Row(
                "flow",
                "udp 198.18.0.1:1 -> 192.0.2.1:53",
                "dns",
                "",
                SKIP,
                "sk_lookup dispatcher not available",
            )
        ],
    )
    c = ScenarioResult(
        "broken",
        "b.toml",
        [
            Row(
                "flow",
                "tcp 198.18.0.1:1 -> 192.0.2.1:80",
                "x",
                "",
                ERROR,
                "HarnessError: b.toml: setup.links[0] d0: boom",
            )
        ],
    )
    return [a, b, c]  # fmt: skip


def test_totals_and_ok() -> None:
    assert report.totals(sample()) == {PASS: 3, FAIL: 1, SKIP: 1, ERROR: 1}
    assert not report.ok(sample())
    assert report.ok(sample()[1:2])  # skips alone are fine
    # per scenario too: a failed or an errored row makes it not ok, a skipped one does not
    assert [res.ok for res in sample()] == [False, True, False]


def test_table_shows_each_row_side_by_side_with_the_packets_of_failures() -> None:
    text = report.table(sample(), {"release": "6.18.0"})
    lines = text.splitlines()
    assert lines[0] == "# kernel 6.18.0"
    assert "== split (fixtures/scenarios/split.toml): 3 pass, 1 fail" in lines
    assert "   claim:  two prefixes share a port" in lines
    row = next(ln for ln in lines if "192.0.2.200:80" in ln)
    assert re.fullmatch(r"\s+tcp 198\.18\.0\.1:2 -> 192\.0\.2\.200:80\s+nginx\s+apache\s+FAIL", row)
    assert lines[lines.index(row) + 1].strip() == "-> IP / TCP S"
    assert "   skip: sk_lookup dispatcher not available" in lines
    assert "   error: HarnessError: b.toml: setup.links[0] d0: boom" in lines
    assert lines[-1] == "# 6 rows in 3 scenarios: 3 pass, 1 fail, 1 skip, 1 error"


def test_markdown_escapes_pipes_in_cells() -> None:
    md = report.markdown(sample())
    assert "| `tcp 198.18.0.1:3 -> 198.51.100.7:80` | a\\|b | b | ✅ pass |" in md
    assert "| `tcp 198.18.0.1:2 -> 192.0.2.200:80` | nginx | apache | ❌ FAIL |" in md
    assert "> two prefixes share a port" in md and "## nobpf" in md


def test_json_round_trips() -> None:
    doc = json.loads(report.to_json(sample(), {"release": "6.18.0"}))
    assert doc["format"] == "bindlab-report/1" and doc["kernel"] == {"release": "6.18.0"}
    assert doc["totals"] == {"pass": 3, "fail": 1, "skip": 1, "error": 1}
    rows = doc["scenarios"][0]["rows"]
    assert rows[2] == {
        "kind": "flow", "name": "tcp 198.18.0.1:2 -> 192.0.2.200:80", "expected": "nginx",
        "observed": "apache", "status": "fail", "detail": "-> IP / TCP S\n<- IP / TCP SA", "line": None, "evidence": "",
    }  # fmt: skip


def test_ktap_v1_nests_a_subtest_per_scenario() -> None:
    text = report.ktap(sample(), {"release": "6.18.0", "machine": "x86_64"})
    assert text.splitlines() == [
        "KTAP version 1",
        "1..3",
        "# kernel 6.18.0 (x86_64)",
        "  KTAP version 1",
        "  1..4",
        "  # fixtures/scenarios/split.toml",
        "  # claim: two prefixes share a port",
        "  ok 1 late: tcp bind 192.0.2.10:0",
        "  ok 2 tcp 198.18.0.1:1 -> 192.0.2.10:80",
        "  # expected 'nginx', got 'apache'",  # diagnostics before the result line
        "  # -> IP / TCP S",
        "  # <- IP / TCP SA",
        "  not ok 3 tcp 198.18.0.1:2 -> 192.0.2.200:80",
        "  ok 4 tcp 198.18.0.1:3 -> 198.51.100.7:80",
        "# split: 1 of 4 rows not as expected",
        "not ok 1 split",
        "  KTAP version 1",
        "  1..1",
        "  # fixtures/scenarios/nobpf.toml",
        "  ok 1 udp 198.18.0.1:1 -> 192.0.2.1:53 # SKIP sk_lookup dispatcher not available",
        "ok 2 nobpf # SKIP sk_lookup dispatcher not available",
        "  KTAP version 1",
        "  1..1",
        "  # b.toml",
        "  not ok 1 tcp 198.18.0.1:1 -> 192.0.2.1:80 # ERROR HarnessError: b.toml: setup.links[0] d0: boom",
        "not ok 3 broken # ERROR HarnessError: b.toml: setup.links[0] d0: boom",
        "# Totals: pass:3 fail:1 xfail:0 xpass:0 skip:1 error:1",
    ]
    doc = ktap_check.parse(text)
    assert [(t.name, t.status) for t in doc.tests] == [
        ("split", "fail"), ("nobpf", "skip"), ("broken", "error"),
    ]  # fmt: skip
    assert doc.tests[0].subtests[2].diagnostics == [
        "expected 'nginx', got 'apache'", "-> IP / TCP S", "<- IP / TCP SA",
    ]  # fmt: skip


def test_ktap_names_never_hold_a_directive_mark() -> None:
    res = [
        ScenarioResult("x#y", "x.toml", [Row("step", "a#b", "OK", "OK", SKIP, "why #1\nline 2")])
    ]
    text = report.ktap(res)
    assert "  ok 1 a%23b # SKIP why %231 line 2" in text.splitlines()
    assert "ok 1 x%23y # SKIP why %231 line 2" in text.splitlines()
    ktap_check.parse(text)


@pytest.mark.parametrize(
    "bad, why",
    [
        ("TAP version 13\n1..0\n", "expected 'KTAP version 1'"),
        ("KTAP version 1\n1..2\nok 1 a\n", "the plan says 1..2 but 1 result"),
        ("KTAP version 1\n1..2\nok 1 a\nok 3 b\n", "test number 3, expected 2"),
        ("KTAP version 1\n1..1\nok 1 a # SKIP\n", "SKIP without a reason"),
        ("KTAP version 1\n1..1\nok 1 a # ERROR x\n", "ERROR on an 'ok' line"),
        ("KTAP version 1\n1..1\n  KTAP version 1\n  1..1\n  not ok 1 x\nok 1 a\n", "'ok' although subtest 1 failed"),
        ("KTAP version 1\n1..1\nnot ok 1 a\n# e\n", None),
        ("KTAP version 1\n1..1\n  KTAP version 1\n  1..1\n  ok 1 x\n", "without its parent's result"),
        ("KTAP version 1\n1..1\nok 1 a\nstray line\n", "neither a result"),
        ("KTAP version 1\n1..1\nok 1 a\n# Totals: pass:0 fail:1 xfail:0 xpass:0 skip:0 error:0\n", "Totals says"),
    ],
)  # fmt: skip
def test_the_ktap_checker_refuses_what_the_spec_does_not_allow(bad: str, why: str | None) -> None:
    if why is None:  # a trailing diagnostic line is fine
        ktap_check.parse(bad)
        return
    with pytest.raises(ktap_check.KTAPError, match=re.escape(why)):
        ktap_check.parse(bad)


def test_exit_status_is_kselftests() -> None:
    every_skip = [sample()[1]]
    assert report.exit_status(every_skip) == report.EXIT_SKIP == 4
    assert report.exit_status(sample()) == report.EXIT_FAIL == 1
    assert report.exit_status([sample()[0]]) == 1 and report.exit_status([]) == 0
    passing = ScenarioResult(
        "p", "p.toml", [Row("flow", "tcp 1.1.1.1:1 -> 2.2.2.2:2", "a", "a", PASS)]
    )
    assert report.exit_status([passing, sample()[1]]) == report.EXIT_PASS == 0


def test_junit_validates_against_xunit2_with_json_properties() -> None:
    text = report.junit(sample(), {"release": "6.18.0"})
    xunit2.validate(text)
    root = ET.fromstring(text)
    assert root.get("tests") == "6" and root.get("failures") == "1" and root.get("errors") == "1"
    split = root.find("testsuite[@name='split']")
    assert split is not None
    props = {p.get("name"): json.loads(p.get("value")) for p in split.iter("property")}
    assert props == {
        "bindlab.path": "fixtures/scenarios/split.toml",
        "bindlab.claim": "two prefixes share a port",
        "bindlab.source": "commit 0123456789ab",
        "bindlab.prefixes": ["192.0.2.0/24", "198.51.100.0/24"],
        "bindlab.kernel": {"release": "6.18.0"},
    }
    failed = split.find("testcase[@name='tcp 198.18.0.1:2 -> 192.0.2.200:80']")
    assert failed is not None and failed.get("classname") == "fixtures.scenarios.split"
    assert failed.find("failure").get("message") == "expected 'nginx', got 'apache'"
    assert failed.find("failure").text == "-> IP / TCP S\n<- IP / TCP SA"
    assert root.find(".//testcase[@name='udp 198.18.0.1:1 -> 192.0.2.1:53']/skipped") is not None
    assert root.find(".//testcase[@name='tcp 198.18.0.1:1 -> 192.0.2.1:80']/error") is not None


def test_junit_keeps_what_xml_cannot_hold_readable() -> None:
    res = [ScenarioResult("c", "c.toml", [Row("flow", "x", "a", "b", FAIL, "bell \x07 here")])]
    text = report.junit(res)
    xunit2.validate(text)
    assert "bell \\x07 here" in text


def test_address_space_holds_only_probed_points() -> None:
    res = ScenarioResult("v", "v.toml", [
        Row("flow", "tcp 198.18.0.1:1 -> 192.0.2.10:80", "a", "a", PASS),
        Row("flow", "tcp 198.18.0.2:1 -> 192.0.2.10:80", "a|b", "b", PASS),
        Row("flow", "tcp 198.18.0.1:2 -> 192.0.2.11:80", "a", "b", FAIL),
        Row("flow", "tcp 198.18.0.1:4 -> 203.0.113.9:80", "NONE", "NONE", PASS),
        Row("step", "s: tcp bind 192.0.2.1:0", "OK", "OK", PASS),
    ], prefixes=("192.0.2.0/24",))  # fmt: skip
    view = addrspace.view(res)
    assert list(view) == [("tcp", 80)]
    declared, outside = view[("tcp", 80)]
    assert str(declared.prefix) == "192.0.2.0/24" and outside.prefix is None
    ten, eleven = declared.points
    assert (str(ten.addr), dict(ten.verdicts), ten.group, ten.ok) == (
        "192.0.2.10",
        {"a": 1, "b": 1},
        True,
        True,
    )
    assert ten.members == {"a", "b"}
    assert (str(eleven.addr), dict(eleven.verdicts), eleven.group, eleven.ok) == (
        "192.0.2.11",
        {"b": 1},
        False,
        False,
    )
    assert declared.offset(ten) == pytest.approx(10 / 255)
    assert [str(p.addr) for p in outside.points] == ["203.0.113.9"]


def test_from_a_results_file(tmp_path) -> None:
    res = Results(kernel={"release": "6.1.0"}, tests={
        "fixtures/scenarios/x.toml::tcp 198.18.0.1:1 -> 192.0.2.1:80": Outcome(
            "failed", "expected 'a', got 'b'", {"tcp 198.18.0.1:1 -> 192.0.2.1:80": "b"}, {"tcp 198.18.0.1:1 -> 192.0.2.1:80": "a"}),
        "fixtures/scenarios/x.toml::c: tcp bind 192.0.2.1:0": Outcome(
            "passed", "", {"c: tcp bind 192.0.2.1:0": "EADDRINUSE"}, {}, {"c: tcp bind 192.0.2.1:0": "EADDRINUSE"}),
        "tests/test_y.py::test_z": Outcome("skipped", "no TUN"),
    })  # fmt: skip
    path = tmp_path / "r.json"
    res.dump(str(path))
    groups = report.from_results(Results.load(str(path)))
    assert [(g.name, g.path) for g in groups] == [
        ("x", "fixtures/scenarios/x.toml"),
        ("test_y", "tests/test_y.py"),
    ]
    assert [(r.kind, r.name, r.expected, r.observed, r.status) for r in groups[0].rows] == [
        ("step", "c: tcp bind 192.0.2.1:0", "EADDRINUSE", "EADDRINUSE", PASS),
        ("flow", "tcp 198.18.0.1:1 -> 192.0.2.1:80", "a", "b", FAIL),
    ]
    assert groups[1].rows == [Row("test", "test_z", "", "", SKIP, "no TUN")]


def test_render_rejects_unknown_formats() -> None:
    from bindlab import cli

    assert set(report.FORMATS) >= {"table", "md", "json", "html", "ktap", "junit"}
    # the CLI's -f choices, kept without importing; kcidb is rendered by bindlab.kcidb
    assert set(cli.FORMATS) == set(report.FORMATS) | {"kcidb"}
    with pytest.raises(ValueError, match="unknown report format 'pdf'"):
        report.render("pdf", sample())


def test_a_python_tests_rows_have_expected_verdicts_and_packets_of_mismatches() -> None:
    a, b = "tcp 198.18.0.1:1 -> 192.0.2.1:80", "tcp 198.18.0.1:2 -> 192.0.2.2:80"
    res = Results(kernel={"release": "6.18.0"}, tests={
        "scenarios/test_x.py::test_split[ipv4]": Outcome(
            "failed", "AssertionError: assert {...} == {...}", verdicts={a: "web", b: "RST"},
            expected={a: "web", b: "api"}, packets={b: "-> IP / TCP S\n<- IP / TCP RA"}),
    })  # fmt: skip
    (group,) = report.from_results(res)
    assert [(r.name, r.expected, r.observed, r.status) for r in group.rows] == [
        (a, "web", "web", PASS), (b, "api", "RST", FAIL),
    ]  # fmt: skip
    assert (
        group.rows[1].detail
        == "AssertionError: assert {...} == {...}\n-> IP / TCP S\n<- IP / TCP RA"
    )
    table = report.table([group])
    assert re.search(r"tcp 198\.18\.0\.1:2 -> 192\.0\.2\.2:80\s+api\s+RST\s+FAIL", table)
    assert "      <- IP / TCP RA" in table


def test_html_marks_failed_and_errored_rows() -> None:
    """Issue 17, item 9: the HTML report once showed a FAIL row as ok (its only test was of
    an all-pass run)."""
    page = report.html(sample(), {"release": "k", "machine": "x86_64"})
    row = r'<tr class="row (\w+)"><td><code>([^<]*)</code>.*?<td class="res">(\w+)</td></tr>'
    cells = re.findall(row, page, re.S)
    want = [
        (r.status, html.escape(r.name), report.SHOWN[r.status])
        for res in sample()
        for r in res.rows
    ]
    assert sorted(cells) == sorted(want)
    assert ("fail", "tcp 198.18.0.1:2 -&gt; 192.0.2.200:80", "FAIL") in cells
    assert "1 fail" in page and "1 error" in page
