"""`GET /maintenance_windows`: open windows expanded to app features in the vets-api mobile shape."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from monitor.config import Config, bundled_config_path, load_config
from monitor.engine import Engine
from monitor.metrics import Metrics
from monitor.server import maintenance_records
from monitor.windows import MaintenanceWindow

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def engine_with(windows: list[MaintenanceWindow]) -> Engine:
    config: Config = load_config(bundled_config_path(), environ={})
    engine = Engine(config, Metrics(), clock=NOW.timestamp)
    engine.set_windows(windows)
    return engine


def window(service: str, description: str = "", start: timedelta = timedelta(hours=-1)) -> MaintenanceWindow:
    return MaintenanceWindow("PW1", NOW + start, NOW + start + timedelta(hours=3), description, (service,))


class TestMaintenanceRecords:
    def test_an_evss_window_covers_its_four_features(self) -> None:
        """An open window on EVSS's service lists exactly the features that need EVSS."""
        records = maintenance_records(engine_with([window("PZKWB6Y")]), NOW.timestamp())
        assert [r["attributes"]["service"] for r in records] == [
            "claims",
            "letters_and_documents",
            "direct_deposit_benefits",
            "disability_rating",
        ]
        first = records[0]
        assert first["type"] == "maintenance_window"
        assert first["id"] == str(uuid.uuid5(uuid.NAMESPACE_URL, "claims"))
        assert first["attributes"]["start_time"] == "2026-11-27T11:00:00.000Z"
        assert first["attributes"]["end_time"] == "2026-11-27T14:00:00.000Z"

    def test_camel_case_on_request(self) -> None:
        """`X-Key-Inflection: camel` turns attribute keys into camelCase."""
        records = maintenance_records(engine_with([window("PZKWB6Y")]), NOW.timestamp(), camel=True)
        assert set(records[0]["attributes"]) == {"service", "startTime", "endTime", "description"}

    def test_one_credential_provider_in_maintenance_does_not_cover_login(self) -> None:
        """A window on ID.me alone leaves the any_of credentials feature available: not listed."""
        records = maintenance_records(engine_with([window("PVWB4R8")]), NOW.timestamp())
        assert "authentication-credentials" not in [r["attributes"]["service"] for r in records]

    def test_only_the_user_message_is_shown(self) -> None:
        """Only the text after USER_MESSAGE: reaches the app, as in vets-api."""
        w = window("PP2ZZ2V", "internal note USER_MESSAGE:MHV upgrade|Secure messaging is paused")
        records = maintenance_records(engine_with([w]), NOW.timestamp())
        assert records[0]["attributes"]["description"] == "MHV upgrade|Secure messaging is paused"

    def test_future_and_past_windows_are_not_listed(self) -> None:
        """Only windows open now are served."""
        later = window("PZKWB6Y", start=timedelta(hours=2))
        earlier = window("PZKWB6Y", start=timedelta(hours=-5))
        assert maintenance_records(engine_with([later, earlier]), NOW.timestamp()) == []
