"""httpx's transport interface onto aiohttp's client: the provider calls' HTTP (DESIGN 8, 12).

Adapters keep httpx's API (requests, responses, auth, exceptions); underneath, aiohttp does
the HTTP/1.1: its C parser, its keep-alive pool, its header limits (8 KB a line, 128
fields), TLS, and proxies. One `aiohttp.ClientSession` serves every origin of a provider
client, with and without a proxy, and every aiohttp failure becomes the httpx exception of
the same meaning (`_httpx_error`), so callers see one error mapping.

What this adapter adds, for answers from the outside world:
- a header name or value with CR, LF or NUL is refused before anything connects (a value
  built from user input could otherwise smuggle a second request or header);
- an answer larger than `max_response_bytes` (decoded size: a gzip bomb counts as what it
  inflates to) fails as `AnswerTooLarge` without being held whole;
- every call has a read deadline: the request's `timeout` extension, else `read_timeout`
  (the upstream client sends none: its own deadline bounds the whole call).

What it leaves out: cookies (a provider authenticates by header; a cookie one set would be
sent back for every customer alike), redirects (the upstream client never follows them),
streaming (provider answers are read whole and are bounded).
"""

from __future__ import annotations

import re
import ssl
import urllib.request

import aiohttp
import httpx
import yarl

__all__ = ["AiohttpTransport", "AnswerTooLarge"]

# CR, LF and NUL: what ends a header line or a header section on the wire
_UNSAFE_HEADER = re.compile(rb"[\r\n\x00]")
# Of a body aiohttp decoded (auto_decompress): they describe the bytes sent, not the body
# handed to httpx, which would otherwise try to decode it again.
_ENCODING_HEADERS = frozenset({b"content-encoding", b"content-length"})


class AnswerTooLarge(httpx.ReadError):
    """A provider's answer went past the transport's `max_response_bytes`."""


class AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx transport on one aiohttp session: `max_connections` per origin, kept alive for
    `keepalive_expiry` seconds; proxies from the environment (HTTP_PROXY, HTTPS_PROXY,
    ALL_PROXY, NO_PROXY) unless `proxy` is given."""

    def __init__(
        self,
        *,
        max_connections: int,
        keepalive_expiry: float,
        read_timeout: float,
        max_response_bytes: int,
        verify: ssl.SSLContext | bool = True,
        proxy: str | None = None,
    ) -> None:
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._read_timeout = read_timeout
        self._timeout = aiohttp.ClientTimeout(total=None, sock_read=read_timeout)
        self._max_bytes = max_response_bytes
        self._ssl = (
            verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(verify)
        )
        self._proxy = proxy
        self._proxies: dict[tuple[str, str], str | None] = {}
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def _client(self) -> aiohttp.ClientSession:
        # made on the first call: aiohttp binds a session to the running loop
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=0,  # no cap across origins; the cap is per origin
                    limit_per_host=self._max_connections,
                    keepalive_timeout=self._keepalive_expiry,
                    ssl=self._ssl,
                ),
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=self._timeout,
                skip_auto_headers=("User-Agent",),  # the request carries its own
                trust_env=False,  # proxies are resolved here, once per origin
            )
        return self._session

    def _proxy_for(self, url: httpx.URL) -> str | None:
        if self._proxy is not None:
            return self._proxy
        key = (url.scheme, url.host)
        if key not in self._proxies:
            # the environment as at the origin's first call (getproxies reads all of it)
            proxies = urllib.request.getproxies()
            bypass = urllib.request.proxy_bypass(url.host)
            self._proxies[key] = None if bypass else proxies.get(url.scheme) or proxies.get("all")
        return self._proxies[key]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("the transport is closed")
        sent = []
        for name, value in request.headers.raw:
            if _UNSAFE_HEADER.search(name) or _UNSAFE_HEADER.search(value):
                raise httpx.LocalProtocolError(
                    f"header {name.decode('ascii', 'replace')!r} holds CR, LF or NUL: not sent"
                )
            if name.lower() != b"transfer-encoding":  # the body is sent whole, with its length
                sent.append((name.decode("latin-1"), value.decode("latin-1")))
        body = await request.aread()
        timeout = self._timeout  # `read_timeout` only
        timeouts = request.extensions.get("timeout")
        if timeouts and any(timeouts.values()):
            timeout = aiohttp.ClientTimeout(
                total=None,
                connect=timeouts.get("pool"),  # waiting for a pooled connection, connecting
                sock_connect=timeouts.get("connect"),
                sock_read=timeouts.get("read") or self._read_timeout,
            )
        url = request.url
        try:
            async with self._client().request(
                request.method,
                yarl.URL(str(url), encoded=True),  # httpx has percent-encoded it already
                headers=sent,
                data=body or None,
                allow_redirects=False,
                proxy=self._proxy_for(url),
                timeout=timeout,
            ) as answer:
                content = await self._read(answer)
                headers = answer.raw_headers
                if "Content-Encoding" in answer.headers:
                    headers = tuple(h for h in headers if h[0].lower() not in _ENCODING_HEADERS)
                return httpx.Response(
                    answer.status,
                    headers=headers,
                    content=content,
                    request=request,
                    extensions={
                        "http_version": b"HTTP/1.1",
                        "reason_phrase": (answer.reason or "").encode("latin-1"),
                    },
                )
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise _httpx_error(exc, request) from exc

    async def _read(self, answer: aiohttp.ClientResponse) -> bytes:
        """The whole (decoded) body, refused past `max_response_bytes` before it is held."""
        limit = self._max_bytes
        length = answer.content_length
        if length is not None and length > limit:
            raise AnswerTooLarge(f"the answer is {length} bytes; at most {limit} are read")
        if length is not None and "Content-Encoding" not in answer.headers:
            return await answer.read()  # aiohttp reads exactly `length` bytes
        chunks: list[bytes] = []
        size = 0
        while chunk := await answer.content.readany():
            size += len(chunk)
            if size > limit:
                raise AnswerTooLarge(f"the answer is more than {limit} bytes (decoded)")
            chunks.append(chunk)
        return b"".join(chunks)

    async def aclose(self) -> None:
        """Closes the kept-alive connections; the transport cannot be used afterwards."""
        self._closed = True
        if self._session is not None:
            await self._session.close()


def _httpx_error(exc: BaseException, request: httpx.Request) -> httpx.RequestError:
    """The httpx exception meaning what `exc`, raised by aiohttp, means."""
    message = str(exc) or type(exc).__name__
    error: httpx.RequestError
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        error = httpx.ConnectTimeout(message)
    elif isinstance(exc, TimeoutError):  # aiohttp's SocketTimeoutError and ServerTimeoutError
        error = httpx.ReadTimeout(message)
    elif isinstance(exc, (aiohttp.ClientProxyConnectionError, aiohttp.ClientHttpProxyError)):
        error = httpx.ProxyError(message)
    elif isinstance(exc, aiohttp.ClientConnectorError):  # refused, DNS, TLS verification
        error = httpx.ConnectError(message)
    elif isinstance(exc, (aiohttp.InvalidUrlClientError, aiohttp.NonHttpUrlClientError)):
        error = httpx.UnsupportedProtocol(message)
    elif isinstance(exc, aiohttp.ClientPayloadError):
        # a body that does not decode (bad gzip) is what httpx calls a DecodingError
        decoding = "content-encoding" in message.lower()
        error = httpx.DecodingError(message) if decoding else httpx.ReadError(message)
    elif isinstance(exc, ValueError):  # aiohttp's own refusal of a header it will not send
        error = httpx.LocalProtocolError(message)
    else:  # disconnected, reset, an answer that is not HTTP
        error = httpx.RemoteProtocolError(message)
    error.request = request
    return error
