"""JUnit XML of the xunit2 family (what pytest writes by default, what Jenkins, GitLab and
GitHub test reporters read): ``bindlab run -f junit``.

One ``<testsuite>`` per scenario, one ``<testcase>`` per row (``classname`` the scenario's
dotted path, ``name`` the flow or the socket's steps). Facts about the run sit where xunit2
allows properties, on the test suite, and every property value is JSON::

    <testsuite name="split" tests="4" failures="1" errors="0" skipped="0" time="0.012">
      <properties>
        <property name="bindlab.path" value="&quot;fixtures/scenarios/split.toml&quot;"/>
        <property name="bindlab.kernel" value="{&quot;release&quot;: &quot;6.18.0&quot;}"/>
      </properties>
      <testcase classname="fixtures.scenarios.split" name="tcp ... -> 192.0.2.200:80" time="0">
        <failure message="expected 'nginx', got 'apache'" type="mismatch">-> IP / TCP ...</failure>
      </testcase>
"""

from __future__ import annotations

import datetime
import json
import re
import socket
import xml.etree.ElementTree as ET
from typing import Any

from bindlab.report.common import Kernel, Results_, totals
from bindlab.results import ERROR, FAIL, SKIP, ScenarioResult

# XML 1.0 refuses most control characters, even escaped.
_ILLEGAL_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_text(s: str) -> str:
    """``s`` with the characters XML 1.0 cannot hold replaced by ``\\xNN``."""
    return _ILLEGAL_XML.sub(lambda m: f"\\x{ord(m.group()):02x}", s)


def json_value(value: Any) -> str:
    """A property value: JSON, the same spelling for every value (strings are quoted)."""
    return xml_text(json.dumps(value, sort_keys=True))


def classname(path: str) -> str:
    """``fixtures/scenarios/split.toml`` -> ``fixtures.scenarios.split`` (pytest's style)."""
    stem = re.sub(r"\.(toml|py)$", "", path.lstrip("./"))
    return stem.replace("/", ".")


def properties(parent: ET.Element, props: dict[str, Any]) -> None:
    """A ``<properties>`` child of ``parent``, one JSON-valued ``<property>`` per item."""
    node = ET.SubElement(parent, "properties")
    for name, value in props.items():
        ET.SubElement(node, "property", name=name, value=json_value(value))


def suite(res: ScenarioResult, kernel: Kernel, stamp: str) -> ET.Element:
    """One scenario's ``<testsuite>``."""
    node = ET.Element(
        "testsuite",
        name=xml_text(res.name),
        tests=str(len(res.rows)),
        failures=str(res.count(FAIL)),
        errors=str(res.count(ERROR)),
        skipped=str(res.count(SKIP)),
        time=f"{res.seconds:.3f}",
        timestamp=stamp,
        hostname=socket.gethostname(),
    )
    props: dict[str, Any] = {"bindlab.path": res.path}
    if res.claim:
        props["bindlab.claim"] = res.claim
    if res.source:
        props["bindlab.source"] = res.source
    if res.prefixes:
        props["bindlab.prefixes"] = list(res.prefixes)
    if kernel:
        props["bindlab.kernel"] = kernel
    properties(node, props)
    cls = classname(res.path)
    for r in res.rows:
        case = ET.SubElement(node, "testcase", classname=cls, name=xml_text(r.name), time="0")
        if r.status == FAIL:
            msg = f"expected {r.expected!r}, got {r.observed!r}"
            el = ET.SubElement(case, "failure", message=xml_text(msg), type="mismatch")
            el.text = xml_text(r.detail)
        elif r.status == ERROR:
            first = (r.detail or "error").partition("\n")[0]
            el = ET.SubElement(case, "error", message=xml_text(first), type="setup")
            el.text = xml_text(r.detail)
        elif r.status == SKIP:
            el = ET.SubElement(case, "skipped", message=xml_text(r.detail), type="skip")
            el.text = xml_text(r.detail)
    return node


def junit(results: Results_, kernel: Kernel = None) -> str:
    """The rows as xunit2 JUnit XML: a ``<testsuite>`` per scenario in one ``<testsuites>``."""
    t = totals(results)
    stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    root = ET.Element(
        "testsuites",
        name="bindlab",
        tests=str(sum(t.values())),
        failures=str(t[FAIL]),
        errors=str(t[ERROR]),
        time=f"{sum(r.seconds for r in results):.3f}",
    )
    for res in results:
        root.append(suite(res, kernel, stamp))
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, "unicode") + "\n"
