"""`depmon schema` (SPEC 11.5): the configuration's JSON Schema, from the models, shipped beside the bundled YAML."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from monitor.commands.cli import main
from monitor.commands.schema import JSON_SCHEMA_DIALECT, config_schema
from monitor.config import ConfigError, bundled_config_path, load_config
from monitor.config.loading import substituted_document

pytestmark = pytest.mark.unit

SHIPPED = bundled_config_path() / "depmon.schema.json"
MODELINE = "# yaml-language-server: $schema=depmon.schema.json"


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = config_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.fixture
def bundled() -> dict[str, Any]:
    """The bundled config merged and substituted with the defaults (no variable set)."""
    return substituted_document(bundled_config_path(), {})


def errors(validator: jsonschema.Draft202012Validator, document: Any) -> list[tuple[list[str | int], str]]:
    return [(list(e.absolute_path), e.message) for e in validator.iter_errors(document)]


class TestSchemaCommand:
    def test_prints_the_shipped_schema(self, capsys: pytest.CaptureFixture[str]) -> None:
        """`depmon schema` prints exactly config/depmon.schema.json (regenerate it when a model changes)."""
        assert main(["schema"], environ={}) == 0
        assert capsys.readouterr().out == SHIPPED.read_text("utf-8")

    def test_is_a_draft_2020_12_schema_from_the_model(self, capsys: pytest.CaptureFixture[str]) -> None:
        """The output names its dialect, is a valid schema of it, and its root is the Config model's."""
        main(["schema"], environ={})
        schema = json.loads(capsys.readouterr().out)
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == JSON_SCHEMA_DIALECT
        assert (schema["title"], schema["required"], schema["additionalProperties"]) == (
            "Config",
            ["monitor", "dependencies"],
            False,
        )

    def test_every_bundled_file_points_at_it(self) -> None:
        """Each config/*.yaml starts with the yaml-language-server line naming the shipped schema."""
        files = sorted(bundled_config_path().glob("*.yaml"))
        assert files
        assert [f.read_text("utf-8").splitlines()[0] for f in files] == [MODELINE] * len(files)


class TestSchemaAgainstConfigs:
    def test_bundled_config_is_valid(self, validator: jsonschema.Draft202012Validator, bundled: Any) -> None:
        """The bundled config, merged and substituted with the defaults, passes the schema."""
        assert errors(validator, bundled) == []

    @pytest.mark.parametrize(
        ("where", "key"),
        [((), "monitr"), (("monitor",), "enviroment"), (("dependencies", "evss", "probes", 0), "timeout_s")],
    )
    def test_unknown_key_is_invalid(
        self, validator: jsonschema.Draft202012Validator, bundled: Any, where: tuple[str | int, ...], key: str
    ) -> None:
        """An unknown key anywhere fails the schema, as it fails `depmon validate`."""
        document = copy.deepcopy(bundled)
        node = document
        for part in where:
            node = node[part]
        node[key] = "x"
        assert [path for path, _ in errors(validator, document)] == [list(where)]

    def test_durations_are_text_or_seconds(self, validator: jsonschema.Draft202012Validator, bundled: Any) -> None:
        """`30s` and 30 are durations; `30 seconds` is not, for the schema as for the loader."""
        for value, valid in (("30s", True), ("500ms", True), (30, True), ("30 seconds", False), (0, False)):
            document = copy.deepcopy(bundled)
            document["monitor"]["defaults"]["interval"] = value
            assert validator.is_valid(document) is valid, value

    def test_the_loader_agrees_on_an_unknown_key(
        self, tmp_path: Path, validator: jsonschema.Draft202012Validator
    ) -> None:
        """A small config with an unknown key: invalid for the schema, and a ConfigError naming the key."""
        path = tmp_path / "depmon.yaml"
        path.write_text(
            "monitor: {environment: unit, colour: blue}\n"
            "dependencies: {evss: {name: EVSS, probes: [{name: h, kind: tcp, host: 127.0.0.1, port: 9}]}}\n"
        )
        assert errors(validator, substituted_document(path, {})) == [
            (["monitor"], "Additional properties are not allowed ('colour' was unexpected)")
        ]
        with pytest.raises(ConfigError) as raised:
            load_config(path, {})
        assert [issue.path for issue in raised.value.issues] == ["monitor.colour"]
