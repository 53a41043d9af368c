"""The exceptions bindlab raises: each names the culprit (key, option, flow, file)."""

from __future__ import annotations

import errno as _errno
import os


def errname(e: OSError) -> str:
    """The symbolic name of ``e``'s errno (``EADDRINUSE``), or its number as text."""
    return _errno.errorcode.get(e.errno or 0, str(e.errno))


class HarnessError(Exception):
    """Base class of every error bindlab raises on purpose."""


class ConfigError(HarnessError, ValueError):
    """Bad input: an invalid prefix, port, label, link kind or option value."""


class SysctlError(ConfigError):
    """A sysctl key that does not exist in the namespace, or a value the kernel refused."""


FLOW_SYNTAX = "'PROTO SRC:PORT -> DST:PORT [dev IFACE]', IPv6 as [ADDR]:PORT"


class FlowSyntaxError(ConfigError):
    """A flow string that does not parse."""

    def __init__(self, text: str, reason: str) -> None:
        # bounded whatever the input: escapes (\U0001f600 is 10 characters) count too
        shown = repr(text)
        if len(shown) > 120:
            shown = f"{shown[:60]}... ({len(text)} characters)"
        brief = reason if len(reason) <= 200 else f"{reason[:197]}..."
        super().__init__(f"bad flow {shown}: {brief} (expected {FLOW_SYNTAX})")
        self.text = text
        self.reason = reason


class SockOptError(HarnessError, OSError):
    """The kernel refused a socket option; carries the option's name and the errno."""

    def __init__(self, option: str, err: int, value: object = None) -> None:
        name = _errno.errorcode.get(err, str(err))
        shown = "" if value is None else f" = {value!r}"
        OSError.__init__(self, err, f"socket option {option}{shown}: {name} ({os.strerror(err)})")
        self.option = option


class CommandFailed(HarnessError):
    """An external command (run inside a namespace) exited non-zero."""

    def __init__(self, argv: list[str], returncode: int, stdout: str, stderr: str) -> None:
        super().__init__(
            f"command {' '.join(argv)!r} exited {returncode}\n"
            f"--- stdout ---\n{stdout}--- stderr ---\n{stderr}"
        )
        self.argv = argv
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


class FeatureMissing(HarnessError):
    """The running kernel lacks a feature; the message is the precise skip reason."""
