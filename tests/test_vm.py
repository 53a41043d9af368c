"""bindlab vm: each kind of failure is reported as itself, with its exit code.

The first tests need no VM (bad kernel names). The others boot the cached Debian 6.1
kernel under qemu (a minute each under TCG): a command exiting 3, a kernel panic, a hang
killed by --timeout. They skip with the reason when qemu, vng or the kernel are missing.
Set BINDLAB_VM_TESTS=0 to skip them.
"""

from __future__ import annotations

import fcntl
import os
import re
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from bindlab.vm import boot as vm
from bindlab.vm import kernels


def run_vm(*argv: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bindlab.vm.boot", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_missing_kernel_file_is_a_usage_error(capsys):
    assert vm.cli(["--kernel", "/nonexistent/bzImage", "--", "true"]) == vm.EXIT_USAGE
    assert "kernel image not found: /nonexistent/bzImage" in capsys.readouterr().err


def test_file_that_is_not_a_kernel_is_a_usage_error(tmp_path, capsys):
    junk = tmp_path / "bzImage"
    junk.write_bytes(b"\0" * 4096)
    assert vm.cli(["--kernel", str(junk), "--", "true"]) == vm.EXIT_USAGE
    assert "is not an x86 bzImage/vmlinuz" in capsys.readouterr().err


def test_unknown_name_is_a_usage_error(capsys):
    assert vm.cli(["--kernel", "vmlinuz-of-dreams", "--", "true"]) == vm.EXIT_USAGE
    assert "unknown kernel 'vmlinuz-of-dreams'" in capsys.readouterr().err


def fake_bzimage(path: Path, release: str) -> None:
    """Just enough of an x86 setup header for the release to be read from it."""
    head = bytearray(0x400)
    head[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", head, 0x20E, 0x300 - 0x200)
    head[0x300 : 0x300 + len(release) + 6] = f"{release} (me)".encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(head))


def test_build_tree_image_and_package_layout(tmp_path):
    tree = tmp_path / "linux"
    fake_bzimage(tree / "arch/x86/boot/bzImage", "6.19.0-rc1")
    (tree / ".config").write_text(
        "CONFIG_9P_FS=y\nCONFIG_NET_9P_VIRTIO=y\n# CONFIG_DUMMY is not set\n"
    )
    (tree / "include/config").mkdir(parents=True)
    (tree / "include/config/kernel.release").write_text("6.19.0-rc1-dirty\n")
    k = kernels.resolve(str(tree))
    assert (k.image, k.release, k.option("CONFIG_DUMMY")) == (str(tree), "6.19.0-rc1-dirty", "n")
    assert k.key.startswith("6.19.0-rc1-dirty+") and kernels.choose_fs(k)[0] == "9p"
    img = kernels.resolve(str(tree / "arch/x86/boot/bzImage"))
    assert (img.release, img.config_digest) == ("6.19.0-rc1", k.config_digest)
    root = tmp_path / "pkg"
    fake_bzimage(root / "boot/vmlinuz-6.1.0-9-amd64", "6.1.0-9-amd64")
    (root / "boot/config-6.1.0-9-amd64").write_text("CONFIG_NET_VRF=m\n")
    deb = kernels.resolve(str(root))
    assert (deb.release, deb.option("CONFIG_NET_VRF"), deb.has("CONFIG_TUN")) == (
        "6.1.0-9-amd64",
        "m",
        False,
    )
    assert kernels.resolve(str(root / "boot/vmlinuz-6.1.0-9-amd64")).config == deb.config


def test_pytest_commands_get_results_options(tmp_path):
    argv, results = vm.pytest_outputs(["pytest", "-q"], str(tmp_path), "6.1.0-1-amd64+abc")
    assert results == str(tmp_path / "6.1.0-1-amd64+abc.json")
    assert argv[:2] == ["pytest", "-q"] and "--bindlab-results" in argv
    assert f"--junitxml={tmp_path}/6.1.0-1-amd64+abc.junit.xml" in argv
    mine = ["python", "-m", "pytest", "--bindlab-results=x.json"]
    assert vm.pytest_outputs(mine, str(tmp_path), "k")[1] == os.path.abspath("x.json")
    assert vm.pytest_outputs(["sh", "-c", "exit 3"], str(tmp_path), "k") == (
        ["sh", "-c", "exit 3"],
        None,
    )


def test_shared_filesystem_follows_the_kernel_config(monkeypatch):
    def kernel(**config: str) -> kernels.Kernel:
        return kernels.Kernel("k", "/boot/vmlinuz-k", "6.1.0-k", config)

    assert kernels.choose_fs(kernel(CONFIG_NET_9P_VIRTIO="m", CONFIG_9P_FS="m"))[0] == "9p"
    monkeypatch.setattr(kernels, "_rust_virtiofsd", lambda: None)
    cloud = kernel(CONFIG_9P_FS="n", CONFIG_VIRTIO_FS="m")  # Debian's -cloud- kernel
    with pytest.raises(kernels.KernelError, match=r"no 9p .* no Rust virtiofsd on the host"):
        kernels.choose_fs(cloud)
    monkeypatch.setattr(kernels, "_rust_virtiofsd", lambda: "/usr/libexec/virtiofsd")
    assert kernels.choose_fs(cloud)[0] == "virtiofs"


def test_accelerator_choice():
    assert kernels.accel("tcg") == ("tcg", "--accel tcg")
    acc, why = kernels.accel()
    assert acc in ("kvm", "tcg") and why


def _cached_61() -> kernels.Kernel | None:
    for entry in kernels.cached():
        if re.fullmatch(r"linux-image-6\.1\.0-\d+-amd64", entry["package"]):
            return kernels.from_package(entry["package"])
    return None


@pytest.fixture(scope="module")
def kernel61() -> Iterator[str]:
    """The cached Debian 6.1 kernel's image path, or a skip naming what is missing.

    Holds a lock in the kernel cache while the module's VMs run: two pytest runs on one
    machine boot one VM at a time (TCG takes a whole core).
    """
    if os.environ.get("BINDLAB_VM_TESTS") == "0":
        pytest.skip("BINDLAB_VM_TESTS=0")
    if os.environ.get("BINDLAB_IN_VM"):
        pytest.skip("already inside a bindlab VM (no nested TCG)")
    try:
        kernels.tools()
    except kernels.KernelError as e:
        pytest.skip(str(e))
    k = _cached_61()
    if k is None:
        pytest.skip(
            f"no linux-image-6.1.0-*-amd64 in {kernels.cache_dir()} "
            "(fetch it: python -m bindlab.vm.boot --kernel linux-image-amd64 -- true)"
        )
    with open(os.path.join(kernels.cache_dir(), ".vm-tests.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield k.image


def _no_qemu_left(marker: str) -> None:
    left = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout
    assert left == "", f"qemu/vng processes left behind: {left}"


def test_command_exit_code_and_output_come_back(kernel61, tmp_path):
    p = run_vm(
        *("--kernel", kernel61, "--cpus", "1", "--results-dir", str(tmp_path), "--"),
        *("sh", "-c", "echo out-line; echo err-line >&2; exit 3"),
    )
    assert p.returncode == 3, p.stderr
    assert p.stdout.splitlines() == ["out-line"]
    assert "err-line" in p.stderr
    assert ": command exited 3 (boot " in p.stderr
    _no_qemu_left(str(tmp_path))


def test_kernel_panic_is_reported_with_the_console_tail(kernel61, tmp_path):
    p = run_vm(
        *("--kernel", kernel61, "--cpus", "1", "--results-dir", str(tmp_path), "--"),
        *("sh", "-c", "echo c > /proc/sysrq-trigger"),
    )
    assert p.returncode == vm.EXIT_PANIC, p.stderr
    assert "KERNEL PANIC while the command ran" in p.stderr
    assert "#   " in p.stderr and "Kernel panic - not syncing" in p.stderr
    _no_qemu_left(str(tmp_path))


def test_hanging_guest_is_killed_at_the_timeout(kernel61, tmp_path):
    p = run_vm(
        *("--kernel", kernel61, "--cpus", "1", "--timeout", "45"),
        *("--results-dir", str(tmp_path), "--", "sleep", "3600"),
        timeout=300,
    )
    assert p.returncode == vm.EXIT_TIMEOUT, p.stderr
    assert "TIMEOUT after 45 s" in p.stderr and "qemu killed" in p.stderr
    _no_qemu_left(str(tmp_path))


def _vm_cli(
    tmp_path: Path, *argv: str, path: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``bindlab vm`` with an empty kernel cache in ``tmp_path`` (and PATH as given)."""
    env = dict(os.environ, BINDLAB_KERNEL_CACHE=str(tmp_path / "cache"))
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [sys.executable, "-m", "bindlab.vm.boot", *argv],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip


def _cache_files(tmp_path: Path) -> list[str]:
    return [str(p) for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.name != ".lock"]


def test_every_missing_tool_is_named_before_any_download(tmp_path: Path) -> None:
    # qemu, busybox, apt-get and apt-cache live in /usr/bin: out of reach with this PATH
    p = _vm_cli(tmp_path, "--kernel", "linux-image-amd64", "--", "true", path="/nonexistent")
    assert p.returncode == vm.EXIT_USAGE, p.stderr
    lines = p.stderr.splitlines()
    assert lines[0].startswith("bindlab vm: missing ") and "nothing downloaded" in lines[0]
    named = {ln.split(":")[1].strip() for ln in lines[1:]}
    assert {"qemu-system-x86_64", "busybox", "apt-get", "apt-cache"} <= named, p.stderr
    assert "bindlab vm:   qemu-system-x86_64: apt-get install qemu-system-x86" in lines
    assert _cache_files(tmp_path) == []


def test_dry_run_downloads_nothing(tmp_path: Path) -> None:
    try:
        kernels.tools()
        name = kernels.resolve_package("linux-image-amd64")
    except kernels.KernelError as e:
        pytest.skip(str(e))
    p = _vm_cli(tmp_path, "--kernel", "linux-image-amd64", "--dry-run")
    assert p.returncode == 0, p.stderr
    assert f"# {name}: not in {tmp_path / 'cache'}: a run downloads it" in p.stdout
    assert "--run '<vmlinuz of " in p.stdout and p.stderr == ""
    assert _cache_files(tmp_path) == []  # not a byte fetched, nothing extracted


def test_guest_output_streams_as_it_comes(kernel61, tmp_path: Path) -> None:
    """The guest's Python prints a line, then waits for the host to answer it: the run can
    only end if that line reached the host while the guest was still running."""
    go = tmp_path / "go"
    script = (
        "import os, time\nprint('first')\n"
        f"while not os.path.exists({str(go)!r}):\n    time.sleep(0.2)\nprint('second')\n"
    )
    argv = [sys.executable, "-m", "bindlab.vm.boot", "--kernel", kernel61, "--cpus", "1",
            "--results-dir", str(tmp_path), "--timeout", "400", "--", sys.executable, "-c", script]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()  # type: ignore[union-attr]
        go.touch()
        rest, err = proc.communicate(timeout=450)
    finally:
        proc.kill()
    assert first == "first\n", err
    assert proc.returncode == 0 and rest == "second\n", err
    assert re.search(
        r"^# bindlab vm: booting .*: the guest reached the command after [\d.]+ s$", err, re.M
    )
