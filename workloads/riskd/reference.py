#!/usr/bin/env python3
"""Executable form of PROTOCOL.md: the riskd decision algorithm and its test vectors.

Run ``python3 reference.py --write`` to regenerate ``vectors.json``; run it without
arguments to check that the committed file is what this model produces.
It is deliberately plain and slow: it is the specification, not a server.
"""

from __future__ import annotations

import json
import struct
import sys
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

MASK = (1 << 64) - 1
COUNTRIES = ["US", "GB", "DE", "FR", "JP", "BR", "IN", "CN"]
BASE = [2, 8, 250, 0, 0, 100, 50000, 4, 30]
STEP = [1, 2, 25, 0, 0, 20, 10000, 1, 1]
MAX_LISTED = 32
REQ = struct.Struct(">BQQIQ2sQQ")  # 47 bytes
assert REQ.size == 47


class SplitMix64:
    def __init__(self, seed: int) -> None:
        self.state = seed & MASK

    def next(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)


@dataclass
class Entry:
    ts: int
    amount: int
    merchant: int
    country: bytes
    device: int


@dataclass
class Account:
    window: deque[Entry] = field(default_factory=deque)
    window_sum: int = 0


@dataclass
class Merchant:
    count: int = 0
    declined: int = 0
    amount_sum: int = 0


class Model:
    def __init__(self, accounts: int, window: int, merchants: int, rules: int, seed: int) -> None:
        self.w = window
        self.rules = rules
        self.accounts: dict[int, Account] = {}
        self.merchants: dict[int, Merchant] = {}
        rng = SplitMix64(seed)
        for a in range(accounts):
            acc = Account()
            for j in range(window):
                r1, r2, r3 = rng.next(), rng.next(), rng.next()
                e = Entry(
                    ts=j * 1000,
                    amount=100 + r1 % 100000,
                    merchant=r2 % merchants,
                    country=COUNTRIES[r3 % 8].encode(),
                    device=(a * 4 + (r3 >> 8) % 4) & MASK,
                )
                self._push(acc, e)
            self.accounts[a] = acc

    def _push(self, acc: Account, e: Entry) -> None:
        if len(acc.window) == self.w:
            old = acc.window.popleft()
            acc.window_sum -= old.amount
        acc.window.append(e)
        acc.window_sum += e.amount

    def decide(self, payload: bytes) -> bytes | None:
        """Return the response payload, or None when the request is malformed."""
        if len(payload) != REQ.size:
            return None
        typ, rid, account, merchant, amount, country, device, ts = REQ.unpack(payload)
        if typ != 1 or not (1 <= amount <= 10**12):
            return None
        if not all(65 <= c <= 90 for c in country):
            return None
        acc = self.accounts.setdefault(account, Account())
        m = self.merchants.setdefault(merchant, Merchant())
        win = acc.window
        n = len(win)
        f = [0] * 9
        f[0] = sum(1 for e in win if e.ts + 60000 > ts)
        f[1] = sum(1 for e in win if e.ts + 3600000 > ts)
        f[2] = 100 if n == 0 else amount * 100 // max(1, acc.window_sum // n)
        f[3] = 0 if n == 0 else int(all(e.country != country for e in win))
        f[4] = 0 if n == 0 else int(all(e.device != device for e in win))
        f[5] = m.declined * 1000 // (m.count + 10)
        f[6] = amount
        f[7] = len({e.merchant for e in win})
        if n:
            last = win[-1].ts
            s = (ts - last) // 1000 if ts >= last else 0
            f[8] = 60 - s if s < 60 else 0
        fired = []
        total = 0
        for i in range(self.rules):
            fi, k = i % 9, i // 9
            if f[fi] > BASE[fi] + k * STEP[fi]:
                fired.append(i)
                total += 5 + (i * 7) % 41
        score = min(1000, total)
        decision = 2 if score >= 700 else 1 if score >= 400 else 0
        self._push(acc, Entry(ts, amount, merchant, country, device))
        m.count += 1
        m.amount_sum += amount
        if decision == 2:
            m.declined += 1
        listed = fired[:MAX_LISTED]
        out = struct.pack(">BQBHHB", 0x81, rid, decision, score, len(fired), len(listed))
        return out + b"".join(struct.pack(">H", r) for r in listed)


def request(rid: int, account: int, merchant: int, amount: int, country: str, device: int, ts: int) -> bytes:
    return REQ.pack(1, rid, account, merchant, amount, country.encode(), device, ts)


# Server flags every implementation is started with for the conformance test.
FLAGS = {"accounts": 1000, "window": 8, "merchants": 50, "rules": 120, "seed": 7}


def build_requests() -> list[bytes]:
    """A sequence that exercises every feature and all three decisions."""
    reqs: list[bytes] = []
    rid = 0

    def add(account: int, merchant: int, amount: int, country: str, device: int, ts: int) -> None:
        nonlocal rid
        rid += 1
        reqs.append(request(rid, account, merchant, amount, country, device, ts))

    # Pre-loaded accounts at ordinary amounts, shortly after their last entry.
    for a in range(0, 40):
        add(a, a % 50, 5000 + a * 997, "US", a * 4 + 1, 8000 + a * 500)
    # A burst on one account: velocity, recency, new device and country, big amounts.
    for j in range(30):
        add(7, 3 + j % 9, 40000 + j * 25000, COUNTRIES[j % 8], 900 + j % 3, 20000 + j * 1500)
    # Brand-new accounts (empty window) and far-future timestamps.
    for j in range(20):
        add(10**9 + j, 11, 100 + j * 50000, "GB", j, 10**12 + j)
    # Hammer one merchant with large declined-looking payments to raise merchant_risk.
    for j in range(40):
        add(500 + j % 4, 42, 900000 + j * 1000, "BR", 77, 50000 + j * 200)
    # Timestamps going backwards (clock skew) and the largest valid amount.
    add(3, 1, 10**12, "CN", 12, 5)
    add(3, 1, 1, "CN", 12, 4)
    # Ever-larger accounts ids including u64 max.
    add(MASK, 2**32 - 1, 12345, "ZZ", MASK, MASK)
    add(MASK, 2**32 - 1, 54321, "ZZ", MASK, MASK)
    # Timestamps near 2^64: the window comparisons must not wrap around.
    for j in range(4):
        add(2**40 + 1, 9, 777 + j, "FR", 5, MASK - j * 30000)
    return reqs


def build_vectors() -> dict:
    model = Model(**FLAGS)
    cases = []
    for req in build_requests():
        resp = model.decide(req)
        assert resp is not None
        cases.append({"request": req.hex(), "response": resp.hex()})
    malformed = [
        {"why": "zero length", "frame": "00000000"},
        {"why": "length above 4096", "frame": "00001001" + "00" * 8},
        {"why": "short payload", "frame": "00000005" + "0100000000"},
        {"why": "unknown type", "frame": "0000002f" + "02" + request(1, 1, 1, 1, "US", 1, 1)[1:].hex()},
        {"why": "amount 0", "frame": "0000002f" + request(1, 1, 1, 0, "US", 1, 1).hex()},
        {"why": "amount too large", "frame": "0000002f" + request(1, 1, 1, 10**12 + 1, "US", 1, 1).hex()},
        {"why": "lower-case country", "frame": "0000002f" + request(1, 1, 1, 5, "us", 1, 1).hex()},
        {"why": "truncated payload", "frame": "0000002f" + request(1, 1, 1, 5, "US", 1, 1).hex()[:40]},
    ]
    decisions = {bytes.fromhex(c["response"])[9] for c in cases}
    assert decisions == {0, 1, 2}, decisions
    return {"protocol": 1, "flags": FLAGS, "cases": cases, "malformed": malformed}


def main() -> int:
    path = Path(__file__).with_name("vectors.json")
    text = json.dumps(build_vectors(), indent=1) + "\n"
    if sys.argv[1:] == ["--write"]:
        path.write_text(text)
        return 0
    if path.read_text() != text:
        print(f"{path} is not what reference.py produces; run with --write", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
