"""`labctl up` end to end, Ctrl-C during a run, and the run-store commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import LABCTL, ROOT, run_labctl
from tests.pipeline.conftest import DATA

pytestmark = pytest.mark.integration


def recorded_processes(data_dir: Path) -> list[dict]:
    path = data_dir / "state/hosts/localhost.json"
    if not path.is_file():
        return []
    try:
        return list(json.loads(path.read_text()).get("processes", []))
    except json.JSONDecodeError:
        return []


def test_up_quick_gc_tail_latency_on_localhost(shared_data_dir: Path) -> None:
    r = run_labctl(
        "up",
        "experiments/gc-tail-latency.yaml",
        "-i",
        "inventories/local.yml",
        "--quick",
        "--json",
        env={"LABCTL_DATA_DIR": str(shared_data_dir)},
        timeout=900,
    )
    assert r.code == 0, r.stderr[-3000:]
    doc = r.json
    assert doc["stages"]["provision"]["ok"] and doc["stages"]["run"]["ok"]
    assert {v["claim"] for v in doc["verdicts"]} == {"C2.5", "C5.1", "C1.2"}
    assert all(
        v["verdict"] in ("supported", "refuted", "inconclusive") and v["reason"] for v in doc["verdicts"]
    )
    assert doc["hosts"]["localhost"]["ok"]
    manifest = json.loads((Path(doc["run_dir"]) / "manifest.json").read_text())
    assert manifest["quick"] and manifest["status"] == "completed"
    assert set(manifest["artifacts"]) == {"riskd-go", "riskd-rust", "riskd-cpp", "loadgen"}
    assert manifest["hosts"]["localhost"]["kernel"] == os.uname().release
    assert "influx_token" not in json.dumps(manifest) or manifest["settings"]["influx_token"] in (
        None,
        "(set)",
    )
    runs = run_labctl("runs", "--json", env={"LABCTL_DATA_DIR": str(shared_data_dir)})
    assert doc["run_id"] in {x["run_id"] for x in runs.json["runs"]}
    assert not recorded_processes(shared_data_dir), "every process the run started was stopped and forgotten"


def test_ctrl_c_marks_run_interrupted_and_stops_processes(shared_data_dir: Path, tmp_path: Path) -> None:
    spec = (DATA / "tiny.yaml").read_text().replace("duration: 3s", "duration: 60s")
    long = tmp_path / "tiny-long.yaml"
    long.write_text(spec)
    env = {**os.environ, "LABCTL_DATA_DIR": str(shared_data_dir), "PYTHONFAULTHANDLER": "1"}
    proc = subprocess.Popen(
        [str(LABCTL), "run", str(long), "-i", "inventories/local.yml", "--json"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a shell that started us in the background may have set SIGINT to
        # "ignore", which a child inherits: give labctl the default disposition
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not any(
        "loadgen" in p["argv0"] for p in recorded_processes(shared_data_dir)
    ):
        time.sleep(0.2)
    started = recorded_processes(shared_data_dir)
    assert any("riskd" in p["argv0"] for p in started), "the run never started a server"
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack
        out, err = proc.communicate(timeout=30)
        pytest.fail(f"labctl did not stop within 120 s of SIGINT: {err[-6000:]}")
    assert proc.returncode == 130, err[-2000:]
    doc = json.loads(out)
    assert doc["status"] == "interrupted", doc
    manifest = json.loads((Path(doc["run_dir"]) / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    assert (Path(doc["run_dir"]) / "results.json").is_file()
    assert not recorded_processes(shared_data_dir), "stopped processes must be forgotten in local state"
    for p in started:
        assert (
            not Path(f"/proc/{p['pid']}").exists() or "zombie" in Path(f"/proc/{p['pid']}/status").read_text()
        )


def test_unknown_run_and_ship_without_influx_exit_2(tmp_path: Path) -> None:
    r = run_labctl("report", "20990101T000000Z-nope-abcd", "--json")
    assert r.code == 2 and "unknown run id" in r.json["error"]
    r = run_labctl("ship", "--json")
    assert r.code == 2 and "LABCTL_INFLUX_URL" in r.json["error"]


def test_provision_local_is_idempotent_and_records_facts(tmp_path: Path) -> None:
    env = {"LABCTL_DATA_DIR": str(tmp_path / "d")}
    r1 = run_labctl("provision", "-i", "inventories/local.yml", "--json", env=env)
    assert r1.code == 0, r1.stderr[-2000:]
    r2 = run_labctl("provision", "-i", "inventories/local.yml", "--json", env=env)
    assert r2.code == 0 and r2.json["hosts"]["localhost"]["changed"] == 0
    facts = r2.json["facts"]["localhost"]
    assert facts["kernel"] == os.uname().release and facts["logical_cpus"] == os.cpu_count()
    assert facts["toolchains"]["go"]["version"]
    chk = run_labctl("provision", "-i", "inventories/local.yml", "--check", "--json", env=env)
    assert chk.code == 0 and chk.json["check"] is True
    hosts = run_labctl("hosts", "--json", env=env)
    assert "localhost" in hosts.json["facts"]


def test_run_check_prints_the_plan_and_starts_nothing(tmp_path: Path) -> None:
    data = tmp_path / "untouched"
    r = run_labctl(
        "run",
        "experiments/gc-tail-latency.yaml",
        "-i",
        "inventories/local.yml",
        "--check",
        "--json",
        env={"LABCTL_DATA_DIR": str(data)},
    )
    assert r.code == 0, r.stderr
    doc = r.json
    assert doc["check"] and len(doc["cells"]) == 5 * 3 * 3 and doc["capacity_first"]
    assert [c["variant"] for c in doc["cells"][:5]] == ["go", "go-gogc400", "go-memlimit", "rust", "cpp"]
    assert doc["estimated_s"] > 45 * 35
    assert not (data / "runs").exists() and not (data / "state").exists()
