"""A small ctypes binding of libbpf 1.x (``libbpf.so.1``): objects, programs, maps, links.

Only what bindlab needs: open and load an object file (with map sizes, read-only globals
and skipped programs set before load), find programs and maps by name, attach an sk_lookup
program to a network namespace or a tracepoint program to its tracepoint (a ``bpf_link``),
run an iterator, and map element operations on raw bytes. libbpf's log goes to a buffer, not
to stderr; the tail of it (the verifier's complaint, for instance) is in every
:class:`LibbpfError`.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import errno
import functools
import os
import threading
from collections.abc import Iterator
from typing import Any

from bindlab.errors import FeatureMissing, HarnessError

# <linux/bpf.h> map update flags
BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2

_log: collections.deque[str] = collections.deque(maxlen=60)
_log_lock = threading.Lock()


class LibbpfError(HarnessError, OSError):
    """A libbpf call failed: names the call, the errno and libbpf's recent log lines."""

    def __init__(self, what: str, err: int) -> None:
        with _log_lock:
            log = "".join(_log).rstrip()
            _log.clear()
        name = errno.errorcode.get(err, str(err))
        tail = f"\n--- libbpf log ---\n{log}" if log else ""
        OSError.__init__(self, err, f"{what}: {name} ({os.strerror(err)}){tail}")


def _clear_log() -> None:
    with _log_lock:
        _log.clear()


_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)


@_PRINT_FN
def _print(level: int, fmt: bytes | None, args: int | None) -> int:
    """libbpf's print callback: format with vsnprintf and keep the line (DEBUG is dropped)."""
    if level > 1 or fmt is None:  # LIBBPF_WARN 0, LIBBPF_INFO 1, LIBBPF_DEBUG 2
        return 0
    buf = ctypes.create_string_buffer(4096)
    _libc().vsnprintf(buf, len(buf), fmt, args)
    with _log_lock:
        _log.append(buf.value.decode(errors="replace"))
    return 0


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None)
    libc.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
    return libc


_P = ctypes.c_void_p
_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "bpf_object__open_file": (_P, [ctypes.c_char_p, _P]),
    "bpf_object__load": (ctypes.c_int, [_P]),
    "bpf_object__close": (None, [_P]),
    "bpf_object__find_program_by_name": (_P, [_P, ctypes.c_char_p]),
    "bpf_object__find_map_by_name": (_P, [_P, ctypes.c_char_p]),
    "bpf_map__set_max_entries": (ctypes.c_int, [_P, ctypes.c_uint32]),
    "bpf_map__fd": (ctypes.c_int, [_P]),
    "bpf_program__fd": (ctypes.c_int, [_P]),
    "bpf_program__attach_netns": (_P, [_P, ctypes.c_int]),
    "bpf_link__destroy": (ctypes.c_int, [_P]),
    "bpf_link__fd": (ctypes.c_int, [_P]),
    "bpf_map_update_elem": (ctypes.c_int, [ctypes.c_int, _P, _P, ctypes.c_uint64]),
    "bpf_map_lookup_elem": (ctypes.c_int, [ctypes.c_int, _P, _P]),
    "bpf_map_delete_elem": (ctypes.c_int, [ctypes.c_int, _P]),
    "bpf_map_get_next_key": (ctypes.c_int, [ctypes.c_int, _P, _P]),
    "libbpf_num_possible_cpus": (ctypes.c_int, []),
    "bpf_prog_test_run_opts": (ctypes.c_int, [ctypes.c_int, _P]),
    "bpf_prog_query": (ctypes.c_int, [ctypes.c_int, ctypes.c_int, ctypes.c_uint32, _P, _P, _P]),
    "bpf_prog_get_fd_by_id": (ctypes.c_int, [ctypes.c_uint32]),
    "bpf_link_get_next_id": (ctypes.c_int, [ctypes.c_uint32, _P]),
    "bpf_link_get_fd_by_id": (ctypes.c_int, [ctypes.c_uint32]),
    "bpf_obj_get_info_by_fd": (ctypes.c_int, [ctypes.c_int, _P, _P]),
    "libbpf_set_print": (_P, [_PRINT_FN]),
    # evidence: tracepoints, iterators, read-only data set before load
    "bpf_program__set_autoload": (ctypes.c_int, [_P, ctypes.c_bool]),
    "bpf_program__attach": (_P, [_P]),
    "bpf_program__attach_iter": (_P, [_P, _P]),
    "bpf_iter_create": (ctypes.c_int, [ctypes.c_int]),
    "bpf_map__initial_value": (_P, [_P, ctypes.POINTER(ctypes.c_size_t)]),
    "bpf_map__name": (ctypes.c_char_p, [_P]),
    "bpf_object__next_map": (_P, [_P, _P]),
}


@functools.cache
def lib() -> ctypes.CDLL:
    """The loaded ``libbpf.so.1`` with typed functions and its log captured."""
    name = ctypes.util.find_library("bpf") or "libbpf.so.1"
    try:
        so = ctypes.CDLL(name, use_errno=True)
    except OSError as e:
        raise FeatureMissing(f"BPF_SK_LOOKUP: cannot load libbpf ({e}; apt install libbpf1)") from e
    for fn, (restype, argtypes) in _SIGNATURES.items():
        f = getattr(so, fn)
        f.restype, f.argtypes = restype, argtypes
    so.libbpf_set_print(_print)
    return so


def _ret(ret: int, what: str) -> int:
    """libbpf 1.x int APIs return -errno on failure."""
    if ret < 0:
        raise LibbpfError(what, -ret)
    return ret


def _ptr(ptr: int | None, what: str) -> int:
    """libbpf 1.x pointer APIs return NULL and set errno on failure."""
    if not ptr:
        raise LibbpfError(what, ctypes.get_errno() or errno.EINVAL)
    return ptr


@functools.cache
def possible_cpus() -> int:
    """How many per-CPU slots a per-CPU map value holds."""
    return _ret(lib().libbpf_num_possible_cpus(), "libbpf_num_possible_cpus")


class Map:
    """A BPF map by fd, with raw-bytes element operations."""

    def __init__(self, fd: int, name: str, key_size: int, value_size: int) -> None:
        self.fd, self.name, self.key_size, self.value_size = fd, name, key_size, value_size

    def _key(self, key: bytes) -> ctypes.Array[ctypes.c_char]:
        if len(key) != self.key_size:
            raise ValueError(f"map {self.name}: key of {len(key)} bytes, want {self.key_size}")
        return ctypes.create_string_buffer(key, len(key))

    def update(self, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
        v = ctypes.create_string_buffer(value, len(value))
        _ret(lib().bpf_map_update_elem(self.fd, self._key(key), v, flags), f"update {self.name}")

    def delete(self, key: bytes) -> None:
        _ret(lib().bpf_map_delete_elem(self.fd, self._key(key)), f"delete from {self.name}")

    def lookup(self, key: bytes) -> bytes | None:
        v = ctypes.create_string_buffer(self.value_size)
        ret = lib().bpf_map_lookup_elem(self.fd, self._key(key), v)
        if ret == -errno.ENOENT:
            return None
        _ret(ret, f"lookup in {self.name}")
        return v.raw

    def __iter__(self) -> Iterator[bytes]:
        return self.keys()

    def keys(self) -> Iterator[bytes]:
        """Every key (a snapshot walk; keys deleted meanwhile may end it early)."""
        prev: Any = None
        nxt = ctypes.create_string_buffer(self.key_size)
        while lib().bpf_map_get_next_key(self.fd, prev, nxt) == 0:
            yield nxt.raw
            prev = ctypes.create_string_buffer(nxt.raw, self.key_size)


class Link:
    """An attachment (``bpf_link``); ``destroy()`` detaches the program."""

    def __init__(self, ptr: int, what: str) -> None:
        self._ptr: int | None = ptr
        self.what = what

    @property
    def fd(self) -> int:
        if self._ptr is None:
            raise HarnessError(f"link {self.what} is destroyed")
        return int(lib().bpf_link__fd(self._ptr))

    def destroy(self) -> None:
        """Detach (idempotent)."""
        ptr, self._ptr = self._ptr, None
        if ptr is not None:
            _ret(lib().bpf_link__destroy(ptr), f"bpf_link__destroy({self.what})")

    @property
    def attached(self) -> bool:
        return self._ptr is not None


class BpfObject:
    """An object file opened and loaded into the kernel; ``close()`` frees programs and maps.

    ``max_entries`` resizes maps before load: ``BpfObject(path, {"bindings": 100_000})``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        max_entries: dict[str, int] | None = None,
        *,
        rodata: bytes = b"",
        skip: tuple[str, ...] = (),
    ) -> None:
        self.path = os.fspath(path)
        _clear_log()  # an error below reports this load's lines only
        self._obj: int | None = _ptr(
            lib().bpf_object__open_file(self.path.encode(), None), f"open {self.path}"
        )
        try:
            for name, n in (max_entries or {}).items():
                _ret(lib().bpf_map__set_max_entries(self._map(name), n), f"resize map {name}")
            for prog in skip:  # programs this kernel cannot load (e.g. a missing tracepoint)
                _ret(lib().bpf_program__set_autoload(self.program(prog), False), f"skip {prog}")
            if rodata:
                self._set_rodata(rodata)
            _ret(lib().bpf_object__load(self._obj), f"load {os.path.basename(self.path)}")
        except BaseException:
            self.close()
            raise
        _clear_log()

    def _set_rodata(self, data: bytes) -> None:
        """Overwrite the start of the object's ``.rodata`` (its ``const volatile`` globals)."""
        m = lib().bpf_object__next_map(self._handle(), None)
        while m and not (lib().bpf_map__name(m) or b"").endswith(b".rodata"):
            m = lib().bpf_object__next_map(self._handle(), m)
        size = ctypes.c_size_t()
        ptr = lib().bpf_map__initial_value(m, ctypes.byref(size)) if m else None
        if not ptr or size.value < len(data):
            raise HarnessError(f"{self.path}: no .rodata of {len(data)} bytes to set")
        ctypes.memmove(ptr, data, len(data))

    def _handle(self) -> int:
        if self._obj is None:
            raise HarnessError(f"BPF object {self.path} is closed")
        return self._obj

    def _map(self, name: str) -> int:
        return _ptr(
            lib().bpf_object__find_map_by_name(self._handle(), name.encode()), f"map {name}"
        )

    def map(self, name: str, key_size: int, value_size: int) -> Map:
        """Map ``name`` (sizes as declared in C; per-CPU values: size x possible CPUs)."""
        return Map(
            _ret(lib().bpf_map__fd(self._map(name)), f"fd of map {name}"),
            name,
            key_size,
            value_size,
        )

    def program(self, name: str) -> int:
        return _ptr(
            lib().bpf_object__find_program_by_name(self._handle(), name.encode()),
            f"program {name} in {os.path.basename(self.path)}",
        )

    def attach_netns(self, program: str, netns_fd: int) -> Link:
        """Attach sk_lookup ``program`` to the namespace held by ``netns_fd``."""
        what = f"{program} -> netns fd {netns_fd}"
        ptr = _ptr(lib().bpf_program__attach_netns(self.program(program), netns_fd), what)
        return Link(ptr, what)

    def attach(self, program: str) -> Link:
        """Attach ``program`` as its section says (``tp_btf/...``: the tracepoint)."""
        return Link(_ptr(lib().bpf_program__attach(self.program(program)), program), program)

    def iterate(self, program: str) -> bytes:
        """Run iterator ``program`` (``iter/tcp``, ...) once and return all it wrote.

        Socket iterators walk the network namespace of the calling thread."""
        link = Link(
            _ptr(lib().bpf_program__attach_iter(self.program(program), None), program), program
        )
        try:
            fd = _ret(lib().bpf_iter_create(link.fd), f"bpf_iter_create({program})")
            try:
                chunks = []
                while chunk := os.read(fd, 1 << 16):
                    chunks.append(chunk)
                return b"".join(chunks)
            finally:
                os.close(fd)
        finally:
            link.destroy()

    def map_fd(self, name: str) -> int:
        """The fd of map ``name``."""
        return _ret(lib().bpf_map__fd(self._map(name)), f"fd of map {name}")

    def close(self) -> None:
        """Free the object (idempotent); attached links keep their program alive."""
        obj, self._obj = self._obj, None
        if obj is not None:
            lib().bpf_object__close(obj)
