"""The spool: append/ack/counts, torn tails, and kill -9 at any moment (no servers)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from labctl.metrics import Spool, SpoolError
from labctl.metrics.ship import ship
from labctl.metrics.sinks import Sink

ROOT = Path(__file__).resolve().parents[2]


def pts(start: int, n: int) -> list[str]:
    return [f"labctl_host,run_id=t seq={i}i {1_795_000_000_000_000_000 + i}" for i in range(start, start + n)]


def seqs(lines: list[str]) -> list[int]:
    return [int(x.split("seq=")[1].split("i")[0]) for x in lines]


def test_append_pending_ack_counts(tmp_path: Path) -> None:
    sp = Spool(tmp_path)
    assert tuple(sp.counts()) == (0, 0, 0)
    assert list(sp.pending_batches(10)) == []
    sp.append(pts(0, 7))
    sp.append(pts(7, 5))
    assert tuple(sp.counts()) == (12, 0, 12)
    batches = list(sp.pending_batches(5))
    assert [len(b) for b, _ in batches] == [5, 5, 2]
    assert [line for b, _ in batches for line in b] == pts(0, 12)
    sp.ack(batches[0][1])
    assert tuple(Spool(tmp_path).counts()) == (12, 5, 7)
    rest = list(sp.pending_batches(100))
    assert len(rest) == 1 and rest[0][0] == pts(5, 7)
    sp.ack(rest[0][1])
    assert tuple(sp.counts()) == (12, 12, 0)
    assert list(sp.pending_batches(100)) == []
    assert rest[0][1] == sp.committed_end() == sp.path.stat().st_size
    sp.append(pts(12, 1))
    assert tuple(sp.counts()) == (13, 12, 1)
    assert sp.verify().total == 13


def test_ack_only_moves_forward_at_line_boundaries(tmp_path: Path) -> None:
    sp = Spool(tmp_path)
    sp.append(pts(0, 4))
    lines, end = next(iter(sp.pending_batches(2)))
    sp.ack(end)
    sp.ack(end - len(lines[-1]) - 1)  # backwards: ignored
    assert sp.acked_offset() == end
    with pytest.raises(SpoolError, match="line boundary"):
        sp.ack(end + 3)
    with pytest.raises(SpoolError, match="beyond"):
        sp.ack(sp.path.stat().st_size + 100)
    assert sp.counts().acked == 2


@pytest.mark.parametrize("bad", ["", "a b c\nd e f 1", "#comment", "x\r"])
def test_append_rejects_non_lines(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError):
        Spool(tmp_path).append(["ok,t=1 v=1i 1", bad])
    assert Spool(tmp_path).counts().total == 0


def test_torn_tail_is_ignored_then_repaired(tmp_path: Path) -> None:
    sp = Spool(tmp_path)
    sp.append(pts(0, 3))
    good_end = sp.path.stat().st_size
    with open(sp.path, "ab") as fh:  # what a killed append leaves: lines without marker + half a line
        fh.write(("\n".join(pts(3, 2)) + "\n").encode() + b"labctl_host,run_id=t seq=5i 17950")
    assert tuple(sp.counts()) == (3, 0, 3)
    assert [x for b, _ in sp.pending_batches(100) for x in b] == pts(0, 3)
    with open(sp.path, "ab") as fh:  # a torn marker is not a marker either
        fh.write(b"\n#commit n=")
    assert sp.committed_end() == good_end
    sp.append(pts(100, 2))
    assert sp.lines() == pts(0, 3) + pts(100, 2)
    assert sp.verify().total == 5


def test_marker_found_across_read_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import labctl.metrics.spool as spool_mod

    monkeypatch.setattr(spool_mod, "_READ_CHUNK", 7)
    sp = Spool(tmp_path)
    sp.append(pts(0, 3))
    sp.append(pts(3, 2))
    end = sp.path.stat().st_size
    with open(sp.path, "ab") as fh:
        fh.write(b"labctl_host,run_id=t seq=9i 1\nlabctl_host,run_id=t se")
    assert sp.committed_end() == end
    assert sp.counts().total == 5


def test_concurrent_appends_from_threads(tmp_path: Path) -> None:
    def worker(k: int) -> None:
        sp = Spool(tmp_path)
        for j in range(25):
            sp.append(pts(k * 10_000 + j * 10, 10))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sp = Spool(tmp_path)
    assert sp.verify().total == 1000
    assert sorted(seqs(sp.lines())) == sorted(k * 10_000 + i for k in range(4) for i in range(250))


APPENDER = textwrap.dedent(
    """
    import os, sys
    from labctl.metrics import Spool
    run_dir, progress, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sp = Spool(run_dir)
    n = sp.counts().total
    while True:
        lines = [f"labctl_host,run_id=k seq={i}i,pad=\\"{'x' * 60}\\" {1795000000000000000 + i}"
                 for i in range(n, n + batch)]
        sp.append(lines)
        n += batch
        with open(progress + ".tmp", "w") as fh:
            fh.write(str(n))
        os.replace(progress + ".tmp", progress)  # atomic: the parent never reads half
    """
)


def _spawn(code: str, *args: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, stderr=subprocess.PIPE)


def _wait_file_int(path: Path, at_least: int, timeout: float = 20) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            v = int(path.read_text() or 0)
            if v >= at_least:
                return v
        except (FileNotFoundError, ValueError):
            pass
        time.sleep(0.005)
    raise AssertionError(f"{path} did not reach {at_least}")


def test_kill9_while_appending_keeps_the_spool_consistent(tmp_path: Path) -> None:
    """Kill the appender at random moments, five times: every returned append is there,
    nothing twice, nothing torn, and appending resumes cleanly."""
    rng = random.Random(7)
    progress = tmp_path / "progress"
    done = 0
    for _round in range(5):
        proc = _spawn(APPENDER, str(tmp_path), str(progress), "3000")
        _wait_file_int(progress, done + 3000)
        time.sleep(rng.uniform(0.0, 0.05))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        returned = int(progress.read_text())
        sp = Spool(tmp_path)
        counts = sp.verify()
        lines = sp.lines()
        assert seqs(lines) == list(range(len(lines))), "gap or duplicate"
        assert counts.total == len(lines)
        assert len(lines) % 3000 == 0, "a batch is in the spool partly"
        assert len(lines) >= returned, "an append that returned was lost"
        done = len(lines)
    assert done >= 5 * 3000


SHIPPER = textwrap.dedent(
    """
    import os, sys, time
    from labctl.metrics.ship import ship
    from labctl.metrics.sinks import Sink

    class DirSink(Sink):
        # A "server" that takes each batch atomically (one file per request).
        name = "dir"
        def __init__(self, path):
            self.path = path
            os.makedirs(path, exist_ok=True)
        def write(self, lines):
            tmp = os.path.join(self.path, ".tmp-%d" % os.getpid())
            with open(tmp, "w") as fh:
                fh.write("\\n".join(lines) + "\\n")
            os.replace(tmp, os.path.join(self.path, "%d-%d" % (os.getpid(), time.monotonic_ns())))

    ship(sys.argv[1], None, batch=int(sys.argv[3]), sink=DirSink(sys.argv[2]))
    print("done", flush=True)
    """
)


class ListSink(Sink):
    name = "list"

    def __init__(self) -> None:
        self.received: list[str] = []

    def write(self, lines: list[str]) -> None:
        self.received += lines


def test_kill9_while_shipping_loses_nothing(tmp_path: Path) -> None:
    """Kill the shipper between a server acknowledgement and the ack file: the batch is
    sent again (a server overwrites it), and nothing is skipped."""
    sp = Spool(tmp_path)
    for k in range(20):
        sp.append(pts(k * 1000, 1000))
    received = tmp_path / "received"

    def got_lines() -> list[str]:
        files = [p for p in received.glob("*") if not p.name.startswith(".")] if received.exists() else []
        return [line for p in files for line in p.read_text().splitlines()]

    rng = random.Random(3)
    for _round in range(6):
        proc = _spawn(SHIPPER, str(tmp_path), str(received), "250")
        time.sleep(rng.uniform(0.05, 0.25))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        c = sp.counts()
        assert c.total == 20_000 and c.acked + c.pending == c.total
        got = got_lines()
        # Everything acked was received by the "server" (possibly more: unacked resends).
        assert set(pts(0, c.acked)) <= set(got)
    sink = ListSink()
    result = ship(tmp_path, None, batch=1000, sink=sink)
    assert result.pending == 0 and result.error is None
    got = got_lines() + sink.received
    assert set(got) == set(sp.lines())
    assert ship(tmp_path, None, sink=ListSink()).shipped == 0


@pytest.mark.parametrize("seed", range(5))
def test_batches_cover_the_spool_exactly(tmp_path: Path, seed: int) -> None:
    """Random append sizes and batch sizes: batches are in order, complete, bounded,
    end at line boundaries, and acking them one by one leaves nothing pending."""
    rng = random.Random(seed)
    sp = Spool(tmp_path)
    n = 0
    for _ in range(rng.randint(1, 30)):
        k = rng.randint(1, 50)
        sp.append(pts(n, k))
        n += k
    max_lines = rng.randint(1, 60)
    batches = list(sp.pending_batches(max_lines))
    assert [x for b, _ in batches for x in b] == pts(0, n)
    assert all(0 < len(b) <= max_lines for b, _ in batches)
    assert all(len(b) == max_lines for b, _ in batches[:-1])
    ends = [e for _, e in batches]
    assert ends == sorted(set(ends)) and ends[-1] == sp.committed_end()
    raw = sp.path.read_bytes()
    for i, (_b, e) in enumerate(batches):
        assert raw[e - 1 : e] == b"\n"
        sp.ack(e)
        assert sp.counts().acked == sum(len(x) for x, _ in batches[: i + 1])
        assert sp.pending_count() == sp.counts().pending
        rest = [x for bb, _ in sp.pending_batches(max_lines) for x in bb]
        assert rest == pts(sp.counts().acked, n - sp.counts().acked)
    assert tuple(sp.counts()) == (n, n, 0)


SLOW_APPENDER = textwrap.dedent(
    """
    import sys, time
    import labctl.metrics.spool as spool_mod
    from labctl.metrics import Spool

    class Slow:
        # Writes in 200-byte pieces, flushed, so a kill lands in the middle of an append.
        def __init__(self, fh):
            self.fh = fh
        def __enter__(self):
            return self
        def __exit__(self, *a):
            self.fh.close()
        def write(self, data):
            for i in range(0, len(data), 200):
                self.fh.write(data[i : i + 200])
                self.fh.flush()
                time.sleep(0.002)
        def __getattr__(self, name):
            return getattr(self.fh, name)

    sp = Spool(sys.argv[1])
    sp.append([f"labctl_host,run_id=a seq={i}i 1{i:018d}" for i in range(100)])
    print("first", sp.committed_end(), flush=True)
    spool_mod.open = lambda *a, **k: Slow(open(*a, **k))
    sp.append([f"labctl_host,run_id=b seq={i}i 2{i:018d}" for i in range(2000)])
    print("second", flush=True)
    """
)


def test_kill9_in_the_middle_of_an_append(tmp_path: Path) -> None:
    """A torn append (half its lines, half a line, no marker) is invisible and repaired."""
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_APPENDER, str(tmp_path)],
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline().split()
    assert first[0] == "first"
    first_end = int(first[1])
    sp = Spool(tmp_path)
    deadline = time.monotonic() + 20
    while sp.path.stat().st_size < first_end + 20_000 and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    size = sp.path.stat().st_size
    assert size > first_end and sp.committed_end() == first_end, "the kill should have torn the second append"
    assert not sp.path.read_bytes().endswith(b"\n#commit n=2000\n")
    assert tuple(sp.counts()) == (100, 0, 100)
    assert [x for b, _ in sp.pending_batches(1000) for x in b] == sp.lines()
    assert all("run_id=a" in x for x in sp.lines())
    sp.append(["labctl_host,run_id=c seq=0i 3"])
    assert sp.verify().total == 101
    assert sp.lines()[-1] == "labctl_host,run_id=c seq=0i 3"


def test_damaged_or_missing_ack_means_resend_not_loss(tmp_path: Path) -> None:
    sp = Spool(tmp_path)
    sp.append(pts(0, 10))
    ((_, end),) = list(sp.pending_batches(100))
    sp.ack(end)
    assert len(sp.ack_path.read_bytes()) == 64 and sp.counts().pending == 0
    record = bytearray(sp.ack_path.read_bytes())
    record[12] = ord("9") if record[12] != ord("9") else ord("8")  # a flipped digit: checksum fails
    sp.ack_path.write_bytes(bytes(record))
    assert sp.acked_offset() == 0 and sp.counts().pending == 10
    sp.ack_path.write_bytes(b"")
    assert sp.acked_offset() == 0
    sp.ack_path.unlink()
    assert sp.acked_offset() == 0
    sp.ack(end)
    assert sp.counts().pending == 0
