"""BPF sk_lookup for bindlab: C programs (``*.bpf.c``), their clang build, a libbpf loader,
the prefix :class:`~bindlab.bpf.dispatcher.Dispatcher`, SO_BINDTOPREFIX emulation and a
configurable test program (:class:`~bindlab.bpf.steer.Steer`), and sk_reuseport programs
(:mod:`bindlab.bpf.reuseport`).

Importing this package loads nothing: programs are compiled on first use (cached) and
libbpf is opened then.
"""

from bindlab.bpf.dispatcher import Binding, Dispatcher, sk_lookup
from bindlab.bpf.keys import ANY_PORT, Rule
from bindlab.bpf.prefixbind import bind_to_prefix
from bindlab.bpf.query import Attached, attached, test_run
from bindlab.bpf.reuseport import ReuseportProgram, cbpf_index
from bindlab.bpf.steer import Steer

__all__ = [
    "ANY_PORT",
    "Attached",
    "Binding",
    "Dispatcher",
    "ReuseportProgram",
    "Rule",
    "Steer",
    "attached",
    "bind_to_prefix",
    "cbpf_index",
    "sk_lookup",
    "test_run",
]
