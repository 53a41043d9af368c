"""How probe() splits flows into batches in which no client repeats (issue 10, item 9).

Flows that share a client (protocol, source address, source port) cannot share a batch: a
reply names its flow by the client. The split is first fit, in order, and takes work linear
in the number of flows however many share a client. Work is counted in key hashes, not
timed: the old split hashed a key once per batch it passed over (10,000 flows of one
client: 50 million times, 2.5 s); ``bench``-style timings are in the issue note."""

from __future__ import annotations

import random

import pytest
from bindlab.probe import _batches


def first_fit(keys: list[object], size: int) -> list[list[int]]:
    """The reference: each index goes to the first batch with room that lacks its key."""
    batches: list[list[int]] = []
    for i, k in enumerate(keys):
        b = next(
            (b for b in batches if len(b) < size and all(keys[j] != k for j in b)),
            None,
        )
        if b is None:
            batches.append(b := [])
        b.append(i)
    return batches


class Counted:
    """A key that counts how often it is hashed (a dict or set lookup hashes once)."""

    hashes = 0

    def __init__(self, client: int) -> None:
        self.client = client

    def __hash__(self) -> int:
        Counted.hashes += 1
        return hash(self.client)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Counted) and other.client == self.client


def test_flows_of_one_client_get_a_batch_each_in_order() -> None:
    keys = [(6, b"\xc6\x12\x00\x01", 40000)] * 10_000
    assert _batches(keys, 512) == [[i] for i in range(10_000)]  # type: ignore[arg-type]


def test_distinct_clients_fill_batches_in_order() -> None:
    keys = [(6, b"\xc6\x12\x00\x01", p) for p in range(1, 1201)]
    batches = _batches(keys, 512)
    assert batches == [list(range(0, 512)), list(range(512, 1024)), list(range(1024, 1200))]


@pytest.mark.parametrize("seed", range(20))
def test_the_split_is_first_fit(seed: int) -> None:
    rng = random.Random(seed)
    keys = [rng.randrange(rng.randint(1, 12)) for _ in range(rng.randint(0, 200))]
    size = rng.randint(1, 9)
    got = _batches(keys, size)  # type: ignore[arg-type]
    assert got == first_fit(keys, size)  # type: ignore[arg-type]
    for b in got:
        assert len(b) <= size and len({keys[i] for i in b}) == len(b)
    assert sorted(i for b in got for i in b) == list(range(len(keys)))


@pytest.mark.parametrize(("clients", "n"), [(1, 4000), (10, 4000), (4000, 4000)])
def test_the_work_is_linear_however_many_flows_share_a_client(clients: int, n: int) -> None:
    keys = [Counted(i % clients) for i in range(n)]
    Counted.hashes = 0
    batches = _batches(keys, 512)  # type: ignore[arg-type]
    assert sum(map(len, batches)) == n
    assert Counted.hashes <= 3 * n, f"{Counted.hashes} hashes for {n} flows"
