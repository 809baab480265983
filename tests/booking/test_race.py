"""Many `labctl book` processes at once: exactly one of the overlapping requests wins, on both backends.

The processes start together against a store that does not exist yet, so they also
race to create and migrate it. A loser must exit 3 naming the winner — never 1 with
"database is locked", never a second winner.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import timedelta
from pathlib import Path

from labctl.booking.model import iso_utc, utcnow
from tests.conftest import LABCTL, run_labctl

RACERS = 20  # overlapping requests for the same host
BYSTANDERS = 2  # requests for disjoint windows on another host, in the same burst


def test_simultaneous_overlapping_bookings_exactly_one_wins(
    inventory: Path, backend_env: dict[str, str]
) -> None:
    base = (utcnow() + timedelta(days=90)).replace(minute=0, second=0)
    commands = []
    for i in range(RACERS):
        # windows shifted by a few minutes: every pair overlaps, no two are identical
        start = iso_utc(base + timedelta(minutes=4 * i))
        commands.append((f"racer{i}", ["--hosts", "h1", "--start", str(start), "--duration", "2h"]))
    for i in range(BYSTANDERS):
        start = iso_utc(base + timedelta(hours=2 * i))
        commands.append((f"bystander{i}", ["--hosts", "h2", "--start", str(start), "--duration", "2h"]))
    procs = []
    for owner, args in commands:
        env = {**os.environ, **backend_env, "LABCTL_OWNER": owner}
        procs.append(
            subprocess.Popen(
                [str(LABCTL), "book", "-i", str(inventory), *args, "--json"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = []
    for (owner, _), p in zip(commands, procs, strict=True):
        out, err = p.communicate(timeout=180)
        results.append((owner, p.returncode, out, err))

    racers = [r for r in results if r[0].startswith("racer")]
    winners = [r for r in racers if r[1] == 0]
    assert len(winners) == 1, [(o, c, e[-300:]) for o, c, _, e in racers]
    losers = [r for r in racers if r[1] != 0]
    assert all(code == 3 for _, code, _, _ in losers), [(o, c, e[-300:]) for o, c, _, e in losers]
    win_owner, _, win_out, _ = winners[0]
    win_id = json.loads(win_out)["booking_id"]
    for _, _, out, _ in losers:
        doc = json.loads(out)
        assert doc["kind"] == "BookingConflict"
        assert f"booking {win_id} by {win_owner}" in doc["error"]

    bystanders = [r for r in results if r[0].startswith("bystander")]
    assert all(code == 0 for _, code, _, _ in bystanders), [(o, c, e[-300:]) for o, c, _, e in bystanders]

    listed = run_labctl("bookings", "--all", "--json", env=backend_env)
    assert listed.code == 0, listed.stderr
    by_host: dict[str, list[str]] = {}
    for b in listed.json["bookings"]:
        for h in b["hosts"]:
            by_host.setdefault(h, []).append(b["owner"])
    assert by_host == {"h1": [win_owner], "h2": [f"bystander{i}" for i in range(BYSTANDERS)]}
