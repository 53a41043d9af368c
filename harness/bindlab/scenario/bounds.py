"""The size limits of a scenario file, checked before anything else looks at its contents.

A scenario file is input that a root process reads, so every dimension is bounded and each
bound has its own message naming the file, the line (where it can be found) and the key::

    big.toml:7: socket: 30000 sockets; a scenario file holds at most 10000

:func:`check_size` runs on the raw text (size), :func:`parse` wraps ``tomllib`` (whose
recursive descent raises ``RecursionError`` on deeply nested arrays), and :func:`check_data`
walks the parsed tables once, without recursion (nesting, key and string lengths, counts).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from typing import Any

from bindlab.scenario.model import ScenarioError

MAX_FILE_BYTES = 16 * 1024 * 1024  # 100,000 flows take ~7 MiB
MAX_FLOWS = 100_000  # rows of [expect]: one probe() handles 100,000 flows
MAX_SOCKETS = 10_000  # [[socket]] tables; each is a file descriptor at run time
MAX_ITEMS = 10_000  # any other array or table (links, routes, dispatch, sysctls, ...)
MAX_KEY_LEN = 256  # a key (a flow is at most MAX_FLOW_LEN = 256 characters)
MAX_STRING_LEN = 16_384  # a string value (descriptions are a few hundred characters)
MAX_DEPTH = 8  # tables and arrays inside each other (the format needs 4)
INT_MIN, INT_MAX = -(2**63), 2**63 - 1  # TOML's integers are 64-bit
_INT_RANGE = f"TOML integers are 64-bit ({INT_MIN} to {INT_MAX})"

Fail = Callable[[str, str], ScenarioError]  # (key path, problem) -> the error to raise

_BRACKETS = re.compile(
    r"""\"\"\"[\s\S]*?\"\"\"|'''[\s\S]*?'''|"(?:[^"\\\n]|\\.)*"|'[^'\n]*'|\#[^\n]*|[\[\]{}\n]"""
)


def check_size(text: str | bytes, path: str) -> None:
    """Refuse a file larger than :data:`MAX_FILE_BYTES` (before it is decoded or parsed)."""
    if len(text) > MAX_FILE_BYTES:
        raise ScenarioError(
            f"{path}: larger than {MAX_FILE_BYTES} bytes, the most a scenario file may be "
            "(split it)"
        )


def parse(text: str, path: str) -> dict[str, Any]:
    """``tomllib.loads(text)``, every failure a one-line :class:`ScenarioError`."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column \d+\)$", str(e))
        line = m[1] if m else text.count("\n") + 1  # else "(at end of document)"
        raise ScenarioError(f"{path}:{line}: TOML syntax error: {e}") from None
    except ValueError as e:  # int() of over 4300 digits (sys.get_int_max_str_digits())
        m = re.search(r"[0-9_]{300,}", text)
        if m is None:
            raise ScenarioError(f"{path}: TOML value error: {e}") from None
        n = text.count("\n", 0, m.start()) + 1
        raise ScenarioError(f"{path}:{n}: an integer of {len(m[0])} digits; {_INT_RANGE}") from None
    except RecursionError:  # tomllib nests one Python call per '[' or '{'
        line = _deep_line(text)
        at = f"{path}:{line}" if line else path
        raise ScenarioError(
            f"{at}: arrays or tables nested deeper than {MAX_DEPTH} levels"
        ) from None


def _deep_line(text: str) -> int | None:
    """The line where brackets outside strings and comments first nest past MAX_DEPTH."""
    depth, line = 0, 1
    for m in _BRACKETS.finditer(text):
        tok = m[0]
        if tok in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return line
        elif tok in "]}":
            depth -= 1
        line += tok.count("\n")
    return None


def _key(where: str, k: str) -> str:
    """The key path of ``k`` in table ``where``, spelled as the loader's messages spell it."""
    if where in ("expect", "setup.sysctls"):
        return f'{where}."{k}"'
    return f"{where}.{k}" if where else k


def check_data(data: dict[str, Any], fail: Fail) -> None:
    """Refuse a parsed file that exceeds a bound; ``fail`` makes the located error."""
    sockets, flows = data.get("socket"), data.get("expect")
    if isinstance(sockets, list) and len(sockets) > MAX_SOCKETS:  # located at the first extra
        raise fail(
            f"socket[{MAX_SOCKETS}]",
            f"{len(sockets)} sockets; a scenario file holds at most {MAX_SOCKETS} (split it)",
        )
    if isinstance(flows, dict) and len(flows) > MAX_FLOWS:
        extra = next(k for i, k in enumerate(flows) if i == MAX_FLOWS)
        raise fail(
            _key("expect", extra),
            f"{len(flows)} flows; a scenario file holds at most {MAX_FLOWS} (split it)",
        )
    stack: list[tuple[str, Any, int]] = [("", data, 0)]
    while stack:  # depth-first, iterative: nesting is bounded here, not by Python's stack
        where, v, depth = stack.pop()
        if isinstance(v, str) and len(v) > MAX_STRING_LEN:
            raise fail(where, f"a string of {len(v)} characters; at most {MAX_STRING_LEN}")
        if isinstance(v, int) and not INT_MIN <= v <= INT_MAX:
            raise fail(where, f"{v} is out of range: {_INT_RANGE}")
        if not isinstance(v, dict | list):
            continue
        if depth >= MAX_DEPTH:
            raise fail(where, f"arrays or tables nested deeper than {MAX_DEPTH} levels")
        if where not in ("socket", "expect") and len(v) > MAX_ITEMS:
            raise fail(where, f"{len(v)} entries in {where or 'the file'}; at most {MAX_ITEMS}")
        if isinstance(v, list):
            stack.extend((f"{where}[{i}]", x, depth + 1) for i, x in enumerate(v))
            continue
        for k, x in v.items():
            if len(k) > MAX_KEY_LEN:
                raise fail(_key(where, k), f"a key of {len(k)} characters; at most {MAX_KEY_LEN}")
            stack.append((_key(where, k), x, depth + 1))
