"""bindlab: which socket receives this flow? Experiments in disposable network namespaces."""

from harness.errors import (
    CommandFailed,
    ConfigError,
    FeatureMissing,
    FlowSyntaxError,
    HarnessError,
    SockOptError,
    SysctlError,
)
from harness.flow import Flow
from harness.netns import Namespace

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
__version__ = "0.1.0"
