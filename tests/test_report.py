"""Report formats from rows: terminal table, Markdown, JSON, KTAP, and from a results file."""

from __future__ import annotations

import json
import re

import pytest
from bindlab import report
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


def test_ktap() -> None:
    lines = report.ktap(sample()).splitlines()
    assert lines[:2] == ["TAP version 13", "1..6"]
    assert "ok 1 split: late: tcp bind 192.0.2.10:0" in lines
    assert "not ok 3 split: tcp 198.18.0.1:2 -> 192.0.2.200:80" in lines
    assert (
        lines[lines.index("not ok 3 split: tcp 198.18.0.1:2 -> 192.0.2.200:80") + 1]
        == "# expected 'nginx', got 'apache'"
    )
    assert (
        "ok 5 nobpf: udp 198.18.0.1:1 -> 192.0.2.1:53 # SKIP sk_lookup dispatcher not available"
        in lines
    )
    assert "not ok 6 broken: tcp 198.18.0.1:1 -> 192.0.2.1:80" in lines
    assert lines[-1] == "# Totals: pass:3 fail:1 xfail:0 xpass:0 skip:1 error:1"
    tests = [ln for ln in lines if re.match(r"(not )?ok \d+ ", ln)]
    assert [int(ln.split()[1 if ln.startswith("ok") else 2]) for ln in tests] == list(range(1, 7))
    assert all(ln.startswith(("TAP", "1..", "ok", "not ok", "# ")) for ln in lines)


def test_ktap_names_never_hold_a_directive_mark() -> None:
    res = [
        ScenarioResult("x#y", "x.toml", [Row("step", "a#b", "OK", "OK", SKIP, "why #1\nline 2")])
    ]
    assert report.ktap(res).splitlines()[2:4] == [
        "# scenario x#y (x.toml)",
        "ok 1 x%23y: a%23b # SKIP why %231 line 2",
    ]


def test_prefix_view_spans_follow_the_observed_labels() -> None:
    res = ScenarioResult("v", "v.toml", [
        Row("flow", "tcp 198.18.0.1:1 -> 192.0.2.10:80", "a", "a", PASS),
        Row("flow", "tcp 198.18.0.1:2 -> 192.0.2.11:80", "a", "b", FAIL),
        Row("flow", "tcp 198.18.0.1:3 -> 192.0.2.200:80", "b", "b", PASS),
        Row("flow", "tcp 198.18.0.1:4 -> 203.0.113.9:80", "NONE", "NONE", PASS),
        Row("step", "s: tcp bind 192.0.2.1:0", "OK", "OK", PASS),
    ], prefixes=("192.0.2.0/24",))  # fmt: skip
    ip = lambda s: int(__import__("ipaddress").ip_address(s))  # noqa: E731
    assert report.prefix_view(res) == {
        ("tcp", 80): [
            ("192.0.2.0/24", [(ip("192.0.2.0"), ip("192.0.2.10"), "a", True), (ip("192.0.2.11"), ip("192.0.2.255"), "b", False)]),
            ("203.0.113.0/24", [(ip("203.0.113.0"), ip("203.0.113.255"), "NONE", True)]),
        ]
    }  # fmt: skip


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
    assert set(report.FORMATS) == {"table", "md", "json", "html", "ktap"}
    with pytest.raises(ValueError, match="unknown report format 'pdf'"):
        report.render("pdf", sample())
