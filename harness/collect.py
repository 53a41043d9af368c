"""pytest collects scenario files: each expectation of a ``*.toml`` file is one test item.

A file is collected when it sits under a ``scenarios/`` directory (``fixtures/scenarios/``)
or is named on the command line. One namespace serves the whole file: the first item to
run runs the scenario (:func:`harness.runner.run`) and every item reports its own row, with
the flow (or the socket's steps) as its id::

    fixtures/scenarios/reuseport.toml::tcp 198.18.0.1:40000 -> 192.0.2.10:80 PASSED

Loaded by :mod:`harness.plugin` (one import line); pytest is imported only here and there.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import runner
from harness.scenario import Scenario, ScenarioError, load

EXPECTED_PROPERTY = "bindlab_expected"  # the keys harness.plugin's ResultsRecorder reads
ERRNOS_PROPERTY = "bindlab_errnos"
VERDICTS_PROPERTY = "bindlab_verdicts"


class ScenarioFailure(AssertionError):
    """A row whose observed verdict, errno or port is not the expected one."""


class ScenarioRunError(Exception):
    """The scenario could not be set up, so this row was never observed."""


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> ScenarioFile | None:
    """Collect ``*.toml`` under a ``scenarios/`` directory, or named on the command line."""
    if file_path.suffix != ".toml":
        return None
    try:
        parts = file_path.relative_to(parent.config.rootpath).parts[:-1]
    except ValueError:
        parts = ()
    if "scenarios" in parts or parent.session.isinitpath(file_path):
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


class ScenarioFile(pytest.File):
    """One scenario file: loaded at collection, run once when its first item runs."""

    scenario: Scenario
    _result: runner.ScenarioResult | None = None

    def collect(self) -> Iterator[ScenarioItem]:
        shown = os.path.relpath(self.path, self.config.invocation_params.dir)
        shown = str(self.path) if shown.startswith("..") else shown
        self.scenario = load(self.path, shown)  # a ScenarioError is shown by repr_failure
        for i, row in enumerate(runner.expected_rows(self.scenario)):
            item = ScenarioItem.from_parent(self, name=row.name, index=i, line=row.line)
            item.add_marker(pytest.mark.privileged)
            if self.scenario.requires:
                item.add_marker(pytest.mark.requires(*self.scenario.requires))
            yield item

    def result(self) -> runner.ScenarioResult:
        """The scenario's rows, run on first use (one namespace for the whole file)."""
        if self._result is None:
            optname = self.config.getoption("bindtoprefix_optname", None)
            self._result = runner.run(self.scenario, prefix_optname=optname)
        return self._result

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException]) -> Any:  # type: ignore[override]
        if isinstance(excinfo.value, ScenarioError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)


class ScenarioItem(pytest.Item):
    """One row of a scenario file: a flow's verdict, or a socket's errno or port."""

    def __init__(self, *, index: int, line: int | None, **kw: Any) -> None:
        super().__init__(**kw)
        self.index = index
        self.line = line

    @property
    def file(self) -> ScenarioFile:
        assert isinstance(self.parent, ScenarioFile)
        return self.parent

    def row(self) -> runner.Row:
        return self.file.result().rows[self.index]

    def setup(self) -> None:
        row = self.row()
        if row.kind == "flow":
            self.user_properties.append((EXPECTED_PROPERTY, {row.name: row.expected}))
        else:
            self.user_properties.append((ERRNOS_PROPERTY, {row.name: row.expected}))
        if row.status == runner.SKIP:
            pytest.skip(row.detail)
        if row.status == runner.ERROR:
            raise ScenarioRunError(f"{self.where(row)}: scenario setup failed: {row.detail}")
        self.user_properties.append((VERDICTS_PROPERTY, [(row.name, row.observed)]))

    def runtest(self) -> None:
        row = self.row()
        if row.status != runner.PASS:
            detail = f"\n{row.detail}" if row.detail else ""
            raise ScenarioFailure(
                f"{self.where(row)} ({row.name}): expected {row.expected!r}, "
                f"got {row.observed!r}{detail}"
            )

    def where(self, row: runner.Row) -> str:
        return f"{self.file.scenario.path}:{row.line}" if row.line else self.file.scenario.path

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException]) -> Any:  # type: ignore[override]
        if isinstance(excinfo.value, ScenarioFailure | ScenarioRunError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        line = None if self.line is None else self.line - 1  # pytest counts from 0
        return self.path, line, f"{self.file.scenario.name}: {self.name}"
