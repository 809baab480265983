"""``labctl`` entry point: global settings flags, lazy command loading, exit-code mapping."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import click

from labctl import __version__
from labctl.config import SPECS, load_settings
from labctl.errors import LabctlError, exit_code_for

# command name -> "module:attribute"; modules are imported only when the command runs,
# so `labctl --help` does not pay for numpy, matplotlib or ansible-runner.
COMMANDS: dict[str, tuple[str, str]] = {
    "doctor": ("labctl.cli.doctor", "Check that hosts are reachable and fit for experiments."),
    "sandbox": ("labctl.cli.sandbox", "Create or remove sandbox hosts (network namespaces + sshd)."),
    "provision": ("labctl.cli.hosts", "Install packages and toolchains; record host topology."),
    "hosts": ("labctl.cli.hosts", "Show the recorded facts (topology, kernel) of provisioned hosts."),
    "book": ("labctl.cli.booking", "Reserve hosts for a time window."),
    "bookings": ("labctl.cli.booking", "List bookings as a timeline."),
    "extend": ("labctl.cli.booking", "Extend one of your bookings."),
    "release": ("labctl.cli.booking", "Release a booking (--force for someone else's)."),
    "tune": ("labctl.cli.tuning", "Apply a tuning profile after recording every original value."),
    "teardown": ("labctl.cli.tuning", "Stop workloads, restore every tuned knob, remove deployed files."),
    "deploy": ("labctl.cli.experiments", "Build the workloads once and ship them to hosts."),
    "run": ("labctl.cli.experiments", "Run an experiment matrix and report verdicts."),
    "runs": ("labctl.cli.experiments", "List past runs."),
    "report": ("labctl.cli.experiments", "Statistics, verdicts and the HTML report of a run."),
    "compare": ("labctl.cli.experiments", "Compare variants of a run, or two runs."),
    "ship": ("labctl.cli.experiments", "Send a run's pending points to InfluxDB."),
    "up": ("labctl.cli.experiments", "provision -> tune -> deploy -> run -> report (--teardown to finish)."),
    "reproduce": ("labctl.cli.reproduce", "Re-run a past run from its manifest; say whether it holds."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module = importlib.import_module(COMMANDS[cmd_name][0])
        cmd = getattr(module, cmd_name.replace("-", "_") + "_cmd", None)
        return cmd if isinstance(cmd, click.Command) else None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(n, h) for n, (_, h) in COMMANDS.items()])


def _settings_options(f: Any) -> Any:
    for spec in reversed([s for s in SPECS if s.flag and not s.secret]):
        f = click.option(
            spec.option, spec.name, default=None, show_default=False, help=f"{spec.help} [env {spec.env}]"
        )(f)
    return f


@click.group(
    cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path),
    default=None,
    help="labctl.yaml to read settings from [env LABCTL_CONFIG].",
)
@click.option("--json", "json_out", is_flag=True, help="Print one JSON document on stdout.")
@_settings_options
@click.version_option(__version__, prog_name="labctl")
@click.pass_context
def cli(ctx: click.Context, config_file: Path | None, json_out: bool, **flags: Any) -> None:
    """labctl drives a shared performance lab:

    book -> provision -> tune -> deploy -> run -> report/compare -> teardown

    Settings come from flags, LABCTL_* environment variables, labctl.yaml, then defaults.
    Exit codes: 0 success, 1 failure on a host or in a run, 2 invalid input, 3 booking refused.
    """
    from labctl.cli.common import App

    ctx.ensure_object(dict)
    if json_out:
        ctx.obj["json"] = True
    cache: dict[str, App] = {}

    def make_app() -> App:
        # settings are resolved on first use so that --help never fails on a bad labctl.yaml
        if "app" not in cache:
            cache["app"] = App(
                settings=load_settings(flags, config_file), json_mode=bool(ctx.obj.get("json"))
            )
        return cache["app"]

    ctx.meta["labctl.app"] = make_app


def _wants_json(argv: list[str]) -> bool:
    return "--json" in argv


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; the only place that turns exceptions into messages and exit codes."""
    args = list(sys.argv[1:] if argv is None else argv)
    code: int
    try:
        rv = cli.main(args=args, prog_name="labctl", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.UsageError as exc:  # bad flag, missing argument, unknown command
        _report({"error": exc.format_message(), "kind": "UsageError"}, args, exc.format_message(), exc.ctx)
        code = 2
    except click.ClickException as exc:
        _report({"error": exc.format_message(), "kind": type(exc).__name__}, args, exc.format_message(), None)
        code = 2
    except (KeyboardInterrupt, click.Abort):
        _report({"error": "interrupted", "kind": "Interrupted"}, args, "interrupted", None)
        code = 130
    except LabctlError as exc:
        _report(exc.to_json(), args, exc.message, None)
        code = exit_code_for(exc)
    return code


def _report(doc: dict[str, Any], args: list[str], message: str, ctx: click.Context | None) -> None:
    if _wants_json(args):
        sys.stdout.write(json.dumps({"ok": False, **doc}, default=str) + "\n")
    if ctx is not None and doc.get("kind") == "UsageError":
        click.echo(ctx.get_usage(), err=True)
    click.echo(f"labctl: error: {message}", err=True)


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
