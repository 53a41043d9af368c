"""The kernel list (fixtures/kernels.toml) and ``bindlab vm --all``, which boots it in turn.

The list's checks and the summary need no VM; the last test boots the cached Debian 6.1
kernel once (a minute under TCG) and skips with the reason when it cannot.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bindlab.vm import boot as vm
from bindlab.vm import kernel_list, kernels

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "kernels.toml"
    p.write_text(text)
    return str(p)


def test_the_shipped_list_loads_and_every_entry_says_what_it_is_for():
    entries = kernel_list.load(str(ROOT / "fixtures" / "kernels.toml"))
    assert len(entries) >= 2 and all(e.purpose for e in entries)
    rows = kernel_list.matrix(entries)["include"]
    assert [r["name"] for r in rows] == [e.name for e in entries if e.ci]
    assert {r["container"] for r in rows} >= {"debian:bookworm"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[kernel]]\nname='a'\npurpose='x'\n", "kernel 'a': give exactly one of package or bzimage"),
        ("[[kernel]]\nname='a b'\npackage='linux-image-amd64'\npurpose='x'\n", "name must match"),
        ("[[kernel]]\nname='a'\npackage='bash'\npurpose='x'\n", "package 'bash' is not a linux-image-*"),
        ("[[kernel]]\nname='a'\npackage='linux-image-amd64'\n", "purpose (what this kernel is for) is required"),
        ("[[kernel]]\nname='a'\npackage='linux-image-amd64'\npurpose='x'\npurpse='y'\n", "kernel[0]: unknown key 'purpse'"),
        ("[[kernel]]\nname='a'\nbzimage='bz'\npurpose='x'\nci=true\n", "ci = true needs a package"),
        ("[[kernel]]\nname='a'\npackage='linux-image-amd64'\npurpose='x'\n" * 2, "kernel 'a' is listed twice"),
        ("[[kernels]]\nname='a'\n", "unknown top-level key 'kernels'"),
        ("kernel = [\n", "kernels.toml: "),
    ],
)  # fmt: skip
def test_a_bad_list_is_one_error_naming_file_and_entry(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(kernel_list.KernelListError) as e:
        kernel_list.load(path)
    assert str(e.value).startswith(path) and message in str(e.value)


def test_bzimage_paths_are_relative_to_the_list_and_stay_out_of_ci(tmp_path):
    path = write(tmp_path, "[[kernel]]\nname='mine'\nbzimage='linux/bzImage'\npurpose='patch'\n")
    (e,) = kernel_list.load(path)
    assert (e.kernel, e.ci) == (str(tmp_path / "linux" / "bzImage"), False)
    with pytest.raises(kernel_list.KernelListError, match="no kernel of the list has ci = true"):
        kernel_list.matrix([e])


def test_matrix_json_command_is_what_the_workflow_reads(tmp_path):
    p = subprocess.run(
        [sys.executable, "-m", "bindlab.vm.kernel_list", "--matrix-json"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert json.loads(p.stdout) == kernel_list.matrix(
        kernel_list.load(str(ROOT / "fixtures/kernels.toml"))
    )
    bad = subprocess.run(
        [sys.executable, "-m", "bindlab.vm.kernel_list", str(tmp_path / "none.toml")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert bad.returncode == 2 and "none.toml: no such kernel list" in bad.stderr


def test_an_entry_of_another_debian_release_is_skipped_with_the_reason(tmp_path):
    (e,) = kernel_list.load(
        write(
            tmp_path,
            "[[kernel]]\nname='t'\npackage='linux-image-amd64'\ncontainer='debian:trixie'\npurpose='x'\n",
        )
    )
    assert kernel_list.not_here(e, "trixie") is None
    assert kernel_list.not_here(e, "bookworm") == (
        "linux-image-amd64 of debian:trixie: this machine's apt sources are bookworm's"
    )


def test_all_runs_every_entry_in_turn_and_prints_a_summary(tmp_path, capsys):
    missing = tmp_path / "nope" / "bzImage"
    junk = tmp_path / "junk"
    junk.write_bytes(b"\0" * 4096)
    path = write(
        tmp_path,
        f"[[kernel]]\nname='gone'\nbzimage='{missing}'\npurpose='a file that is not there'\n"
        f"[[kernel]]\nname='junk'\nbzimage='{junk}'\npurpose='not a kernel'\n",
    )
    rc = vm.cli(["--all", "--kernels", path, "--results-dir", str(tmp_path / "r"), "--", "true"])
    out, err = capsys.readouterr()
    assert rc == vm.EXIT_USAGE
    assert "# [1/2] gone: " in err and "# [2/2] junk: " in err
    lines = out.splitlines()
    assert lines[0].split() == ["KERNEL", "SPEC", "OUTCOME", "EXIT", "SECONDS", "DETAIL"]
    assert lines[1].split()[:4] == ["gone", str(missing), "error", "2"]
    assert "kernel image not found" in lines[1] and "is not an x86 bzImage" in lines[2]
    assert lines[-1] == "# 0 of 2 kernel(s) passed, 0 skipped"


def test_all_and_kernel_exclude_each_other(capsys):
    with pytest.raises(SystemExit):
        vm.cli(["--all", "--kernel", "linux-image-amd64"])
    assert "give --kernel K or --all" in capsys.readouterr().err
    assert vm.cli(["--all", "--kernels", "/nonexistent.toml"]) == vm.EXIT_USAGE
    assert "/nonexistent.toml: no such kernel list" in capsys.readouterr().err


def test_all_boots_a_listed_kernel(tmp_path):
    """One real boot through --all: the cached Debian 6.1 kernel runs a command that exits 0."""
    if os.environ.get("BINDLAB_VM_TESTS") == "0" or os.environ.get("BINDLAB_IN_VM"):
        pytest.skip("BINDLAB_VM_TESTS=0 or already inside a bindlab VM")
    try:
        kernels.tools()
    except kernels.KernelError as e:
        pytest.skip(str(e))
    cached = [c for c in kernels.cached() if c["package"].startswith("linux-image-6.1.0-")]
    if not cached:
        pytest.skip(
            f"no linux-image-6.1.0-*-amd64 in {kernels.cache_dir()} (ci/vm-smoke.sh fetches it)"
        )
    pkg = cached[0]["package"]
    path = write(tmp_path, f"[[kernel]]\nname='deb61'\npackage='{pkg}'\npurpose='smoke'\n")
    p = subprocess.run(
        [sys.executable, "-m", "bindlab.vm.boot", "--all", "--kernels", path, "--cpus", "1",
         "--results-dir", str(tmp_path / "r"), "--", "sh", "-c", "uname -r"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    release = pkg.removeprefix("linux-image-")
    assert release in p.stdout  # the guest's uname -r came back
    row = next(line for line in p.stdout.splitlines() if line.startswith("deb61 "))
    assert row.split()[2:4] == ["exited", "0"] and release in row
    assert p.stdout.splitlines()[-1] == "# 1 of 1 kernel(s) passed, 0 skipped"
    assert list((tmp_path / "r" / "deb61").glob("*.vm.json"))


def test_the_default_command_is_this_checkouts_suite():
    """Without ARGS (and no args in the entry) --all and --kernel run scenarios/ of the checkout."""
    assert Path(vm.REPO) == ROOT and (Path(vm.REPO) / "scenarios" / "conftest.py").is_file()
