"""Scenario wiring: the ``bind_to_prefix`` fixture (honouring the plugin's
``--bindlab-bindtoprefix-optname``) and the ``emulation_only`` marker.

Without the option the SO_BINDTOPREFIX scenarios run against the sk_lookup emulation
(:mod:`bindlab.bpf.prefixbind`); with ``--bindlab-bindtoprefix-optname N`` they call the real
``setsockopt(SOL_SOCKET, N, prefix)`` of a patched kernel, so the emulation's scenarios are
a conformance suite for the patch.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from bindlab import FeatureMissing, Namespace, features


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "emulation_only: asserts a choice of the SO_BINDTOPREFIX emulation that the RFC does "
        "not fix; skipped with --bindlab-bindtoprefix-optname. Example: @pytest.mark.emulation_only",
    )


@pytest.fixture(params=["tcp", "udp"])
def proto(request: pytest.FixtureRequest) -> str:
    """Each protocol in turn, for scenarios that hold for TCP and UDP alike."""
    return request.param


@dataclass
class PrefixBinder:
    """Binds sockets of one namespace to prefixes: emulated, or the real option."""

    ns: Namespace
    optname: int | None

    @property
    def real(self) -> bool:
        return self.optname is not None

    def __call__(
        self, sock: socket.socket, prefix: str, port: int, backlog: int = 4096
    ) -> socket.socket:
        from bindlab.bpf.prefixbind import bind_to_prefix

        return bind_to_prefix(self.ns, sock, prefix, port, optname=self.optname, backlog=backlog)


@pytest.fixture
def bind_to_prefix(
    request: pytest.FixtureRequest, netns: Namespace
) -> Callable[..., socket.socket]:
    """A function ``bind_to_prefix(sock, prefix, port)`` for sockets of ``netns``: the
    sk_lookup emulation, or the real option with ``--bindlab-bindtoprefix-optname N``.

    Example::

        def test_web(netns, bind_to_prefix):
            s = netns.socket("tcp", 4, reuseport=True)
            bind_to_prefix(netns.label(s, "web"), "192.0.2.0/24", 80)
    """
    optname = request.config.getoption("bindlab_bindtoprefix_optname")
    if optname is None:
        try:
            features.require("BPF_SK_LOOKUP", "CLANG_BPF")
        except FeatureMissing as e:
            pytest.skip(f"SO_BINDTOPREFIX emulation: {e}")
    elif request.node.get_closest_marker("emulation_only"):
        pytest.skip(f"emulation-only behaviour; --bindlab-bindtoprefix-optname={optname} given")
    return PrefixBinder(netns, optname)
