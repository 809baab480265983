"""The self-contained HTML report of a run (``runs/<id>/report.html``, opens offline).

No scripts, no external resources: inline CSS and PNG figures as data URIs, so the
file can be mailed, archived and opened years later.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from labctl.analysis.samples import collect
from labctl.report import plots

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em} h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.88em} td,th{border:1px solid #ddd;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f4f4f4} td.num{text-align:right;font-variant-numeric:tabular-nums}
.supported{background:#e3f6e3} .refuted{background:#fbe3e3} .inconclusive{background:#fff6d6}
.muted{color:#777;font-size:.85em} figure{margin:1em 0} img{max-width:100%;border:1px solid #eee}
code{background:#f6f6f6;padding:0 .2em}
"""


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x))


def _fmt(x: Any, nd: int = 4) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:.{nd}g}"
    return _e(x)


def _table(headers: list[str], rows: list[list[str]], classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _verdicts(verdicts: list[dict[str, Any]]) -> str:
    if not verdicts:
        return "<p class='muted'>This experiment names no claims.</p>"
    rows, classes = [], []
    for v in verdicts:
        ci = v.get("ci")
        rows.append(
            [
                f"<b>{_e(v['claim'])}</b>",
                _e(v.get("statement")),
                f"<code>{_e(v.get('expect'))}</code>",
                _e(v.get("rate")),
                _fmt(v.get("value")) + (f" [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else ""),
                f"<b>{_e(v['verdict'])}</b>",
                _e(v.get("reason")),
            ]
        )
        classes.append(v["verdict"])
    return _table(
        ["claim", "statement", "expectation", "at rate", "value [95% CI]", "verdict", "reason"], rows, classes
    )


def _comparisons(rows: list[dict[str, Any]], baseline: str | None) -> str:
    if not rows:
        return "<p class='muted'>No variant to compare with the baseline.</p>"
    out = []
    for r in rows:
        ci = r.get("ci")
        out.append(
            [
                _e(r["rate"]),
                _e(r["metric"]),
                _e(r["variant"]),
                _fmt(r.get("ratio")),
                f"[{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else "—",
                _fmt(r.get("p_value"), 3),
                _e(f"{r.get('n_other')} vs {r.get('n_base')}"),
                _e(r.get("verdict")),
            ]
        )
    return (
        f"<p class='muted'>Ratio of medians of per-second percentiles, variant / {_e(baseline)}; "
        "95 % bootstrap interval; Mann-Whitney U p-value. Significant only when p &lt; 0.05 and the whole "
        "interval lies outside the noise band.</p>"
        + _table(["rate", "metric", "variant", "ratio", "95% CI", "p", "n (s)", "verdict"], out)
    )


def _cells(cells: list[dict[str, Any]]) -> str:
    rows = []
    for c in cells:
        s = c.get("summary") or {}
        srv = c.get("server") or {}
        rows.append(
            [
                _e(c["cell_id"]),
                _e(c["variant"]),
                _e(c["rate"]),
                _e(c["rep"]),
                _fmt(float(c.get("rate_rps") or 0), 5),
                _fmt(s.get("achieved_rps"), 5),
                *(_fmt(s.get(k)) for k in ("p50_us", "p99_us", "p999_us", "max_us", "uncorrected_p999_us")),
                _e(int(s.get("errors", 0)) + int(s.get("timeouts", 0)) if s else "—"),
                _fmt(srv.get("gc_cycles")),
                _fmt(srv.get("gc_pause_max_us")),
                _fmt(srv["rss_hwm_bytes"] / 2**20, 4) if srv.get("rss_hwm_bytes") else "—",
                _e(c.get("status"))
                + (" (saturated)" if c.get("saturated") else "")
                + (f": {_e(c.get('error'))}" if c.get("error") else ""),
            ]
        )
    return _table(
        [
            "cell",
            "variant",
            "rate",
            "rep",
            "requested rps",
            "achieved rps",
            "p50 µs",
            "p99 µs",
            "p99.9 µs",
            "max µs",
            "uncorrected p99.9 µs",
            "errors",
            "GC cycles",
            "GC max µs",
            "RSS MiB",
            "status",
        ],
        rows,
    )


def _host_context(manifest: dict[str, Any]) -> str:
    parts = []
    for name, f in (manifest.get("hosts") or {}).items():
        nodes = f.get("numa_nodes") or []
        rows = [
            ["CPU", _e(f.get("cpu_model"))],
            [
                "sockets × cores × threads",
                _e(f"{f.get('sockets')} × {f.get('cores_per_socket')} × {f.get('threads_per_core')}"),
            ],
            ["NUMA nodes", _e("; ".join(f"node {n['id']}: {len(n.get('cpus', []))} CPUs" for n in nodes))],
            ["kernel", _e(f.get("kernel"))],
            ["boot command line", f"<code>{_e(f.get('cmdline'))}</code>"],
            ["THP", _e(f.get("thp_enabled"))],
            ["governor", _e(f.get("governor") or "n/a (no cpufreq)")],
            ["io_uring_disabled", _e(f.get("io_uring_disabled"))],
        ]
        parts.append(f"<h3>{_e(name)}</h3>" + _table(["", ""], rows))
    tuning = manifest.get("tuning") or {}
    for name, t in tuning.items():
        knobs = (t or {}).get("knobs") or {}
        if not knobs:
            parts.append(f"<p class='muted'>{_e(name)}: not tuned by labctl.</p>")
            continue
        rows = [
            [
                _e(k),
                _e(v.get("original")),
                _e(v.get("wanted")),
                _e(v.get("current")),
                _e("yes" if v.get("available") else f"no: {v.get('reason')}"),
            ]
            for k, v in knobs.items()
        ]
        parts.append(
            f"<h3>tuning of {_e(name)}: {_e(', '.join((t or {}).get('profiles') or []))}</h3>"
            + _table(["knob", "original", "wanted", "at tune time", "available"], rows)
        )
    tools = manifest.get("toolchains") or {}
    parts.append(
        "<h3>build</h3>"
        + _table(
            ["", ""],
            [[_e(k), _e(v)] for k, v in tools.items()]
            + [
                [_e(f"sha256 {n}"), f"<code>{_e(d)}</code>"]
                for n, d in (manifest.get("artifacts") or {}).items()
            ],
        )
    )
    return "".join(parts)


def render_report(run_dir: Path, extra_sections: list[tuple[str, str]] | None = None) -> Path:
    """Write ``report.html`` for the run in ``run_dir`` and return its path."""
    run_dir = Path(run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    results = json.loads((run_dir / "results.json").read_text())
    groups = collect(run_dir, results)
    rates = results.get("rates") or sorted({r for _, r in groups})
    figs: list[tuple[str, str | None]] = []
    for rate in rates:
        figs.append((f"Latency percentiles at {rate}", plots.percentile_spectrum(groups, rate)))
    if rates:
        figs.append(
            (
                f"Latency over time at {rates[-1]}",
                plots.latency_over_time(run_dir, results.get("cells", []), rates[-1]),
            )
        )
    figs.append(("Throughput", plots.throughput(groups, rates)))
    figs.append(("GC pauses", plots.gc_pauses(groups)))
    figs.append(("Memory", plots.rss(groups)))
    fig_html = "".join(
        f"<figure><img alt='{_e(t)}' src='{uri}'><figcaption class='muted'>{_e(t)}</figcaption></figure>"
        for t, uri in figs
        if uri
    )
    spec = manifest.get("spec") or {}
    failed = [c for c in results.get("cells", []) if c.get("status") != "ok"]
    status = manifest.get("status")
    sections = [
        ("Verdicts", _verdicts(results.get("verdicts") or [])),
        *(extra_sections or []),
        (
            "Every variant against the baseline",
            _comparisons(results.get("comparisons") or [], results.get("baseline")),
        ),
        ("Plots", fig_html or "<p class='muted'>No data to plot.</p>"),
        ("Cells", _cells(results.get("cells", []))),
        ("Host context", _host_context(manifest)),
    ]
    head = (
        f"<h1>{_e(manifest['experiment'])} — run {_e(manifest['run_id'])}</h1>"
        f"<p>{_e(spec.get('description'))}</p>"
        f"<p class='muted'>status <b>{_e(status)}</b>{' (quick)' if manifest.get('quick') else ''} · "
        f"{_e(manifest.get('started_at'))} → {_e(manifest.get('ended_at'))} · git "
        f"{_e((manifest.get('git') or {}).get('commit'))}"
        f"{' (dirty)' if (manifest.get('git') or {}).get('dirty') else ''} · labctl "
        f"{_e(manifest.get('labctl_version'))}"
        + (f" · reproduces {_e(manifest.get('reproduces'))}" if manifest.get("reproduces") else "")
        + (f" · <b>{len(failed)} failed cell(s)</b>" if failed else "")
        + "</p>"
    )
    body = head + "".join(f"<h2>{_e(t)}</h2>{h}" for t, h in sections)
    doc = (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{_e(manifest['experiment'])} "
        f"{_e(manifest['run_id'])}</title><style>{CSS}</style></head><body>{body}</body></html>"
    )
    path = run_dir / "report.html"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(doc)
    tmp.replace(path)
    return path
