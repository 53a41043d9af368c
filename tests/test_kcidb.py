"""KCIDB export (``bindlab report -f kcidb``, ``bindlab rfc -f kcidb``), validated with
KernelCI's own schema library ``kcidb-io`` on real results: the suite's results files of two
kernels (docs/matrix), a fresh pytest run of the RFC scenario files, and ``bindlab rfc``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bindlab import kcidb

schema = pytest.importorskip("kcidb_io.schema", reason="kcidb-io (pip install -e '.[test]')")
jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).resolve().parent.parent
MATRIX = sorted((ROOT / "docs" / "matrix").glob("*.json"))
RFC_DIR = ROOT / "harness" / "bindlab" / "data" / "rfc"
PATH_RE = schema.LATEST.test_path_re
STATUS = {"passed": "PASS", "failed": "FAIL", "skipped": "SKIP", "error": "ERROR"}


def bindlab(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "bindlab", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)


def export(*args: str, tmp_path: Path) -> dict[str, Any]:
    out = tmp_path / "kcidb.json"
    p = bindlab(*args, "-f", "kcidb", "-o", str(out))
    assert p.returncode == 0, p.stderr
    return json.loads(out.read_text())


def valid(data: dict[str, Any]) -> dict[str, Any]:
    """The document, after kcidb-io accepted it (the declared version exactly, and latest)."""
    declared = next(v for v in schema.LATEST.history if (v.major, v.minor) == (5, 0))
    declared.validate_exactly(data)
    schema.LATEST.validate(schema.LATEST.upgrade(data))
    tests = data["tests"]
    assert all(PATH_RE.fullmatch(t["path"]) for t in tests)
    assert len({t["id"] for t in tests}) == len(tests) == len({t["path"] for t in tests})
    (build,) = data["builds"]
    (checkout,) = data["checkouts"]
    assert build["checkout_id"] == checkout["id"]
    assert {t["build_id"] for t in tests} == {build["id"]}
    return data


@pytest.mark.parametrize("results", MATRIX, ids=[p.stem for p in MATRIX])
def test_suite_results_of_two_kernels_validate(results, tmp_path):
    data = valid(export("report", str(results), tmp_path=tmp_path))
    source = json.loads(results.read_text())
    assert {t["status"] for t in data["tests"]} == {"PASS", "SKIP"}  # both files have skips
    assert len(data["tests"]) == len(source["tests"])  # one KCIDB test per pytest test
    release = source["kernel"]["release"]
    env = data["tests"][0]["environment"]
    assert env["misc"]["kernel_release"] == release and release in env["comment"]
    by_id = {t["misc"]["nodeid"]: t for t in data["tests"]}
    for nodeid, t in source["tests"].items():
        k = by_id[nodeid]
        assert k["status"] == STATUS[t["outcome"]]
        flow, verdict = next(iter(t["verdicts"].items()), ("", ""))
        if flow:  # the observed verdict is in the test's output
            assert f"{flow}: observed {verdict}" in k["log_excerpt"]
        if t["outcome"] == "skipped":
            assert t["reason"] in k["log_excerpt"]


def test_paths_are_stable_across_kernels(tmp_path):
    a, b = (export("report", str(p), tmp_path=tmp_path) for p in MATRIX[:2])
    paths = [{t["misc"]["nodeid"]: t["path"] for t in d["tests"]} for d in (a, b)]
    common = paths[0].keys() & paths[1].keys()
    assert len(common) > 300 and all(paths[0][n] == paths[1][n] for n in common)
    assert a["builds"][0]["id"] != b["builds"][0]["id"]  # two kernels, two builds


@pytest.mark.privileged
def test_rfc_export_validates_and_matches_the_pytest_paths(tmp_path):
    """``bindlab rfc -f kcidb`` (a test per row) and pytest's run of the same files agree."""
    rfc = valid(export("rfc", "-q", tmp_path=tmp_path))
    assert rfc["tests"] and {t["status"] for t in rfc["tests"]} <= {"PASS", "SKIP"}
    row = next(t for t in rfc["tests"] if t["misc"]["kind"] == "flow")
    assert row["log_excerpt"].startswith(f"{row['comment'].split(': ', 1)[1]}: observed ")
    assert row["misc"]["observed"] and row["path"].startswith(
        f"bindlab.{Path(row['misc']['file']).stem}."
    )
    results = tmp_path / "rfc-results.json"
    p = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(RFC_DIR),
         f"--bindlab-results={results}"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert p.returncode == 0, p.stdout[-2000:]
    suite = valid(export("report", str(results), tmp_path=tmp_path))
    assert {t["path"] for t in suite["tests"]} == {t["path"] for t in rfc["tests"]}


def test_names_become_kcidb_paths_and_clashes_get_a_digest():
    assert kcidb.part("tcp [2001:db8::1]:40001 -> [2001:db8::2]:81") == (
        "tcp_2001_db8_1_40001_to_2001_db8_2_81"
    )
    assert kcidb.nodeid_parts("scenarios/test_x.py::C::test_y[ipv6-udp]") == (
        "test_x", "C", "test_y", "ipv6-udp",
    )  # fmt: skip
    v6 = "tcp [2001:db8::1]:40001 -> [2001:db8::2]:81"
    assert kcidb.nodeid_parts(f"rfc/a.toml::flow[{v6}][ipv6]") == ("a", v6, "ipv6")
    assert kcidb.nodeid_parts(f"rfc/a.toml::flow[{v6}]") == ("a", v6)
    v4 = "udp 198.18.0.1:1 -> 192.0.2.1:53"
    assert kcidb.nodeid_parts(f"rfc/a.toml::flow[{v4}]") == ("a", v4)
    assert kcidb.nodeid_parts("rfc/a.toml::socket[b: tcp bind 192.0.2.1:80][ipv4]") == (
        "a", "b: tcp bind 192.0.2.1:80", "ipv4",
    )  # fmt: skip
    paths = kcidb.unique_paths([("s", "a b"), ("s", "a:b"), ("s", "c")])
    assert paths[2] == "bindlab.s.c" and paths[0] != paths[1]
    assert all(p.startswith("bindlab.s.a_b-") for p in paths[:2])
    assert paths == kcidb.unique_paths([("s", "a b"), ("s", "a:b"), ("s", "c")])  # stable


def test_the_schema_check_can_fail(tmp_path):
    data = export("report", str(MATRIX[0]), tmp_path=tmp_path)
    data["tests"][0]["path"] = "bindlab.a flow with spaces"
    with pytest.raises(jsonschema.ValidationError):
        schema.LATEST.validate(data)


def test_a_bad_origin_is_one_usage_error():
    env = dict(os.environ, BINDLAB_KCIDB_ORIGIN="Bind-Lab")
    p = bindlab("report", str(MATRIX[0]), "-f", "kcidb", env=env)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr == "bindlab: $BINDLAB_KCIDB_ORIGIN='Bind-Lab': a KCIDB origin is [a-z0-9_]+\n"
    env["BINDLAB_KCIDB_ORIGIN"] = "my_ci"
    ok = bindlab("report", str(MATRIX[0]), "-f", "kcidb", env=env)
    assert ok.returncode == 0, ok.stderr
    doc = json.loads(ok.stdout)
    assert {t["origin"] for t in doc["tests"]} == {"my_ci"} and doc["builds"][0]["id"].startswith(
        "my_ci:"
    )
