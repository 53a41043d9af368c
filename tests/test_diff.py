"""bindlab diff: rows for changed verdicts, errnos, outcomes and skips; exit code on regression."""

from __future__ import annotations

import json

import pytest
from bindlab import diff
from bindlab.results import Results
from bindlab.results import TestResult as Observed

FLOW = "tcp 198.18.0.1:40000 -> 192.0.2.10:80"


def results(release: str, features: dict[str, bool] | None = None, **tests: Observed) -> Results:
    feats = {
        n: {"ok": ok, "detail": "ok" if ok else "-> ENOTSUP"} for n, ok in (features or {}).items()
    }
    return Results(kernel={"release": release, "features": feats}, tests=dict(tests))


def passed(verdict: str) -> Observed:
    return Observed("passed", verdicts={FLOW: verdict})


def kinds(rows: list[diff.DiffRow]) -> list[tuple[str, str, str, bool]]:
    return [(r.kind, r.a, r.b, r.regression) for r in rows]


def test_identical_runs_have_no_rows():
    a = results("6.18", {"LINK_DUMMY": True}, t=passed("web"))
    assert diff.diff(a, a) == []


def test_changed_verdict_is_a_regression_and_shows_expected():
    a = results("6.18", t=Observed("passed", verdicts={FLOW: "web"}, expected={FLOW: "web"}))
    b = results("6.1", t=Observed("failed", verdicts={FLOW: "RST"}, reason="assert"))
    rows = diff.diff(a, b)
    assert kinds(rows) == [("outcome", "passed", "failed", True), ("verdict", "web", "RST", True)]
    assert rows[1].item == FLOW and rows[1].note == "expected web"


def test_fixed_test_is_not_a_regression():
    a = results("6.1", t=Observed("failed", reason="boom"))
    b = results("6.18", t=Observed("passed"))
    assert kinds(diff.diff(a, b)) == [("outcome", "failed", "passed", False)]


@pytest.mark.parametrize(
    ("oa", "ob", "note"),
    [
        ("passed", "skipped", "skip appeared: LINK_VRF missing"),
        ("skipped", "passed", "skip vanished"),
    ],
)
def test_skips_that_appear_or_vanish_are_reported_not_regressions(oa, ob, note):
    a = results("a", t=Observed(oa, reason="LINK_VRF missing" if oa == "skipped" else ""))
    b = results("b", t=Observed(ob, reason="LINK_VRF missing" if ob == "skipped" else ""))
    [row] = diff.diff(a, b)
    assert (row.kind, row.regression) == ("skip", False)
    assert row.note.startswith(note)


def test_changed_errno_is_a_regression():
    a = results("a", t=Observed("passed", errnos={"bind b 192.0.2.1:80": "EADDRINUSE"}))
    b = results("b", t=Observed("passed", errnos={"bind b 192.0.2.1:80": "EADDRNOTAVAIL"}))
    assert kinds(diff.diff(a, b)) == [("errno", "EADDRINUSE", "EADDRNOTAVAIL", True)]


def test_flow_probed_on_one_side_only_is_shown_not_a_regression():
    a = results("a", t=Observed("passed", verdicts={FLOW: "web"}))
    b = results("b", t=Observed("passed"))
    assert kinds(diff.diff(a, b)) == [("verdict", "web", "-", False)]


def test_tests_on_one_side_only_and_feature_changes():
    a = results("6.18", {"LINK_DUMMY": False}, old=passed("x"))
    b = results("6.1", {"LINK_DUMMY": True}, new=passed("x"))
    rows = diff.diff(a, b)
    assert [(r.kind, r.test, r.note) for r in rows] == [
        ("feature", "LINK_DUMMY", "A: -> ENOTSUP"),
        ("test", "new", "only in B"),
        ("test", "old", "only in A"),
    ]
    assert not any(r.regression for r in rows)
    assert [r.kind for r in diff.diff(a, b, features=False)] == ["test", "test"]


def test_reuseport_reshuffle_is_one_row_unless_strict():
    flows = [f"tcp 198.18.0.1:{p} -> 192.0.2.10:80" for p in (1, 2, 3, 4)]
    a = results("a", t=Observed("passed", verdicts=dict(zip(flows, "abab", strict=True))))
    b = results("b", t=Observed("passed", verdicts=dict(zip(flows, "abba", strict=True))))
    [row] = diff.diff(a, b)
    assert (row.kind, row.item, row.a, row.regression) == ("spread", "2 of 4 flows", "a, b", False)
    assert [r.kind for r in diff.diff(a, b, strict=True)] == ["verdict", "verdict"]
    assert all(r.regression for r in diff.diff(a, b, strict=True))
    # a label B never saw, or a pinned flow, is a real change
    c = results("c", t=Observed("passed", verdicts=dict(zip(flows, "abbc", strict=True))))
    assert [r.regression for r in diff.diff(a, c)] == [True, True]
    pinned = Observed(
        "passed", verdicts=dict(zip(flows, "abba", strict=True)), expected={flows[2]: "a"}
    )
    assert [r.kind for r in diff.diff(a, results("d", t=pinned))] == ["verdict", "spread"]


def test_cli_text_markdown_json_and_exit_codes(tmp_path, capsys):
    pa, pb = tmp_path / "a.json", tmp_path / "b.json"
    results("6.18", t=passed("web")).dump(str(pa))
    b = results("6.1", t=Observed("passed", verdicts={FLOW: "RST"}))
    b.kernel |= {"vm": {"accel": "tcg", "fs": "9p"}, "build": {"config_digest": "abc123"}}
    b.dump(str(pb))
    assert diff.cli([str(pa), str(pb)]) == 1
    out = capsys.readouterr().out
    assert "(vm tcg 9p, config abc123)" in out
    assert f"verdict  t  {FLOW}: web -> RST  REGRESSION" in out
    assert out.rstrip().endswith("1 difference(s), 1 regression(s); 1 test(s) in both runs")
    assert diff.cli([str(pa), str(pa), "-f", "md"]) == 0
    assert "| kind | test / feature |" in capsys.readouterr().out
    assert diff.cli([str(pa), str(pb), "--format", "json"]) == 1
    assert json.loads(capsys.readouterr().out)[0]["b"] == "RST"


def test_cli_format_names_are_every_commands_and_old_ones_still_work(tmp_path, capsys):
    from bindlab import cli

    assert set(diff.FORMATS) <= set(cli.FORMATS)  # one spelling across commands
    pa = tmp_path / "a.json"
    results("6.18", t=passed("web")).dump(str(pa))
    assert diff.cli([str(pa), str(pa), "--format", "markdown"]) == 0
    out = capsys.readouterr()
    assert "| kind | test / feature |" in out.out
    assert "--format markdown is deprecated: use -f md" in out.err
    assert diff.cli([str(pa), str(pa), "--format", "text"]) == 0
    assert "# A: " in capsys.readouterr().out
    with pytest.raises(SystemExit):
        diff.cli([str(pa), str(pa), "-f", "pdf"])
    assert "invalid choice: 'pdf' (choose from table, md, json)" in capsys.readouterr().err


def test_cli_unreadable_file_exits_2(tmp_path, capsys):
    bad = tmp_path / "x.json"
    bad.write_text('{"format": "other"}')
    assert diff.cli([str(bad), str(bad)]) == 2
    assert "not a bindlab-results/1 file" in capsys.readouterr().err
    assert diff.cli([str(tmp_path / "missing.json"), str(bad)]) == 2


def test_a_verdict_moving_inside_its_expected_alternatives_is_no_regression():
    """Both kernels passed a row that allows ``r1|r2`` (or a port range) with another member."""
    a = Observed("passed", verdicts={FLOW: "r1", "s": "port 40003"}, expected={FLOW: "r1|r2"})
    b = Observed("passed", verdicts={FLOW: "r2", "s": "port 40007"}, expected={FLOW: "r1|r2"})
    a.errnos = b.errnos = {"s": "port 40000-40010"}
    rows = diff.diff(results("a", t=a), results("b", t=b))
    assert [(r.item, r.regression, r.note) for r in rows] == [
        ("s", False, "both within expected port 40000-40010"),
        (FLOW, False, "both within expected r1|r2"),
    ]
    # outside the alternatives, or with a failing side, it stays a regression
    c = Observed("passed", verdicts={FLOW: "r3"}, expected={FLOW: "r1|r2"})
    assert [
        r.regression for r in diff.diff(results("a", t=a), results("c", t=c)) if r.item == FLOW
    ] == [True]
    d = Observed("failed", "x", verdicts={FLOW: "r2"}, expected={FLOW: "r1|r2"})
    assert any(r.regression for r in diff.diff(results("a", t=a), results("d", t=d)))
    assert diff.satisfies("port 1-3", "port 2") and not diff.satisfies("port 1-3", "port 4")
    # a range holds both its ends (the kernel's ip_local_port_range is inclusive too)
    assert diff.satisfies("port 1-3", "port 1") and diff.satisfies("port 1-3", "port 3")
    assert not diff.satisfies("port 1-3", "port 0")
