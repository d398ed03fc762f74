"""The `depmon` command line (SPEC section 2).

Exit statuses: 0 success; 1 something is down (check), PagerDuty unreadable (maintenance) or
no such incident (postmortem); 2 invalid config, bad arguments or a port that cannot be bound.
A configuration error is printed as `FILE: key.path: message` lines, never as a traceback; a bad
argument as one line naming it (text with a control or bidirectional-format character is refused
here, for every command, before anything else is read).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import anyio

from monitor import __version__
from monitor.config import Config, ConfigError, ConfigIssue, default_config_path, load_config
from monitor.logs import Redactor, configure_logging
from monitor.store import StoreError
from monitor.text import checked_text, parse_host_port

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2
# `run --log-level`: the least severe event the daemon logs.
LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with help that says what each command does and exits with."""
    parser = argparse.ArgumentParser(
        prog="depmon",
        description="Watch the VA mobile app's external dependencies, map failures to app features, "
        "export Prometheus metrics and page through PagerDuty.",
        epilog="--config defaults to $DEPMON_CONFIG, else the bundled VA mobile configuration. "
        "PATH is one YAML file or a directory of *.yaml files.",
    )
    parser.add_argument("--version", action="version", version=f"depmon {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str, description: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=description)
        if name not in ("demo", "postmortem"):
            p.add_argument("--config", type=Path, metavar="PATH", help="config file or directory")
        return p

    run = add(
        "run",
        "run the daemon",
        "Run the daemon. SIGTERM/SIGINT stop it gracefully (the outbox is drained first); SIGHUP reloads "
        "the config, keeping the old one if the new one is invalid. Exit 0 on a clean stop, 2 on an "
        "invalid config or a port that cannot be bound.",
    )
    run.add_argument("--listen", metavar="HOST:PORT", help="address of the HTTP endpoints (default: monitor.listen)")
    run.add_argument("--state", metavar="PATH", help="SQLite state file (default: monitor.state_path)")
    run.add_argument("--log-format", choices=("json", "console"), help="default: json unless stdout is a terminal")
    run.add_argument("--log-level", choices=tuple(LOG_LEVELS), default="info", help="the least severe event logged")

    demo = sub.add_parser(
        "demo",
        help="run the daemon against a simulated VA environment",
        description="Start simulated upstreams and a simulated PagerDuty on 127.0.0.1, run the real daemon "
        "against them and play a scripted outage timeline. Exit 0 when the pages match the script.",
    )
    demo.add_argument("--duration", type=float, default=60.0, metavar="SECONDS", help="timeline length (default 60)")
    demo.add_argument(
        "--listen", metavar="HOST:PORT", default="127.0.0.1:0", help="daemon address (default: free port)"
    )

    bench = sub.add_parser(
        "bench",
        help="measure depmon (and blackbox_exporter) at N targets to size a deployment",
        description="Start a loopback target (nginx when installed), run the daemon against N HTTP targets "
        "and, when installed, prometheus-blackbox-exporter at the same rate; print probes run vs scheduled, "
        "CPU per probe, lag p99, peak RSS, /metrics time and the ratios. Exit 0.",
    )
    bench.add_argument("--targets", type=int, default=1000, metavar="N", help="HTTP targets (default 1000)")
    bench.add_argument("--interval", type=float, default=2.0, metavar="SECONDS", help="probe interval (default 2)")
    bench.add_argument("--seconds", type=float, default=30.0, metavar="S", help="measuring window (default 30)")
    bench.add_argument("--no-blackbox", action="store_true", help="measure depmon only")
    bench.add_argument("--json", action="store_true", help="machine-readable output")
    bench.add_argument(
        "--fail-after",
        type=float,
        metavar="S",
        help="the target answers 503 from S seconds into the window on: time to each page, lag meanwhile",
    )

    check = add(
        "check",
        "probe every dependency once and print the result",
        "Probe every dependency once (parents first) and print dependency, state, evidence and impacted "
        "features. Exit 0 when all are up, 1 when something is down or degraded, 2 on an invalid config.",
    )
    check.add_argument("--dependency", metavar="ID", action="append", help="only this dependency (repeatable)")
    check.add_argument("--json", action="store_true", help="machine-readable output")

    validate = add(
        "validate",
        "validate the configuration",
        "Validate the configuration; print every error as FILE: key.path: message. Exit 0 valid, 2 invalid.",
    )
    validate.add_argument(
        "--json",
        action="store_true",
        help='machine-readable output: {"config", "valid", "dependencies", "features", "issues": [{"file", '
        '"path", "message"}]} on stdout',
    )
    validate.add_argument(
        "--strict",
        action="store_true",
        help="also fail (exit 2) when a secret a deployment needs is empty: the PagerDuty routing key and "
        "API token, every OAuth client id and secret",
    )

    impact = add(
        "impact", "print the dependency to feature map", "Print which app features each dependency takes down."
    )
    impact.add_argument("--format", choices=("text", "json", "mermaid", "dot"), default="text")

    maintenance = add(
        "maintenance",
        "list, open or close PagerDuty maintenance windows",
        "Without an action: list open and upcoming PagerDuty maintenance windows per dependency and the "
        "features they cover (exit 1 when PagerDuty cannot be read). `open DEPENDENCY --for DURATION --message "
        '"TITLE|BODY"`: create a window on the dependency\'s PagerDuty service, described USER_MESSAGE:TITLE|BODY '
        "(what the app shows), and print its id, the features in maintenance and the app's downtime banners (or "
        "that there are none). `close WINDOW_ID`: end "
        "it now. open/close exit 1 when PagerDuty refuses, 2 on bad input (a control or bidirectional-format "
        "character in any text) or an empty pagerduty.from_email.",
    )
    maintenance.add_argument("action", nargs="?", choices=("open", "close"), help="open or close a window")
    maintenance.add_argument("target", nargs="?", metavar="DEPENDENCY|WINDOW_ID", help="what to open or close")
    maintenance.add_argument(
        "--for", dest="duration", metavar="DURATION", help="how long the window lasts (open; at most 90d)"
    )
    maintenance.add_argument("--message", metavar="TITLE|BODY", help="what the app shows Veterans (open)")
    maintenance.add_argument("--json", action="store_true", help="machine-readable list (without an action)")

    app_graph = add(
        "app-graph",
        "read vets-api's ServiceGraph and compare it with depmon's map",
        "The app's own map (vets-api's ServiceGraph, SPEC 11.1). `import FILE [--variant NAME]`: read vets-api's "
        "maintenance_windows_controller.rb and print the app_graph YAML block (base edges plus the variant's, by "
        "default the first defined); exit 2 with FILE:LINE: message when it has no edges or an entry that cannot "
        "be read. `diff [--vets-api FILE [--variant NAME]] [--app FILE] [--json]`: print the drift between depmon's "
        "feature graph, the configured app_graph, the controller file and the app's downtime services "
        "(va-mobile-app's Errors.ts); exit 0 no drift, 1 drift, 2 bad input or nothing to compare.",
    )
    app_graph.add_argument("action", choices=("import", "diff"), help="import a controller file, or diff")
    app_graph.add_argument("file", nargs="?", type=Path, metavar="FILE", help="the controller file (import)")
    app_graph.add_argument("--variant", metavar="NAME", help="the ServiceGraph variant (default: the first)")
    app_graph.add_argument("--vets-api", dest="vets_api", type=Path, metavar="FILE", help="a controller file (diff)")
    app_graph.add_argument("--app", type=Path, metavar="FILE", help="va-mobile-app's Errors.ts (diff)")
    app_graph.add_argument("--json", action="store_true", help="machine-readable output (diff)")

    silence = sub.add_parser(
        "silence",
        help="no page for a dependency for a while",
        description="Silence a dependency: no page for it until the silence ends; one still down then pages. "
        "The running daemon sees it within a second. Exit 2 for an unknown dependency or bad input: --for past "
        "90 days, a control or bidirectional-format character in any text, an --expire id past 64 bits.",
    )
    silence.add_argument("dependency", metavar="DEPENDENCY", nargs="?", help="the dependency id to silence")
    silence.add_argument("--for", dest="duration", metavar="DURATION", help="how long, e.g. 30m or 2h (at most 90d)")
    silence.add_argument("--reason", metavar="TEXT", help="why (shown on /status and in the incident timeline)")
    silence.add_argument("--list", dest="list_them", action="store_true", help="list the silences in force")
    silence.add_argument("--json", action="store_true", help="machine-readable list (with --list)")
    silence.add_argument("--expire", type=int, metavar="ID", help="end silence ID now")
    silence.add_argument("--state", metavar="PATH", help="SQLite state file (default: from the config)")
    silence.add_argument("--config", type=Path, metavar="PATH", help="config file or directory")

    page = add(
        "page",
        "print what an outage of a dependency would send now; nothing is sent",
        "Print, from the config alone, the PagerDuty event and the Slack posts an outage of DEPENDENCY would "
        "send now, as the pager builds them (no window, silence or earlier incident taken into account; the "
        'routing key shown as "<routing key>"). Nothing is sent. Exit 0, 2 for an unknown dependency.',
    )
    page.add_argument("dependency", metavar="DEPENDENCY", help="the dependency id whose outage to preview")
    page.add_argument("--json", action="store_true", help="machine-readable output")

    sub.add_parser(
        "schema",
        help="print the JSON Schema of the configuration",
        description="Print the JSON Schema (draft 2020-12) of the configuration, merged and substituted, as the "
        "models define it; config/depmon.schema.json is this output. Exit 0.",
    )

    postmortem = sub.add_parser(
        "postmortem",
        help="print a postmortem draft for an incident",
        description="Print a Markdown postmortem draft (VA template) for the latest, or the Nth, recorded "
        "incident of a dependency. Exit 1 when there is no such incident.",
    )
    postmortem.add_argument("dependency", metavar="DEPENDENCY")
    postmortem.add_argument("--incident", type=int, metavar="N", help="the Nth incident of that dependency (1 = first)")
    postmortem.add_argument("--state", metavar="PATH", help="SQLite state file (default: from the config)")
    postmortem.add_argument("--config", type=Path, metavar="PATH", help="config file or directory")
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Entry point of the `depmon` console script."""
    environ = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    command = args.command
    try:
        for argument, text in _text_arguments(args):
            checked_text(argument, text)
    except ValueError as exc:
        action = getattr(args, "action", None)  # `maintenance open`: said as the other refusals say it
        print(f"depmon {command}{f' {action}' if action else ''}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if command == "demo":
        from monitor.commands.demo import run_demo

        status: int = run_demo(duration=args.duration, listen=args.listen)
        return status
    if command == "bench":
        from monitor.commands.bench import run_bench

        return run_bench(
            args.targets, args.interval, args.seconds, not args.no_blackbox, args.json, fail_after=args.fail_after
        )

    if command == "app-graph" and args.action == "import":  # reads a vets-api file, not the config
        from monitor.commands.app_graph import run_import

        if args.file is None:
            print("depmon app-graph import: give the controller FILE", file=sys.stderr)
            return EXIT_USAGE
        return run_import(args.file, args.variant, sys.stdout, sys.stderr)
    if command == "schema":
        from monitor.commands.schema import render_schema

        sys.stdout.write(render_schema())
        return EXIT_OK

    config_path: Path = args.config or default_config_path(environ)
    try:
        config = load_config(config_path, environ)
    except ConfigError as exc:
        if command == "validate" and args.json:
            return _validation_json(config_path, None, exc.issues)
        return _refused(exc)
    # The one redactor of the process: built from the config, fed every secret learned later.
    redactor = Redactor(config.secret_values())

    if command == "validate":
        strict_issues: list[ConfigIssue] = []
        if args.strict:
            from monitor.commands.validate_strict import check_strict

            strict_issues = check_strict(config_path, config)
        if args.json:
            return _validation_json(config_path, config, strict_issues)
        for issue in strict_issues:
            print(issue, file=sys.stderr)
        if strict_issues:
            return EXIT_USAGE
        print(f"{config_path}: valid ({len(config.dependencies)} dependencies, {len(config.features)} features)")
        return EXIT_OK
    if command == "impact":
        from monitor.commands.impact_report import render_impact

        print(render_impact(config, args.format))
        return EXIT_OK
    if command == "run":
        json_logs = None if args.log_format is None else args.log_format == "json"
        configure_logging(sys.stdout, json=json_logs, redactor=redactor, level=LOG_LEVELS[args.log_level])
        return _run(config_path, config, args.listen, args.state, environ, redactor)

    configure_logging(sys.stderr, redactor=redactor, level=30)  # warnings only: the output is the report
    if command == "check":
        from monitor.commands.check import run_check

        return anyio.run(run_check, config, args.dependency, args.json, sys.stdout)
    if command == "maintenance" and args.action is not None and args.json:
        print(f"depmon maintenance {args.action}: --json: only for the list (no action)", file=sys.stderr)
        return EXIT_USAGE
    if command == "maintenance":
        from monitor.commands.maintenance import run_maintenance, run_maintenance_action
        from monitor.proxies import ProxyEnvironment

        try:
            proxies = ProxyEnvironment.from_environ(environ)
        except ConfigError as exc:
            return _refused(exc)
        if args.action is None:
            return anyio.run(run_maintenance, config, sys.stdout, proxies, args.json, sys.stderr)
        return anyio.run(
            run_maintenance_action,
            config,
            args.action,
            args.target,
            args.duration,
            args.message,
            sys.stdout,
            sys.stderr,
            proxies,
        )
    if command == "app-graph":
        from monitor.commands.app_graph import run_diff

        if args.file is not None:
            print("depmon app-graph diff: FILE goes with --vets-api FILE", file=sys.stderr)
            return EXIT_USAGE
        return run_diff(config, args.vets_api, args.variant, args.app, args.json, sys.stdout, sys.stderr)
    if command == "page":
        from monitor.commands.page import run_page

        return run_page(config, args.dependency, args.json, sys.stdout, sys.stderr)
    if command == "postmortem":
        from monitor.commands.postmortem import print_postmortem

        return print_postmortem(config, args.dependency, args.incident, args.state, sys.stdout)
    if command == "silence":
        from monitor.commands.silence import run_silence

        return run_silence(
            config,
            args.state,
            args.dependency,
            args.duration,
            args.reason,
            args.list_them,
            args.expire,
            sys.stdout,
            sys.stderr,
            as_json=args.json,
        )
    raise AssertionError(command)  # argparse admits only the commands above


def _validation_json(config_path: Path, config: Config | None, issues: Sequence[ConfigIssue]) -> int:
    """`validate --json`: one document on stdout, whatever the verdict; 0 valid, 2 invalid."""
    document = {
        "config": str(config_path),
        "valid": config is not None and not issues,
        "dependencies": None if config is None else len(config.dependencies),
        "features": None if config is None else len(config.features),
        "issues": [{"file": i.file, "path": i.path, "message": i.message} for i in issues],
    }
    json.dump(document, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
    return EXIT_OK if document["valid"] else EXIT_USAGE


def _refused(exc: ConfigError) -> int:
    """Print each issue of a configuration (or proxy variable) that cannot be used; the usage exit status."""
    for issue in exc.issues:
        print(issue, file=sys.stderr)
    return EXIT_USAGE


def _text_arguments(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(argument, text) of every free-text argument given: what the terminal, /status or a page shows back."""
    named = {"reason": "--reason", "message": "--message", "target": "DEPENDENCY|WINDOW_ID"}
    named["dependency"] = "--dependency" if args.command == "check" else "DEPENDENCY"
    found = []
    for dest, argument in named.items():
        value = getattr(args, dest, None)
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str):
                found.append((argument, text))
    return found


def _run(
    config_path: Path,
    config: Config,
    listen: str | None,
    state: str | None,
    environ: Mapping[str, str],
    redactor: Redactor,
) -> int:
    from monitor.daemon import Daemon, bind

    address = listen or config.monitor.listen
    try:
        host, port = parse_host_port(address)
    except ValueError as exc:
        print(f"--listen: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        listener = bind(host, port)
    except OSError as exc:
        print(f"cannot listen on {address}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        daemon = Daemon(config_path, config, state or config.monitor.state_path, environ, on_secrets=redactor.update)
    except ConfigError as exc:  # a proxy variable (HTTPS_PROXY, HTTP_PROXY) that cannot be used
        listener.close()
        return _refused(exc)
    try:
        anyio.run(daemon.run, listener, backend_options={"use_uvloop": True})
    except StoreError as exc:  # another daemon holds the state file, or it cannot be used
        print(f"depmon run: {redactor.scrub(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        listener.close()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
