"""The pure helpers of labctl.experiment.procs: the host sampler's output parser and the
numactl/taskset prefix of a placement."""

from __future__ import annotations

import subprocess

import pytest

from labctl.experiment.procs import SAMPLER_SCRIPT, parse_samples, pin_prefix

S = 1_000_000_000
T0 = 1_795_844_374_000_000_000


def block(t_ns: int, ctxt: int | None, entropy: str = "256", mem_kb: int = 1_000_000) -> str:
    lines = [f"T {t_ns}", f"E {entropy}", "L 0.52 0.58 0.59 3/1234 5678"]
    if ctxt is not None:
        lines.append(f"ctxt {ctxt}")
    lines.append(f"MemAvailable:    {mem_kb} kB")
    return "\n".join(lines) + "\n"


def test_parse_samples_fields_and_context_switch_rate() -> None:
    text = block(T0, 1000) + block(T0 + S, 6000) + block(T0 + 3 * S, 16000, mem_kb=2)
    s = parse_samples(text)
    assert [x["time_ns"] for x in s] == [T0, T0 + S, T0 + 3 * S]
    first = s[0]
    assert first == {
        "time_ns": T0,
        "entropy_avail": 256,
        "load1": 0.52,
        "procs_running": 3,
        "mem_available_bytes": 1_000_000 * 1024,
    }
    assert "ctxt_per_s" not in first  # a rate needs a previous sample
    assert s[1]["ctxt_per_s"] == pytest.approx(5000.0)
    assert s[2]["ctxt_per_s"] == pytest.approx(5000.0)  # 10000 switches over 2 s
    assert s[2]["mem_available_bytes"] == 2048
    assert all("_ctxt" not in x for x in s)


def test_parse_samples_tolerates_missing_and_garbled_lines() -> None:
    text = (
        "noise before the first sample\n"
        "E 99\n"  # before any T: ignored
        + block(T0, 100, entropy="")  # entropy_avail unreadable: key absent, never 0
        + "T not-a-number\nE 1\nctxt 999999\n"  # a garbled sample: its readings are dropped
        + block(T0 + S, 300)
        + "\n\nL 1.0\n"  # truncated loadavg line: ignored
        + "T "
        + str(T0 + 2 * S)
        + "\n"  # the sampler was stopped right after the timestamp: no readings
    )
    s = parse_samples(text)
    assert [x["time_ns"] for x in s] == [T0, T0 + S]
    assert "entropy_avail" not in s[0]
    assert s[1]["entropy_avail"] == 256  # not the garbled sample's "E 1"
    assert s[1]["ctxt_per_s"] == pytest.approx(200.0)  # not disturbed by "ctxt 999999"


def test_parse_samples_without_ctxt_and_empty() -> None:
    s = parse_samples(block(T0, None) + block(T0 + S, 50))
    assert "ctxt_per_s" not in s[0] and "ctxt_per_s" not in s[1]
    assert parse_samples("") == []
    assert parse_samples("T 5\n") == []  # a sample with nothing but its time is no sample


def test_parse_samples_same_timestamp_gives_no_rate() -> None:
    s = parse_samples(block(T0, 100) + block(T0, 200))
    assert all("ctxt_per_s" not in x for x in s)


def test_parse_real_sampler_output() -> None:
    # The actual script on this machine, for one second (one sample).
    out = subprocess.run(
        ["sh", "-c", SAMPLER_SCRIPT, "sampler", "1"], capture_output=True, text=True, timeout=20, check=True
    ).stdout
    s = parse_samples(out)
    assert 1 <= len(s) <= 3
    assert s[0]["mem_available_bytes"] > 0 and s[0]["load1"] >= 0
    if len(s) > 1:
        assert s[1]["ctxt_per_s"] > 0


@pytest.mark.parametrize(
    ("numa", "cpus", "expected"),
    [
        (None, None, []),
        (None, "", []),
        (0, None, ["numactl", "--cpunodebind=0", "--membind=0"]),  # node 0 is a node, not "unset"
        (1, None, ["numactl", "--cpunodebind=1", "--membind=1"]),
        (1, "8-15", ["numactl", "--physcpubind=8-15", "--membind=1"]),
        (None, "0-3,8", ["taskset", "-c", "0-3,8"]),
    ],
)
def test_pin_prefix(numa: int | None, cpus: str | None, expected: list[str]) -> None:
    assert pin_prefix(numa, cpus) == expected
