"""Repo-level wiring. The bindlab plugin itself (fixtures, markers, host guard) is loaded by
its ``pytest11`` entry point once the package is installed (``pip install -e .``)."""

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave ``scale`` experiments out of the default run; ``-m scale`` selects them."""
    if "scale" in (config.getoption("markexpr") or ""):
        return
    keep = [i for i in items if i.get_closest_marker("scale") is None]
    dropped = [i for i in items if i.get_closest_marker("scale") is not None]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
