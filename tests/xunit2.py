"""Validate JUnit XML against the xunit2 schema (``tests/data/xunit2.xsd``) with xmlschema."""

from __future__ import annotations

import functools
from pathlib import Path

import xmlschema

XSD = Path(__file__).resolve().parent / "data" / "xunit2.xsd"


@functools.cache
def schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(XSD))


def errors(source: str | Path) -> list[str]:
    """Every schema violation of ``source`` (XML text or a file), as 'path: reason'."""
    src = str(source) if isinstance(source, Path) else source
    return [f"{e.path}: {e.reason}" for e in schema().iter_errors(src)]


def validate(source: str | Path) -> None:
    """Raise AssertionError listing every violation (the first ten) of ``source``."""
    errs = errors(source)
    if errs:
        raise AssertionError(f"{len(errs)} xunit2 schema error(s):\n" + "\n".join(errs[:10]))
