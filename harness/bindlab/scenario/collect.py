"""pytest collects scenario files: each expectation of a ``*.toml`` file is one test item.

A ``*.toml`` file is collected only when it says it is one: it lies under a path of the
``bindlab_scenarios`` ini option (``bindlab_scenarios = fixtures/scenarios``), its name ends in
``.bindlab.toml``, or it is named on the command line. Other TOML files are left alone. One namespace serves the whole file: the first item to
run runs the scenario (:func:`bindlab.scenario.run.run`) and every item reports its own row, with
the flow (or the socket's steps) as its parameter (:func:`item_name`)::

    fixtures/scenarios/reuseport.toml::flow[tcp 198.18.0.1:40000 -> 192.0.2.10:80] PASSED

Loaded by :mod:`bindlab.plugin` (one import line); pytest is imported only here and there.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bindlab.packets import TraceEntry
from bindlab.results import (
    ERRNOS_PROPERTY,
    ERROR,
    EVIDENCE_PROPERTY,
    EXPECTED_PROPERTY,
    PASS,
    SKIP,
    VERDICTS_PROPERTY,
    Row,
    ScenarioResult,
)
from bindlab.scenario import run as runner
from bindlab.scenario.load import Scenario, ScenarioError, load
from bindlab.scenario.variants import variants


class ScenarioFailure(AssertionError):
    """A row whose observed verdict, errno or port is not the expected one."""


def is_scenario_file(file_path: Path, configured: list[Path]) -> bool:
    """Whether ``file_path`` declares itself a scenario file or lies under ``configured``."""
    if file_path.suffix != ".toml":
        return False
    if file_path.name.endswith(".bindlab.toml"):
        return True
    return any(file_path == d or d in file_path.parents for d in configured)


def item_name(row: Row) -> str:
    """``flow[tcp 198.18.0.1:1 -> 192.0.2.10:80]`` or ``socket[late: tcp bind ...]`` (a
    variant's items add ``[ipv6]``).

    pytest reads the first ``[`` of a test name as the start of its parameters (JUnit
    names, ``NodeId``); an IPv6 flow's brackets would be cut there and get a stray ``]``.
    Spelled as a parameter, the row survives intact."""
    return f"{'flow' if row.kind == 'flow' else 'socket'}[{row.name}]"


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> ScenarioFile | None:
    """Collect scenario files: see the module docstring for which ``*.toml`` files are."""
    configured = parent.config.getini("bindlab_scenarios")
    if is_scenario_file(file_path, configured) or (
        file_path.suffix == ".toml" and parent.session.isinitpath(file_path)
    ):
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


class ScenarioFile(pytest.File):
    """One scenario file: loaded at collection, each variant (``families``) run once when
    its first item runs. Items of a variant end in ``[ipv4]``, ``[ipv6]``, ``[v4mapped]``."""

    scenario: Scenario
    variants: list[Scenario]
    _results: dict[int, ScenarioResult]
    _packets: dict[int, dict[str, list[TraceEntry]]] | None = None  # --bindlab-pcap

    def collect(self) -> Iterator[ScenarioItem]:
        shown = os.path.relpath(self.path, self.config.invocation_params.dir)
        shown = str(self.path) if shown.startswith("..") else shown
        self.scenario = load(self.path, shown)  # a ScenarioError is shown by repr_failure
        self.variants = variants(self.scenario)
        self._results = {}
        for v, sc in enumerate(self.variants):
            suffix = f"[{sc.family}]" if sc.family else ""
            for i, row in enumerate(runner.expected_rows(sc)):
                item = ScenarioItem.from_parent(
                    self, name=f"{item_name(row)}{suffix}", index=i, line=row.line, variant=v
                )
                item.add_marker(pytest.mark.privileged)
                if sc.requires:
                    item.add_marker(pytest.mark.requires(*sc.requires))
                yield item

    def result(self, variant: int = 0) -> ScenarioResult:
        """A variant's rows, run on first use (one namespace per variant)."""
        if variant not in self._results:
            optname = self.config.getoption("bindlab_bindtoprefix_optname", None)
            evidence = bool(self.config.getoption("bindlab_evidence", False))
            packets: dict[str, list[TraceEntry]] | None = None
            if self.config.getoption("bindlab_pcap", None):
                self._packets = self._packets or {}
                packets = self._packets.setdefault(variant, {})
            self._results[variant] = runner.run(
                self.variants[variant], prefix_optname=optname, evidence=evidence, packets=packets
            )
        return self._results[variant]

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException]) -> Any:  # type: ignore[override]
        if isinstance(excinfo.value, ScenarioError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)


class ScenarioItem(pytest.Item):
    """One row of a scenario file: a flow's verdict, or a socket's errno or port."""

    def __init__(self, *, index: int, line: int | None, variant: int = 0, **kw: Any) -> None:
        super().__init__(**kw)
        self.index = index
        self.line = line
        self.variant = variant
        self.packets: list[TraceEntry] | None = None  # its flow's packets, with --bindlab-pcap

    @property
    def file(self) -> ScenarioFile:
        assert isinstance(self.parent, ScenarioFile)
        return self.parent

    def row(self) -> Row:
        return self.file.result(self.variant).rows[self.index]

    def setup(self) -> None:
        row = self.row()
        if self.file._packets is not None:  # --bindlab-pcap: the plugin writes them
            self.packets = list(self.file._packets.get(self.variant, {}).get(row.name, []))
        if row.kind == "flow":
            self.user_properties.append((EXPECTED_PROPERTY, {row.name: row.expected}))
        else:
            self.user_properties.append((ERRNOS_PROPERTY, {row.name: row.expected}))
        if row.status == SKIP:
            pytest.skip(row.detail)
        if row.status == ERROR:  # one line at the scenario's location, not pytest's traceback
            pytest.fail(f"{self.where(row)}: scenario setup failed: {row.detail}", pytrace=False)
        self.user_properties.append((VERDICTS_PROPERTY, [(row.name, row.observed)]))
        if row.evidence:
            self.user_properties.append((EVIDENCE_PROPERTY, [(row.name, row.evidence)]))

    def runtest(self) -> None:
        row = self.row()
        if row.status != PASS:
            detail = f"\n{row.detail}" if row.detail else ""
            if row.evidence:
                detail = f"\nkernel evidence: {row.evidence}{detail}"
            raise ScenarioFailure(
                f"{self.where(row)} ({row.name}): expected {row.expected!r}, "
                f"got {row.observed!r}{detail}"
            )

    def where(self, row: Row) -> str:
        return f"{self.file.scenario.path}:{row.line}" if row.line else self.file.scenario.path

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException]) -> Any:  # type: ignore[override]
        if isinstance(excinfo.value, ScenarioFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        line = None if self.line is None else self.line - 1  # pytest counts from 0
        return self.path, line, f"{self.file.scenario.name}: {self.name}"
