"""Claim verdicts: supported / refuted / inconclusive, with the reason.

The claim's expression is evaluated on the point estimates and on every bootstrap
replicate. Metrics of one variant that resample the same measured seconds use one
and the same draw (replicate i of ``p999_ms[go]`` and of ``p50_ms[go]`` come from the
same resampled seconds); different variants are independent samples and are drawn
independently. Supported when the whole 95 %
interval lies on the claim's side of the threshold, refuted when it lies entirely on
the other side, inconclusive otherwise — or when a metric is missing or a cell the
claim needs was saturated.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from labctl.analysis.samples import VariantRate
from labctl.analysis.stats import B_DEFAULT, interval, resample_weights
from labctl.experiment.claims import Claim, MissingMetric, Node, Num, Ref, evaluate, parse_claim

# Metrics that measure queueing rather than the server once a cell is saturated.
LOAD_SENSITIVE = {"p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "achieved_rps"}


def _vec(node: Node, values: dict[tuple[str, str], np.ndarray]) -> np.ndarray:
    if isinstance(node, Num):
        return np.asarray(node.value)
    if isinstance(node, Ref):
        return values[(node.metric, node.variant)]
    left, right = _vec(node.left, values), _vec(node.right, values)
    with np.errstate(divide="ignore", invalid="ignore"):
        return {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide}[node.op](left, right)


def judge(claim: Claim, lo: float, hi: float) -> str:
    if claim.holds(lo) and claim.holds(hi):
        return "supported"
    if not claim.holds(lo) and not claim.holds(hi):
        return "refuted"
    return "inconclusive"


def evaluate_claims(
    claims: list[dict[str, Any]],
    groups: dict[tuple[str, str], VariantRate],
    results: dict[str, Any],
    rates: list[str],
    rng: np.random.Generator,
) -> list[dict[str, Any]]:
    out = []
    for spec in claims:
        claim = parse_claim(spec["expect"])
        rate = spec.get("rate") or (rates[-1] if rates else None)
        row: dict[str, Any] = {
            "claim": spec["id"],
            "statement": spec.get("statement", ""),
            "expect": spec["expect"],
            "rate": rate,
            "value": None,
            "ci": None,
            "inputs": {},
        }
        point: dict[tuple[str, str], float] = {}
        reps: dict[tuple[str, str], np.ndarray] = {}
        missing, saturated = [], []
        draws: dict[tuple[str, str, int], np.ndarray] = {}  # (variant, unit, n) → shared weights
        for ref in claim.refs():
            vr = groups.get((ref.variant, rate)) if rate else None
            if vr is None:
                missing.append(f"{ref.metric}[{ref.variant}]: no successful cell at {rate}")
                continue
            if vr.saturated and ref.metric in LOAD_SENSITIVE:
                saturated.append(ref.variant)
            est = vr.estimator(ref.metric)
            if est.point is None:
                missing.append(f"{ref.metric}[{ref.variant}]: {est.missing}")
                continue
            point[(ref.metric, ref.variant)] = est.point
            w = None
            if est.unit is not None and est.units >= 2:
                key = (ref.variant, est.unit, est.units)
                if key not in draws:
                    draws[key] = resample_weights(est.units, B_DEFAULT, rng)
                w = draws[key]
            r = est.replicates(rng, B_DEFAULT, w)
            assert r is not None
            reps[(ref.metric, ref.variant)] = r
            ci = interval(r)
            row["inputs"][f"{ref.metric}[{ref.variant}]"] = {"value": est.point, "ci": ci, "units": est.units}
        if missing:
            row.update(verdict="inconclusive", reason="missing: " + "; ".join(missing))
            out.append(row)
            continue
        try:
            value = evaluate(claim.expr, point)
        except MissingMetric as exc:  # pragma: no cover - guarded above
            row.update(verdict="inconclusive", reason=f"missing {exc}")
            out.append(row)
            continue
        ci = interval(_vec(claim.expr, reps))
        row["value"], row["ci"] = value, ci
        if ci is None:
            row.update(verdict="inconclusive", reason="the interval could not be computed")
        elif saturated:
            row.update(
                verdict="inconclusive",
                reason=f"saturated cell(s) for {', '.join(sorted(set(saturated)))} at {rate}: "
                "latency there measures queueing, not the claim",
            )
        else:
            verdict = judge(claim, ci[0], ci[1])
            side = {
                "supported": "entirely satisfies",
                "refuted": "entirely fails",
                "inconclusive": "straddles",
            }[verdict]
            thin = min((v["units"] for v in row["inputs"].values()), default=0)
            note = " (single sample: the interval is only the point)" if thin < 2 else ""
            row.update(
                verdict=verdict,
                reason=f"95% CI [{ci[0]:.4g}, {ci[1]:.4g}] {side} {claim.cmp} {claim.threshold:g} "
                f"at {rate}{note}",
            )
        out.append(row)
    return out
