"""Malformed scenario files, generated: the loader answers with a Scenario or one
ScenarioError naming the file, never with another exception."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bindlab.scenario.load import DISPATCH, SETUP, SOCKET, TOP, Scenario, ScenarioError, load_text
from bindlab.sockets import OPTIONS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FIXTURES = sorted(
    (Path(__file__).resolve().parent.parent / "fixtures" / "scenarios").rglob("*.toml")
)
TEXTS = [p.read_text() for p in FIXTURES]
PATH = "fuzz.toml"
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HEAVY = settings(SETTINGS, max_examples=120)  # generated TOML structures are slow to draw

# Values a scenario holds, right and wrong, so that generated files reach deep checks.
WORDS = [
    "192.0.2.0/24", "192.0.2.1/24", "2001:db8::/64", "198.18.0.1:80", "192.0.2.1:0",
    "[2001:db8::1]:80", "[::]:65536", "1.2.3.4:²", "0.0.0.0:80", "192.0.2.0/24:80",
    "[2001:db8::/64]:80", "tcp 198.18.0.1:1 -> 192.0.2.1:80", "udp [2001:db8::1]:1 -> [::1]:2",
    "tcp 1.2.3.4:1 -> 1.2.3.4:2 dev inj1", "tcp", "udp", "sctp", "a", "b", "RST", "NONE",
    "EADDRINUSE", "OK", "EWHAT", "any", "inj1", "lo", "blinj0", "dummy", "veth", "net.ipv4.x",
    "net.ipv4.ip_local_port_range", "kernel.panic", "40000 40001", "", " ", "two words",
    "SO_REUSEPORT", "NOPE", "\x00", "é",
]  # fmt: skip
KEYS = sorted(
    {
        *TOP,
        *SETUP,
        *SOCKET,
        *DISPATCH,
        *OPTIONS,
        "name",
        "prefix",
        "dev",
        "clients",
        "cidr",
        "kind",
        "addrs",
    }
)


def toml_str(s: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    esc = (
        f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else "\\" + c if c in '"\\' else c
        for c in s
    )
    return '"' + "".join(esc) + '"'


def toml_value(v: Any) -> str:
    """A tiny TOML writer for inline values (what tomllib reads back as ``v``, mostly)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v) if v == v and abs(v) != float("inf") else ("nan" if v != v else "inf")
    if isinstance(v, str):
        return toml_str(v)
    if isinstance(v, list):
        return "[" + ", ".join(map(toml_value, v)) + "]"
    return "{" + ", ".join(f"{toml_str(k)} = {toml_value(x)}" for k, x in v.items()) + "}"


def toml_doc(d: dict[str, Any]) -> str:
    return "".join(f"{toml_str(k)} = {toml_value(v)}\n" for k, v in d.items())


scalars = st.one_of(
    st.sampled_from(WORDS),
    st.text(max_size=12),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    st.floats(allow_nan=True),
)
keys = st.one_of(st.sampled_from(KEYS), st.sampled_from(WORDS), st.text(max_size=8))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=5)),
    max_leaves=12,
)
documents = st.dictionaries(st.sampled_from(sorted(TOP)) | keys, values, max_size=8)


def check(text: str | bytes) -> None:
    """The property: a Scenario, or a ScenarioError whose message starts with the file."""
    try:
        sc = load_text(text, PATH)
    except ScenarioError as e:
        assert str(e).startswith(PATH), str(e)
        assert "Traceback" not in str(e)
    else:
        assert isinstance(sc, Scenario)


@SETTINGS
@given(st.text(max_size=300))
def test_any_text(text: str) -> None:
    check(text)


@SETTINGS
@given(st.binary(max_size=200))
def test_any_bytes(data: bytes) -> None:
    check(data)


@HEAVY
@given(documents)
def test_any_toml_document(doc: dict[str, Any]) -> None:
    check(toml_doc(doc))


@HEAVY
@given(
    st.sampled_from(TEXTS),
    st.lists(
        st.tuples(
            st.sampled_from(["socket", "dispatch", "expect", "setup"]),
            st.dictionaries(keys, values, max_size=4),
        ),
        max_size=3,
    ),
)
def test_shipped_files_with_generated_tables(
    text: str, tables: list[tuple[str, dict[str, Any]]]
) -> None:
    extra = []
    for name, body in tables:
        header = f"[[{name}]]" if name in ("socket", "dispatch") else f"[{name}]"
        extra.append(header + "\n" + toml_doc(body))
    check(text + "\n" + "\n".join(extra))


@SETTINGS
@given(st.sampled_from(TEXTS), st.data())
def test_shipped_files_mutated(text: str, data: st.DataObject) -> None:
    lines = text.splitlines()
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(lines) - 1))
        how = data.draw(st.sampled_from(["drop", "dup", "replace", "cut", "word"]))
        if how == "drop":
            del lines[i]
        elif how == "dup":
            lines.insert(i, lines[i])
        elif how == "cut":
            lines[i] = lines[i][: data.draw(st.integers(0, len(lines[i])))]
        elif how == "word" and '"' in lines[i]:
            head, _, rest = lines[i].partition('"')
            tail = rest.partition('"')[2]
            lines[i] = head + toml_str(data.draw(st.sampled_from(WORDS))) + tail
        else:
            lines[i] = data.draw(st.text(max_size=20))
        if not lines:
            break
    check("\n".join(lines))
