"""`depmon maintenance open` and `depmon maintenance close` (SPEC 10.2): PagerDuty windows from the shell.

    depmon maintenance open DEPENDENCY --for DURATION --message "TITLE|BODY"
    depmon maintenance close WINDOW_ID

`open` creates a window on the dependency's `pagerduty_service` whose description is
`USER_MESSAGE:TITLE|BODY`, the form vets-api shows in the app, and prints its id, the features
depmon's graph puts in maintenance and the app services that show Veterans a downtime banner
(SPEC 11.1: vets-api's graph decides those; it says plainly when there are none); the running
daemon applies it at its next poll. `close` ends
an ongoing window now, or deletes one that has not started (PagerDuty's DELETE does both).

Exit statuses: 0 done; 1 PagerDuty refused or did not answer (its reason printed, secret-free);
2 bad input, an unknown dependency, one without a PagerDuty service, or an empty API token or
`pagerduty.from_email`. Nothing is retried: creating a window twice would leave two windows.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TextIO

from monitor.config import Config
from monitor.logs import Redactor
from monitor.maintenance.app_graph import app_banners
from monitor.maintenance.app_view import covered_features, covered_nodes
from monitor.paging.event_content import USER_MESSAGE_PREFIX, WINDOW_DESCRIPTION_LIMIT
from monitor.proxies import NO_PROXY_VARIABLES, ProxyEnvironment
from monitor.state.impact import features_covered, needs_from_config
from monitor.text import duration_argument, format_duration, utc

__all__ = ["run_maintenance", "run_maintenance_action"]

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2
_WINDOW_ID = re.compile(r"[A-Za-z0-9]{1,64}")


class _Usage(Exception):
    """Bad input: exit 2 with this message."""


async def run_maintenance_action(
    config: Config,
    action: str,
    target: str | None,
    duration: str | None,
    message: str | None,
    out: TextIO,
    err: TextIO,
    proxies: ProxyEnvironment = NO_PROXY_VARIABLES,
    clock: Callable[[], float] = time.time,
) -> int:
    """Carry out `depmon maintenance open|close`; returns the exit status.

    `proxies`: the command's proxy variables, followed unless `pagerduty.proxy` is set.
    """
    from monitor.errors import WindowWriteFailed
    from monitor.pagerduty.clients import MaintenanceClient

    redactor = Redactor(config.secret_values())
    try:
        pd = config.pagerduty
        if not pd.api_token.get_secret_value():
            raise _Usage("pagerduty.api_token is empty: set PAGERDUTY_API_TOKEN")
        if not pd.from_email:
            raise _Usage("pagerduty.from_email is empty: set PAGERDUTY_FROM_EMAIL (PagerDuty requires a From header)")
        if action == "open":
            service, seconds, description = _open_arguments(config, target, duration, message)
        elif target is None or not _WINDOW_ID.fullmatch(target):
            raise _Usage("give the WINDOW_ID to close (letters and digits, as `depmon maintenance` lists it)")
    except _Usage as exc:
        print(f"depmon maintenance {action}: {exc}", file=err)
        return EXIT_USAGE
    client = MaintenanceClient(pd.api_url, pd.api_token, link=proxies.link(pd.api_url, pd.proxy))
    try:
        if action == "open":
            assert target is not None
            start = datetime.fromtimestamp(clock(), UTC)
            end = datetime.fromtimestamp(clock() + seconds, UTC)
            window = await client.create_window(service, start, end, description, pd.from_email)
            _print_opened(config, target, service, window.id, window.end, seconds, out)
        else:
            assert target is not None
            await client.end_window(target, pd.from_email)
            print(f"maintenance window {target} ended", file=out)
    except WindowWriteFailed as exc:
        print(f"depmon maintenance {action}: PagerDuty refused: {redactor.scrub(exc.reason)}", file=err)
        return EXIT_REFUSED
    finally:
        client.close()
    return EXIT_OK


def _open_arguments(
    config: Config, dependency: str | None, duration: str | None, message: str | None
) -> tuple[str, float, str]:
    """(service id, seconds, description) of `open`, or `_Usage` saying what is wrong."""
    if dependency is None or duration is None or message is None:
        raise _Usage('give DEPENDENCY --for DURATION --message "TITLE|BODY"')
    if dependency not in config.dependencies:
        raise _Usage(f"unknown dependency {dependency!r} (known: {', '.join(sorted(config.dependencies))})")
    service = config.dependencies[dependency].pagerduty_service
    if not service:
        raise _Usage(f"{dependency} has no pagerduty_service in the config: PagerDuty has no window to open for it")
    try:
        seconds = duration_argument("--for", duration)
    except ValueError as exc:
        raise _Usage(str(exc)) from None
    title, bar, body = message.partition("|")
    if not bar or not title.strip() or not body.strip():
        raise _Usage('--message must be "TITLE|BODY" (the app shows the title, then the body)')
    description = USER_MESSAGE_PREFIX + message
    if len(description) > WINDOW_DESCRIPTION_LIMIT:
        room = WINDOW_DESCRIPTION_LIMIT - len(USER_MESSAGE_PREFIX)
        raise _Usage(f"--message is {len(message)} characters; vets-api shows at most {room}")
    return service, seconds, description


def _print_opened(
    config: Config, dependency: str, service: str, window_id: str, end: datetime, seconds: float, out: TextIO
) -> None:
    owners = config.service_owners().get(service, [dependency])
    features = features_covered(needs_from_config(config.features), set(owners))
    names = ", ".join(config.features[f].name for f in features) or "no feature"
    until = utc(end)
    print(f"maintenance window {window_id} opened on {service} for {format_duration(seconds)}, until {until}", file=out)
    print(f"depmon's feature graph puts in maintenance: {names}", file=out)
    print(banner_sentence(config, dependency), file=out)
    print(f"end it with `depmon maintenance close {window_id}`", file=out)


def banner_sentence(config: Config, dependency: str) -> str:
    """What Veterans see in the app once a window is open on `dependency` (SPEC 11.1), said plainly."""
    banners = app_banners(config, dependency)
    if banners:
        return f"the app shows a downtime banner on: {', '.join(banners)}"
    if config.app_graph is None:
        return "the app shows Veterans no downtime banner: no app service is below it in depmon's feature graph"
    names = config.dependencies[dependency].vets_api
    why = (
        "its vets_api names are not reviewed yet"
        if names is None
        else "vets-api's ServiceGraph has no node for it (vets_api: [])"
        if not names
        else f"no app service is below {', '.join(names)} in vets-api's ServiceGraph"
    )
    return f"the app shows Veterans NO downtime banner: {why}"


async def run_maintenance(
    config: Config,
    out: TextIO,
    proxies: ProxyEnvironment = NO_PROXY_VARIABLES,
    as_json: bool = False,
    err: TextIO | None = None,
) -> int:
    """Print open and upcoming windows per dependency; 1 when PagerDuty cannot be read (`proxies` as above).

    `as_json`: one document, `{"windows": [{"id", "start", "end", "open", "description",
    "services", "covers", "features"}], "bad_service_ids": [...]}`, windows by start; when
    PagerDuty cannot be read, stdout stays empty and the reason goes to `err`.
    """
    from monitor.errors import MaintenanceUnavailable
    from monitor.pagerduty.clients import MaintenanceClient

    trouble = err if as_json and err is not None else out
    pd = config.pagerduty
    if not pd.api_token.get_secret_value():
        print("no PagerDuty API token (pagerduty.api_token): maintenance windows cannot be read", file=trouble)
        return 1
    owners = config.service_owners()
    client = MaintenanceClient(pd.api_url, pd.api_token, link=proxies.link(pd.api_url, pd.proxy))
    try:
        result = await client.open_windows(list(owners))
    except MaintenanceUnavailable as exc:
        print(f"PagerDuty maintenance windows cannot be read: {exc}", file=trouble)
        return 1
    finally:
        client.close()
    needs = needs_from_config(config.features)
    now = datetime.now(UTC)
    windows = sorted(result.windows, key=lambda w: w.start)
    if as_json:
        document = {
            "windows": [
                {
                    "id": window.id,
                    "start": window.start.isoformat(),
                    "end": window.end.isoformat(),
                    "open": window.is_open_at(now),
                    "description": window.description,
                    "services": list(window.service_ids),
                    "covers": sorted(covered_nodes(window, owners)),
                    "features": covered_features(window, owners, needs),
                }
                for window in windows
            ],
            "bad_service_ids": list(result.bad_service_ids),
        }
        json.dump(document, out, indent=2, ensure_ascii=False)
        out.write("\n")
        return 0
    if not windows:
        print("no open or upcoming maintenance windows", file=out)
    for window in windows:
        nodes = sorted(covered_nodes(window, owners))
        when = "open now" if window.is_open_at(now) else "upcoming"
        features = covered_features(window, owners, needs)
        print(f"{window.start.isoformat()} .. {window.end.isoformat()}  [{when}]  {', '.join(nodes)}", file=out)
        print(f"    {window.description or '(no description)'}", file=out)
        print(f"    features: {', '.join(config.features[f].name for f in features) or '-'}", file=out)
    for bad in result.bad_service_ids:
        print(
            f"warning: PagerDuty refused service id {bad} ({', '.join(owners.get(bad, ['?']))}); "
            "check its pagerduty_service",
            file=out,
        )
    return 0
