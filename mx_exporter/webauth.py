"""Checking requests against a loaded ``--web.config.file``: basic auth users and the response headers.

bcrypt is slow on purpose, so verified credentials are remembered (a bounded cache keyed by a hash, never the
password), unknown users cost the same bcrypt time as known ones, and the middleware runs bcrypt in a worker
thread one check at a time, as the exporter-toolkit does. Reading and validating the file is webconfig.py's.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import threading
from collections.abc import Mapping

import bcrypt
from aiohttp import BasicAuth, hdrs, web
from aiohttp.typedefs import Handler, Middleware

REALM = "mx-exporter"
MAX_HEADER = 4096  # longer Authorization headers are refused without decoding
CACHE_SIZE = 64  # successful (user, password) checks remembered, so bcrypt does not run on every scrape
BCRYPT_MAX_PASSWORD = (
    72  # bcrypt only uses the first 72 bytes; Go's CompareHashAndPassword truncates the same
)
# bcrypt of "fakepassword" (the toolkit's): unknown users cost the same time as known ones.
DUMMY_HASH = b"$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi"


class RequestGuard:
    """What every request meets: basic auth against the users' bcrypt hashes, then the configured headers."""

    def __init__(self, users: Mapping[str, bytes], headers: Mapping[str, str]):
        self.users = dict(users)
        self.headers = dict(headers)
        self._cache: dict[bytes, None] = {}  # sha256 of a verified (user, hash, password); insertion-ordered
        self._lock = threading.Lock()

    def _key(self, user: str, hashed: bytes, password: bytes) -> bytes:
        u = user.encode()
        return hashlib.sha256(b"%d:%s%d:%s%s" % (len(u), u, len(hashed), hashed, password)).digest()

    def _lookup(self, user: str) -> bytes | None:
        """The user's hash, comparing against every configured name in constant time (no early exit)."""
        found = None
        given = user.encode()
        for name, hashed in self.users.items():
            if hmac.compare_digest(name.encode(), given):
                found = hashed
        return found

    def cached(self, header_value: str | None) -> bool:
        """True when these exact credentials were verified recently (no bcrypt); False means "not known"."""
        creds = _credentials(header_value)
        if creds is None:
            return False
        hashed = self._lookup(creds[0])
        if hashed is None:
            return False
        with self._lock:
            return self._key(creds[0], hashed, creds[1]) in self._cache

    def check_basic_auth(self, header_value: str | None) -> bool:
        """True when no users are configured, or the Authorization header holds a valid user and password."""
        if not self.users:
            return True
        creds = _credentials(header_value)
        if creds is None:
            return False
        user, password = creds
        hashed = self._lookup(user)
        key = self._key(user, hashed or DUMMY_HASH, password)
        with self._lock:
            if hashed is not None and key in self._cache:
                return True
        ok = bcrypt.checkpw(password[:BCRYPT_MAX_PASSWORD], hashed or DUMMY_HASH) and hashed is not None
        if ok:
            with self._lock:
                self._cache[key] = None
                while len(self._cache) > CACHE_SIZE:
                    del self._cache[next(iter(self._cache))]
        return ok


def _credentials(header_value: str | None) -> tuple[str, bytes] | None:
    if not header_value or len(header_value) > MAX_HEADER:
        return None
    try:
        auth = BasicAuth.decode(header_value, encoding="utf-8")
    except ValueError:  # not Basic, bad base64, no ':' or not UTF-8
        return None
    return auth.login, auth.password.encode()


def _unauthorized() -> web.Response:
    return web.Response(
        status=401, text="Unauthorized\n", headers={hdrs.WWW_AUTHENTICATE: f'Basic realm="{REALM}"'}
    )


def auth_middleware(cfg: RequestGuard) -> Middleware:
    """Basic auth on every endpoint when users are configured, plus the configured response headers.

    bcrypt runs in a worker thread, one check at a time (as in the toolkit), so a burst of wrong passwords
    neither blocks the event loop nor takes every CPU; verified credentials are answered from the cache.
    """
    bcrypt_turn = asyncio.Semaphore(1)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if cfg.users:
            header = request.headers.get(hdrs.AUTHORIZATION)
            if not cfg.cached(header):
                async with bcrypt_turn:
                    ok = await asyncio.to_thread(cfg.check_basic_auth, header)
                if not ok:
                    response: web.StreamResponse = _unauthorized()
                    response.headers.update(cfg.headers)
                    return response
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers.update(cfg.headers)
            raise
        response.headers.update(cfg.headers)
        return response

    return middleware
