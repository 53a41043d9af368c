"""Generated scenario files and flow strings, malformed on purpose (and some well-formed).

Each case is a :class:`Case`: its text, the class of damage done to it, and whether it
must be refused (damage that no valid file has). A seed picks everything, so a failing
case is reproduced from ``(kind, seed)`` alone. Used by ``tests/test_fuzz_input.py``
(hypothesis draws the seeds, small cases only) and by ``tests/fuzz/run_fuzz.py``
(``ci/run fuzz``: 10,000 files and flows, in subprocesses with a timeout).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted(
    [
        *(ROOT / "fixtures" / "scenarios").rglob("*.toml"),
        *(ROOT / "harness/bindlab/data/rfc").glob("*.toml"),
    ]
)


@dataclass(frozen=True)
class Case:
    kind: str
    text: str | bytes
    must_fail: bool  # no valid file or flow looks like this


# -- pieces ----------------------------------------------------------------------------------


def v4(r: random.Random) -> str:
    return ".".join(str(r.randrange(256)) for _ in range(4))


def v6(r: random.Random) -> str:
    if r.random() < 0.3:
        return "2001:db8:" + ":".join(f"{r.randrange(65536):x}" for _ in range(6))
    return f"2001:db8::{r.randrange(65536):x}"


def endpoint(r: random.Random, version: int, port: int | None = None) -> str:
    port = r.randrange(1, 65536) if port is None else port
    return f"{v4(r)}:{port}" if version == 4 else f"[{v6(r)}]:{port}"


def good_flow(r: random.Random) -> str:
    version = r.choice([4, 6])
    text = f"{r.choice(['tcp', 'udp', 'TCP'])} {endpoint(r, version)} -> {endpoint(r, version)}"
    return text + (f" dev in{r.randrange(10)}" if r.random() < 0.2 else "")


JUNK = [
    "",
    " ",
    "->",
    "[",
    "]",
    ":",
    "%",
    "\n",
    "\t",
    "\x00",
    "é",
    "²",
    "٣",
    "0" * 6,
    "dev",
    "/",
    "\\",
    '"',
    "'",
    "#",
    "=",
]
BAD_FLOWS = [
    lambda r: "tcp " + "a->" * r.randrange(1, 40000) + " x y",  # the backtracking regex
    lambda r: f"tcp {v4(r)}:{'1' * r.randrange(6, 6000)} -> {v4(r)}:80",  # int()'s digit limit
    lambda r: f"tcp [fe80::{r.randrange(99)}%eth{r.randrange(9)}]:1 -> [fe80::1]:80",  # zone id
    lambda r: (
        f"udp {v4(r)}:1 -> {v4(r)}:80 dev {r.choice(['..', '.', 'a:b', 'a/b', 'x' * 16, 'é'])}"
    ),
    lambda r: "x" * r.randrange(257, 100_001),  # over the length bound
    lambda r: f"tcp {v4(r)}:1 -> {v6(r)}:80",  # mixed versions, IPv6 unbracketed
    lambda r: f"tcp {v4(r)}:1 -> {v4(r)}:80 -> {v4(r)}:81",
    lambda r: f"sctp {v4(r)}:1 -> {v4(r)}:80",
    lambda r: f"tcp {v4(r)}:0 -> {v4(r)}:{r.choice(['65536', '-1', '+1', '1_0', '0x10', '١٢'])}",
]


def mutate(r: random.Random, text: str, n: int = 3) -> str:
    chars = list(text)
    for _ in range(r.randint(1, n)):
        i = r.randrange(len(chars) + 1)
        how = r.random()
        if how < 0.4 and chars:
            del chars[min(i, len(chars) - 1)]
        elif how < 0.8:
            chars.insert(i, r.choice([*JUNK, *(text or "x")]))
        elif chars:
            chars[min(i, len(chars) - 1)] = r.choice(JUNK)
    return "".join(chars)


def flow_case(seed: int) -> Case:
    """A flow string: well-formed, mutated, or from a class that must be refused."""
    r = random.Random(seed)
    roll = r.random()
    if roll < 0.3:
        return Case("flow-good", good_flow(r), False)
    if roll < 0.7:
        return Case("flow-mutated", mutate(r, good_flow(r)), False)
    return Case("flow-bad", r.choice(BAD_FLOWS)(r), True)


# -- scenario files ----------------------------------------------------------------------------


def q(s: str) -> str:
    """A TOML basic string."""
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def good_file(r: random.Random) -> str:
    """A small valid scenario: local routes, a few sockets, a few flows to them."""
    lines = [
        f"name = {q(f'gen{r.randrange(10**6)}')}",
        "[setup]",
        'local_routes = ["192.0.2.0/24", "2001:db8:1::/64"]',
    ]
    labels = []
    for i in range(r.randint(1, 4)):
        proto = r.choice(["tcp", "udp"])
        addr = r.choice([f"192.0.2.{r.randrange(1, 255)}", "0.0.0.0", "[2001:db8:1::5]", "[::]"])
        port = r.randrange(1, 65536)
        lines += ["[[socket]]", f'label = "s{i}"', f'proto = "{proto}"', f'bind = "{addr}:{port}"']
        if r.random() < 0.3:
            lines.append("options = { reuseport = true }")
        if r.random() < 0.2:
            lines.append('expect_errno = "OK"')
        labels.append((f"s{i}", proto, addr, port))
    lines.append("[expect]")
    seen = set()
    for label, proto, addr, port in labels:
        version = 6 if addr.startswith("[") else 4
        dst = (
            addr
            if addr not in ("0.0.0.0", "[::]")
            else ("192.0.2.9" if version == 4 else "[2001:db8:1::9]")
        )
        for _ in range(r.randint(1, 3)):
            src = endpoint(r, version, r.randrange(1024, 65536))
            flow = f"{proto} {src} -> {dst}:{port}"
            if flow not in seen:
                seen.add(flow)
                lines.append(f"{q(flow)} = {q(r.choice([label, 'NONE', 'RST', label]))}")
    return "\n".join(lines) + "\n"


def _insert(r: random.Random, text: str, line: str, table: str | None = None) -> str:
    """``line`` put into ``text``: at the top (before any table) or under ``[table]``."""
    if table is None:
        return line + "\n" + text
    head = f"[{table}]"
    if head in text:
        return text.replace(head + "\n", head + "\n" + line + "\n", 1)
    return text + f"\n{head}\n{line}\n"


def _socket_with(text: str, line: str) -> str:
    return text.replace('[[socket]]\nlabel = "s0"', f'[[socket]]\nlabel = "s0"\n{line}', 1)


def nested(r: random.Random, depth: int) -> str:
    if r.random() < 0.5:
        return "[" * depth + "]" * depth
    return "{a = " * depth + "1" + "}" * depth


def bad_file(r: random.Random, base: str, small: bool) -> tuple[str, str | bytes]:
    """(class, text) of a file with damage that no valid file has."""
    kinds = [
        "deep", "deep-dotted", "bigint", "option-range", "option-name", "zone", "hostmask",
        "newline", "flow-dev", "long-key", "long-string", "long-flow", "bad-utf8", "port-digits",
        "dup-label", "many-entries",
    ]  # fmt: skip
    if not small:
        kinds += ["many-sockets", "many-flows", "huge-file"]
    kind = r.choice(kinds)
    if kind in ("many-sockets", "many-flows", "huge-file") and r.random() > 0.05:
        kind = "deep"  # keep the costly ones (a second or more each) rare
    if kind == "deep":
        depth = r.choice([9, 20, 100, 400, 1000, 5000, 50_000])
        return kind, _insert(
            r, base, f"x = {nested(r, depth)}", r.choice([None, "setup", "expect"])
        )
    if kind == "deep-dotted":
        return kind, _insert(r, base, "a" + ".a" * r.randrange(9, 2000) + " = 1")
    if kind == "bigint":
        value = r.choice([str(2**63), str(-(2**63) - 1), str(10**30), "9" * r.randrange(300, 6000)])
        return kind, _socket_with(base, f"expect_port = {value}")
    if kind == "option-range":
        value = r.choice([2**31, 2**32, -(2**31) - 1, 4294967296])
        return kind, _socket_with(base, f"options = {{ bindtoifindex = {value} }}")
    if kind == "option-name":
        name = r.choice(["nosuch", "a:b", "", "..", "eth0\n", "x" * 40])
        return kind, _socket_with(base, f"options = {{ bindtoifindex = {q(name)} }}")
    if kind == "zone":
        return kind, r.choice([
            base.replace('"192.0.2.0/24"', '"fe80::%eth0/64"', 1),
            _insert(r, base, 'addrs = [{ dev = "lo", cidr = "fe80::1%lo/64" }]', "setup"),
            base.replace('[[socket]]\nlabel = "s0"', '[[socket]]\nlabel = "z"\nbind = "[fe80::1%eth0]:80"\n[[socket]]\nlabel = "s0"', 1),
            _insert(r, base, '"tcp [fe80::2%1]:1 -> [fe80::1]:80" = "NONE"', "expect"),
        ])  # fmt: skip
    if kind == "hostmask":
        mask = r.choice(["0.0.0.255", "255.255.255.0", "24.0", " 24", "+24"])
        return kind, base.replace('"192.0.2.0/24"', f'"192.0.2.0/{mask}"', 1)
    if kind == "newline":
        return kind, r.choice([
            base.replace('name = "', 'name = "x\\n', 1),
            _insert(r, base, 'sysctls = { "net.ipv4.ip_forward\\n" = 1 }', "setup"),
            _insert(r, base, 'links = [{ name = "d0\\n" }]', "setup"),
            base.replace('label = "s0"', 'label = "s0\\n"', 1),
        ])  # fmt: skip
    if kind == "flow-dev":
        dev = r.choice(["..", ".", "a:b", "a/b", "x" * 16])
        return kind, _insert(
            r, base, f'"tcp 198.18.0.1:1 -> 192.0.2.1:80 dev {dev}" = "NONE"', "expect"
        )
    if kind == "long-key":
        return kind, _insert(r, base, f"{q('k' * r.randrange(257, 100_000))} = 1", "setup")
    if kind == "long-string":
        return kind, base.replace(
            'name = "', f'description = "{"d" * r.randrange(16_385, 200_000)}"\nname = "', 1
        )
    if kind == "long-flow":
        key = "tcp " + "a->" * r.randrange(100, 30_000) + " x y"
        return kind, _insert(r, base, f'{q(key)} = "NONE"', "expect")
    if kind == "bad-utf8":
        raw = base.encode()
        i = r.randrange(len(raw))
        return kind, raw[:i] + r.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80"]) + raw[i:]
    if kind == "port-digits":
        return kind, _socket_with(base, f'connect = "192.0.2.7:{"7" * r.randrange(6, 5000)}"')
    if kind == "dup-label":
        return kind, base + '\n[[socket]]\nlabel = "s0"\nproto = "udp"\nfamily = 4\n'
    if kind == "many-entries":
        routes = ", ".join(f'"10.{i >> 8 & 255}.{i & 255}.0/24"' for i in range(10_001))
        return kind, base.replace('"192.0.2.0/24", ', f"{routes}, ", 1)
    if kind == "many-sockets":
        socks = "".join(
            f'[[socket]]\nlabel = "m{i}"\nfamily = 4\nproto = "udp"\n' for i in range(10_001)
        )
        return kind, base + socks
    if kind == "many-flows":
        rows = "".join(
            f'"udp 198.18.{i >> 8 & 255}.{i & 255}:{1 + i % 60000} -> 192.0.2.1:53" = "NONE"\n'
            for i in range(100_001)
        )
        return kind, _insert(r, base, rows.rstrip("\n"), "expect")
    return kind, base + "#" * (16 * 1024 * 1024 + 1)  # huge-file


def file_case(seed: int, small: bool = False) -> Case:
    """A scenario file: valid, mutated (may still be valid), garbage, or surely invalid."""
    r = random.Random(seed)
    roll = r.random()
    if roll < 0.15:
        return Case("file-good", good_file(r), False)
    if roll < 0.45:
        base = r.choice([p.read_text() for p in SHIPPED]) if r.random() < 0.5 else good_file(r)
        lines = base.splitlines()
        for _ in range(r.randint(1, 4)):
            i = r.randrange(len(lines))
            lines[i] = mutate(r, lines[i], 4) if r.random() < 0.8 else r.choice(lines)
        return Case("file-mutated", "\n".join(lines) + "\n", False)
    if roll < 0.55:
        if r.random() < 0.5:
            return Case(
                "file-garbage", bytes(r.randrange(256) for _ in range(r.randrange(300))), False
            )
        return Case(
            "file-garbage",
            "".join(
                r.choice([*JUNK, "a", "1", " = ", "[[socket]]"]) for _ in range(r.randrange(200))
            ),
            False,
        )
    kind, text = bad_file(r, good_file(r), small)
    return Case(f"file-{kind}", text, True)


# -- the oracle ----------------------------------------------------------------------------------

WHOLE_FILE = ("larger than", "nothing to check", "entries in the file", "cannot read")


def unclear_file_message(message: str, path: str) -> str | None:
    """Why ``message`` (a ScenarioError about file ``path``) is unclear, or None if clear:
    one line, at most 400 characters, starting with the file and a line number (unless it is
    about the whole file)."""
    if "\n" in message:
        return "more than one line"
    if len(message) > 400:
        return f"{len(message)} characters long"
    if not message.startswith(path + ":"):
        return "does not start with the file"
    rest = message[len(path) + 1 :]
    located = rest.split(":", 1)[0].isdigit() or re.search(r"at line \d+", rest)
    if not located and not any(w in rest for w in WHOLE_FILE):
        return "names no line"
    return None


def unclear_flow_message(message: str) -> str | None:
    """Why ``message`` (a FlowSyntaxError) is unclear, or None if clear."""
    if "\n" in message:
        return "more than one line"
    if len(message) > 400:
        return f"{len(message)} characters long"
    if not message.startswith("bad flow "):
        return "does not start with 'bad flow'"
    return None
