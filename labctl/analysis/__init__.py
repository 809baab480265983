"""Statistics, comparisons against the baseline, and claim verdicts for a run.

Inputs are the run directory alone (results.json cells + the raw interval logs and
server stderr), so a run can be re-analysed at any time. Methodology:
../docs/statistics.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from labctl.analysis.samples import VariantRate, collect
from labctl.analysis.stats import describe, ratio_of_medians, significance
from labctl.analysis.verdicts import evaluate_claims

COMPARED = (("p50_us", 50.0), ("p99_us", 99.0), ("p999_us", 99.9))


def _seed(run_id: str) -> int:
    # Deterministic per run: re-analysing gives the same intervals.
    return int.from_bytes(run_id.encode()[-8:].rjust(8, b"\0"), "little") % (2**32)


def variant_stats(vr: VariantRate, rng: np.random.Generator) -> dict[str, Any]:
    """Per-variant, per-rate figures: per-repetition descriptives and pooled percentiles with CIs."""
    reps = vr.cells
    out: dict[str, Any] = {
        "n_reps": len(reps),
        "n_seconds": vr.hist.n,
        "saturated": any(c.get("saturated") for c in reps),
        "per_rep": {
            k: describe([(c.get("summary") or {}).get(k) for c in reps])
            for k in ("p50_us", "p90_us", "p99_us", "p999_us", "max_us", "achieved_rps")
        },
        "errors": int(
            sum(
                int((c.get("summary") or {}).get("errors", 0))
                + int((c.get("summary") or {}).get("timeouts", 0))
                for c in reps
            )
        ),
        "requested_rps": float(np.mean([c.get("rate_rps") or 0 for c in reps])) if reps else None,
    }
    server = [c.get("server") or {} for c in reps]
    for key in ("rss_hwm_bytes", "gc_cycles", "gc_pause_max_us", "gc_pause_p99_us"):
        vals = [s[key] for s in server if key in s]
        if vals:
            out["per_rep"][key] = describe(vals)
    pooled: dict[str, Any] = {}
    for name, _q in (*COMPARED, ("max_us", 100.0)):
        est = vr.estimator(name.replace("_us", "_ms"))
        point, ci = est.point, est.ci(rng)
        pooled[name] = {
            "value": point * 1000 if point is not None else None,
            "ci": [x * 1000 for x in ci] if ci else None,
        }
    out["pooled"] = pooled
    out["seconds"] = {name: [float(x) for x in vr.hist.per_second(q)] for name, q in COMPARED}
    out["seconds"]["count"] = [float(x) for x in vr.hist.counts.sum(axis=1)] if vr.hist.n else []
    gc = vr.gc_pauses_us()
    if gc.size:
        out["gc"] = {
            "cycles_in_window": int(gc.size),
            "stw_us": describe(gc),
            "cycles_per_s": vr.gc_per_second(),
        }
    return out


def analyze(
    run_dir: Path, results: dict[str, Any], manifest: dict[str, Any], noise_threshold: float = 0.01
) -> dict[str, Any]:
    """Compute ``stats``, ``comparisons`` and ``verdicts`` for a run (added to results.json)."""
    rng = np.random.default_rng(_seed(str(results.get("run_id", ""))))
    groups = collect(run_dir, results)
    baseline = results.get("baseline") or manifest.get("spec", {}).get("baseline")
    stats: dict[str, dict[str, Any]] = {}
    for (variant, rate), vr in groups.items():
        stats.setdefault(variant, {})[rate] = variant_stats(vr, rng)
    comparisons = []
    rates = sorted({r for _, r in groups}, key=lambda r: _rate_order(results, r))
    for rate in rates:
        base = groups.get((baseline, rate))
        for (variant, r), vr in groups.items():
            if r != rate or variant == baseline or base is None:
                continue
            for name, q in COMPARED:
                res = ratio_of_medians(base.hist.per_second(q), vr.hist.per_second(q), rng)
                row = {"rate": rate, "metric": name, "baseline": baseline, "variant": variant, **res}
                if base.saturated or vr.saturated:
                    row["verdict"] = "not compared: saturated cell"
                else:
                    sig = significance(res, noise_threshold)
                    row["verdict"] = {"lower": f"{variant} lower", "higher": f"{variant} higher"}.get(
                        sig, sig
                    )
                comparisons.append(row)
    spec = manifest.get("spec") or {}
    verdicts = evaluate_claims(spec.get("claims") or [], groups, results, rates, rng)
    return {
        "stats": stats,
        "comparisons": comparisons,
        "verdicts": verdicts,
        "noise_threshold": noise_threshold,
        "rates": rates,
    }


def _rate_order(results: dict[str, Any], rate: str) -> float:
    for c in results.get("cells", []):
        if c.get("rate") == rate and c.get("rate_rps"):
            return float(c["rate_rps"])
    return 0.0


def compare_runs(a: dict[str, Any], b: dict[str, Any], noise_threshold: float = 0.01) -> dict[str, Any]:
    """Run b against run a, per variant and rate, from the per-second samples stored in results."""
    rng = np.random.default_rng(_seed(str(a.get("run_id", "")) + str(b.get("run_id", ""))))
    rows = []
    sa, sb = a.get("stats") or {}, b.get("stats") or {}
    for variant in sa:
        for rate in sa[variant]:
            if variant not in sb or rate not in sb[variant]:
                continue
            for name, _ in COMPARED:
                xa = sa[variant][rate].get("seconds", {}).get(name, [])
                xb = sb[variant][rate].get("seconds", {}).get(name, [])
                res = ratio_of_medians(np.array(xa), np.array(xb), rng)
                sig = significance(res, noise_threshold)
                rows.append(
                    {
                        "variant": variant,
                        "rate": rate,
                        "metric": name,
                        **res,
                        "verdict": {
                            "lower": "lower in the second run",
                            "higher": "higher in the second run",
                        }.get(sig, sig),
                    }
                )
    return {"run_id": a.get("run_id"), "other_run_id": b.get("run_id"), "rows": rows}
