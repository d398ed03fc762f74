"""The HTML status page escapes every dynamic value: upstream text cannot add a tag, a link or an attribute."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

import pytest

from monitor.web.status_page import render_status_page

pytestmark = pytest.mark.unit

HOSTILE = "[click](https://evil.example) <img src=x onerror=alert(1)> \"' ><script>alert(2)</script>"
OWN_LINKS = {"/status", "/metrics", "/maintenance_windows"}


class _Tags(HTMLParser):
    """Every start tag with its attributes, and the page's text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _document(text: str) -> dict[str, Any]:
    """A /status document with `text` in every string a dependency, an upstream or PagerDuty supplies."""
    return {
        "environment": text,
        "generated_at": text,
        "features": {text: {"name": text, "state": text, "impacted_by": [text], "since": text}},
        "dependencies": {
            text: {
                "name": text,
                "state": text,
                "cause": text,
                "since": text,
                "probes": {text: {"ok": False, "detail": text}},
                "maintenance": {"start_time": text, "end_time": text, "description": text},
            }
        },
        "incidents": [{"dependency": text, "opened_at": text, "features": [text], "escalated": True}],
        "replicas": [
            {"replica": text, "leader": True, "live": True, "self": text, "self_reason": text, "down": [text]}
        ],
    }


class TestStatusPageEscaping:
    """`render_status_page` with hostile text everywhere."""

    def test_no_foreign_tag_link_or_attribute(self) -> None:
        """The page has no img or script tag, links only to depmon's own endpoints, and no event handler."""
        parser = _Tags()
        parser.feed(render_status_page(_document(HOSTILE)))
        tags = {tag for tag, _ in parser.tags}
        assert not tags & {"img", "script"}
        assert {dict(attrs).get("href") for tag, attrs in parser.tags if tag == "a"} == OWN_LINKS
        assert not [name for _, attrs in parser.tags for name, _ in attrs if name.startswith("on")]

    def test_the_text_is_shown_as_text(self) -> None:
        """The hostile text reaches the reader verbatim, as text (a detail stays readable)."""
        parser = _Tags()
        parser.feed(render_status_page(_document(HOSTILE)))
        text = "".join(parser.text)
        assert text.count("<img src=x onerror=alert(1)>") >= 10

    def test_the_check_can_fail(self) -> None:
        """The same parser finds the tag when the text is not escaped, so the checks above can fail."""
        parser = _Tags()
        parser.feed(f"<td>{HOSTILE}</td>")
        assert {"img", "script"} <= {tag for tag, _ in parser.tags}
