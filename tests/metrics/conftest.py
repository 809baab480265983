"""Fixtures for the metrics tests: real influxd / VictoriaMetrics servers and sample data.

A missing server binary is a test failure (``pytest.fail``), never a skip: the suite
must not pass on a machine that cannot check what it claims.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.metrics.rundata import run_lines, synthetic_lines  # noqa: E402

FAKE_TOKEN = "FAKE-tok3n-7f1c9a-DO-NOT-LEAK"
FAKE_PASSWORD = "FAKE-passw0rd-2b8e-DO-NOT-LEAK"


@pytest.fixture
def make_run_lines() -> Any:
    """:func:`run_lines` (a realistic run's line protocol) as a fixture."""
    return run_lines


@pytest.fixture
def make_synthetic_lines() -> Any:
    """:func:`synthetic_lines` (bulk distinct points) as a fixture."""
    return synthetic_lines


@pytest.fixture
def secrets() -> dict[str, str]:
    """Fake credentials that must never appear anywhere."""
    return {"token": FAKE_TOKEN, "password": FAKE_PASSWORD}
