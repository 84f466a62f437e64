"""multipart/mixed answers (@defer, @stream) read as a client reads them: python-multipart's
parser fed the bytes as they arrive, each part's JSON with the time it was whole."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from python_multipart.multipart import MultipartParser, parse_options_header

__all__ = ["APOLLO_ACCEPT", "V02_ACCEPT", "Part", "post_for_parts", "read_parts"]

# what Apollo Client's Defer20220824Handler sends for a document with @defer or @stream
APOLLO_ACCEPT = "multipart/mixed;deferSpec=20220824, application/json"
# what its GraphQL17Alpha9Handler sends
V02_ACCEPT = "multipart/mixed;incrementalSpec=v0.2, application/json"


@dataclass
class Part:
    at: float  # seconds from the request's start to the part's last byte
    payload: dict[str, Any]


def read_parts(response: httpx.Response, started: float) -> list[Part]:
    """The parts of a streamed multipart/mixed response, in order, each with its time."""
    content_type, options = parse_options_header(response.headers["content-type"])
    assert content_type == b"multipart/mixed", content_type
    parts: list[Part] = []
    chunks: list[bytes] = []
    # The parser ends a part once it has seen what follows its closing boundary (the next
    # part's CRLF, or "--" at the end), which the server sends with the next part: a
    # part's time is that of its last data, handed over when its boundary arrived.
    last_data = [0.0]

    def on_part_begin() -> None:
        chunks.clear()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        chunks.append(data[start:end])
        last_data[0] = time.monotonic()

    def on_part_end() -> None:
        parts.append(Part(last_data[0] - started, orjson.loads(b"".join(chunks))))

    parser = MultipartParser(
        options[b"boundary"],
        {
            "on_part_begin": on_part_begin,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    for chunk in response.iter_bytes():
        parser.write(chunk)
    parser.finalize()
    return parts


def post_for_parts(
    client: httpx.Client,
    query: str,
    token: str,
    accept: str = APOLLO_ACCEPT,
    variables: dict[str, Any] | None = None,
) -> tuple[httpx.Response, list[Part]]:
    """POST /graphql asking for incremental delivery; the response and its parts (none
    when the answer came whole, as application/json)."""
    started = time.monotonic()
    with client.stream(
        "POST",
        "/graphql",
        json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {token}", "Accept": accept},
    ) as response:
        if not response.headers["content-type"].startswith("multipart/mixed"):
            response.read()
            return response, []
        return response, read_parts(response, started)
