"""The app's view of maintenance windows: `GET /maintenance_windows` as vets-api's mobile endpoint serves them
(SPEC 10.7), and the features `depmon maintenance` lists for a window."""

from __future__ import annotations

import io
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
from starlette.testclient import TestClient

from monitor.commands.maintenance import run_maintenance
from monitor.config import Config, bundled_config_path, load_config
from monitor.maintenance.app_view import app_maintenance_windows
from monitor.maintenance.records import MaintenanceWindow
from monitor.metrics import Metrics
from monitor.pagerduty import clients as pagerduty
from monitor.paging.decisions import OpenIncident
from monitor.state.live import Engine
from monitor.state.self_watch import SelfState
from monitor.web.server import create_app
from tests.helpers import bundled_config

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
VETS_API_NAMESPACE = uuid.UUID("fa1a248e-0f71-4077-8d25-ed7430bcdb34")
EVSS, SSOE, IDME, MHV = "PZKWB6Y", "P0J60YD", "PVWB4R8", "PP2ZZ2V"
EVSS_FEATURES = ["claims", "letters_and_documents", "direct_deposit_benefits", "disability_rating"]
# the bundled features the app knows, in config order: all but authentication, its credentials and push
APP_KNOWN = [
    "claims",
    "letters_and_documents",
    "direct_deposit_benefits",
    "disability_rating",
    "appeals",
    "user_profile_update",
    "secure_messaging",
    "appointments",
    "immunizations",
]


@pytest.fixture(scope="module")
def config() -> Config:
    """The bundled config without its `app_graph`: depmon's own view of SPEC 10.7 (test_app_graph.py has 11.1's)."""
    return bundled_config().model_copy(update={"app_graph": None})


def window(
    service: str,
    start: timedelta = timedelta(hours=-1),
    length: timedelta = timedelta(hours=3),
    description: str = "",
    window_id: str = "PW1",
) -> MaintenanceWindow:
    return MaintenanceWindow(window_id, NOW + start, NOW + start + length, description, (service,))


def served(config: Config, *windows: MaintenanceWindow, camel: bool = False) -> list[dict[str, Any]]:
    return app_maintenance_windows(config, list(windows), NOW.timestamp(), camel=camel)


def services(records: list[dict[str, Any]]) -> list[str]:
    return [record["attributes"]["service"] for record in records]


class TestShape:
    def test_an_evss_window_is_one_vets_api_record_per_feature(self, config: Config) -> None:
        """An open EVSS window gives exactly vets-api's record for each of EVSS's four features."""
        records = served(config, window(EVSS, description="USER_MESSAGE:EVSS upgrade|Claims are read-only"))
        assert records == [
            {
                "id": str(uuid.uuid5(VETS_API_NAMESPACE, feature)),
                "type": "maintenance_window",
                "attributes": {
                    "service": feature,
                    "start_time": "2026-11-27T11:00:00.000Z",
                    "end_time": "2026-11-27T14:00:00.000Z",
                },
            }
            for feature in EVSS_FEATURES
        ]

    def test_id_is_uuid5_of_the_app_name_in_vets_api_namespace(self, config: Config) -> None:
        """The id of the claims record is the uuid5 of `claims` in fa1a248e-0f71-4077-8d25-ed7430bcdb34."""
        assert served(config, window(EVSS))[0]["id"] == "ebd9fb30-4df2-52e9-b951-297a9a4cc65c"

    def test_camel_case_on_request(self, config: Config) -> None:
        """`camel` turns the attribute keys into exactly service, startTime and endTime."""
        records = served(config, window(EVSS), camel=True)
        assert list(records[0]["attributes"]) == ["service", "startTime", "endTime"]

    def test_nothing_open_or_upcoming_is_an_empty_list(self, config: Config) -> None:
        """Without windows the data is empty, as vets-api answers `{"data": []}`."""
        assert served(config) == []


class TestWhichWindows:
    @pytest.mark.parametrize(
        ("start", "length", "listed"),
        [
            (timedelta(hours=-1), timedelta(hours=3), True),  # open now
            (timedelta(hours=2), timedelta(hours=3), True),  # upcoming: the app can warn ahead
            (timedelta(days=6), timedelta(hours=1), True),  # far ahead
            (timedelta(hours=-5), timedelta(hours=3), False),  # ended two hours ago
            (timedelta(hours=-3), timedelta(hours=3), False),  # ends exactly now
            (timedelta(0), timedelta(minutes=1), True),  # starts exactly now
        ],
        ids=["open", "upcoming", "next-week", "ended", "ends-now", "starts-now"],
    )
    def test_windows_that_end_after_now(
        self, config: Config, start: timedelta, length: timedelta, listed: bool
    ) -> None:
        """A window is served when it ends after now, whether it has started or not."""
        assert services(served(config, window(EVSS, start, length))) == (EVSS_FEATURES if listed else [])

    @pytest.mark.parametrize("order", ["earliest-first", "latest-first"])
    def test_one_record_per_feature_from_the_window_that_starts_first(self, config: Config, order: str) -> None:
        """Of two windows on one feature, the record shows the one that starts first, whatever their order."""
        later = window(EVSS, timedelta(hours=1), timedelta(hours=9), window_id="PLATER")
        earlier = window(EVSS, timedelta(hours=-1), timedelta(hours=2), window_id="PEARLY")
        pair = (earlier, later) if order == "earliest-first" else (later, earlier)
        records = served(config, *pair)
        assert services(records) == EVSS_FEATURES
        assert {(r["attributes"]["start_time"], r["attributes"]["end_time"]) for r in records} == {
            ("2026-11-27T11:00:00.000Z", "2026-11-27T13:00:00.000Z")
        }

    def test_same_start_keeps_the_longer_window(self, config: Config) -> None:
        """Of two windows starting together, the record shows the one that ends last."""
        short = window(EVSS, length=timedelta(hours=1), window_id="PSHORT")
        long = window(EVSS, length=timedelta(hours=4), window_id="PLONG")
        assert served(config, short, long)[0]["attributes"]["end_time"] == "2026-11-27T15:00:00.000Z"

    def test_each_feature_gets_its_own_earliest_window(self, config: Config) -> None:
        """An SSOe window after an EVSS one covers every feature, but EVSS's features keep their earlier window."""
        records = served(config, window(SSOE, timedelta(hours=2)), window(EVSS, timedelta(hours=-1)))
        starts = {r["attributes"]["service"]: r["attributes"]["start_time"] for r in records}
        assert {f for f, start in starts.items() if start == "2026-11-27T11:00:00.000Z"} == set(EVSS_FEATURES)
        assert starts["appeals"] == "2026-11-27T14:00:00.000Z"

    def test_one_credential_provider_in_maintenance_covers_no_feature(self, config: Config) -> None:
        """A window on ID.me alone leaves sign-in available through MHV and DSLogon: nothing served."""
        assert served(config, window(IDME)) == []

    def test_a_service_nobody_configured_covers_nothing(self, config: Config) -> None:
        """A window on a service id that no dependency or feature names is ignored."""
        assert served(config, window("PUNKNOWN")) == []


class TestAppFeatureNames:
    def test_only_features_the_app_knows_are_served(self, config: Config) -> None:
        """An SSOe window covers every feature, but only the app's feature names are served."""
        assert services(served(config, window(SSOE))) == APP_KNOWN

    def test_secure_messaging_under_its_app_name(self, config: Config) -> None:
        """An MHV window serves `secure_messaging`, the app's name, and not depmon's sign-in feature."""
        assert services(served(config, window(MHV))) == ["secure_messaging"]


@dataclass
class _View:
    engine: Engine
    metrics: Metrics = field(default_factory=Metrics)
    alive: bool = True
    open_incidents: dict[str, OpenIncident] = field(default_factory=dict)
    self_state: SelfState = field(default_factory=SelfState)
    maintenance_status: dict[str, Any] | None = None
    silences: list[Any] = field(default_factory=list)
    app_graph: dict[str, Any] | None = None


class TestRoute:
    @pytest.mark.parametrize(
        ("headers", "keys"),
        [
            ({}, ["service", "start_time", "end_time"]),
            ({"X-Key-Inflection": "camel"}, ["service", "startTime", "endTime"]),
        ],
        ids=["snake", "camel"],
    )
    def test_route_serves_the_engine_windows(self, config: Config, headers: dict[str, str], keys: list[str]) -> None:
        """The route serves the poller's windows, upcoming ones included, in the requested key inflection."""
        engine = Engine(config, Metrics(), clock=NOW.timestamp)
        engine.set_windows([window(EVSS, timedelta(hours=2))])
        client = TestClient(create_app(_View(engine), clock=NOW.timestamp))
        body = client.get("/maintenance_windows", headers=headers).json()
        assert services(body["data"]) == EVSS_FEATURES
        assert list(body["data"][0]["attributes"]) == keys


class _FakeClient:
    """Stands for `MaintenanceClient`: answers every query with the windows it was given."""

    windows: list[MaintenanceWindow] = []

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    async def open_windows(self, service_ids: Sequence[str]) -> pagerduty.WindowsResult:
        return pagerduty.WindowsResult([w for w in self.windows if set(w.service_ids) & set(service_ids)])

    def close(self) -> None:
        pass


class TestMaintenanceCommand:
    def test_a_service_shared_by_two_dependencies_lists_the_features_of_both(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A window on a service id two dependencies share covers the features of both."""
        environ = {"PAGERDUTY_API_TOKEN": "token", "PD_SERVICE_VETEXT": EVSS}
        config = load_config(bundled_config_path(), environ=environ)
        monkeypatch.setattr(pagerduty, "MaintenanceClient", _FakeClient)
        monkeypatch.setattr(_FakeClient, "windows", [window(EVSS, description="EVSS and VEText upgrade")])
        out = io.StringIO()
        assert anyio.run(run_maintenance, config, out) == 0
        assert out.getvalue().splitlines()[0].endswith("]  evss, vetext")
        assert "features: Claims, Letters, Direct Deposit Benefits, Disability Rating, Push Notifications" in (
            out.getvalue()
        )
