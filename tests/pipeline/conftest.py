"""Fixtures for end-to-end `labctl run` tests on this machine with real InfluxDB servers."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def shared_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One labctl data dir per module, so the workloads are deployed once."""
    return tmp_path_factory.mktemp("labctl-data")
