"""A fake OAuth 2.0 authorization server over real HTTP: the refresh-token grant as Intuit
and Xero run it, strict about rotation, with every refresh recorded.

    auth = FakeAuthorizationServer()
    with auth.running():
        refresh_token = auth.connect()        # the app was connected: QUICKBOOKS_REFRESH_TOKEN
        auth.token_url                        # QUICKBOOKS_TOKEN_URL / XERO_TOKEN_URL
        auth.accepts("Bearer-less token")     # what the API fakes ask about each call
        auth.expire_access_tokens()           # every access token is now expired
        auth.revoke()                         # the user disconnected the app
        auth.refreshes                        # each refresh: the token presented, the outcome

`POST {path}` takes `grant_type=refresh_token&refresh_token=...` as a form with the client
credentials in HTTP Basic. A refresh token works once: the answer carries a new one (or the
same one, with `rotate=False`, as Intuit does between its daily rotations) and a presented
token that was already used is refused with `invalid_grant`, like a revoked one. Real
providers are gentler (Xero honours a used token for a grace period); the strict fake is
what proves the gateway never sends one twice. Also `GET /protected`: 200 for a valid
bearer, 401 otherwise, for tests of the token logic without a provider API.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Self

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.servers import serve

__all__ = ["CLIENT_ID", "CLIENT_SECRET", "FakeAuthorizationServer", "Refresh"]

CLIENT_ID = "fake-client-id"
CLIENT_SECRET = "fake-client-secret-0123456789"


@dataclass(frozen=True)
class Refresh:
    """One call to the token endpoint."""

    refresh_token: str  # as presented
    outcome: str  # "rotated", "reused", "revoked", "unknown", "bad_client", "bad_request",
    # or "fault" (a scripted failure answered instead)
    at: float  # time.monotonic()


class FakeAuthorizationServer:
    """The token endpoint of one OAuth app, with one grant at a time."""

    def __init__(
        self,
        *,
        client_id: str = CLIENT_ID,
        client_secret: str = CLIENT_SECRET,
        access_ttl: int = 3600,
        rotate: bool = True,
        path: str = "/oauth2/token",
        delay: float = 0.0,
    ) -> None:
        self.url = ""
        self.path = path
        self.client_id = client_id
        self.client_secret = client_secret
        self.access_ttl = access_ttl
        self.rotate = rotate
        self.delay = delay  # seconds each refresh takes (widens race windows in tests)
        self.refreshes: list[Refresh] = []
        self.issued: list[str] = []  # every refresh and access token ever handed out
        self.lock = threading.Lock()
        self._current: str | None = None  # the one refresh token that works now
        self._spent: set[str] = set()
        self._access: dict[str, float] = {}  # access token -> monotonic expiry
        self._faults: list[int] = []  # statuses to answer instead, in order
        self.app = Starlette(
            routes=[
                Route(path, self._token, methods=["POST"]),
                Route("/protected", self._protected, methods=["GET"]),
            ]
        )

    @property
    def token_url(self) -> str:
        return self.url + self.path

    @contextlib.contextmanager
    def running(self) -> Iterator[Self]:
        with serve(self.app, timeout_graceful_shutdown=2) as server:
            self.url = server.url
            try:
                yield self
            finally:
                self.url = ""

    # -- the test's controls -------------------------------------------------------------

    def reset(self) -> None:
        """Forget the grant, the records and any scripted faults (a module's fake, reused)."""
        with self.lock:
            self._current = None
            self._spent.clear()
            self._access.clear()
            self._faults.clear()
            self.refreshes.clear()
            self.issued.clear()
            self.delay = 0.0

    def connect(self) -> str:
        """A new grant (the app connected again): its refresh token; the old grant dies."""
        with self.lock:
            if self._current is not None:
                self._spent.add(self._current)
            self._current = "rt-" + secrets.token_urlsafe(24)
            self.issued.append(self._current)
            return self._current

    def revoke(self) -> None:
        """The user disconnected the app: the refresh token and every access token die."""
        with self.lock:
            if self._current is not None:
                self._spent.add(self._current)
            self._current = None
            self._access.clear()

    def expire_access_tokens(self) -> None:
        with self.lock:
            self._access.clear()

    def accepts(self, access_token: str) -> bool:
        with self.lock:
            expiry = self._access.get(access_token)
            return expiry is not None and expiry > time.monotonic()

    def fail_next(self, status: int = 503, times: int = 1) -> None:
        with self.lock:
            self._faults.extend([status] * times)

    @property
    def current_refresh_token(self) -> str | None:
        with self.lock:
            return self._current

    def outcomes(self) -> list[str]:
        with self.lock:
            return [refresh.outcome for refresh in self.refreshes]

    # -- the endpoints -------------------------------------------------------------------

    async def _protected(self, request: Request) -> Response:
        header = request.headers.get("authorization", "")
        token = header.removeprefix("Bearer ")
        if not header.startswith("Bearer ") or not self.accepts(token):
            return JSONResponse({"error": "invalid_token"}, status_code=401)
        return JSONResponse({"ok": True})

    async def _token(self, request: Request) -> Response:
        form = await request.form()
        presented = str(form.get("refresh_token") or "")
        if self.delay:
            await asyncio.sleep(self.delay)
        with self.lock:
            if self._faults:
                status = self._faults.pop(0)
                self._record(presented, "fault")
                return JSONResponse({"error": "temporarily_unavailable"}, status_code=status)
            if not self._client_ok(request.headers.get("authorization", "")):
                self._record(presented, "bad_client")
                return JSONResponse({"error": "invalid_client"}, status_code=401)
            if form.get("grant_type") != "refresh_token" or not presented:
                self._record(presented, "bad_request")
                return JSONResponse({"error": "invalid_request"}, status_code=400)
            if presented != self._current:
                outcome = (
                    "reused"
                    if presented in self._spent and self._current is not None
                    else "revoked"
                    if presented in self._spent
                    else "unknown"
                )
                self._record(presented, outcome)
                return JSONResponse(
                    {"error": "invalid_grant", "error_description": "Invalid refresh token"},
                    status_code=400,
                )
            if self.rotate:
                self._spent.add(presented)
                self._current = "rt-" + secrets.token_urlsafe(24)
                self.issued.append(self._current)
            access = "at-" + secrets.token_urlsafe(24)
            self.issued.append(access)
            self._access[access] = time.monotonic() + self.access_ttl
            self._record(presented, "rotated")
            body = {
                "access_token": access,
                "token_type": "bearer",
                "expires_in": self.access_ttl,
                "refresh_token": self._current,
                "x_refresh_token_expires_in": 8_726_400,
            }
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    def _client_ok(self, header: str) -> bool:
        expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        return secrets.compare_digest(header, f"Basic {expected}")

    def _record(self, presented: str, outcome: str) -> None:
        self.refreshes.append(Refresh(presented, outcome, time.monotonic()))
