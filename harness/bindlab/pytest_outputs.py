"""The files a pytest run writes for bindlab: the results file (``--bindlab-results``), its
facts in pytest's JUnit XML (``--junitxml``) and one pcap per test (``--bindlab-pcap``).

Each is a plugin object that :mod:`bindlab.plugin` registers when its option is given.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import zlib
from typing import Any

import pytest

from bindlab.results import (
    ERRNOS_PROPERTY,
    EVIDENCE_PROPERTY,
    EXPECTED_PROPERTY,
    PACKETS_PROPERTY,
    VERDICTS_PROPERTY,
    Results,
    TestResult,
)


def bindlab_properties(report: pytest.TestReport) -> list[tuple[str, Any]]:
    """What bindlab recorded about a test (verdicts, expected, errnos, packets): the
    ``user_properties`` of bindlab's keys, moved to ``report.bindlab_properties``."""
    return list(getattr(report, "bindlab_properties", ()))


class JUnitProperties:
    """bindlab's facts in pytest's JUnit XML where xunit2 allows them: properties of the test
    suite, JSON-valued. ``bindlab.kernel`` once, and ``bindlab:<test id>`` per test that
    probed anything: ``{"verdicts": ..., "expected": ..., "errnos": ..., "packets": ...}``."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.xml: Any = None
        self.seen: dict[str, dict[str, dict[str, str]]] = {}

    def _junit(self) -> Any:
        """pytest's JUnit writer (``--junitxml``), if this run has one."""
        if self.xml is None:
            from _pytest.junitxml import xml_key

            self.xml = self.config.stash.get(xml_key, None)
            if self.xml is not None:
                from bindlab import features

                kernel = json.dumps(features.kernel_facts(), sort_keys=True)
                self.xml.add_global_property("bindlab.kernel", kernel)
        return self.xml

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self._junit()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        props = bindlab_properties(report)
        if props:
            merged = self.seen.setdefault(report.nodeid, {})
            for key, value in props:
                v: Any = value
                merged.setdefault(key.removeprefix("bindlab_"), {}).update(dict(v))
        if report.when == "teardown" and report.nodeid in self.seen:
            value = json.dumps(self.seen.pop(report.nodeid), sort_keys=True)
            xml = self._junit()
            if xml is not None:
                xml.add_global_property(f"bindlab:{report.nodeid}", value)


class PcapWriter:
    """``--bindlab-pcap DIR``: one pcap per test of the packets its flows exchanged."""

    def __init__(self, directory: str) -> None:
        self.dir = directory
        os.makedirs(directory, exist_ok=True)

    @staticmethod
    def file_for(nodeid: str) -> str:
        """A file name from the test id: unsafe characters as ``_``, and a hash of the id
        so that two ids never share a file (the same on every xdist worker)."""
        base = re.sub(r"[^A-Za-z0-9_.=+-]+", "_", nodeid).strip("_")[:180] or "test"
        return f"{base}-{zlib.crc32(nodeid.encode()):08x}.pcap"

    def write(self, nodeid: str, packets: list[Any]) -> str:
        """Write the test's pcap and add it to ``DIR/index.json`` (locked: xdist workers)."""
        name = self.file_for(nodeid)
        from bindlab.packets import write_pcap

        write_pcap(os.path.join(self.dir, name), sorted(packets, key=lambda e: e[2]))
        path = os.path.join(self.dir, "index.json")
        with open(os.path.join(self.dir, ".index.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                with open(path) as f:
                    index = json.load(f)
            except (OSError, ValueError):
                index = {}
            index[nodeid] = name
            with open(f"{path}.tmp", "w") as f:
                json.dump(index, f, indent=1, sort_keys=True)
            os.replace(f"{path}.tmp", path)
        return name


class ResultsRecorder:
    """Collects each test's outcome and observed verdicts; writes them at session end."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.tests: dict[str, TestResult] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        r = self.tests.setdefault(report.nodeid, TestResult())
        if report.skipped:
            r.outcome = "skipped"
            lr = report.longrepr
            r.reason = str(lr[2]) if isinstance(lr, tuple) else str(lr)
        elif report.failed:
            r.outcome = "failed" if report.when == "call" else "error"
            lines = (report.longreprtext or "").strip().splitlines()
            r.reason = lines[-1] if lines else ""
        for key, value in bindlab_properties(report):
            v: Any = value
            if key == VERDICTS_PROPERTY:
                r.verdicts.update(dict(v))
            elif key == EXPECTED_PROPERTY:
                r.expected.update(v)
            elif key == ERRNOS_PROPERTY:
                r.errnos.update(v)
            elif key == EVIDENCE_PROPERTY:
                r.evidence.update(dict(v))
            elif key == PACKETS_PROPERTY:
                r.packets.update(v)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        from bindlab import features

        Results(kernel=features.kernel_facts(), tests=self.tests).dump(self.path)
