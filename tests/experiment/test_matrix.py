"""Expanding a spec into cells: interleaved order, unique ids, rates resolved from the lowest capacity."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import pytest

from labctl.experiment.matrix import expand, resolve_rates
from labctl.experiment.spec import Experiment


def experiment(rates: list[Any], reps: int = 3, variants: tuple[str, ...] = ("a", "b", "c")) -> Experiment:
    return Experiment.model_validate(
        {
            "name": "m",
            "baseline": variants[0],
            "variants": [{"name": v, "lang": "go"} for v in variants],
            "load": {"rates": rates, "duration": 1},
            "repetitions": reps,
        }
    )


def test_interleaved_a_b_c_per_repetition() -> None:
    cells = expand(experiment(["25%", "75%"], reps=3))
    assert len(cells) == 3 * 2 * 3
    order = [(c.rep, c.rate_label, c.variant.name) for c in cells]
    expected = [(rep, rate, v) for rep in (1, 2, 3) for rate in ("25%", "75%") for v in ("a", "b", "c")]
    assert order == expected
    # Consecutive runs of a variant never happen: every variant is followed by the next one.
    names = [c.variant.name for c in cells]
    assert names[:6] == ["a", "b", "c", "a", "b", "c"]
    assert all(x != y for x, y in pairwise(names))
    # All repetitions of one (variant, rate) are spread over the run, not bunched together.
    reps_of_a25 = [i for i, c in enumerate(cells) if (c.variant.name, c.rate_label) == ("a", "25%")]
    assert reps_of_a25 == [0, 6, 12]


def test_cell_ids_unique_and_indexed() -> None:
    cells = expand(experiment(["10%", "12.5%", 1000, "1500"], reps=4))
    ids = [c.cell_id for c in cells]
    assert len(ids) == len(set(ids))
    assert [c.index for c in cells] == list(range(len(cells)))
    assert ids[0] == "000-a-10pct-r1"
    assert cells[4].cell_id == "004-b-12.5pct-r1"
    assert all("%" not in i and "/" not in i and " " not in i for i in ids)  # usable as directory names


def test_single_variant_single_rep() -> None:
    cells = expand(experiment([500], reps=1, variants=("solo",)))
    assert [(c.cell_id, c.rate_rps) for c in cells] == [("000-solo-500rps-r1", None)]


def test_relative_rates_come_from_the_lowest_capacity() -> None:
    exp = experiment(["25%", "50%", "75%"])
    caps = {"a": 29427.5, "b": 24908.0, "c": 14453.5}
    assert resolve_rates(exp, caps) == {"25%": 3613, "50%": 7227, "75%": 10840}
    # the lowest is the lowest whatever the order of variants
    assert resolve_rates(exp, {"c": 14453.5, "a": 29427.5}) == resolve_rates(exp, caps)


def test_absolute_rates_untouched() -> None:
    exp = experiment([2000, "1500", 0.5, "50%"])
    out = resolve_rates(exp, {"a": 10000.0, "b": 800.0})
    assert out == {"2000rps": 2000.0, "1500rps": 1500.0, "0.5rps": 0.5, "50%": 400}
    # Absolute only: no capacity needed.
    assert resolve_rates(experiment([2000, 3000]), {}) == {"2000rps": 2000.0, "3000rps": 3000.0}


def test_relative_rates_never_below_one_request_per_second() -> None:
    assert resolve_rates(experiment(["1%"]), {"a": 20.0}) == {"1%": 1.0}


def test_relative_rates_need_capacities() -> None:
    with pytest.raises(ValueError, match="capacities"):
        resolve_rates(experiment(["50%"]), {})
