"""Experiment specs: the shipped ones load; every malformed one is refused with an InputError
that names the file and the key path — through the API and through `labctl run`."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from labctl.errors import InputError
from labctl.experiment.spec import Experiment, load_experiment, parse_rate, rate_label
from tests.conftest import run_labctl

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "experiments").glob("*.yaml"))
FLAGSHIP = ROOT / "experiments" / "gc-tail-latency.yaml"


def base() -> dict[str, Any]:
    """A small valid spec (independent of the shipped files, so edits there do not break these tests)."""
    return {
        "name": "t",
        "baseline": "go",
        "variants": [
            {"name": "go", "lang": "go"},
            {"name": "go-gogc400", "lang": "go", "env": {"GOGC": "400"}},
            {"name": "rust", "lang": "rust"},
        ],
        "claims": [
            {"id": "C2.5", "expect": "p99_ms[go] / p99_ms[rust] >= 2"},
            {"id": "C1.2", "expect": "gc_cycles_per_s[go] > 5", "rate": "75%"},
        ],
        "load": {"rates": ["25%", "75%"], "duration": "30s", "warmup": "5s"},
        "placement": {"server": {"numa_node": 0, "cpus": "0-3,8"}, "client": {}},
        "quick": {"variants": ["go", "rust"], "load": {"rates": ["50%"], "duration": "2s"}},
    }


def write(tmp_path: Path, data: Any, name: str = "spec.yaml") -> Path:
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return p


def refused(tmp_path: Path, mutate: Callable[[dict[str, Any]], Any]) -> InputError:
    data = base()
    mutate(data)
    path = write(tmp_path, data)
    with pytest.raises(InputError) as info:
        load_experiment(path)
    err = info.value
    assert err.exit_code == 2
    assert err.details["file"] == str(path)
    assert str(path) in err.message
    return err


# --- what loads ----------------------------------------------------------------------------


def test_there_are_shipped_experiments() -> None:
    assert FLAGSHIP in SHIPPED


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_experiments_load_and_quicken(path: Path) -> None:
    exp = load_experiment(path)
    assert exp.baseline in [v.name for v in exp.variants]
    q = load_experiment(path, quick=True)
    assert q.repetitions == exp.quick.repetitions
    assert q.load.duration <= exp.load.duration
    assert q.baseline in [v.name for v in q.variants]
    for c in q.claims:
        assert {r.variant for r in c.claim.refs()} <= {v.name for v in q.variants}


def test_flagship_values() -> None:
    exp = load_experiment(FLAGSHIP)
    assert [v.name for v in exp.variants] == ["go", "go-gogc400", "go-memlimit", "rust", "cpp"]
    assert exp.load.relative and exp.load.duration == 30.0 and exp.load.warmup == 5.0
    assert [c.id for c in exp.claims] == ["C2.5", "C5.1", "C1.2"]
    q = load_experiment(FLAGSHIP, quick=True)
    assert [v.name for v in q.variants] == ["go", "rust", "cpp"]
    assert (q.repetitions, q.load.duration, q.load.warmup, q.params.accounts) == (1, 3.0, 1.0, 50000)
    assert [rate_label(r) for r in q.load.rates] == ["25%", "75%"]
    assert q.load.capacity.duration == 2.0


def test_small_spec_loads(tmp_path: Path) -> None:
    exp = load_experiment(write(tmp_path, base()))
    assert exp.variant("go-gogc400").env == {"GOGC": "400"}
    assert exp.placement.server.cpus == "0-3,8"
    q = exp.quickened()
    assert [v.name for v in q.variants] == ["go", "rust"]
    # the claim judged at 75% falls back to the highest quick rate (None) since 75% is not run
    assert [(c.id, c.rate) for c in q.claims] == [("C2.5", None), ("C1.2", None)]


def test_quick_keeps_the_baseline_and_drops_claims_on_dropped_variants(tmp_path: Path) -> None:
    data = base()
    data["quick"]["variants"] = ["rust"]
    data["claims"].append({"id": "C9.1", "expect": "rss_mb[go-gogc400] < 100"})
    q = load_experiment(write(tmp_path, data), quick=True)
    assert [v.name for v in q.variants] == ["go", "rust"]
    assert [c.id for c in q.claims] == ["C2.5", "C1.2"]


def test_validated_spec_round_trips(tmp_path: Path) -> None:
    # The manifest stores model_dump(mode="json"); it must validate again (reproduce).
    exp = load_experiment(write(tmp_path, base()), quick=True)
    again = Experiment.model_validate(exp.model_dump(mode="json"))
    assert again == Experiment.model_validate(again.model_dump(mode="json"))
    assert [v.name for v in again.variants] == [v.name for v in exp.variants]


@pytest.mark.parametrize(
    ("rate", "parsed", "label"),
    [
        ("50%", ("fraction", 0.5), "50%"),
        (" 12.5 % ", ("fraction", 0.125), "12.5%"),
        ("200%", ("fraction", 2.0), "200%"),
        (2000, ("absolute", 2000.0), "2000rps"),
        (0.5, ("absolute", 0.5), "0.5rps"),
        ("1500", ("absolute", 1500.0), "1500rps"),
    ],
)
def test_parse_rate(rate: Any, parsed: tuple[str, float], label: str) -> None:
    assert parse_rate(rate) == parsed
    assert rate_label(rate) == label


# --- what is refused, and where ------------------------------------------------------------


def _rates(*r: Any) -> Callable[[dict[str, Any]], None]:
    return lambda d: d["load"].update(rates=list(r))


@pytest.mark.parametrize(
    ("mutate", "key", "words"),
    [
        pytest.param(lambda d: d.update(colour="blue"), "colour", "unknown key", id="unknown-top"),
        pytest.param(
            lambda d: d["load"].update(durration="3s"), "load.durration", "unknown key", id="unknown-load"
        ),
        pytest.param(
            lambda d: d["load"].update(capacity={"connections": 4, "cnt": 1}),
            "load.capacity.cnt",
            "unknown key",
            id="unknown-capacity",
        ),
        pytest.param(
            lambda d: d["variants"][1].update(gogc=400),
            "variants.1.gogc",
            "unknown key",
            id="unknown-variant-key",
        ),
        pytest.param(
            lambda d: d["claims"][0].update(expected="x"),
            "claims.0.expected",
            "unknown key",
            id="unknown-claim-key",
        ),
        pytest.param(
            lambda d: d["placement"]["server"].update(node=1),
            "placement.server.node",
            "unknown key",
            id="unknown-placement",
        ),
        pytest.param(
            lambda d: d.update(repetitions="three"), "repetitions", "integer", id="type-repetitions"
        ),
        pytest.param(lambda d: d.update(variants={"name": "go"}), "variants", "list", id="type-variants"),
        pytest.param(lambda d: d["variants"][0].update(lang="java"), "variants.0.lang", "", id="bad-lang"),
        pytest.param(
            lambda d: d["load"].update(connections="many"),
            "load.connections",
            "integer",
            id="type-connections",
        ),
        pytest.param(
            lambda d: d["variants"][0].update(env=["GOGC=1"]), "variants.0.env", "dictionary", id="type-env"
        ),
        pytest.param(
            lambda d: d.update(repetitions=0), "repetitions", "greater than or equal to 1", id="zero-reps"
        ),
        pytest.param(lambda d: d.pop("load"), "load", "required", id="missing-load"),
        pytest.param(
            lambda d: d["claims"][0].update(expect="p99_ms[go] / p99_ms[java] >= 2"),
            "claims.0.expect",
            "unknown variant 'java'",
            id="claim-unknown-variant",
        ),
        pytest.param(
            lambda d: d["claims"][1].update(expect="p99_ms[go] >"),
            "claims.1.expect",
            "bad claim",
            id="claim-syntax",
        ),
        pytest.param(
            lambda d: d["claims"][0].update(expect="__import__('os').system('id') > 0"),
            "claims.0.expect",
            "bad claim",
            id="claim-injection",
        ),
        pytest.param(lambda d: d["claims"][0].update(id="2.5"), "claims.0.id", "pattern", id="claim-id"),
        pytest.param(lambda d: d.update(baseline="java"), "baseline", "not a variant", id="unknown-baseline"),
        pytest.param(
            lambda d: d["variants"].append({"name": "rust", "lang": "cpp"}),
            "variants.3.name",
            "unique",
            id="duplicate-variant",
        ),
        pytest.param(
            lambda d: d["variants"][0].update(name="Go"), "variants.0.name", "lower-case", id="variant-name"
        ),
        pytest.param(lambda d: d["load"].update(duration="0s"), "load.duration", "> 0", id="zero-duration"),
        pytest.param(
            lambda d: d["load"].update(duration=0), "load.duration", "> 0", id="zero-duration-number"
        ),
        pytest.param(
            lambda d: d["load"].update(duration=-30), "load.duration", "> 0", id="negative-duration"
        ),
        pytest.param(
            lambda d: d["load"].update(duration="-30s"),
            "load.duration",
            "not a duration",
            id="negative-duration-str",
        ),
        pytest.param(
            lambda d: d["load"].update(duration="soon"), "load.duration", "not a duration", id="bad-duration"
        ),
        pytest.param(lambda d: d["load"].update(warmup=-1), "load.warmup", ">= 0", id="negative-warmup"),
        pytest.param(
            lambda d: d["load"].update(capacity={"duration": 0}),
            "load.capacity.duration",
            "> 0",
            id="zero-capacity-duration",
        ),
        pytest.param(
            lambda d: d["load"].update(capacity={"warmup": -1}),
            "load.capacity.warmup",
            ">= 0",
            id="negative-capacity-warmup",
        ),
        pytest.param(_rates(0), "load.rates", "must be > 0", id="rate-0"),
        pytest.param(_rates(-100), "load.rates", "must be > 0", id="rate-negative"),
        pytest.param(_rates("0%"), "load.rates", "between 0%", id="rate-0pct"),
        pytest.param(
            _rates("-10%"), "load.rates", "neither a number nor a percentage", id="rate-negative-pct"
        ),
        pytest.param(_rates("250%"), "load.rates", "200%", id="rate-over-200pct"),
        pytest.param(_rates("abc"), "load.rates", "neither a number nor a percentage", id="rate-abc"),
        pytest.param(_rates("25%", "abc"), "load.rates", "'abc'", id="rate-abc-second"),
        pytest.param(_rates(True), "load.rates", "not a number", id="rate-yaml-yes"),
        pytest.param(_rates(None), "load.rates", "rate None", id="rate-empty-item"),
        pytest.param(_rates(), "load.rates", "at least one rate", id="no-rates"),
        pytest.param(_rates("50%", "50.0%"), "load.rates", "distinct", id="rates-duplicate"),
        pytest.param(_rates(1000, "1000"), "load.rates", "1000rps appears twice", id="rates-duplicate-abs"),
        pytest.param(
            lambda d: d["variants"][1].update(env={"gogc": "400"}),
            "variants.1.env",
            "'gogc'",
            id="env-lowercase",
        ),
        pytest.param(
            lambda d: d["variants"][1].update(env={"GO GC": "1"}), "variants.1.env", "'GO GC'", id="env-space"
        ),
        pytest.param(
            lambda d: d["variants"][1].update(env={"1GOGC": "1"}), "variants.1.env", "'1GOGC'", id="env-digit"
        ),
        pytest.param(
            lambda d: d["variants"][1].update(env={"A=B": "1"}), "variants.1.env", "'A=B'", id="env-equals"
        ),
        pytest.param(
            lambda d: d["placement"]["server"].update(cpus="0-3,a"),
            "placement.server.cpus",
            "pattern",
            id="cpus-letter",
        ),
        pytest.param(
            lambda d: d["placement"]["client"].update(cpus="0,,1"),
            "placement.client.cpus",
            "pattern",
            id="cpus-empty",
        ),
        pytest.param(
            lambda d: d["placement"]["client"].update(cpus="0-"),
            "placement.client.cpus",
            "pattern",
            id="cpus-open",
        ),
        pytest.param(
            lambda d: d["placement"]["server"].update(cpus="7-2"),
            "placement.server.cpus",
            "backwards",
            id="cpus-backwards",
        ),
        pytest.param(
            lambda d: d["placement"]["server"].update(numa_node=-1),
            "placement.server.numa_node",
            "",
            id="numa-negative",
        ),
        pytest.param(
            lambda d: d["claims"][1].update(rate="50%"),
            "claims.1.rate",
            "not one of the load rates",
            id="claim-rate",
        ),
        pytest.param(
            lambda d: d["quick"].update(variants=["java"]),
            "quick.variants",
            "unknown variants",
            id="quick-variant",
        ),
        pytest.param(
            lambda d: d["quick"]["load"].update(duration="0s"),
            "quick.load.duration",
            "> 0",
            id="quick-duration",
        ),
        pytest.param(
            lambda d: d["quick"]["load"].update(rates=["0%"]),
            "quick.load.rates",
            "between 0%",
            id="quick-rate",
        ),
        pytest.param(
            lambda d: d["quick"]["load"].update(speed=1),
            "quick.load.speed",
            "unknown key",
            id="quick-load-key",
        ),
        pytest.param(lambda d: d["quick"].update(repetitions=0), "quick.repetitions", "", id="quick-reps"),
        pytest.param(lambda d: d["quick"].update(fast=True), "quick.fast", "unknown key", id="quick-unknown"),
    ],
)
def test_malformed_specs_name_file_and_key(
    tmp_path: Path, mutate: Callable[[dict[str, Any]], Any], key: str, words: str
) -> None:
    err = refused(tmp_path, mutate)
    assert err.details["key"] == key, err.message
    assert f": {key}: " in err.message
    assert words in err.message


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("name: [unclosed\n", "not valid YAML"),
        ("- just\n- a list\n", "mapping"),
        ("", "mapping"),
    ],
)
def test_not_a_spec(tmp_path: Path, text: str, words: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(InputError, match=words) as info:
        load_experiment(path)
    assert info.value.details["file"] == str(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist") as info:
        load_experiment(tmp_path / "nope.yaml")
    assert info.value.details["file"] == str(tmp_path / "nope.yaml")


def test_the_shipped_spec_with_one_bad_key(tmp_path: Path) -> None:
    data = yaml.safe_load(FLAGSHIP.read_text())
    bad = copy.deepcopy(data)
    bad["load"]["capacity"]["duraton"] = "5s"
    path = write(tmp_path, bad, "gc.yaml")
    with pytest.raises(InputError) as info:
        load_experiment(path)
    assert info.value.details == {"file": str(path), "key": "load.capacity.duraton"}


# --- through the CLI: exit 2, file and key in the JSON, nothing started --------------------

BAD_CLI = [
    pytest.param(lambda d: d["load"].update(bogus=1), "load.bogus", False, id="unknown-key"),
    pytest.param(
        lambda d: d["claims"][0].update(expect="p99_ms[go] / p99_ms[zig] >= 2"),
        "claims.0.expect",
        True,
        id="claim-variant-quick",
    ),
    pytest.param(_rates("0%"), "load.rates", False, id="rate"),
]


@pytest.mark.parametrize(("mutate", "key", "quick"), BAD_CLI)
def test_cli_run_refuses_bad_spec_before_touching_anything(
    tmp_path: Path, mutate: Callable[[dict[str, Any]], Any], key: str, quick: bool
) -> None:
    data = base()
    mutate(data)
    spec = write(tmp_path, data, "bad.yaml")
    data_dir = tmp_path / "labctl-data"  # LABCTL_DATA_DIR (tests/conftest.py)
    t0 = time.monotonic()
    res = run_labctl(
        "run", str(spec), "-i", "inventories/local.yml", "--json", *(["--quick"] if quick else []), timeout=60
    )
    elapsed = time.monotonic() - t0
    assert res.code == 2, (res.stdout, res.stderr)
    doc = res.json
    assert doc["ok"] is False
    assert doc["kind"] == "InputError"
    assert doc["file"] == str(spec)
    assert doc["key"] == key
    assert str(spec) in doc["error"] and key in doc["error"]
    # Nothing started: no run directory, and no state at all (a deploy or a started process
    # would have been recorded in the data directory first).
    assert not (data_dir / "runs").exists()
    assert not data_dir.exists() or not any(data_dir.rglob("*")), sorted(data_dir.rglob("*"))
    # It is a schema check: a generous bound on a loaded machine, far below any deploy or run.
    assert elapsed < 10, elapsed
