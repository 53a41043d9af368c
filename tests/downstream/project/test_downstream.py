"""A downstream project's tests: its own ``harness`` package and bindlab's fixture side by side."""

import pytest

import harness


def test_the_projects_own_harness_is_imported():
    assert harness.WHO == "downstream"


def test_prefix_split(netns):
    netns.add_local_route("192.0.2.0/24")
    netns.tcp_listener("192.0.2.10:80", label="web")
    rows = {
        "tcp 198.18.0.1:40000 -> 192.0.2.10:80": "web",
        "tcp 198.18.0.1:40001 -> 192.0.2.11:80": "RST",
    }
    assert netns.probe(rows) == rows


@pytest.mark.scale
def test_scale_is_left_out_by_default():
    raise AssertionError("a scale test ran without -m scale")
