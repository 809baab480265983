"""The durable spool: every point is on disk before anything tries to send it.

Layout under ``<run_dir>/spool/``:

``points.lp``
    Append-only line protocol. Each :meth:`Spool.append` writes its lines followed by
    one commit marker ``#commit n=<lines>`` and fsyncs before returning. Lines after
    the last complete marker belong to an append that never returned (the process
    died mid-write): they are invisible to readers and are cut off by the next
    append, under the spool's lock. So a batch is in the spool entirely or not at
    all, and a torn last line is never shipped.
``acked.json``
    ``{"offset": B, "check": CRC32(B)}`` padded to 64 bytes: the points in the first B
    bytes of ``points.lp`` were acknowledged by the server. Rewritten in place with one
    fixed-size write after each acknowledged batch (so it is always the old or the
    new record), only ever moved forward, checksummed. It is not fsynced: a record
    lost or damaged by a power cut reads as an older offset (or 0), which only means
    those points are sent again.
``lock``
    ``flock`` serialising appends, repairs and acks between threads and processes.

A ``kill -9`` at any moment leaves a consistent spool: appends that returned are
complete, the ack offset is either the old or the new one, and a batch that the server
took but whose ack was not yet recorded is simply sent again — which overwrites the
same series and timestamps on the server (see docs/metrics.md), so nothing is lost
and nothing is counted twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from labctl.errors import LabctlError

__all__ = ["Spool", "SpoolCounts", "SpoolError"]

_MARKER_PREFIX = b"#commit n="
_MARKER = re.compile(rb"#commit n=(\d+)\n")
_READ_CHUNK = 1 << 20
_SCAN_CHUNK = 8 << 20


class SpoolError(LabctlError):
    """The spool's files are inconsistent (only possible if something else edited them)."""

    exit_code = 1


@dataclass(frozen=True)
class SpoolCounts:
    """Points in the spool: all committed ones, acknowledged ones, and the rest."""

    total: int
    acked: int
    pending: int

    def __iter__(self) -> Iterator[int]:
        return iter((self.total, self.acked, self.pending))


def _decode(lines: list[bytes]) -> list[str]:
    return b"\n".join(lines).decode("utf-8").split("\n")


_ACK_RECORD = 64  # bytes: every ack record has this size, so it overwrites the last in full


def _ack_record(offset: int) -> bytes:
    body = json.dumps({"offset": offset, "check": zlib.crc32(b"%d" % offset)}).encode()
    return body.ljust(_ACK_RECORD - 1) + b"\n"


def _parse_ack(data: bytes) -> int | None:
    """The offset of a valid ack record, None if the record is damaged."""
    try:
        doc = json.loads(data)
        offset, check = int(doc["offset"]), int(doc["check"])
    except (ValueError, TypeError, KeyError):
        return None
    return offset if offset >= 0 and zlib.crc32(b"%d" % offset) == check else None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """The spool of one run directory (``<run_dir>/spool``)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.dir = self.run_dir / "spool"
        self.path = self.dir / "points.lp"
        self.ack_path = self.dir / "acked.json"
        self.lock_path = self.dir / "lock"

    # ------------------------------------------------------------------ locking

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    # ------------------------------------------------------------------ reading

    def committed_end(self) -> int:
        """Byte offset just after the last complete commit marker (0 if none).

        Reads the file backwards from its end, so the cost is the size of a torn tail
        (if any), not the size of the spool.
        """
        try:
            fh = open(self.path, "rb")  # noqa: SIM115 - closed by the with below
        except FileNotFoundError:
            return 0
        with fh:
            pos = os.fstat(fh.fileno()).st_size
            buf = b""
            want = min(4096, _READ_CHUNK)  # the file normally ends with a marker: a small read finds it
            while pos > 0:
                step = min(want, pos)
                want = min(want * 4, _READ_CHUNK)
                pos -= step
                fh.seek(pos)
                buf = fh.read(step) + buf
                search_end = len(buf)
                while (idx := buf.rfind(_MARKER_PREFIX, 0, search_end)) >= 0:
                    if idx == 0 and pos > 0:
                        break  # need the byte before it: read the previous chunk
                    if idx == 0 or buf[idx - 1] == 0x0A:
                        m = _MARKER.match(buf, idx)
                        if m:
                            return pos + m.end()
                    search_end = idx
                # Everything but the first bytes has been judged; a marker starting
                # there (at most 31 bytes long) is judged with the previous chunk.
                buf = buf[:64]
            return 0

    def acked_offset(self) -> int:
        """Byte offset up to which the server acknowledged the points.

        A missing or unreadable ack file counts as 0: everything is sent again, which
        the server absorbs (same series and timestamps overwrite themselves).
        """
        for attempt in range(2):
            try:
                data = self.ack_path.read_bytes()
            except FileNotFoundError:
                return 0
            offset = _parse_ack(data)
            if offset is not None:
                return offset
            if attempt == 0:
                with self._locked():  # a read racing an ack can see a mixed record
                    pass
        return 0

    def _chunks(self, start: int, end: int) -> Iterator[tuple[int, bytes]]:
        """Yield ``(offset, bytes)`` pieces of ``[start, end)``, each made of whole lines."""
        if end <= start:
            return
        size = _SCAN_CHUNK
        with open(self.path, "rb") as fh:
            pos = start
            while pos < end:
                fh.seek(pos)
                data = fh.read(min(size, end - pos))
                if not data:
                    raise SpoolError(f"{self.path}: shorter than its committed end {end}")
                cut = data.rfind(b"\n") + 1
                if cut == 0:
                    if pos + len(data) >= end:
                        raise SpoolError(f"{self.path}: no line end before the committed end {end}")
                    size *= 2  # a line longer than the chunk
                    continue
                yield pos, data if cut == len(data) else data[:cut]
                pos += cut

    def _count(self, start: int, end: int) -> int:
        """Points (data lines, not commit markers) in ``[start, end)``."""
        n = 0
        for _, data in self._chunks(start, end):
            markers = data.count(b"\n#") + (1 if data.startswith(b"#") else 0)
            n += data.count(b"\n") - markers
        return n

    def pending_batches(self, max_lines: int = 5000) -> Iterator[tuple[list[str], int]]:
        """Yield the unacknowledged points in order as ``(lines, end_offset)`` batches.

        Each batch holds at most ``max_lines`` lines; pass its ``end_offset`` to
        :meth:`ack` once the server has acknowledged it. Only committed appends are
        read; an append in progress (or torn by a crash) is not. A batch's end offset
        includes the commit markers that follow its last line.
        """
        if max_lines < 1:
            raise ValueError("max_lines must be >= 1")
        start = self.acked_offset()
        end = self.committed_end()
        if start > end:
            raise SpoolError(f"{self.ack_path}: acknowledged offset {start} is beyond the spool's end {end}")
        batch: list[bytes] = []
        pos = start  # file offset just after the last line taken (data or marker)
        for _, data in self._chunks(start, end):
            parts = data.split(b"\n")
            parts.pop()  # the empty piece after the chunk's last newline
            data_idx = [i for i, part in enumerate(parts) if part[:1] != b"#"]
            taken = 0  # parts of this chunk already accounted for in pos
            k = 0
            while k < len(data_idx):
                room = max_lines - len(batch)
                if room == 0:
                    # Flush before the next data line, so markers stay with the batch before.
                    upto = data_idx[k]
                    pos += sum(map(len, parts[taken:upto])) + (upto - taken)
                    taken = upto
                    yield _decode(batch), pos
                    batch = []
                    continue
                chosen = data_idx[k : k + room]
                batch += [parts[i] for i in chosen]
                upto = chosen[-1] + 1
                pos += sum(map(len, parts[taken:upto])) + (upto - taken)
                taken = upto
                k += len(chosen)
            pos += sum(map(len, parts[taken:])) + (len(parts) - taken)
        if batch:
            yield _decode(batch), end

    def counts(self) -> SpoolCounts:
        """``(total, acked, pending)`` points: committed, acknowledged, still to send."""
        end = self.committed_end()
        acked_off = min(self.acked_offset(), end)
        acked = self._count(0, acked_off)
        rest = self._count(acked_off, end)
        return SpoolCounts(acked + rest, acked, rest)

    def pending_count(self) -> int:
        """Points not yet acknowledged (cheaper than :meth:`counts`: reads only those)."""
        end = self.committed_end()
        return self._count(min(self.acked_offset(), end), end)

    def lines(self) -> list[str]:
        """All committed points, in order (for re-reading a run; not for huge spools)."""
        out: list[str] = []
        for _, data in self._chunks(0, self.committed_end()):
            out += [line for line in data.decode("utf-8").split("\n")[:-1] if not line.startswith("#")]
        return out

    def verify(self) -> SpoolCounts:
        """Check every commit marker's count against the lines before it; return counts.

        Raises :class:`SpoolError` on a mismatch (the file was edited by hand).
        """
        n = 0
        for base, data in self._chunks(0, self.committed_end()):
            pos = base
            for part in data.split(b"\n")[:-1]:
                m = _MARKER.fullmatch(part + b"\n")
                if m:
                    said = int(m.group(1))
                    if said != n:
                        raise SpoolError(f"{self.path}: commit marker says {said} lines, found {n}")
                    n = 0
                elif part[:1] == b"#" or not part:
                    raise SpoolError(f"{self.path}: unexpected line at byte {pos}")
                else:
                    n += 1
                pos += len(part) + 1
        return self.counts()

    # ------------------------------------------------------------------ writing

    def append(self, lines: list[str]) -> int:
        """Append points durably (fsync) as one all-or-nothing batch; return the count.

        Lines are line protocol without newlines. An empty list writes nothing. A torn
        append left by a crashed process is cut off first.
        """
        if not lines:
            return 0
        body = bytearray()
        for line in lines:
            if not line or "\n" in line or "\r" in line or line.startswith("#"):
                raise ValueError(f"not a single line-protocol point: {line[:80]!r}")
            body += line.encode("utf-8")
            body += b"\n"
        body += b"#commit n=%d\n" % len(lines)
        with self._locked():
            created = not self.path.exists()
            end = self.committed_end()
            with open(self.path, "ab") as fh:
                if os.fstat(fh.fileno()).st_size != end:
                    fh.truncate(end)  # an append that never returned: it was never durable
                fh.write(bytes(body))
                fh.flush()
                os.fsync(fh.fileno())
            if created:
                _fsync_dir(self.dir)
        return len(lines)

    def ack(self, end_offset: int) -> None:
        """Record that the server acknowledged every point before ``end_offset``.

        Offsets only move forward: acknowledging less than what is already recorded
        is a no-op (two shippers may race; both sent the same points).
        """
        with self._locked():
            current = self.acked_offset()
            if end_offset <= current:
                return
            end = self.committed_end()
            if end_offset > end:
                raise SpoolError(f"ack offset {end_offset} is beyond the committed end {end}")
            with open(self.path, "rb") as fh:
                fh.seek(end_offset - 1)
                if fh.read(1) != b"\n":
                    raise SpoolError(f"ack offset {end_offset} is not at a line boundary")
            # One small write of a fixed-size record at offset 0, checksummed: it replaces
            # the previous record entirely (no rename: that costs a metadata update per
            # batch). Not fsynced: a lost or damaged ack only means points are sent again.
            fd = os.open(self.ack_path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.pwrite(fd, _ack_record(end_offset), 0)
            finally:
                os.close(fd)
