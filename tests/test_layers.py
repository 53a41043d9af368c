"""The architecture contract covers every module: a new module must take a layer."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "harness" / "bindlab"


def _layered() -> set[str]:
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [c for c in conf["contracts"] if c["type"] == "layers"]
    names = set()
    for layer in layers["layers"]:
        names |= {n.strip() for n in layer.replace("|", ":").split(":")}
    return names


def test_every_module_and_subpackage_has_a_layer() -> None:
    modules = {f"bindlab.{p.stem}" for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    modules |= {f"bindlab.{p.parent.name}" for p in PACKAGE.glob("*/__init__.py")}
    missing = sorted(modules - _layered())
    assert not missing, (
        f"modules outside the layers contract: {missing}; add each to a layer of "
        "[tool.importlinter] in pyproject.toml (docs/architecture.md says which)"
    )
