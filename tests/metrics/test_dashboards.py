"""The Grafana dashboards: well-formed, and every InfluxQL query runs and returns data.

The queries run against a real influxd holding a run written through labctl's own
builders and V1 sink, after substituting the template variables the way Grafana's
InfluxDB data source does ($timeFilter, $__interval, single values, and multi-value
variables as a regex alternation).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from labctl.metrics import Spool, ship
from labctl.metrics.schema import MEASUREMENTS
from labctl.metrics.sinks import V1Sink
from tests.metrics.rundata import run_lines
from tests.servers import Server, influx_query

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "dashboards").glob("*.json"))
RUN_ID = "dash-20261128-0001"


def load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def all_panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out += p.get("panels", [])
    return out


def targets(dash: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(p["title"], t) for p in all_panels(dash) for t in p.get("targets", [])]


def test_there_are_dashboards() -> None:
    assert [p.name for p in DASHBOARDS] == ["labctl-experiments.json"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_model(path: Path) -> None:
    dash = load(path)
    assert (
        dash["uid"]
        and dash["title"]
        and isinstance(dash["schemaVersion"], int)
        and dash["schemaVersion"] >= 36
    )
    names = [v["name"] for v in dash["templating"]["list"]]
    assert {"datasource", "experiment", "run_id", "variant"} <= set(names)
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            assert v["datasource"] == {"type": "influxdb", "uid": "${datasource}"}
            assert v["query"].startswith('SHOW TAG VALUES FROM "labctl_cell" WITH KEY = ')
    panels = all_panels(dash)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels:
        g = p["gridPos"]
        assert 0 <= g["x"] < 24 and g["x"] + g["w"] <= 24 and g["h"] > 0
    assert targets(dash)
    for title, t in targets(dash):
        assert t["rawQuery"] is True and t["refId"] and t["query"], title
        assert t["datasource"] == {"type": "influxdb", "uid": "${datasource}"}, title
        assert "$timeFilter" in t["query"], f"{title}: every query is bounded by the time picker"
        assert "\"run_id\" = '$run_id'" in t["query"], f"{title}: every query is bounded to one run"
        for m in re.findall(r'FROM "([^"]+)"', t["query"]):
            assert m in MEASUREMENTS, f"{title}: unknown measurement {m}"


def test_provisioning_files() -> None:
    ds = yaml.safe_load((ROOT / "dashboards/provisioning/datasources/labctl.yaml").read_text())
    (source,) = ds["datasources"]
    assert ds["apiVersion"] == 1 and source["type"] == "influxdb" and source["uid"] == "labctl-influxdb"
    assert source["jsonData"]["dbName"] and source["url"]
    prov = yaml.safe_load((ROOT / "dashboards/provisioning/dashboards/labctl.yaml").read_text())
    (provider,) = prov["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")


# --------------------------------------------------------------------------- real queries


def regex_alternation(values: list[str]) -> str:
    """Grafana's formatting of a multi-value / All variable for InfluxDB regexes."""
    escaped = [re.escape(v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def substitute(query: str, values: dict[str, str], start_ns: int, end_ns: int) -> str:
    q = query.replace(
        "$timeFilter", f"time >= {start_ns // 1_000_000}ms and time <= {end_ns // 1_000_000 + 1}ms"
    )
    q = q.replace("$__interval", "1s")
    for name in sorted(values, key=len, reverse=True):
        q = q.replace(f"${name}", values[name])
    assert not re.search(r"\$\{?[A-Za-z_]", q), f"unsubstituted variable in {q}"
    return q


@pytest.fixture(scope="module")
def loaded_influxd(
    influxd: Server, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Server, list[str], int, int]:
    lines = run_lines(RUN_ID, reps=2)
    run_dir = tmp_path_factory.mktemp("dash-run")
    Spool(run_dir).append(lines)
    result = ship(run_dir, None, sink=V1Sink(influxd.url, db="labctl"))
    assert result.pending == 0, result
    times = [int(line.rsplit(" ", 1)[1]) for line in lines]
    return influxd, lines, min(times), max(times)


def _values(doc: dict[str, Any]) -> list[str]:
    out = []
    for res in doc["results"]:
        for s in res.get("series", []):
            out += [row[-1] for row in s["values"]]
    return out


@pytest.mark.integration
@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_template_variable_queries(path: Path, loaded_influxd: tuple[Server, list[str], int, int]) -> None:
    server, _, start, end = loaded_influxd
    given = {"experiment": "gc-tail-latency", "run_id": RUN_ID}
    expect = {
        "experiment": "gc-tail-latency",
        "run_id": RUN_ID,
        "variant": {"go", "rust", "cpp"},
        "rate": {"1000"},
    }
    for v in load(path)["templating"]["list"]:
        if v["type"] != "query":
            continue
        got = _values(influx_query(server.url, substitute(v["query"], given, start, end), epoch=None))
        want = expect[v["name"]]
        if isinstance(want, set):
            assert set(got) == want, v["name"]
        else:
            assert want in got, v["name"]


@pytest.mark.integration
@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_panel_query_returns_data(
    path: Path, loaded_influxd: tuple[Server, list[str], int, int], make_run_lines: Callable[..., Any]
) -> None:
    server, _, start, end = loaded_influxd
    values = {
        "experiment": "gc-tail-latency",
        "run_id": RUN_ID,
        "variant": regex_alternation(["go", "rust", "cpp"]),
        "rate": regex_alternation(["1000"]),
    }
    for title, t in targets(load(path)):
        q = substitute(t["query"], values, start, end)
        doc = influx_query(server.url, q)
        series = [s for res in doc["results"] for s in res.get("series", [])]
        assert series, f"{title}: no data for {q}"
        # every selected column has at least one value (a misspelt field would be all null)
        columns = series[0]["columns"]
        for i, col in enumerate(columns):
            if col == "time":
                continue
            assert any(row[i] is not None for s in series for row in s["values"]), f"{title}: {col} is empty"
        # panels that split by variant see every variant
        if "GROUP BY" in q and '"variant"' in q.split("GROUP BY", 1)[1]:
            seen = {s.get("tags", {}).get("variant") for s in series}
            want = {"go"} if "labctl_gc" in q else {"go", "rust", "cpp"}
            assert seen == want, f"{title}: variants {seen}"
