"""`depmon schema`: the JSON Schema of the configuration, as pydantic derives it from the `Config` model.

It describes the document the models read: every `*.yaml` merged by top-level key, `${VAR}`
substituted. Nothing is written by hand: `Config.model_json_schema()` is the source, so a key
added to a model is in the schema at once. The rules that span several keys (references between
ids, cycles, timeouts against intervals) are beyond JSON Schema: `depmon validate` checks them.

`config/depmon.schema.json` is this output, shipped so that editors check and complete the
bundled YAML files (the `# yaml-language-server: $schema=depmon.schema.json` line at their top);
regenerate it with `depmon schema > config/depmon.schema.json` (a test compares the two).
"""

from __future__ import annotations

import json
from typing import Any

from monitor.config import Config

__all__ = ["JSON_SCHEMA_DIALECT", "config_schema", "render_schema"]

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"  # what pydantic generates


def config_schema() -> dict[str, Any]:
    """The JSON Schema of the merged, substituted configuration, naming its dialect."""
    return {"$schema": JSON_SCHEMA_DIALECT, **Config.model_json_schema()}


def render_schema() -> str:
    """`config_schema()` as `depmon schema` prints it (and `config/depmon.schema.json` holds it)."""
    return json.dumps(config_schema(), indent=2, ensure_ascii=False) + "\n"
