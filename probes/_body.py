"""An answer's body within a byte budget, and JSON parsed within bounds.

httpx inflates `Content-Encoding: gzip` one whole network chunk at a time, before any cap can
count the bytes: one 64 KiB chunk of a gzip bomb becomes ~64 MiB at once, and a 199 KiB body
~200 MiB. So the body is read raw (`aiter_raw`) and inflated here by zlib with `max_length`:
every layer (the bytes on the wire, each decoding) stops as soon as it passes the cap, and no
more than the cap plus one network chunk is ever held, whatever the compression ratio.

The probes ask for `Accept-Encoding: identity` (`ProbeContext.http_client`); gzip and deflate
are still inflated, within the cap, for servers that compress anyway. Brotli, zstd and
`compress` are refused as undecodable (`httpx.DecodingError`, which the probes describe like
any transport failure); other tokens (`Content-Encoding: utf-8` is seen in the wild) are
ignored, as httpx ignores them.

Text an upstream sends that reaches a detail goes through `one_line`.

`streamed` is `client.stream` that leaves no reference cycle behind (see its docstring).

JSON: Python's `int()` refuses more than 4,300 digits with a `ValueError` that `json.loads`
lets through; `parse_json` bounds every number far below that and turns each way a body can
fail to be JSON into a short reason.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

__all__ = ["MAX_NUMBER_CHARS", "one_line", "parse_json", "read_body", "streamed"]

_CLOSED = httpx.ByteStream(b"")  # what a closed response's stream is replaced by


@asynccontextmanager
async def streamed(
    client: httpx.AsyncClient, method: str, url: httpx.URL, **kwargs: Any
) -> AsyncIterator[httpx.Response]:
    """`client.stream(method, url, **kwargs)`; once it is closed, the response lets go of its stream.

    httpx binds the stream to its response and the response to the stream: a reference cycle,
    so each answer's ~35 objects (request, headers, aiohttp's response) waited for the garbage
    collector instead of going when the probe ended. At 500 answers a second that made the full
    collections that pause the event loop (50-220 ms each, a dozen a minute in a mass outage).
    """
    response = None
    try:
        async with client.stream(method, url, **kwargs) as response:
            yield response
    finally:
        if response is not None:  # closed by now: nothing reads its stream again
            response.stream = _CLOSED


MAX_NUMBER_CHARS = 1000  # a number in a health or token document is never anywhere near this long

_GZIP_WBITS = 16 + zlib.MAX_WBITS
_UNSUPPORTED = frozenset({"br", "zstd", "compress", "x-compress"})


class _TooLarge(Exception):
    """A layer of the body grew past the cap."""


class _Undecodable(Exception):
    """A layer is not what its Content-Encoding says (or is one this module does not inflate)."""


class _Inflater:
    """One gzip or deflate layer, inflating at most `cap` bytes in all."""

    def __init__(self, encoding: str, cap: int) -> None:
        self._encoding = encoding
        self._cap = cap
        self._produced = 0
        # "deflate" is meant to be zlib-wrapped (RFC 9110 8.4.1.2); some servers send it raw,
        # which httpx accepts too: the first chunk is retried raw when the wrapper is refused.
        self._raw_deflate_fallback = encoding == "deflate"
        self._zlib = zlib.decompressobj(zlib.MAX_WBITS if encoding == "deflate" else _GZIP_WBITS)

    def feed(self, data: bytes) -> bytes:
        try:
            # max_length one past what is left: reaching it proves the layer is over the cap
            out = self._zlib.decompress(data, self._cap - self._produced + 1)
        except zlib.error as exc:
            if not self._raw_deflate_fallback:
                raise _Undecodable(self._encoding) from exc
            self._raw_deflate_fallback = False
            self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
            return self.feed(data)
        self._raw_deflate_fallback = False
        return self._count(out)

    def flush(self) -> bytes:
        try:
            out = self._zlib.flush()
        except zlib.error as exc:
            raise _Undecodable(self._encoding) from exc
        return self._count(out)

    def _count(self, out: bytes) -> bytes:
        self._produced += len(out)
        if self._produced > self._cap:
            raise _TooLarge
        return out


def _layers(response: httpx.Response, cap: int) -> list[_Inflater]:
    """The decoders of the body, outermost first (the header lists them in the order applied)."""
    layers: list[_Inflater] = []
    for value in response.headers.get_list("content-encoding", split_commas=True):
        encoding = value.strip().lower()
        if encoding in _UNSUPPORTED:
            raise _Undecodable(encoding)
        if encoding in ("gzip", "x-gzip", "deflate"):
            layers.append(_Inflater(encoding, cap))
    return layers[::-1]


async def read_body(response: httpx.Response, cap: int) -> bytes | None:
    """The decoded body, or None as soon as any layer of it grows past `cap` bytes.

    The rest of a body over the cap is never read. Raises `httpx.DecodingError` for a body
    that its Content-Encoding cannot decode.
    """
    try:
        layers = _layers(response, cap)
        parts: list[bytes] = []
        size = 0
        async for raw in response.aiter_raw():
            size += len(raw)
            if size > cap:
                return None
            data = raw
            for layer in layers:
                data = layer.feed(data)
            parts.append(data)
        for depth, layer in enumerate(layers):
            data = layer.flush()
            for inner in layers[depth + 1 :]:
                data = inner.feed(data)
            parts.append(data)
    except _TooLarge:
        return None
    except _Undecodable as exc:
        raise httpx.DecodingError(f"cannot decode Content-Encoding {exc}", request=response.request) from exc
    body = b"".join(parts)
    return body if len(body) <= cap else None


class _NumberTooLong(Exception):
    pass


def _bounded(convert: Any) -> Any:
    def parse(text: str) -> Any:
        if len(text) > MAX_NUMBER_CHARS:
            raise _NumberTooLong
        return convert(text)

    return parse


_PARSE_INT = _bounded(int)
_PARSE_FLOAT = _bounded(float)


def parse_json(body: bytes) -> tuple[Any, str | None]:
    """(document, None), or (None, a short reason) for a body that is not JSON within bounds."""
    try:
        return json.loads(body, parse_int=_PARSE_INT, parse_float=_PARSE_FLOAT), None
    except json.JSONDecodeError as exc:
        return None, f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    except UnicodeDecodeError:
        return None, "not UTF-8, UTF-16 or UTF-32 text"
    except RecursionError:
        return None, "nested too deeply"
    except _NumberTooLong:
        return None, f"a number longer than {MAX_NUMBER_CHARS} characters"
    except ValueError:  # anything else json or a number conversion refuses
        return None, "not valid JSON"


def one_line(text: str, limit: int) -> str:
    """Text from an upstream as a detail shows it: one line, printable, at most `limit` characters.

    Whitespace runs become one space; other control and unprintable characters (a terminal
    escape, U+2028) become U+FFFD, so nothing an upstream writes can restyle a terminal or
    split a log line.
    """
    text = "".join(ch if ch.isprintable() else "\ufffd" for ch in " ".join(text.split()))
    return text if len(text) <= limit else text[: limit - 1] + "…"
