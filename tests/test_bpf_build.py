"""Building the BPF programs: cache location and key, and clear errors."""

from __future__ import annotations

import pytest
from bindlab import ConfigError, FeatureMissing
from bindlab.bpf import build


def test_shipped_sources() -> None:
    assert {"dispatch", "steer"} <= set(build.sources())


def test_cache_dir_follows_xdg(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert build.cache_dir() == tmp_path / "bindlab" / "bpf"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert build.cache_dir() == tmp_path / ".cache" / "bindlab" / "bpf"


def test_missing_compiler_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setenv("BINDLAB_CLANG", "")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(FeatureMissing, match="CLANG_BPF: clang not found"):
        build.object_path("dispatch")


def test_unknown_program() -> None:
    with pytest.raises(ConfigError, match="no BPF program 'nope'; shipped: dispatch"):
        build.object_path("nope")


@pytest.mark.requires("CLANG_BPF")
def test_build_is_cached_by_content(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = build.object_path("steer")
    assert first.parent == tmp_path / "bindlab" / "bpf" and first.read_bytes()[:4] == b"\x7fELF"
    mtime = first.stat().st_mtime_ns
    assert build.object_path("steer") == first and first.stat().st_mtime_ns == mtime
    src = tmp_path / "src"
    src.mkdir()
    (src / "steer.bpf.c").write_text((build.SOURCES / "steer.bpf.c").read_text() + "\n// x\n")
    monkeypatch.setattr(build, "SOURCES", src)
    assert build.object_path("steer") != first  # edited source: new object


@pytest.mark.requires("CLANG_BPF")
def test_compiler_error_is_reported(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    (tmp_path / "bad.bpf.c").write_text("int x = ;\n")
    monkeypatch.setattr(build, "SOURCES", tmp_path)
    with pytest.raises(FeatureMissing, match=r"failed to build bad.bpf.c[\s\S]*error"):
        build.object_path("bad")
    assert not list((tmp_path / "bindlab" / "bpf").glob("*"))
