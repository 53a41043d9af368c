"""The results file of a run: per test, its outcome and the verdicts it observed, keyed by
the kernel that produced them. ``bindlab diff`` compares two of these; reports render them.

Format (JSON, ``"format": "bindlab-results/1"``)::

    {"format": "bindlab-results/1",
     "created": "2026-11-22T00:00:00+00:00",
     "kernel": {"release": "6.18.0", "machine": "x86_64",
                "features": {"IP_LOCAL_PORT_RANGE": {"ok": true, "detail": "..."}}},
     "tests": {"scenarios/test_x.py::test_y[ipv4]": {
         "outcome": "passed" | "failed" | "skipped" | "error",
         "reason": "skip reason or failure summary",
         "verdicts": {"tcp 198.18.0.1:1 -> 192.0.2.1:80": "web"},
         "expected": {"tcp 198.18.0.1:1 -> 192.0.2.1:80": "web"},
         "errnos": {"bind b 192.0.2.1:80": "EADDRINUSE"},
         "evidence": {"tcp 198.18.0.1:1 -> 192.0.2.1:80": "won: web (exact ...)"},
         "packets": {"tcp 198.18.0.1:1 -> 192.0.2.1:80": "-> IP / TCP ... S\\n<- ..."}}}}

``verdicts`` holds every flow the test probed (last verdict wins); ``expected`` and ``errnos``
are filled by tests that declare them (scenario files do, and Python tests that pass their
``{flow: expected}`` dict to ``probe``); ``evidence`` by runs with evidence on
(``--bindlab-evidence``); ``packets`` holds the packets of the flows that did not get their
expected verdict.
"""

from __future__ import annotations

import datetime
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

FORMAT = "bindlab-results/1"

# A scenario row's status.
PASS, FAIL, SKIP, ERROR = "pass", "fail", "skip", "error"

# The pytest ``user_properties`` keys a test fills and the results recorder reads.
VERDICTS_PROPERTY = "bindlab_verdicts"  # list of (flow, verdict)
EXPECTED_PROPERTY = "bindlab_expected"  # {flow: expected verdict}
ERRNOS_PROPERTY = "bindlab_errnos"  # {step: errno name}
EVIDENCE_PROPERTY = "bindlab_evidence"  # list of (flow, evidence text), when evidence is on
PACKETS_PROPERTY = "bindlab_packets"  # {flow: packet summaries, one a line}
# bindlab's keys: the plugin keeps them out of pytest's JUnit <testcase> (xunit2 forbids it)
PROPERTIES = (
    VERDICTS_PROPERTY, EXPECTED_PROPERTY, ERRNOS_PROPERTY, EVIDENCE_PROPERTY, PACKETS_PROPERTY,
)  # fmt: skip


@dataclass
class TestResult:
    """One test's outcome and what it observed."""

    outcome: str = "passed"
    reason: str = ""
    verdicts: dict[str, str] = field(default_factory=dict)
    expected: dict[str, str] = field(default_factory=dict)
    errnos: dict[str, str] = field(default_factory=dict)
    evidence: dict[str, str] = field(default_factory=dict)  # flow -> the kernel's evidence
    packets: dict[str, str] = field(default_factory=dict)  # flow -> its packets, if it failed


@dataclass
class Results:
    """Every test of a run, with the kernel it ran on."""

    kernel: dict[str, Any]
    tests: dict[str, TestResult] = field(default_factory=dict)
    created: str = field(
        default_factory=lambda: datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    )

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "created": self.created,
            "kernel": self.kernel,
            "tests": {k: asdict(v) for k, v in sorted(self.tests.items())},
        }

    def dump(self, path: str) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump(self.to_json(), f, indent=1, sort_keys=False)
            f.write("\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str) -> Results:
        """Read a results file; a file of another format is a ValueError naming the path."""
        with open(path) as f:
            data = json.load(f)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"{path}: not a {FORMAT} file")
        tests = {k: TestResult(**v) for k, v in data.get("tests", {}).items()}
        return cls(kernel=data["kernel"], tests=tests, created=data.get("created", ""))


@dataclass
class Row:
    """One expectation of a scenario: a flow's verdict or a socket's errno/port."""

    kind: str  # "flow" or "step"
    name: str  # the flow, or the socket's steps (SocketSpec.step)
    expected: str
    observed: str = ""
    status: str = ""  # pass, fail, skip or error ("" until run)
    detail: str = ""  # why it failed, was skipped or errored; packets of a failed flow
    line: int | None = None
    evidence: str = ""  # the kernel's evidence for a flow's verdict (runs with evidence on)

    @property
    def ok(self) -> bool:
        return self.status in (PASS, SKIP)


@dataclass
class ScenarioResult:
    """A scenario's rows after a run, with what reports show beside them."""

    name: str
    path: str
    rows: list[Row]
    claim: str = ""
    source: str = ""
    prefixes: tuple[str, ...] = ()
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.rows)
