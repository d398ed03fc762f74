"""Bodies within bounds: `read_body` inflates each layer within the cap, `parse_json` bounds numbers."""

from __future__ import annotations

import gzip
import tracemalloc
import zlib
from collections.abc import AsyncIterator

import httpx
import pytest

from probes._body import one_line, parse_json, read_body

pytestmark = [pytest.mark.unit, pytest.mark.anyio]

CAP = 1024


def _gzip(data: bytes) -> bytes:
    """gzip with a fixed mtime: the same bytes, so the same test ids, in every xdist worker."""
    return gzip.compress(data, mtime=0)


class _Chunks(httpx.AsyncByteStream):
    """A body arriving in the given pieces, as from the network."""

    def __init__(self, *chunks: bytes) -> None:
        self._chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk


def _response(encoding: str | None, *chunks: bytes) -> httpx.Response:
    headers = {"Content-Encoding": encoding} if encoding is not None else {}
    return httpx.Response(200, headers=headers, stream=_Chunks(*chunks), request=httpx.Request("GET", "http://a/"))


def _split(data: bytes, size: int = 7) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


TEXT = b'{"status": "pass"}' * 10


def _raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


class TestReadBody:
    @pytest.mark.parametrize(
        ("encoding", "wire"),
        [
            (None, TEXT),
            ("identity", TEXT),
            ("gzip", _gzip(TEXT)),
            ("x-gzip", _gzip(TEXT)),
            ("GZIP", _gzip(TEXT)),
            ("deflate", zlib.compress(TEXT)),
            ("deflate", _raw_deflate(TEXT)),
            ("gzip, gzip", _gzip(_gzip(TEXT))),
            ("deflate, gzip", _gzip(zlib.compress(TEXT))),
            ("utf-8", TEXT),  # a token that names no compression is ignored, as httpx ignores it
        ],
    )
    async def test_decodes_each_encoding_in_any_chunking(self, encoding: str | None, wire: bytes) -> None:
        """Every supported encoding and stack of them decodes to the body, whole or in 7-byte chunks."""
        assert await read_body(_response(encoding, wire), CAP) == TEXT
        assert await read_body(_response(encoding, *_split(wire)), CAP) == TEXT

    @pytest.mark.parametrize(
        ("encoding", "wire"),
        [
            (None, b"x" * (CAP + 1)),
            ("gzip", _gzip(b"x" * (CAP + 1))),
            ("gzip, gzip", _gzip(_gzip(b"x" * (CAP + 1)))),
            ("deflate", zlib.compress(b"\0" * 10 * CAP)),
        ],
    )
    async def test_over_the_cap_is_none(self, encoding: str | None, wire: bytes) -> None:
        """A body one byte over the cap, plain or after any layer of decoding, gives None."""
        assert await read_body(_response(encoding, wire), CAP) is None

    async def test_exactly_the_cap_is_read(self) -> None:
        """A body of exactly the cap once inflated is read whole."""
        assert await read_body(_response("gzip", gzip.compress(b"y" * CAP)), CAP) == b"y" * CAP

    async def test_nested_bomb_stays_within_the_cap(self) -> None:
        """A gzip-in-gzip bomb of 200 MiB is refused holding no more than about the cap."""
        compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
        zeros = bytes(1024 * 1024)
        inner = b"".join([compressor.compress(zeros) for _ in range(200)] + [compressor.flush()])
        wire = gzip.compress(inner)
        tracemalloc.start()
        try:
            assert await read_body(_response("gzip, gzip", *_split(wire, 65536)), 1024 * 1024) is None
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert len(wire) < 64 * 1024
        assert peak < 8 * 1024 * 1024, peak

    @pytest.mark.parametrize(
        ("encoding", "wire", "message"),
        [
            ("br", b"\x1b\x00", "cannot decode Content-Encoding br"),
            ("zstd", b"\x28\xb5\x2f\xfd", "cannot decode Content-Encoding zstd"),
            ("gzip", b"not gzip at all", "cannot decode Content-Encoding gzip"),
            ("deflate", b"\xff\xff\xff\xff", "cannot decode Content-Encoding deflate"),
        ],
    )
    async def test_undecodable_is_a_decoding_error(self, encoding: str, wire: bytes, message: str) -> None:
        """An encoding that is unsupported, or a body that is not what it claims, raises httpx.DecodingError."""
        with pytest.raises(httpx.DecodingError, match=f"^{message}$"):
            await read_body(_response(encoding, wire), CAP)


class TestParseJson:
    @pytest.mark.parametrize(
        ("body", "document", "reason"),
        [
            (b'{"a": 1, "b": 2.5}', {"a": 1, "b": 2.5}, None),
            (b"[" + b"9" * 1000 + b"]", [int("9" * 1000)], None),
            (b"[" + b"9" * 1001 + b"]", None, "a number longer than 1000 characters"),
            (b"[" + b"9" * 4301 + b"]", None, "a number longer than 1000 characters"),
            (b"[0." + b"1" * 5000 + b"]", None, "a number longer than 1000 characters"),
            (b"[" * 100_000, None, "nested too deeply"),
            (b"\xff\xfe\x00", None, "not UTF-8, UTF-16 or UTF-32 text"),
            (b"{", None, "Expecting property name enclosed in double quotes at line 1 column 2"),
        ],
    )
    def test_documents_and_reasons(self, body: bytes, document: object, reason: str | None) -> None:
        """A body gives its document, or None with a short reason: never an exception."""
        assert parse_json(body) == (document, reason)


class TestOneLine:
    @pytest.mark.parametrize(
        ("text", "limit", "shown"),
        [
            ("db  down\n\tnow", 60, "db down now"),
            ("\x1b[31mred\x07", 60, "\ufffd[31mred\ufffd"),
            ("a\u2028b\u200bc", 60, "a b\ufffdc"),
            ("abcdef", 4, "abc…"),
        ],
    )
    def test_shows_one_printable_line(self, text: str, limit: int, shown: str) -> None:
        """Upstream text becomes one printable line within the limit: spaces collapsed, controls replaced."""
        assert one_line(text, limit) == shown
