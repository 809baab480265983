"""The comparison of an original run and its reproduction (pure functions, no hosts)."""

from __future__ import annotations

import copy
from typing import Any

from labctl.experiment.reproduce import (
    compare,
    compare_claims,
    compare_figures,
    comparison_html,
    environment_diff,
    rate_notes,
    summary_line,
)


def _verdict(claim: str, verdict: str, value: float = 1.0) -> dict[str, Any]:
    return {
        "claim": claim,
        "statement": f"statement of {claim}",
        "expect": "p99_ms[go] > 1",
        "rate": "75%",
        "value": value,
        "ci": [value * 0.9, value * 1.1],
        "verdict": verdict,
        "reason": "because",
    }


def _stats(p99: float) -> dict[str, Any]:
    pooled = {
        "p50_us": {"value": 100.0, "ci": [90.0, 110.0]},
        "p99_us": {"value": p99, "ci": [p99 * 0.8, p99 * 1.2]},
        "p999_us": {"value": 3 * p99, "ci": [2 * p99, 4 * p99]},
        "max_us": {"value": 9 * p99, "ci": [8 * p99, 10 * p99]},
    }
    return {"pooled": pooled, "requested_rps": 1000.0}


def _manifest() -> dict[str, Any]:
    facts = {
        "hostname": "lab1",
        "cpu_model": "AMD EPYC",
        "sockets": 2,
        "kernel": "6.1.0",
        "cmdline": "quiet",
        "mem_bytes": 64 * 2**30,
        "numa_nodes": [
            {"id": 0, "cpus": [0, 1], "mem_bytes": 32 * 2**30},
            {"id": 1, "cpus": [2, 3], "mem_bytes": 32 * 2**30},
        ],
        "toolchains": {"python3": {"path": "/usr/bin/python3", "version": "3.11.2"}},
    }
    return {
        "run_id": "20260101T000000Z-x-aaaa",
        "started_at": "2026-01-01T00:00:00Z",
        "ended_at": "2026-01-01T00:01:00Z",
        "spec": {"name": "x", "variants": [{"name": "go"}, {"name": "rust"}]},
        "git": {"commit": "c" * 40, "dirty": False},
        "artifacts": {"riskd-go": "a" * 64, "loadgen": "b" * 64},
        "build": {
            "riskd-go": {"sha256": "a" * 64, "flags": {"GOFLAGS": "-trimpath"}, "source_rev": "c" * 40}
        },
        "toolchains": {"go": "go1.26.8", "rustc": "rustc 1.95.0", "arch": "x86_64"},
        "controller": {"hostname": "ctl", "python": "3.11.7"},
        "hosts": {"lab1": facts},
        "tuning": {
            "lab1": {
                "host": "lab1",
                "profiles": ["low-noise"],
                "snapshot_at": "2026-01-01T00:00:00Z",
                "tuned_at": "2026-01-01T00:00:01Z",
                "knobs": {"kernel.numa_balancing": {"original": 1, "wanted": 0, "current": 0}},
            }
        },
        "labctl_version": "0.1.0",
        "settings": {"noise_threshold": 0.01, "data_dir": "/a"},
        "rates_rps": {"25%": 1000.0, "75%": 3000.0},
    }


def test_claims_hold_when_verdicts_agree() -> None:
    rows = compare_claims(
        [_verdict("C1.1", "supported"), _verdict("C1.2", "refuted"), _verdict("C1.3", "inconclusive")],
        [_verdict("C1.1", "supported", 2.0), _verdict("C1.2", "inconclusive")],
    )
    assert [(r["claim"], r["original"], r["reproduced"], r["holds"]) for r in rows] == [
        ("C1.1", "supported", "supported", True),
        ("C1.2", "refuted", "inconclusive", False),
        ("C1.3", "inconclusive", None, False),
    ]
    assert rows[0]["original_value"] == 1.0 and rows[0]["reproduced_value"] == 2.0
    assert "not judged in the reproduction" in rows[2]["note"]


def test_figures_ratio_and_confidence_interval() -> None:
    a = {"rates": ["75%"], "stats": {"go": {"75%": _stats(1000.0)}, "rust": {"75%": _stats(500.0)}}}
    b = {"rates": ["75%"], "stats": {"go": {"75%": _stats(1100.0)}, "rust": {"75%": _stats(1000.0)}}}
    rows = compare_figures(a, b, ["go", "rust"])
    assert [(r["variant"], r["metric"]) for r in rows] == [
        ("go", "p50_us"),
        ("go", "p99_us"),
        ("go", "p999_us"),
        ("rust", "p50_us"),
        ("rust", "p99_us"),
        ("rust", "p999_us"),
    ]
    go99 = rows[1]
    assert go99["ratio"] == 1.1 and go99["within_original_ci"] is True
    rust99 = rows[4]
    assert rust99["ratio"] == 2.0 and rust99["within_original_ci"] is False


def test_figures_of_a_variant_missing_in_the_reproduction() -> None:
    a = {"rates": ["75%"], "stats": {"go": {"75%": _stats(1000.0)}}}
    rows = compare_figures(a, {"rates": [], "stats": {}}, ["go"])
    assert all(
        r["reproduced"] is None and r["ratio"] is None and r["within_original_ci"] is None for r in rows
    )


def test_identical_environments_differ_only_in_timestamps() -> None:
    a = _manifest()
    b = copy.deepcopy(a)
    b["run_id"] = "20260102T000000Z-x-bbbb"
    b["started_at"] = b["ended_at"] = "2026-01-02T00:00:00Z"
    b["tuning"]["lab1"]["snapshot_at"] = b["tuning"]["lab1"]["tuned_at"] = "2026-01-02T00:00:00Z"
    b["settings"]["data_dir"] = "/elsewhere"
    b["rates_rps"] = {"25%": 1200.0, "75%": 3600.0}  # a result, not the environment
    assert environment_diff(a, b) == []


def test_environment_differences_are_named() -> None:
    a = _manifest()
    b = copy.deepcopy(a)
    b["hosts"]["lab1"]["kernel"] = "6.12.0"
    b["hosts"]["lab1"]["cmdline"] = "quiet isolcpus=2-3"
    b["hosts"]["lab1"]["numa_nodes"][1]["cpus"] = [2]
    b["tuning"]["lab1"]["profiles"] = []
    b["tuning"]["lab1"]["knobs"] = {}
    b["toolchains"]["go"] = "go1.27.0"
    b["artifacts"]["riskd-go"] = "d" * 64
    b["git"]["labctl"] = {"commit": "e" * 40, "dirty": True}
    diff = environment_diff(a, b)
    keys = {(d["aspect"], d["key"]) for d in diff}
    assert ("host facts", "kernel") in keys
    assert ("host facts", "cmdline") in keys
    assert ("host facts", "numa_nodes.node1.cpus") in keys
    assert ("tuning", "profiles") in keys
    assert ("tuning", "knobs.kernel.numa_balancing.original") in keys
    assert ("toolchains", "go") in keys
    assert ("artifacts", "riskd-go") in keys
    assert ("labctl", "commit") in keys and ("labctl", "dirty") in keys
    kernel = next(d for d in diff if d["key"] == "kernel")
    assert kernel == {
        "aspect": "host facts",
        "key": "kernel",
        "label": "kernel",
        "host": "lab1",
        "original": "6.1.0",
        "reproduced": "6.12.0",
    }


def test_memory_within_tolerance_and_tool_paths_are_not_differences() -> None:
    a = _manifest()
    b = copy.deepcopy(a)
    b["hosts"]["lab1"]["numa_nodes"][0]["mem_bytes"] = int(30.5 * 2**30)  # a balloon, not a new machine
    b["hosts"]["lab1"]["toolchains"]["python3"]["path"] = "/venv/bin/python3"
    assert environment_diff(a, b) == []
    b["hosts"]["lab1"]["numa_nodes"][0]["mem_bytes"] = 16 * 2**30
    assert [d["key"] for d in environment_diff(a, b)] == ["numa_nodes.node0.mem_bytes"]


def test_another_host_is_paired_and_its_name_reported() -> None:
    a = _manifest()
    b = copy.deepcopy(a)
    b["hosts"] = {"lab2": {**a["hosts"]["lab1"], "hostname": "lab2"}}
    b["tuning"] = {"lab2": {**a["tuning"]["lab1"], "host": "lab2"}}
    diff = environment_diff(a, b)
    assert diff[0] == {"aspect": "hosts", "key": "names", "original": ["lab1"], "reproduced": ["lab2"]}
    assert [(d["aspect"], d["key"], d["host"]) for d in diff[1:]] == [
        ("host facts", "hostname", "lab1 → lab2")
    ]


def test_compare_document_summary_html_and_rate_notes() -> None:
    ma, mb = _manifest(), _manifest()
    mb["run_id"] = "20260102T000000Z-x-bbbb"
    mb["reproduces"] = ma["run_id"]
    mb["rates_rps"] = {"25%": 2000.0, "75%": 3100.0}
    ra = {
        "verdicts": [_verdict("C1.1", "supported")],
        "rates": ["75%"],
        "stats": {"go": {"75%": _stats(1000.0)}},
    }
    rb = {
        "verdicts": [_verdict("C1.1", "refuted")],
        "rates": ["75%"],
        "stats": {"go": {"75%": _stats(1000.0)}},
    }
    doc = compare(ma, ra, mb, rb)
    assert doc["run_id"] == mb["run_id"] and doc["original_run_id"] == ma["run_id"]
    assert doc["claims"][0]["holds"] is False
    assert doc["summary"] == {
        "claims_total": 1,
        "claims_held": 0,
        "all_claims_hold": False,
        "figures_total": 3,
        "figures_within_original_ci": 3,
        "environment_differences": 0,
    }
    assert summary_line(doc).startswith("0 of 1 claim verdicts held")
    notes = rate_notes(doc)
    assert len(notes) == 1 and notes[0].startswith("rate 25% was 1000 rps in the original and 2000 rps")
    html = comparison_html(doc, ["a <warning>"])
    assert "does not hold" in html and "a &lt;warning&gt;" in html and "None: same hosts" in html
