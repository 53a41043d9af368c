"""bindlab: which socket receives this flow? Experiments in disposable network namespaces.

The public names are imported lazily, so that ``bindlab report``, ``bindlab diff`` and
``bindlab --help`` load none of the namespace machinery (pyroute2, scapy)::

    from bindlab import Namespace, Flow

    with Namespace() as ns:
        ns.add_local_route("192.0.2.0/24")
        ns.tcp_listener("192.0.2.1:80", label="web")
        print(ns.probe(["tcp 198.18.0.1:1000 -> 192.0.2.1:80"]))
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

_LAZY = {
    "CommandFailed": "bindlab.errors",
    "ConfigError": "bindlab.errors",
    "FeatureMissing": "bindlab.errors",
    "FlowSyntaxError": "bindlab.errors",
    "HarnessError": "bindlab.errors",
    "SockOptError": "bindlab.errors",
    "SysctlError": "bindlab.errors",
    "Flow": "bindlab.flow",
    "Namespace": "bindlab.namespace",
}
__all__ = [
    "CommandFailed",
    "ConfigError",
    "FeatureMissing",
    "Flow",
    "FlowSyntaxError",
    "HarnessError",
    "Namespace",
    "SockOptError",
    "SysctlError",
]

if TYPE_CHECKING:
    from bindlab.errors import (
        CommandFailed,
        ConfigError,
        FeatureMissing,
        FlowSyntaxError,
        HarnessError,
        SockOptError,
        SysctlError,
    )
    from bindlab.flow import Flow
    from bindlab.namespace import Namespace


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'bindlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
