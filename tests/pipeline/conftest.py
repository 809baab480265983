"""Fixtures for end-to-end `labctl run` tests on this machine with real InfluxDB servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import Server, ServerUnavailable, start_influxd, start_victoria_metrics

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def shared_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One labctl data dir per module, so the workloads are deployed once."""
    return tmp_path_factory.mktemp("labctl-data")


def _start(starter, tmp: Path) -> Server:  # type: ignore[no-untyped-def]
    try:
        return starter(tmp)  # type: ignore[no-any-return]
    except ServerUnavailable as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = _start(start_influxd, tmp_path_factory.mktemp("influxd"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def victoria(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = _start(start_victoria_metrics, tmp_path_factory.mktemp("vm"))
    yield server
    server.stop()
