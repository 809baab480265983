"""Expanding an experiment into cells, in interleaved order."""

from __future__ import annotations

from dataclasses import dataclass

from labctl.experiment.spec import Experiment, Variant, parse_rate, rate_label


@dataclass
class Cell:
    index: int
    variant: Variant
    rate_label: str
    rep: int
    rate_rps: float | None = None  # resolved once capacities are known

    @property
    def cell_id(self) -> str:
        return f"{self.index:03d}-{self.variant.name}-{self.rate_label.replace('%', 'pct')}-r{self.rep}"


def expand(exp: Experiment) -> list[Cell]:
    """Repetitions outermost, variants innermost: A B C A B C …, so drift hits every variant alike."""
    cells: list[Cell] = []
    for rep in range(1, exp.repetitions + 1):
        for rate in exp.load.rates:
            for v in exp.variants:
                cells.append(Cell(len(cells), v, rate_label(rate), rep))
    return cells


def resolve_rates(exp: Experiment, capacities: dict[str, float]) -> dict[str, float]:
    """Rate label → requests/s. Fractions are of the LOWEST capacity among the variants."""
    lowest = min(capacities.values()) if capacities else None
    out = {}
    for r in exp.load.rates:
        kind, v = parse_rate(r)
        if kind == "fraction":
            if not lowest:
                raise ValueError("relative rates need measured capacities")
            out[rate_label(r)] = max(1.0, round(v * lowest))
        else:
            out[rate_label(r)] = v
    return out
