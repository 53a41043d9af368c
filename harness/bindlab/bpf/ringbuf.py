"""Read a BPF ring buffer (``BPF_MAP_TYPE_RINGBUF``) from Python by mmap, in batches.

The kernel's layout (``kernel/bpf/ringbuf.c``): page 0 holds the consumer position (user
space writes it), page 1 the producer position, then the data area mapped twice in a row so
that a record never wraps. Each record is an 8-byte header (``len`` with BUSY and DISCARD
bits, ``pgoff``) followed by the sample, padded to 8 bytes. :meth:`RingBuffer.read` takes
every committed sample at once and advances the consumer position once: no callback per
event, no wakeup (the programs submit with ``BPF_RB_NO_WAKEUP``).
"""

from __future__ import annotations

import mmap
import struct

BUSY = 1 << 31  # <linux/bpf.h> BPF_RINGBUF_BUSY_BIT
DISCARD = 1 << 30  # BPF_RINGBUF_DISCARD_BIT
HEADER = 8
_U64 = struct.Struct("=Q")
_U32 = struct.Struct("=I")


class RingBuffer:
    """The ring buffer map ``fd`` of ``size`` bytes (a power of two, a multiple of pages)."""

    def __init__(self, fd: int, size: int) -> None:
        page = mmap.PAGESIZE
        self.size, self.mask = size, size - 1
        self._cons = mmap.mmap(fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        try:
            self._prod = mmap.mmap(
                fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page
            )
        except BaseException:
            self._cons.close()
            raise
        self._data = page  # where the data area starts in _prod

    def read(self, size: int = 0) -> list[bytes]:
        """Every committed sample since the last read (discarded ones skipped), in order.

        ``size``: when every sample has this size (8-aligned), the whole span is cut in one
        C-level pass (``struct.iter_unpack``) unless a sample is busy or discarded."""
        cons = _U64.unpack_from(self._cons, 0)[0]
        prod = _U64.unpack_from(self._prod, 0)[0]
        if size and cons < prod and (prod - cons) % (HEADER + size) == 0:
            at = self._data + (cons & self.mask)
            records = struct.Struct(f"=I4x{size}s").iter_unpack(self._prod[at : at + prod - cons])
            got = list(records)
            if all(n == size for n, _ in got):  # none busy, none discarded
                _U64.pack_into(self._cons, 0, prod)
                return [r for _, r in got]
        out = []
        buf, base, mask = self._prod, self._data, self.mask
        while cons < prod:
            at = base + (cons & mask)
            length = _U32.unpack_from(buf, at)[0]
            if length & BUSY:  # reserved, not yet submitted: take it next time
                break
            n = length & ~(BUSY | DISCARD)
            if not length & DISCARD:
                out.append(buf[at + HEADER : at + HEADER + n])
            cons += (HEADER + n + 7) & ~7
        _U64.pack_into(self._cons, 0, cons)
        return out

    def close(self) -> None:
        """Unmap (idempotent)."""
        self._cons.close()
        self._prod.close()
