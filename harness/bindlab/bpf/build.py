"""Compile the BPF C sources shipped in ``harness/bpf/`` with clang, cached by content hash.

Nothing compiles at import: :func:`object_path` builds on first use (a set-up step) and
stores ``<name>-<hash>.o`` under ``$XDG_CACHE_HOME/bindlab/bpf`` (``~/.cache/...``), where
the hash covers the source, the clang version and the flags, so an edited source or a new
compiler rebuilds. ``python -m bindlab.bpf.build`` pre-builds every program.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import shutil
import subprocess
from pathlib import Path

from bindlab.errors import ConfigError, FeatureMissing

SOURCES = Path(__file__).resolve().parent
CFLAGS = ("-target", "bpf", "-O2", "-g", "-Wall", "-Werror")
_INSTALL = "apt install clang llvm libbpf-dev"


def cache_dir() -> Path:
    """Where compiled objects go: ``$XDG_CACHE_HOME/bindlab/bpf`` or ``~/.cache/bindlab/bpf``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "bindlab" / "bpf"


def sources() -> list[str]:
    """Names of the shipped programs (``dispatch`` for ``dispatch.bpf.c``)."""
    return sorted(p.name.removesuffix(".bpf.c") for p in SOURCES.glob("*.bpf.c"))


def _clang() -> str:
    clang = os.environ.get("BINDLAB_CLANG") or shutil.which("clang")
    if clang is None:
        raise FeatureMissing(f"CLANG_BPF: clang not found on PATH ({_INSTALL})")
    return clang


def _include_flags() -> list[str]:
    """``<asm/types.h>`` lives under the multiarch directory on Debian and Ubuntu."""
    arch = f"/usr/include/{platform.machine()}-linux-gnu"
    return ["-I", arch] if os.path.isdir(arch) else []


@functools.cache
def _version(clang: str) -> str:
    out = subprocess.run([clang, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.splitlines()[0] if out.stdout else "unknown"


def object_path(name: str) -> Path:
    """The compiled object of program ``name``, building it if the cache lacks it."""
    src = SOURCES / f"{name}.bpf.c"
    if not src.is_file():
        raise ConfigError(f"no BPF program {name!r}; shipped: {', '.join(sources())}")
    clang = _clang()
    argv = [clang, *CFLAGS, *_include_flags()]
    digest = hashlib.sha256()
    digest.update(src.read_bytes())
    digest.update(_version(clang).encode())
    digest.update(" ".join(argv[1:]).encode())
    out = cache_dir() / f"{name}-{digest.hexdigest()[:16]}.o"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    proc = subprocess.run(
        [*argv, "-c", str(src), "-o", str(tmp)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise FeatureMissing(
            f"CLANG_BPF: {clang} failed to build {src.name} (exit {proc.returncode}; "
            f"{_INSTALL}?)\n{proc.stderr.strip()}"
        )
    os.replace(tmp, out)  # atomic: a concurrent run sees the whole object or none
    return out


def main() -> None:
    """Build every shipped program and print where each object is."""
    for name in sources():
        print(f"{name}: {object_path(name)}")


if __name__ == "__main__":
    main()
