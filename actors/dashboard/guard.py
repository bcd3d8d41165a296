"""Who may read the dashboard and act from it: the token, the Host check and CSRF.

- No token (the default, bound to 127.0.0.1): requests must name a loopback Host
  (`127.0.0.1`, `localhost`, `[::1]`, any port). A page on another site that a browser reaches
  by DNS rebinding (its own name resolving to 127.0.0.1) carries its own name as Host and is
  refused, so it can neither read the pages nor take a CSRF token from them.
- With a token, every request needs it: `Authorization: Bearer TOKEN`, an `X-Actors-Token`
  header, or the cookie set by visiting any page once with `?token=TOKEN` (the response sets
  the cookie and redirects to the same address without the token, so it stays out of the
  history). A missing or wrong token is a 403 page with a form to give one. The cookie holds a
  digest of the token, not the token; it is HttpOnly and SameSite=Strict.
- Actions are POST forms carrying a CSRF token that must equal the `actors_csrf` cookie (set
  on the first page, random, SameSite=Strict), and a request whose Origin header names another
  site is refused. So another site can neither read a token nor submit a form that passes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

TOKEN_COOKIE = "actors_token"
CSRF_COOKIE = "actors_csrf"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
SECURITY_HEADERS = [
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"content-security-policy",
     b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
     b"frame-ancestors 'none'; form-action 'self'; base-uri 'none'"),
]


def is_loopback(host: str) -> bool:
    """Whether a host to bind names this machine only (127.0.0.0/8, ::1, localhost)."""
    host = host.strip("[]").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


def cookie_digest(token: str) -> str:
    return hashlib.sha256(b"actors-dashboard\0" + token.encode()).hexdigest()


def _host_name(host_header: str) -> str:
    if host_header.startswith("["):
        return host_header.split("]", 1)[0] + "]"
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


class Guard:
    """ASGI middleware: the Host check, the token, and the CSRF cookie; `Denied` renders its
    refusals (status, title, text, whether to offer the token form)."""

    def __init__(self, app: ASGIApp, token: str | None, deny: Callable[[int, str, str, bool], Awaitable[Any]]) -> None:
        self.app = app
        self.token = token
        self.digest = cookie_digest(token) if token else None
        self.deny = deny

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        cookies = _cookies(headers.get("cookie", ""))
        extra: list[tuple[bytes, bytes]] = list(SECURITY_HEADERS)
        host = _host_name(headers.get("host", "")).lower()
        if self.token is None and host not in LOOPBACK_HOSTS:
            await self._refuse(scope, receive, send, 421 if host else 400, "Host not allowed",
                               f"This dashboard answers to 127.0.0.1 and localhost only, not {host or 'no Host'}: "
                               "it has no token, so it serves this machine alone.", False, extra)
            return
        if self.token is not None:
            query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
            given = query.get("token", [None])[0]
            if given is not None:
                if not hmac.compare_digest(given.encode(), self.token.encode()):
                    await self._refuse(scope, receive, send, 403, "Wrong token",
                                       "That token is not this dashboard's.", True, extra)
                    return
                await self._login(scope, send, query, extra)
                return
            if not self._authorized(headers, cookies):
                await self._refuse(scope, receive, send, 403, "Token needed",
                                   "This dashboard needs its token (the one it was started with).", True, extra)
                return
        csrf = cookies.get(CSRF_COOKIE)
        if not csrf or len(csrf) != 64:
            csrf = secrets.token_hex(32)
            extra.append((b"set-cookie", f"{CSRF_COOKIE}={csrf}; Path=/; HttpOnly; SameSite=Strict".encode()))
        scope.setdefault("state", {})["csrf"] = csrf
        origin = headers.get("origin")
        if scope["method"] not in ("GET", "HEAD") and origin and origin != "null":
            origin_host = _host_name(urllib.parse.urlsplit(origin).netloc).lower()
            if origin_host != host:
                await self._refuse(scope, receive, send, 403, "Cross-site request refused",
                                   f"A request from {origin} cannot act on this dashboard.", False, extra)
                return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _authorized(self, headers: dict[str, str], cookies: dict[str, str]) -> bool:
        assert self.token is not None and self.digest is not None
        bearer = headers.get("authorization", "")
        if bearer.lower().startswith("bearer ") and hmac.compare_digest(bearer[7:].strip().encode(), self.token.encode()):
            return True
        header = headers.get("x-actors-token")
        if header is not None and hmac.compare_digest(header.encode(), self.token.encode()):
            return True
        cookie = cookies.get(TOKEN_COOKIE)
        return cookie is not None and hmac.compare_digest(cookie.encode(), self.digest.encode())

    async def _login(self, scope: Scope, send: Send, query: dict[str, list[str]],
                     extra: list[tuple[bytes, bytes]]) -> None:
        rest = {k: v for k, v in query.items() if k != "token"}
        location = scope.get("root_path", "") + scope["path"]
        if rest:
            location += "?" + urllib.parse.urlencode(rest, doseq=True)
        headers = [(b"location", location.encode()), (b"content-length", b"0"),
                   (b"set-cookie", f"{TOKEN_COOKIE}={self.digest}; Path=/; HttpOnly; SameSite=Strict".encode()), *extra]
        await send({"type": "http.response.start", "status": 303, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, status: int, title: str, text: str,
                      offer_token: bool, extra: list[tuple[bytes, bytes]]) -> None:
        response = await self.deny(status, title, text, offer_token)
        response.raw_headers.extend(extra)
        await response(scope, receive, send)


def _cookies(header: str) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except Exception:
        return {}
    return {key: morsel.value for key, morsel in jar.items()}
