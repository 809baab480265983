"""`labctl run` on localhost shipping to real servers: counts, outage, no duplicates."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from labctl.metrics.spool import Spool
from tests.conftest import run_labctl
from tests.metrics.test_dashboards import DASHBOARDS, load, regex_alternation, substitute, targets
from tests.pipeline.conftest import DATA
from tests.servers import (
    Server,
    influx_field_counts,
    influx_query,
    lp_field_counts,
    vm_expected_counts,
    vm_sample_counts,
)

pytestmark = pytest.mark.integration
TINY = str(DATA / "tiny.yaml")


def spool_lines(run_dir: Path) -> list[str]:
    return Spool(run_dir).lines()


def v1_env(data_dir: Path, server: Server) -> dict[str, str]:
    return {
        "LABCTL_DATA_DIR": str(data_dir),
        "LABCTL_INFLUX_URL": server.url,
        "LABCTL_INFLUX_API": "v1",
        "LABCTL_INFLUX_DB": "labctl",
    }


@pytest.fixture(scope="module")
def v1_run(shared_data_dir: Path, influxd: Server) -> dict:
    r = run_labctl("run", TINY, "-i", "inventories/local.yml", "--json", env=v1_env(shared_data_dir, influxd))
    assert r.code == 0, r.stderr[-2000:]
    return dict(r.json)


def test_run_ships_every_point_to_influxd_v1(v1_run: dict, influxd: Server) -> None:
    doc = v1_run
    run_dir = Path(doc["run_dir"])
    for name in ("manifest.json", "results.json", "report.html"):
        assert (run_dir / name).is_file()
    assert doc["points_pending"] == 0 and doc["points_shipped"] > 0
    langs = {c["lang"] for c in json.loads((run_dir / "results.json").read_text())["cells"]}
    assert langs == {"go", "rust", "cpp"}
    assert {v["claim"] for v in doc["verdicts"]} == {"C2.5", "C1.2"}
    lines = spool_lines(run_dir)
    assert len(lines) == doc["points_shipped"]
    got = influx_field_counts(influxd.url, f"run_id = '{doc['run_id']}'")
    assert got == lp_field_counts(lines)


def test_run_ships_to_victoria_metrics_v2(shared_data_dir: Path, victoria: Server) -> None:
    env = {
        "LABCTL_DATA_DIR": str(shared_data_dir),
        "LABCTL_INFLUX_URL": victoria.url,
        "LABCTL_INFLUX_API": "v2",
        "LABCTL_INFLUX_ORG": "lab",
        "LABCTL_INFLUX_BUCKET": "labctl",
        "LABCTL_INFLUX_TOKEN": "not-checked",
    }
    r = run_labctl("run", TINY, "-i", "inventories/local.yml", "--json", env=env)
    assert r.code == 0, r.stderr[-2000:]
    doc = r.json
    assert doc["points_pending"] == 0
    lines = spool_lines(Path(doc["run_dir"]))
    got = vm_sample_counts(victoria.url, f'{{__name__=~"labctl_.*",run_id="{doc["run_id"]}"}}')
    assert got == vm_expected_counts(lines)
    assert "not-checked" not in r.stdout + r.stderr


def test_outage_mid_run_then_ship_without_duplicates(shared_data_dir: Path, influxd_own: Server) -> None:
    influxd = influxd_own  # this test stops and restarts its server
    env = v1_env(shared_data_dir, influxd)
    stopped = threading.Event()

    def stop_soon() -> None:
        time.sleep(6)  # after deploy checks and the first cell has started
        influxd.stop()
        stopped.set()

    t = threading.Thread(target=stop_soon)
    t.start()
    try:
        r = run_labctl("run", TINY, "-i", "inventories/local.yml", "--json", env=env)
    finally:
        t.join()
    assert stopped.is_set()
    assert r.code == 0, r.stderr[-2000:]
    doc = r.json
    assert doc["points_pending"] > 0, "InfluxDB was down for the end of the run, yet nothing is pending"
    assert any("pending" in w for w in doc["warnings"])
    influxd.start()
    s1 = run_labctl("ship", doc["run_id"], "--json", env=env)
    assert s1.code == 0, s1.stderr
    assert s1.json["points_pending"] == 0
    lines = spool_lines(Path(doc["run_dir"]))
    want = lp_field_counts(lines)
    assert influx_field_counts(influxd.url, f"run_id = '{doc['run_id']}'") == want
    s2 = run_labctl("ship", doc["run_id"], "--json", env=env)
    assert s2.code == 0 and s2.json["points_pending"] == 0
    assert influx_field_counts(influxd.url, f"run_id = '{doc['run_id']}'") == want


def test_failed_cell_is_recorded_and_run_goes_on(shared_data_dir: Path, tmp_path: Path) -> None:
    spec = (
        (DATA / "tiny.yaml")
        .read_text()
        .replace("  - {name: cpp, lang: cpp}", '  - {name: cpp, lang: cpp, flags: ["--rules", "0"]}')
    )
    bad = tmp_path / "tiny-bad-cpp.yaml"
    bad.write_text(spec)
    r = run_labctl(
        "run",
        str(bad),
        "-i",
        "inventories/local.yml",
        "--json",
        env={"LABCTL_DATA_DIR": str(shared_data_dir)},
    )
    assert r.code == 1, r.stderr[-2000:]
    doc = r.json
    cells = json.loads((Path(doc["run_dir"]) / "results.json").read_text())["cells"]
    status = {c["variant"]: c["status"] for c in cells}
    assert status == {"go": "ok", "rust": "ok", "cpp": "failed"}
    assert "exited" in next(c for c in cells if c["variant"] == "cpp")["error"]
    assert doc["failed_cells"] and doc["status"] == "completed"
    assert doc["points_pending"] > 0  # no InfluxDB configured: spooled, not lost


def test_every_dashboard_query_returns_data_for_a_real_run(v1_run: dict, influxd: Server) -> None:
    lines = spool_lines(Path(v1_run["run_dir"]))
    times = [int(line.rsplit(" ", 1)[1]) for line in lines]
    values = {
        "experiment": "tiny",
        "run_id": v1_run["run_id"],
        "variant": regex_alternation(["go", "rust", "cpp"]),
        "rate": regex_alternation(["400rps"]),
    }
    for path in DASHBOARDS:
        for title, t in targets(load(path)):
            q = substitute(t["query"], values, min(times), max(times))
            series = [s for res in influx_query(influxd.url, q)["results"] for s in res.get("series", [])]
            assert series, f"{path.name}: {title}: no data for {q}"


def test_compare_a_run_with_itself_and_with_its_baseline(v1_run: dict, shared_data_dir: Path) -> None:
    env = {"LABCTL_DATA_DIR": str(shared_data_dir)}
    rid = v1_run["run_id"]
    same = run_labctl("compare", rid, rid, "--json", env=env)
    assert same.code == 0, same.stderr
    rows = same.json["rows"]
    assert {r["variant"] for r in rows} == {"go", "rust", "cpp"}
    assert all(r["ratio"] == 1.0 and r["verdict"] == "no significant difference" for r in rows)
    base = run_labctl("compare", rid, "--json", env=env)
    assert base.code == 0
    assert {(r["variant"], r["baseline"]) for r in base.json["comparisons"]} == {
        ("rust", "go"),
        ("cpp", "go"),
    }
    human = run_labctl("report", rid, env=env)
    assert human.code == 0 and "claims" in human.stdout and "report.html" in human.stdout
