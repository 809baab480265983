"""`labctl run`: the experiment matrix, cell by cell, with every point spooled first.

Per cell: start the server (pinned per placement), wait for its readiness line, start
the host sampler, run the open-loop load generator, stop the server (SIGTERM → its
self-metrics line), fetch the raw files, turn them into points (spooled, then shipped
in the background). A failed cell is recorded with its error and the run goes on;
Ctrl-C stops the remote processes and leaves the run marked interrupted.
"""

from __future__ import annotations

import contextlib
import json
import platform
import shlex
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labctl import __version__
from labctl.config import Settings
from labctl.errors import InputError, RunFailed
from labctl.experiment.matrix import Cell, expand, resolve_rates
from labctl.experiment.procs import SAMPLER_SCRIPT, ProcessTracker, parse_samples, pin_prefix
from labctl.experiment.runstore import RunStore, write_manifest, write_results
from labctl.experiment.spec import Experiment, Role, Variant
from labctl.gitinfo import revision
from labctl.inventory import Host, Inventory
from labctl.paths import project_root
from labctl.remote import RemoteProcess, Runner, runner_for
from labctl.state import StateStore
from labctl.workloads.build import Artifact, toolchain_versions

Log = Callable[[str], None]


@dataclass
class Placed:
    host: Host
    role: Role
    runner: Runner
    tracker: ProcessTracker
    workdir: str


@dataclass
class RunOutcome:
    run_id: str
    run_dir: Path
    status: str  # completed | interrupted | failed
    cells: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def choose_host(hosts: list[Host], role: Role, kind: str) -> Host:
    """The placement's host: named, else one whose labctl_role fits, else the first."""
    names = {h.name: h for h in hosts}
    if role.host:
        if role.host not in names:
            raise InputError(
                f"placement {kind}.host {role.host!r} is not among the targeted hosts ({', '.join(names)})",
                key=f"placement.{kind}.host",
            )
        return names[role.host]
    for h in hosts:
        if h.vars.get("labctl_role") in (kind, "both"):
            return h
    return hosts[0]


def collect_facts(runner: Runner) -> dict[str, Any]:
    """Host facts via the same code the provision role runs (no Ansible needed)."""
    src = (project_root() / "roles/host_facts/library/labctl_facts.py").read_text()
    code = (
        src.replace('if __name__ == "__main__":\n    main()', "")
        + "\nimport json\nprint(json.dumps(gather()))\n"
    )
    res = runner.run(["python3", "-c", code], timeout=60)
    if res.rc != 0:
        return {"error": f"facts unavailable: {res.stderr.strip()[-200:]}"}
    try:
        return dict(json.loads(res.stdout))
    except json.JSONDecodeError:
        return {"error": "facts unavailable: unreadable output"}


def last_json_line(text: str) -> dict[str, Any] | None:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return dict(json.loads(line))
            except json.JSONDecodeError:
                return None
    return None


class ExperimentRun:
    """One execution of an experiment; create, then call :meth:`execute`."""

    def __init__(
        self,
        settings: Settings,
        exp: Experiment,
        inv: Inventory,
        hosts: list[Host],
        artifacts: dict[str, Artifact],
        *,
        spec_file: Path,
        quick: bool,
        log: Log,
        reproduces: str | None = None,
        extra_manifest: dict[str, Any] | None = None,
    ) -> None:
        self.settings, self.exp, self.inv, self.hosts = settings, exp, inv, hosts
        self.artifacts, self.spec_file, self.quick, self.log = artifacts, spec_file, quick, log
        self.reproduces = reproduces
        self.extra_manifest = extra_manifest or {}
        self.store = StateStore(settings.data_dir)
        self.runs = RunStore(settings.data_dir)
        self.run_id, self.run_dir = self.runs.create(exp.name)
        self.cells_out: list[dict[str, Any]] = []
        self.capacity: dict[str, Any] = {}
        self.warnings: list[str] = []
        self.manifest: dict[str, Any] = {}
        self._shipper: Any = None

    # ----- set-up -------------------------------------------------------------------
    def _place(self, kind: str, role: Role) -> Placed:
        host = choose_host(self.hosts, role, kind)
        runner = runner_for(host)
        root = (self.store.get(host.name).get("deployed") or {}).get("root")
        if not root:
            raise RunFailed(f"nothing deployed on {host.name}: run `labctl deploy` first")
        workdir = f"{root}/runs/{self.run_id}"
        res = runner.run(["mkdir", "-p", workdir], timeout=30)
        if res.rc != 0:
            raise RunFailed(f"{host.name}: cannot create {workdir}: {res.stderr.strip()}")
        return Placed(host, role, runner, ProcessTracker(self.store, host.name, runner, self.run_id), workdir)

    def _bin(self, placed: Placed, name: str) -> str:
        doc = self.store.get(placed.host.name).get("deployed") or {}
        entry = (doc.get("artifacts") or {}).get(name)
        if not entry or entry.get("sha256") != self.artifacts[name].sha256:
            raise RunFailed(f"{name} on {placed.host.name} is not the artifact this run uses; redeploy")
        return str(entry["path"])

    def _write_manifest(self, status: str, **extra: Any) -> None:
        self.manifest.update({"status": status, **extra})
        write_manifest(self.run_dir, self.manifest)

    def _start_metrics(self) -> None:
        from labctl.metrics.ship import BackgroundShipper

        # Appends go to the run's spool synchronously; the thread ships in the background.
        self._shipper = BackgroundShipper(self.run_dir, self.settings).start()
        if self._shipper.target is None:
            self.warnings.append(
                "no InfluxDB configured (LABCTL_INFLUX_URL): points stay in the spool; "
                "`labctl ship RUN` sends them later"
            )

    # ----- the run ------------------------------------------------------------------
    def execute(self) -> RunOutcome:
        """Run the whole matrix; always leaves manifest.json and results.json behind."""
        self.log(f"run {self.run_id} → {self.run_dir}")
        server = self._place("server", self.exp.placement.server)
        client = (
            server
            if choose_host(self.hosts, self.exp.placement.client, "client").name == server.host.name
            else self._place("client", self.exp.placement.client)
        )
        same_host = client.host.name == server.host.name
        self.manifest = self._initial_manifest(server, client)
        self._write_manifest("running")
        self._start_metrics()
        status = "completed"
        interrupted = threading.Event()
        try:
            with _sigterm_as_interrupt():
                rates = self._rates(server, client, same_host)
                self.manifest["rates_rps"] = rates
                self._write_manifest("running")
                cells = expand(self.exp)
                for cell in cells:
                    cell.rate_rps = rates[cell.rate_label]
                for n, cell in enumerate(cells, 1):
                    self.log(
                        f"[{n}/{len(cells)}] {cell.variant.name} @ {cell.rate_label} "
                        f"({cell.rate_rps:.0f} rps) rep {cell.rep}"
                    )
                    self.cells_out.append(self._run_cell(cell, server, client, same_host))
                    self._save_results()
        except KeyboardInterrupt:
            interrupted.set()
            status = "interrupted"
            self.log("interrupted: stopping remote processes; keeping what was collected")
        except Exception as exc:  # record, then re-raise after the run dir is consistent
            status = "failed"
            self.warnings.append(f"run failed: {exc}")
            self._finish(status, server, client)
            raise
        finally:
            server.tracker.stop_all()
            client.tracker.stop_all()
        self._finish(status, server, client)
        return RunOutcome(self.run_id, self.run_dir, status, self.cells_out, self.warnings)

    def _finish(self, status: str, server: Placed, client: Placed) -> None:
        for placed in {id(server): server, id(client): client}.values():
            # Best effort: the directory is under labctl's root, which teardown removes anyway.
            with contextlib.suppress(Exception):
                placed.runner.run(["rm", "-rf", placed.workdir], timeout=60)
        self._save_results()
        if self._shipper is not None:
            self._shipper.close(final_timeout=30)
        self._write_manifest(status, ended_at=_now())

    def _save_results(self) -> None:
        write_results(
            self.run_dir,
            {
                "run_id": self.run_id,
                "experiment": self.exp.name,
                "baseline": self.exp.baseline,
                "capacity": self.capacity,
                "cells": self.cells_out,
            },
        )

    def _initial_manifest(self, server: Placed, client: Placed) -> dict[str, Any]:
        from labctl.tuning.snapshot import snapshot_for_manifest

        root = project_root()
        hosts = {p.host.name: p for p in (server, client)}
        facts = {}
        for name, p in hosts.items():
            stored = self.store.facts(name)
            facts[name] = stored if stored else collect_facts(p.runner)
        index = (
            json.loads((Path(self.settings.data_dir) / "artifacts/index.json").read_text())
            if (Path(self.settings.data_dir) / "artifacts/index.json").is_file()
            else {}
        )
        build = {}
        for name, a in self.artifacts.items():
            entry: dict[str, Any] = next((e for e in index.get(name, []) if e["sha256"] == a.sha256), {})
            build[name] = {
                "sha256": a.sha256,
                "source_rev": entry.get("source_rev"),
                "toolchains": entry.get("toolchains"),
                "flags": entry.get("flags"),
            }
        manifest = {
            "run_id": self.run_id,
            "experiment": self.exp.name,
            "spec": self.exp.model_dump(mode="json"),
            "spec_file": str(self.spec_file),
            "quick": self.quick,
            "git": revision(root),
            "artifacts": {n: a.sha256 for n, a in self.artifacts.items()},
            "build": build,
            "toolchains": toolchain_versions(),
            "controller": {"hostname": platform.node(), "python": platform.python_version()},
            "hosts": facts,
            "placement": {
                "server": {**server.role.model_dump(), "host": server.host.name},
                "client": {**client.role.model_dump(), "host": client.host.name},
            },
            "tuning": {name: snapshot_for_manifest(self.settings, name) for name in hosts},
            "labctl_version": __version__,
            "settings": {k: v for k, v in self.settings.public().items() if not k.startswith("test_")},
            "started_at": _now(),
            **self.extra_manifest,
        }
        if self.reproduces:
            manifest["reproduces"] = self.reproduces
        return manifest

    def _rates(self, server: Placed, client: Placed, same_host: bool) -> dict[str, float]:
        if not self.exp.load.relative:
            return resolve_rates(self.exp, {})
        for v in self.exp.variants:
            self.log(f"capacity of {v.name} (closed loop, {self.exp.load.capacity.duration:g}s)")
            res = self._capacity(v, server, client, same_host)
            self.capacity[v.name] = res
        caps = {n: c["achieved_rps"] for n, c in self.capacity.items() if c.get("achieved_rps")}
        if not caps:
            raise RunFailed(
                "no variant's capacity could be measured: "
                + "; ".join(f"{n}: {c.get('error')}" for n, c in self.capacity.items())
            )
        missing = [n for n in self.capacity if n not in caps]
        if missing:
            self.warnings.append(f"capacity unknown for {', '.join(missing)}; rates use the others'")
        rates = resolve_rates(self.exp, caps)
        lowest = min(caps, key=lambda n: caps[n])
        self.log(
            "capacities: "
            + ", ".join(f"{n} {c:.0f} rps" for n, c in caps.items())
            + f"; rates from {lowest}'s: "
            + ", ".join(f"{k}={v:.0f}" for k, v in rates.items())
        )
        return rates

    # ----- processes ----------------------------------------------------------------
    def _server_argv(self, v: Variant, server: Placed, port: int, same_host: bool) -> list[str]:
        p = self.exp.params
        listen = "127.0.0.1" if same_host else "0.0.0.0"  # noqa: S104 - lab network, other host's client
        argv = [
            *pin_prefix(server.role.numa_node, server.role.cpus),
            self._bin(server, f"riskd-{v.lang}"),
            "--listen",
            f"{listen}:{port}",
            "--accounts",
            str(p.accounts),
            "--window",
            str(p.window),
            "--merchants",
            str(p.merchants),
            "--rules",
            str(p.rules),
            "--seed",
            str(p.seed),
        ]
        if p.workers:
            argv += ["--workers", str(p.workers)]
        return argv + list(v.flags)

    @staticmethod
    def _server_env(v: Variant) -> dict[str, str]:
        env = dict(v.env)
        if v.lang == "go":
            godebug = [x for x in env.get("GODEBUG", "").split(",") if x]
            if not any(x.startswith("gctrace=") for x in godebug):
                godebug.append("gctrace=1")  # one line per GC on stderr: the pause time series
            env["GODEBUG"] = ",".join(godebug)
        return env

    def _free_port(self, placed: Placed) -> int:
        res = placed.runner.run(
            ["python3", "-c", "import socket; s=socket.socket(); s.bind(('', 0)); print(s.getsockname()[1])"],
            timeout=30,
        )
        if res.rc != 0:
            raise RunFailed(f"{placed.host.name}: cannot find a free port: {res.stderr.strip()}")
        return int(res.stdout.strip())

    @contextmanager
    def _server(
        self, v: Variant, server: Placed, same_host: bool, wd: str
    ) -> Iterator[tuple[RemoteProcess, int, dict[str, Any]]]:
        port = self._free_port(server)
        info: dict[str, Any] = {"start_ns": time.time_ns()}
        argv = self._server_argv(v, server, port, same_host)
        info["argv"] = shlex.join(argv)
        proc = server.tracker.start(
            argv,
            self._server_env(v),
            f"{wd}/server.out",
            f"{wd}/server.err",
            program=self._bin(server, f"riskd-{v.lang}"),
        )
        try:
            info["ready_line"] = server.runner.wait_for_line(proc, r"^READY ", timeout=180)
            info["ready_ns"] = time.time_ns()
            yield proc, port, info
        finally:
            rc = server.tracker.stop(proc)
            info["exit_code"] = rc

    def _loadgen(
        self,
        client: Placed,
        target: str,
        wd: str,
        rate: float | None,
        duration: float,
        warmup: float,
        connections: int,
        seed: int,
    ) -> dict[str, Any]:
        p = self.exp.params
        argv = [
            *pin_prefix(client.role.numa_node, client.role.cpus),
            self._bin(client, "loadgen"),
            "--target",
            target,
            "--duration",
            f"{duration:g}",
            "--warmup",
            f"{warmup:g}",
            "--connections",
            str(connections),
            "--timeout-ms",
            str(self.exp.load.timeout_ms),
            "--summary-json",
            f"{wd}/loadgen.json",
            "--hist-log",
            f"{wd}/loadgen.hlog",
            "--hist-log-uncorrected",
            f"{wd}/loadgen-uncorrected.hlog",
            "--accounts",
            str(p.accounts),
            "--merchants",
            str(p.merchants),
            "--seed",
            str(seed),
        ]
        argv += ["--max"] if rate is None else ["--rate", f"{rate:g}"]
        proc = client.tracker.start(
            argv, {}, f"{wd}/loadgen.out", f"{wd}/loadgen.err", program=self._bin(client, "loadgen")
        )
        rc = client.tracker.wait(proc, duration + warmup + 60)
        if rc is None:
            client.tracker.stop(proc)
            raise RunFailed("load generator did not finish in time")
        if rc != 0:
            err = client.runner.read_text(f"{wd}/loadgen.err")
            raise RunFailed(f"load generator exited {rc}: {err.strip()[-300:]}")
        return dict(json.loads(client.runner.read_text(f"{wd}/loadgen.json")))

    def _capacity(self, v: Variant, server: Placed, client: Placed, same_host: bool) -> dict[str, Any]:
        cap = self.exp.load.capacity
        wd = f"{server.workdir}/capacity-{v.name}"
        local = self.run_dir / "capacity" / v.name
        local.mkdir(parents=True, exist_ok=True)
        for placed in {server.host.name: server, client.host.name: client}.values():
            placed.runner.run(["mkdir", "-p", wd], timeout=30)
        try:
            with self._server(v, server, same_host, wd) as (_proc, port, _info):
                target = f"{'127.0.0.1' if same_host else server.host.address}:{port}"
                summary = self._loadgen(
                    client, target, wd, None, cap.duration, cap.warmup, cap.connections, 1
                )
            (local / "loadgen.json").write_text(json.dumps(summary, indent=1))
            return {
                "achieved_rps": summary.get("achieved_rps"),
                "errors": summary.get("errors"),
                "timeouts": summary.get("timeouts"),
            }
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            return {"error": str(exc)}

    def _run_cell(self, cell: Cell, server: Placed, client: Placed, same_host: bool) -> dict[str, Any]:
        v = cell.variant
        out: dict[str, Any] = {
            "cell_id": cell.cell_id,
            "index": cell.index,
            "variant": v.name,
            "lang": v.lang,
            "rate": cell.rate_label,
            "rate_rps": cell.rate_rps,
            "rep": cell.rep,
            "server_host": server.host.name,
            "client_host": client.host.name,
            "started_at": _now(),
        }
        wd = f"{server.workdir}/{cell.cell_id}"
        cwd = f"{client.workdir}/{cell.cell_id}"
        local = self.run_dir / "cells" / cell.cell_id
        local.mkdir(parents=True, exist_ok=True)
        load = self.exp.load
        sampler: RemoteProcess | None = None
        try:
            server.runner.run(["mkdir", "-p", wd], timeout=30)
            if cwd != wd:
                client.runner.run(["mkdir", "-p", cwd], timeout=30)
            with self._server(v, server, same_host, wd) as (_proc, port, info):
                out["server_argv"] = info["argv"]
                sampler = server.tracker.start(
                    [
                        "sh",
                        "-c",
                        SAMPLER_SCRIPT,
                        "labctl-sampler",
                        str(int(load.warmup + load.duration + 90)),
                    ],
                    {},
                    f"{wd}/host.samples",
                    f"{wd}/sampler.err",
                )
                target = f"{'127.0.0.1' if same_host else server.host.address}:{port}"
                summary = self._loadgen(
                    client,
                    target,
                    cwd,
                    cell.rate_rps,
                    load.duration,
                    load.warmup,
                    load.connections,
                    cell.index + 1,
                )
                server.tracker.stop(sampler)
                sampler = None
            out["server_exit_code"] = info.get("exit_code")
            out["summary"] = summary
            requested = float(summary.get("requested_rps") or cell.rate_rps or 0)
            out["saturated"] = bool(requested and summary.get("achieved_rps", 0) < 0.99 * requested)
            self._fetch(server, wd, local, ["server.out", "server.err", "host.samples"])
            self._fetch(
                client,
                cwd,
                local,
                ["loadgen.json", "loadgen.hlog", "loadgen-uncorrected.hlog", "loadgen.err"],
            )
            out["server"] = last_json_line((local / "server.out").read_text()) or {}
            if not out["server"]:
                out["server_error"] = "the server printed no self-metrics line"
            out["status"] = "ok"
            out["ended_at"] = _now()
            out["server_start_ns"] = info["start_ns"]
            self._spool_cell(out, local)
        except KeyboardInterrupt:
            out.update(status="interrupted", ended_at=_now())
            raise
        except Exception as exc:
            out.update(status="failed", error=str(exc), ended_at=_now())
            (local / "error.txt").write_text(traceback.format_exc())
            self.log(f"  cell failed: {exc}")
        finally:
            if sampler is not None:
                server.tracker.stop(sampler)
        return out

    def _fetch(self, placed: Placed, remote_dir: str, local: Path, names: list[str]) -> None:
        for name in names:
            try:
                placed.runner.get(f"{remote_dir}/{name}", str(local / name))
            except Exception as exc:
                (local / f"{name}.missing").write_text(str(exc))

    # ----- metrics ------------------------------------------------------------------
    def _tags(self, out: dict[str, Any], host: str) -> dict[str, str]:
        return {
            "run_id": self.run_id,
            "experiment": self.exp.name,
            "variant": out["variant"],
            "lang": out["lang"],
            "host": host,
            "rate": rate_tag(out["rate"]),
            "rep": str(out["rep"]),
        }

    def _spool_cell(self, out: dict[str, Any], local: Path) -> None:
        from labctl.metrics import schema

        tags = self._tags(out, out["server_host"])
        lines: list[str] = []
        # The cell point's timestamp comes from the data (end of the last interval), so
        # rebuilding the points later overwrites rather than duplicates.
        cell_time_ns = time.time_ns()
        for name, kind in (("loadgen.hlog", "corrected"), ("loadgen-uncorrected.hlog", "uncorrected")):
            path = local / name
            if path.is_file():
                intervals = schema.read_hlog(path)
                if intervals and kind == "corrected":
                    cell_time_ns = intervals[-1].end_ns
                lines += schema.to_lines(schema.latency_interval_points(tags, intervals, kind))
        lines += schema.to_lines(
            [
                schema.cell_summary_point(
                    tags,
                    {**out["summary"], "saturated": out["saturated"]},
                    out.get("server") or {},
                    cell_time_ns,
                )
            ]
        )
        err = local / "server.err"
        if out["lang"] == "go" and err.is_file():
            events = schema.parse_gctrace(err.read_text(errors="replace"), out["server_start_ns"])
            out["gc_events"] = len(events)
            lines += schema.to_lines(schema.gc_pause_points(tags, events))
        samples_file = local / "host.samples"
        if samples_file.is_file():
            samples = parse_samples(samples_file.read_text())
            out["host_samples"] = len(samples)
            lines += schema.to_lines(schema.host_sample_points(tags, samples))
        self._shipper.append(lines)
        out["points"] = len(lines)


def rate_tag(label: str) -> str:
    """A rate label as an InfluxDB tag value: '25%' → '25pct', '2000rps' stays."""
    return label.replace("%", "pct")


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C: stop remote processes, keep what was collected."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
