"""Config errors: every problem as a `ConfigIssue` (`FILE: key.path: message`), all of them in one
`ConfigError`; and pydantic's validation errors put into those words.

Messages never contain the value that was given: it may be a secret substituted from the
environment. The one exception is a reference to an unknown id, which names that id.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pydantic import (
    ValidationError,
)

from monitor.config.models import _ENVIRONMENT_PATTERN, _ID_PATTERN, _URL_PATTERN, PROBE_KINDS
from monitor.errors import ConfigIssue

Loc = tuple[str | int, ...]


def format_loc(loc: Iterable[str | int]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def pydantic_issues(exc: ValidationError, file_for: Callable[[Loc], str]) -> list[ConfigIssue]:
    """Each of pydantic's errors as an issue, located in the file `file_for` names for its key path."""
    issues = []
    for error in exc.errors(include_input=False, include_url=False):
        loc = list(error["loc"])
        # A discriminated union puts the chosen tag into the location (`probes.0.http.url`): drop it.
        loc = [
            part for i, part in enumerate(loc) if not (part in PROBE_KINDS and i > 0 and isinstance(loc[i - 1], int))
        ]
        # A dict key that fails its pattern is located at `(..., key, "[key]")`: the key names it.
        if loc and loc[-1] == "[key]":
            loc.pop()
        if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc.append("kind")
        issues.append(ConfigIssue(file_for(tuple(loc)), format_loc(loc), _message(error)))
    return issues


_PATTERN_MESSAGES = {
    _ID_PATTERN: "must be an id: lowercase letters, digits, '-' and '_', starting with a letter or digit",
    _URL_PATTERN: "must be an http:// or https:// URL",
    _ENVIRONMENT_PATTERN: "must be letters, digits, '.', '_' and '-'",
}


def _message(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind == "union_tag_invalid":
        return f"unknown probe kind; known kinds: {', '.join(PROBE_KINDS)}"
    if kind == "union_tag_not_found":
        return f"required key is missing; known kinds: {', '.join(PROBE_KINDS)}"
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern"))
        return _PATTERN_MESSAGES.get(pattern, f"does not match the expected form {pattern}")
    if kind == "greater_than_equal":
        return f"must be at least {ctx.get('ge')}"
    if kind == "less_than_equal":
        return f"must be at most {ctx.get('le')}"
    if kind == "too_short":
        return f"must have at least {ctx.get('min_length')} entry" + ("" if ctx.get("min_length") == 1 else "s")
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    return str(error["msg"]).replace("Value error, ", "")
