"""Bearer-key authentication of the service, with a per-client limit on failed attempts.

Every endpoint that classifies or reports state depends on :func:`bearer_dependency`;
``/healthz``, ``/readyz``, the page and the API docs do not (see ``app.py``).
A wrong key counts as a failed attempt of the client's address; after
``auth_failures`` of them within ``auth_window_s`` that address gets 429 with
``Retry-After`` until the oldest one leaves the window, even with the right key,
so guessing cannot go faster. A missing key is not a guess and is not counted.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..apikeys import ApiKeys
from .limits import ServiceError
from .metrics import ServiceMetrics

__all__ = ["AuthError", "FailureLimiter", "bearer_dependency", "client_address"]

# Enough for every device of a large LAN; a full table first drops clients whose window has passed.
MAX_TRACKED_CLIENTS = 4096


class AuthError(ServiceError):
    """401 (with ``WWW-Authenticate: Bearer``) or 429 (with ``Retry-After``)."""

    def __init__(self, status: int, code: str, message: str, *, challenge: str | None = None,
                 retry_after: int | None = None) -> None:
        super().__init__(status, code, message, retry_after=retry_after)
        self.challenge = challenge

    def headers(self) -> dict[str, str]:
        headers = super().headers()
        if self.challenge is not None:
            headers["WWW-Authenticate"] = self.challenge
        return headers


def client_address(request: Request) -> str:
    """The address failures are counted against: the client's IP, an IPv6 client's /64.

    One IPv6 host usually holds a whole /64, so counting single addresses would let it
    rotate past the limit. Behind a reverse proxy on loopback, uvicorn has already put
    the ``X-Forwarded-For`` client here.
    """
    host = request.client.host if request.client else "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class FailureLimiter:
    """Failed attempts per client within a sliding window, in bounded memory.

    Only the event loop calls it, so it needs no lock. ``clock`` is injectable for tests.
    """

    def __init__(self, max_failures: int, window_s: float, *, max_clients: int = MAX_TRACKED_CLIENTS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_clients = max_clients
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()  # least recently failed first

    def __len__(self) -> int:
        return len(self._failures)

    def _recent(self, client: str, now: float) -> deque[float] | None:
        times = self._failures.get(client)
        if times is None:
            return None
        while times and now - times[0] >= self.window_s:
            times.popleft()
        if not times:
            del self._failures[client]
            return None
        return times

    def retry_after(self, client: str) -> int | None:
        """Seconds until ``client`` may try again, or None when it may now."""
        now = self._clock()
        times = self._recent(client, now)
        if times is None or len(times) < self.max_failures:
            return None
        return max(1, math.ceil(times[0] + self.window_s - now))

    def fail(self, client: str) -> None:
        now = self._clock()
        times = self._recent(client, now)
        if times is None:
            if len(self._failures) >= self.max_clients:
                self._make_room(now)
            times = self._failures[client] = deque(maxlen=self.max_failures)
        times.append(now)
        self._failures.move_to_end(client)

    def _make_room(self, now: float) -> None:
        for client in list(self._failures):
            self._recent(client, now)
        while len(self._failures) >= self.max_clients:
            self._failures.popitem(last=False)  # the client whose last failure is oldest


def bearer_dependency(keys: ApiKeys, limiter: FailureLimiter,
                      metrics: ServiceMetrics) -> Callable[..., Awaitable[None]]:
    """A FastAPI dependency that lets a request through only with one of ``keys`` as its bearer token.

    Declared through ``HTTPBearer``, so the OpenAPI document carries the scheme
    and ``/docs`` offers *Authorize*. It runs before the endpoint reads the body.
    """
    scheme = HTTPBearer(auto_error=False, scheme_name="apiKey",
                        description="An API key of the service, sent as `Authorization: Bearer <key>`.")

    async def require_key(request: Request,
                          credentials: HTTPAuthorizationCredentials | None = Security(scheme)) -> None:  # noqa: B008
        client = client_address(request)
        wait = limiter.retry_after(client)
        if wait is not None:
            metrics.auth_failures.labels("locked_out").inc()
            raise AuthError(429, "too_many_failures",
                            f"{client}: {limiter.max_failures} wrong API keys within {limiter.window_s:g} s; "
                            f"retry in {wait} s", retry_after=wait)
        if credentials is None:
            metrics.auth_failures.labels("missing").inc()
            raise AuthError(401, "unauthorized", "this endpoint needs an API key: send 'Authorization: Bearer <key>'",
                            challenge="Bearer")
        if not keys.matches(credentials.credentials):
            limiter.fail(client)
            metrics.auth_failures.labels("wrong").inc()
            raise AuthError(401, "unauthorized", "the API key is not valid for this service",
                            challenge='Bearer error="invalid_token"')

    return require_key
