"""KCIDB export: a run as KernelCI's common report data (``bindlab report -f kcidb``).

KCIDB (the schema of ``kcidb-io``) links three kinds of record: a *checkout* (the kernel
source that was tested), a *build* (the kernel binary and its config) and *tests* run on
that build. bindlab tests kernels it did not build, so a run becomes::

    checkout  ORIGIN:RELEASE@VERSION-DIGEST   the running kernel's release and uname -v
    build     ORIGIN:RELEASE+CONFIG-DIGEST    its architecture, package or image, config facts
    test      ORIGIN:RUN:PATH                 one per pytest test, or per scenario row

with the kernel release and config as every test's ``environment``, and the observed
verdict in its ``log_excerpt`` (and ``misc``). Paths are stable across runs and kernels:
``bindlab.<module or scenario>.<test or row>[.<variant>]``, each part reduced to KCIDB's path alphabet
(``[A-Za-z0-9_-]``); two names that reduce alike get a digest of their own name appended.

The origin (the CI system's name in KCIDB) is ``bindlab`` unless ``$BINDLAB_KCIDB_ORIGIN``
says otherwise. Nothing here touches a namespace: it reads results, as ``report`` does.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from bindlab.errors import ConfigError
from bindlab.results import ERROR, FAIL, PASS, SKIP, Results, ScenarioResult, TestResult

VERSION = {"major": 5, "minor": 0}  # the oldest schema with every field used here
ORIGIN_ENV = "BINDLAB_KCIDB_ORIGIN"
DEFAULT_ORIGIN = "bindlab"
ROOT = "bindlab"  # the first part of every test path
STATUS = {PASS: "PASS", FAIL: "FAIL", SKIP: "SKIP", ERROR: "ERROR"}
OUTCOME_STATUS = {"passed": "PASS", "failed": "FAIL", "skipped": "SKIP", "error": "ERROR"}
MAX_VERDICTS = 50  # verdicts listed per test in log_excerpt and misc; the rest are counted
MAX_EXCERPT = 16384  # KCIDB's log_excerpt limit


def origin() -> str:
    """The KCIDB origin: ``$BINDLAB_KCIDB_ORIGIN`` or ``bindlab``; ConfigError if malformed."""
    name = os.environ.get(ORIGIN_ENV) or DEFAULT_ORIGIN
    if not re.fullmatch(r"[a-z0-9_]+", name):
        raise ConfigError(f"${ORIGIN_ENV}={name!r}: a KCIDB origin is [a-z0-9_]+")
    return name


def part(name: str) -> str:
    """One path component in KCIDB's alphabet: ``tcp 10.0.0.1:80 -> ...`` -> ``tcp_10_0_0_1_80_to_...``."""
    text = name.replace("->", " to ").replace("<-", " from ")
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "_"


def _digest(text: str, n: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def unique_paths(names: Sequence[tuple[str, ...]]) -> list[str]:
    """A KCIDB path per name (a tuple of parts), unique: reduced alike -> digest appended."""
    plain = [".".join([ROOT, *(part(p) for p in parts)]) for parts in names]
    clashes = {p for p, n in Counter(plain).items() if n > 1}
    return [
        f"{p}-{_digest(chr(0).join(parts))}" if p in clashes else p
        for p, parts in zip(plain, names, strict=True)
    ]


def split_variant(name: str) -> tuple[str, ...]:
    """``test_y[ipv4-tcp]`` -> ``("test_y", "ipv4-tcp")``: a parameter set or family variant
    is the last level of the path; a name without one stays whole."""
    m = re.fullmatch(r"(.+?)\[([^\[\]]+)\]", name)
    return (m.group(1), m.group(2)) if m else (name,)


def nodeid_parts(nodeid: str) -> tuple[str, ...]:
    """``scenarios/test_x.py::C::test_y[ipv4]`` -> ``("test_x", "C", "test_y", "ipv4")``."""
    file, _, rest = nodeid.partition("::")
    stem = os.path.basename(file).rsplit(".", 1)[0] if file else "tests"
    if not rest:
        return (stem,)
    cut = rest.find("[")  # "::" inside parameters (IPv6 flows) does not separate levels
    head, params = (rest[:cut], rest[cut:]) if cut >= 0 else (rest, "")
    *outer, last = head.split("::")
    item = last + params
    # a scenario file's row: flow[NAME] or socket[NAME], then its family variant if any
    row = re.fullmatch(r"(?:flow|socket)\[(.*?)\](?:\[([^\[\]]+)\])?", item)
    if row:
        return (stem, *outer, row.group(1), *([row.group(2)] if row.group(2) else []))
    return (stem, *outer, *split_variant(item))


# -- checkout, build, environment ----------------------------------------------------------


def _kernel_records(kernel: dict[str, Any], org: str) -> tuple[dict[str, Any], dict[str, Any]]:
    release = str(kernel.get("release") or "unknown")
    version = str(kernel.get("version") or "")
    build_facts = kernel.get("build") or {}
    config_digest = build_facts.get("config_digest") or ""
    checkout = {
        "id": f"{org}:{release}@{_digest(version, 12)}",
        "origin": org,
        "comment": f"Linux {release} {version}".strip(),
        "valid": True,
        "misc": {"kernel_release": release, "kernel_version": version},
    }
    arch = re.sub(r"[^a-z0-9_]", "_", str(kernel.get("machine") or "").lower())
    build: dict[str, Any] = {
        "id": f"{org}:{release}+{config_digest or 'config-unknown'}",
        "checkout_id": checkout["id"],
        "origin": org,
        "comment": f"{release} as tested by bindlab (not built by it)",
        "status": "PASS",  # it booted and ran the tests
        "misc": {
            "features": {k: bool(v.get("ok")) for k, v in (kernel.get("features") or {}).items()},
            **{k: v for k, v in build_facts.items() if v not in (None, "", {})},
        },
    }
    if arch:
        build["architecture"] = arch
    name = build_facts.get("package") or build_facts.get("spec")
    build["config_name"] = str(name) if name else "the running kernel's"
    return checkout, build


def environment(kernel: dict[str, Any]) -> dict[str, Any]:
    """A test's ``environment``: the kernel release, its config and where it ran (host/VM)."""
    facts = kernel.get("build") or {}
    vm = kernel.get("vm") or {}
    where = f"VM ({vm.get('accel', '?')}, {vm.get('fs', '?')})" if vm else "host"
    misc: dict[str, Any] = {
        "kernel_release": kernel.get("release", "unknown"),
        "machine": kernel.get("machine", ""),
        "config_digest": facts.get("config_digest") or "",
        "config": facts.get("config") or {},
        "where": where,
    }
    return {"comment": f"Linux {kernel.get('release', '?')} on {where}", "misc": misc}


# -- tests ---------------------------------------------------------------------------------


def _excerpt(lines: Iterable[str]) -> str:
    text = "\n".join(lines)
    return text if len(text) <= MAX_EXCERPT else text[: MAX_EXCERPT - 15] + "\n... (cut)"


def _pytest_output(t: TestResult) -> tuple[str, dict[str, Any]]:
    lines = [f"outcome: {t.outcome}"] + ([f"reason: {t.reason}"] if t.reason else [])
    shown = dict(list(t.verdicts.items())[:MAX_VERDICTS])
    for flow, verdict in shown.items():
        want = t.expected.get(flow)
        lines.append(f"{flow}: observed {verdict}" + (f", expected {want}" if want else ""))
    for step, errno in t.errnos.items():
        lines.append(f"{step}: {errno}")
    if len(t.verdicts) > len(shown):
        lines.append(f"... {len(t.verdicts) - len(shown)} more verdicts")
    misc = {
        "outcome": t.outcome,
        "verdicts": shown,
        "verdict_count": len(t.verdicts),
        "expected": dict(list(t.expected.items())[:MAX_VERDICTS]),
        "errnos": t.errnos,
    }
    return _excerpt(lines), misc


def _document(
    kernel: dict[str, Any], created: str, tests: list[tuple[tuple[str, ...], dict[str, Any]]]
) -> dict[str, Any]:
    org = origin()
    checkout, build = _kernel_records(kernel, org)
    run = _digest(f"{created}\0{build['id']}", 12)
    env = environment(kernel)
    records = []
    for path, (_, fields) in zip(unique_paths([n for n, _ in tests]), tests, strict=True):
        records.append(
            {
                "id": f"{org}:{run}:{path}",
                "build_id": build["id"],
                "origin": org,
                "path": path,
                "environment": env,
                "start_time": created,
                **fields,
            }
        )
    return {"version": VERSION, "checkouts": [checkout], "builds": [build], "tests": records}


def _time(created: str) -> str:
    """``created`` as RFC 3339 (UTC when it names no zone); now when it is empty or bad."""
    try:
        t = datetime.fromisoformat(created)
    except ValueError:
        t = datetime.now(UTC).replace(microsecond=0)
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).isoformat()


def from_results(results: Results) -> dict[str, Any]:
    """KCIDB data for a results file (``pytest --bindlab-results``): a test per pytest test."""
    tests: list[tuple[tuple[str, ...], dict[str, Any]]] = []
    for nodeid, t in sorted(results.tests.items()):
        excerpt, misc = _pytest_output(t)
        fields = {
            "status": OUTCOME_STATUS.get(t.outcome, "ERROR"),
            "comment": nodeid,
            "log_excerpt": excerpt,
            "misc": {"nodeid": nodeid, **misc},
        }
        tests.append((nodeid_parts(nodeid), fields))
    return _document(results.kernel, _time(results.created), tests)


def from_scenarios(
    results: Sequence[ScenarioResult], kernel: dict[str, Any], created: str = ""
) -> dict[str, Any]:
    """KCIDB data for a ``bindlab run``/``rfc``: a test per scenario row (flow or socket step)."""
    tests: list[tuple[tuple[str, ...], dict[str, Any]]] = []
    for res in results:
        for r in res.rows:
            lines = [f"{r.name}: observed {r.observed or '-'}, expected {r.expected}"]
            lines += r.detail.splitlines() if r.detail else []
            misc = {
                "scenario": res.name,
                "file": res.path,
                "line": r.line,
                "kind": r.kind,
                "expected": r.expected,
                "observed": r.observed,
            }
            fields: dict[str, Any] = {
                "status": STATUS.get(r.status, "ERROR"),
                "comment": f"{res.path}: {r.name}",
                "log_excerpt": _excerpt(lines),
                "misc": {k: v for k, v in misc.items() if v is not None},
            }
            name, *variant = split_variant(res.name)  # "file[ipv6]": a family variant
            tests.append(((name, r.name, *variant), fields))
    return _document(kernel, _time(created), tests)


def dumps(data: dict[str, Any]) -> str:
    """The KCIDB JSON text (``kcidb-submit`` and ``kcidb-validate`` read it)."""
    return json.dumps(data, indent=1) + "\n"
