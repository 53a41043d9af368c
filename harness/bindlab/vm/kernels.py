"""Kernels for ``bindlab vm``: find a kernel image, its release, config and modules, and
what this host boots it with (KVM or TCG; 9p or virtiofs for the shared root).

A kernel is named by a path (a bzImage/vmlinuz, a kernel build tree, or a directory holding
an extracted package) or by a Debian package (``linux-image-6.1.0-NN-amd64``, or a meta
package such as ``linux-image-amd64`` resolved through apt-cache). Packages are fetched with
``apt-get download`` and extracted with ``dpkg-deb -x`` into a cache, never installed::

    ~/.cache/bindlab/kernels/linux-image-6.1.0-56-amd64/
        boot/vmlinuz-6.1.0-56-amd64  boot/config-6.1.0-56-amd64
        lib/modules/6.1.0-56-amd64/  (with modules.dep from depmod)
        bindlab-kernel.json          (package, version, release: written last)
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any

from bindlab.errors import ConfigError, HarnessError, errname

META = "bindlab-kernel.json"
STD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Config options the results and the matrix care about (recorded in every results file).
FACT_OPTIONS = (
    "CONFIG_DUMMY",
    "CONFIG_NET_VRF",
    "CONFIG_IFB",
    "CONFIG_VETH",
    "CONFIG_TUN",
    "CONFIG_IPV6",
    "CONFIG_BPF_SYSCALL",
    "CONFIG_MODULES",
    "CONFIG_NET_9P_VIRTIO",
    "CONFIG_9P_FS",
    "CONFIG_VIRTIO_FS",
    "CONFIG_VIRTIO_CONSOLE",
)
_VERSIONED = re.compile(r"^linux-image-(?:unsigned-)?\d+\.\d+")


class KernelError(HarnessError):
    """A kernel that cannot be found, fetched or read; the message names it."""


@dataclass(frozen=True)
class Kernel:
    """A bootable kernel: what vng gets (``image``), its release and its config."""

    spec: str
    image: str
    release: str
    config: dict[str, str] = field(default_factory=dict, repr=False)
    config_path: str | None = None
    package: str | None = None
    version: str | None = None

    def option(self, name: str) -> str | None:
        """``y``, ``m`` or ``n`` for ``CONFIG_*`` ``name``; None when the config is unknown."""
        if not self.config:
            return None
        return self.config.get(name, "n")

    def has(self, *names: str) -> bool | None:
        """True when every option is built in or a module; None when the config is unknown."""
        if not self.config:
            return None
        return all(self.option(n) in ("y", "m") for n in names)

    @property
    def config_digest(self) -> str:
        if not self.config:
            return ""
        text = "\n".join(f"{k}={v}" for k, v in sorted(self.config.items()))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def key(self) -> str:
        """File-name key for this kernel's results: release, plus config digest if known."""
        return f"{self.release}+{self.config_digest}" if self.config else self.release

    def facts(self) -> dict[str, Any]:
        """What a results file records about this kernel besides what the guest detects."""
        return {
            "spec": self.spec,
            "image": self.image,
            "package": self.package,
            "package_version": self.version,
            "config_digest": self.config_digest or None,
            "config": {n: self.option(n) for n in FACT_OPTIONS} if self.config else {},
        }


def cache_dir() -> str:
    """$BINDLAB_KERNEL_CACHE, else $XDG_CACHE_HOME/bindlab/kernels (~/.cache by default)."""
    if os.environ.get("BINDLAB_KERNEL_CACHE"):
        return os.environ["BINDLAB_KERNEL_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "bindlab", "kernels")


def bzimage_release(path: str) -> str | None:
    """The release string in an x86 bzImage's setup header (None if it is not one)."""
    try:
        with open(path, "rb") as f:
            head = f.read(0x10000)
    except OSError as e:
        raise KernelError(f"cannot read kernel image {path}: {e.strerror}") from None
    if len(head) < 0x210 or head[0x202:0x206] != b"HdrS":
        return None
    off = struct.unpack_from("<H", head, 0x20E)[0] + 0x200
    text = head[off : off + 256].split(b"\0", 1)[0].decode("ascii", "replace")
    return text.split(" ", 1)[0] or None


def parse_config(path: str) -> dict[str, str]:
    """``CONFIG_X`` -> value of a kernel .config (``is not set`` becomes ``n``)."""
    out: dict[str, str] = {}
    with open(path, errors="replace") as f:
        for line in f:
            line = line.strip()
            if line.startswith("# CONFIG_") and line.endswith(" is not set"):
                out[line[2:].split(" ", 1)[0]] = "n"
            elif line.startswith("CONFIG_") and "=" in line:
                k, v = line.split("=", 1)
                out[k] = v.strip('"')
    return out


def _kernel(spec: str, image: str, release: str, config_path: str | None, **kw: Any) -> Kernel:
    cfg = parse_config(config_path) if config_path and os.path.exists(config_path) else {}
    return Kernel(spec, image, release, cfg, config_path if cfg else None, **kw)


def from_path(spec: str) -> Kernel:
    """A kernel image file, a kernel build tree, or a root holding ``boot/vmlinuz-*``."""
    path = os.path.abspath(spec)
    if os.path.isdir(path):
        tree_img = os.path.join(path, "arch/x86/boot/bzImage")
        if os.path.exists(tree_img):  # a kernel build tree: vng finds image and modules
            rel_file = os.path.join(path, "include/config/kernel.release")
            release = _read(rel_file) or bzimage_release(tree_img) or "unknown"
            return _kernel(spec, path, release, os.path.join(path, ".config"))
        images = sorted(glob.glob(os.path.join(path, "boot/vmlinuz-*")))
        if not images:
            raise KernelError(
                f"{spec}: a directory without arch/x86/boot/bzImage (a build tree) "
                "or boot/vmlinuz-* (an extracted package)"
            )
        return from_path(images[-1])
    if not os.path.exists(path):
        raise KernelError(f"kernel image not found: {spec}")
    found = bzimage_release(path)
    if found is None:
        raise KernelError(f"{spec} is not an x86 bzImage/vmlinuz (no 'HdrS' setup header)")
    d = os.path.dirname(path)
    candidates = [
        os.path.join(d, f"config-{found}"),  # Debian /boot layout
        os.path.join(d, "../../../.config"),  # <tree>/arch/x86/boot/bzImage
        os.path.join(d, ".config"),
    ]
    config = next((c for c in candidates if os.path.exists(c)), None)
    return _kernel(spec, path, found, config)


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip() or None
    except OSError:
        return None


def _run(argv: list[str], cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    if shutil.which(argv[0]) is None:
        raise KernelError(f"{argv[0]} not found: Debian kernel packages need apt and dpkg")
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True)


def resolve_package(name: str) -> str:
    """A versioned ``linux-image-X.Y...`` name for ``name`` (meta packages via apt-cache)."""
    seen = [name]
    while not _VERSIONED.match(seen[-1]):
        cur = seen[-1]
        p = _run(["apt-cache", "show", "--no-all-versions", cur])
        if p.returncode != 0 or not p.stdout.strip():
            raise KernelError(
                f"unknown Debian package {cur!r}: apt-cache has no such package "
                "(run apt-get update, or look with: apt-cache search --names-only ^linux-image-)"
            )
        deps = re.search(r"^Depends:(.*)$", p.stdout, re.M)
        names = [d.strip().split(" ")[0] for d in (deps.group(1) if deps else "").split(",")]
        images = [n for n in names if n.startswith("linux-image-")]
        if not images or len(seen) > 4:
            raise KernelError(f"{cur!r} is neither a kernel image nor a meta package of one")
        seen.append(images[0])
    return seen[-1]


def from_package(name: str, cache: str | None = None, refresh: bool = False) -> Kernel:
    """The kernel of Debian package ``name``, downloaded and extracted into the cache once."""
    cache = cache or cache_dir()
    versioned = name if _VERSIONED.match(name) else resolve_package(name)
    root = os.path.join(cache, versioned)
    os.makedirs(cache, exist_ok=True)
    with open(os.path.join(cache, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if refresh or not os.path.exists(os.path.join(root, META)):
            _fetch(versioned, root)
    with open(os.path.join(root, META)) as f:
        meta = json.load(f)
    k = from_path(os.path.join(root, "boot", f"vmlinuz-{meta['release']}"))
    return Kernel(name, k.image, k.release, k.config, k.config_path, versioned, meta["version"])


def package_size(name: str) -> int | None:
    """The download size of Debian package ``name`` (apt-cache's ``Size:``), if known."""
    p = _run(["apt-cache", "show", "--no-all-versions", name])
    m = re.search(r"^Size: (\d+)$", p.stdout, re.M)
    return int(m.group(1)) if m else None


def is_cached(spec: str, cache: str | None = None) -> bool:
    """Whether ``spec`` (a versioned ``linux-image-*`` package) is in the cache already."""
    root = os.path.join(cache or cache_dir(), spec)
    return os.path.exists(os.path.join(root, META))


def _download(package: str, tmp: str) -> subprocess.CompletedProcess[str]:
    """``apt-get download package`` into ``tmp``, with progress on stderr: apt's own
    machine-readable status lines (``APT::Status-Fd``: ``dlstatus:N:PERCENT:...``)."""
    from bindlab.progress import Progress

    argv = ["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root"]
    argv += ["-o", "APT::Status-Fd=1", package]
    if shutil.which(argv[0]) is None:
        raise KernelError(f"{argv[0]} not found: Debian kernel packages need apt and dpkg")
    size = package_size(package)
    mib = f" ({size / 2**20:.1f} MiB)" if size else ""
    print(f"# bindlab vm: downloading {package}{mib}", file=sys.stderr, flush=True)
    out: list[str] = []
    with Progress(f"bindlab vm: download {package}", size, "B") as bar:
        proc = subprocess.Popen(
            argv, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for line in proc.stdout or ():
            status, _, rest = line.partition(":")
            if status == "dlstatus":
                pct = float(rest.split(":")[1])
                bar.update(pct / 100 * size if size else pct)
            else:
                out.append(line)
        err = proc.stderr.read() if proc.stderr else ""
        proc.wait()
        bar.close(
            "done" if proc.returncode == 0 else f"not downloaded (apt-get exited {proc.returncode})"
        )
    return subprocess.CompletedProcess(argv, proc.returncode, "".join(out), err)


def _fetch(package: str, root: str) -> None:
    """apt-get download + dpkg-deb -x + depmod into ``root`` (replaced atomically)."""
    parent = os.path.dirname(root)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=parent) as tmp:
        p = _download(package, tmp)
        debs = glob.glob(os.path.join(tmp, "*.deb"))
        if p.returncode != 0 or not debs:
            why = (p.stderr or p.stdout).strip().splitlines()
            raise KernelError(
                f"apt-get download {package} failed: {why[-1] if why else p.returncode} "
                "(unknown package? run apt-get update)"
            )
        tree = os.path.join(tmp, "root")
        print(f"# bindlab vm: extracting {os.path.basename(debs[0])}", file=sys.stderr, flush=True)
        version = _extract(debs[0], tree)
        images = sorted(glob.glob(os.path.join(tree, "boot", "vmlinuz-*")))
        if not images:
            raise KernelError(f"{package} holds no boot/vmlinuz-*: not a kernel image package")
        release = os.path.basename(images[-1])[len("vmlinuz-") :]
        _ensure_modules(tree, release, tmp)
        with open(os.path.join(tree, META), "w") as f:
            json.dump({"package": package, "version": version, "release": release}, f)
        if os.path.exists(root):
            shutil.rmtree(root)
        os.rename(tree, root)


def _extract(deb: str, tree: str) -> str:
    """dpkg-deb -x ``deb`` into ``tree``; returns the package version."""
    p = _run(["dpkg-deb", "-x", deb, tree])
    if p.returncode != 0:
        raise KernelError(f"dpkg-deb -x {deb} failed: {p.stderr.strip()}")
    return _run(["dpkg-deb", "-f", deb, "Version"]).stdout.strip()


def _ensure_modules(tree: str, release: str, tmp: str) -> None:
    """Give ``tree`` lib/modules/RELEASE with modules.dep (Ubuntu splits modules out)."""
    if not os.path.exists(os.path.join(tree, "lib")) and os.path.isdir(
        os.path.join(tree, "usr/lib/modules")
    ):
        os.symlink("usr/lib", os.path.join(tree, "lib"))  # merged-/usr packages
    moddir = os.path.join(tree, "lib/modules", release)
    if not os.path.isdir(os.path.join(moddir, "kernel")):
        extra = f"linux-modules-{release}"
        if package_size(extra) is not None:  # Ubuntu's split modules; Debian has none
            p = _download(extra, tmp)
            debs = glob.glob(os.path.join(tmp, f"{extra}_*.deb"))
            if p.returncode == 0 and debs:
                _extract(debs[0], tree)
    if not os.path.isdir(moddir):
        return  # a kernel without modules: vng boots it with what is built in
    depmod = shutil.which("depmod") or "/usr/sbin/depmod"
    if not os.path.exists(depmod):
        raise KernelError("depmod not found: apt-get install kmod")
    p = subprocess.run([depmod, "-a", "-b", tree, release], capture_output=True, text=True)
    if p.returncode != 0:
        raise KernelError(f"depmod -b {tree} {release} failed: {p.stderr.strip()}")


def resolve(spec: str, cache: str | None = None, refresh: bool = False) -> Kernel:
    """A :class:`Kernel` for ``spec``: a path, a build tree or a Debian package name."""
    if not spec:
        raise ConfigError("no kernel given: --kernel PATH|linux-image-...")
    if os.path.exists(spec) or "/" in spec or spec.startswith("."):
        return from_path(spec)
    if spec.startswith("linux-image-"):
        return from_package(spec, cache, refresh)
    raise KernelError(
        f"unknown kernel {spec!r}: give a bzImage/vmlinuz path, a kernel build tree, "
        "or a Debian package name (linux-image-6.1.0-NN-amd64, linux-image-amd64)"
    )


def cached(cache: str | None = None) -> list[dict[str, Any]]:
    """The packages in the cache with their version, release and size on disk (bytes)."""
    cache = cache or cache_dir()
    out = []
    for meta in sorted(glob.glob(os.path.join(cache, "*", META))):
        with open(meta) as f:
            entry = json.load(f)
        root = os.path.dirname(meta)
        size = sum(
            os.path.getsize(os.path.join(d, n))
            for d, _, names in os.walk(root)
            for n in names
            if not os.path.islink(os.path.join(d, n))
        )
        out.append({**entry, "path": root, "bytes": size})
    return out


# -- what this host boots a kernel with -------------------------------------------------


def accel(choice: str = "auto") -> tuple[str, str]:
    """``("kvm"|"tcg", why)``: KVM only where /dev/kvm can boot a stock kernel."""
    if choice in ("kvm", "tcg"):
        return choice, f"--accel {choice}"
    if not os.path.exists("/dev/kvm"):
        return "tcg", "no /dev/kvm"
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
    except OSError as e:
        return "tcg", f"/dev/kvm: {errname(e)}"
    hw = [m for m in ("kvm_intel", "kvm_amd") if os.path.exists(f"/sys/module/{m}")]
    if os.path.exists("/sys/module/kvm_pvm") and not hw:
        return "tcg", "/dev/kvm is PVM (kvm_pvm), which boots only PVM-enabled guest kernels"
    return "kvm", f"/dev/kvm ({', '.join(hw) or 'kvm'})"


def _rust_virtiofsd() -> str | None:
    """A virtiofsd vng can drive (the Rust one: it has --shared-dir); qemu's C one is not."""
    for path in (shutil.which("virtiofsd"), "/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd"):
        if path and os.access(path, os.X_OK):
            p = subprocess.run([path, "--help"], capture_output=True, text=True)
            if "--shared-dir" in p.stdout + p.stderr:
                return path
    return None


def choose_fs(kernel: Kernel) -> tuple[str, str]:
    """``("9p"|"virtiofs", why)`` for sharing the host root with this kernel."""
    ninep = kernel.has("CONFIG_NET_9P_VIRTIO", "CONFIG_9P_FS")
    if ninep:
        return "9p", "kernel has CONFIG_9P_FS and CONFIG_NET_9P_VIRTIO"
    daemon = _rust_virtiofsd()
    if ninep is None:
        return ("virtiofs", f"config unknown; {daemon}") if daemon else ("9p", "config unknown")
    if kernel.has("CONFIG_VIRTIO_FS") and daemon:
        return "virtiofs", f"no 9p in the kernel; CONFIG_VIRTIO_FS and {daemon}"
    raise KernelError(
        f"{kernel.spec} ({kernel.release}) cannot see the host filesystem: no 9p "
        f"(CONFIG_9P_FS={kernel.option('CONFIG_9P_FS')}, "
        f"CONFIG_NET_9P_VIRTIO={kernel.option('CONFIG_NET_9P_VIRTIO')}) and "
        f"CONFIG_VIRTIO_FS={kernel.option('CONFIG_VIRTIO_FS')} with "
        f"{'virtiofsd ' + daemon if daemon else 'no Rust virtiofsd on the host'}; "
        "use a kernel with 9p (Debian's generic linux-image-*-amd64, not -cloud-)"
    )


def tool_path() -> str:
    """PATH for vng and its helpers: this Python's bin directory (the venv) first."""
    return f"{os.path.dirname(sys.executable)}:{os.environ.get('PATH', STD_PATH)}:/usr/sbin:/sbin"


TOOLS = {
    "vng": "pip install virtme-ng (into the venv)",
    "virtme-run": "pip install virtme-ng (into the venv)",
    "qemu-system-x86_64": "apt-get install qemu-system-x86",
    "busybox": "apt-get install busybox-static (virtme's initramfs)",
    "depmod": "apt-get install kmod",
}
PACKAGE_TOOLS = {  # what fetching a Debian kernel package needs besides
    "apt-get": "a Debian/Ubuntu host (apt)",
    "apt-cache": "a Debian/Ubuntu host (apt)",
    "dpkg-deb": "apt-get install dpkg",
}


def missing_tools(package: bool = False) -> list[tuple[str, str]]:
    """Every tool a VM run needs (and with ``package``, fetching a kernel package) that
    this host lacks, with what installs it."""
    need = TOOLS | (PACKAGE_TOOLS if package else {})
    return [(n, fix) for n, fix in need.items() if shutil.which(n, path=tool_path()) is None]


def tools() -> dict[str, str]:
    """Paths of vng, qemu, busybox, depmod; one KernelError naming every missing tool."""
    missing = missing_tools()
    if missing:
        raise KernelError(
            f"missing {len(missing)} tool(s): " + "; ".join(f"{n} ({fix})" for n, fix in missing)
        )
    return {n: shutil.which(n, path=tool_path()) or n for n in TOOLS}
