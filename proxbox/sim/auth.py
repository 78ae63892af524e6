"""PVE's two auth modes: tickets (``POST /access/ticket``, cookie ``PVEAuthCookie``, CSRF on non-GET) and API
tokens (``Authorization: PVEAPIToken=user@realm!id=secret``).

Tickets look like PVE's, ``PVE:user@realm:HEX8::<base64 signature>``. Each PVE cluster signs its tickets
and CSRF tokens with its own ``authkey``, so a ticket is only good on the cluster that issued it: here the
signature covers a *scope* (the cluster's name) as well as the text, and a ticket or CSRF token presented
to another cluster gets 401. They live ``ticket_ttl_s`` seconds (measured on the monotonic clock, so short
TTLs work in tests) and are renewed by posting a valid ticket as the password. A ticket cookie wins over a
token header when both are sent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
import uuid
from collections.abc import Mapping
from typing import Literal

import attrs

AuthKind = Literal["ticket", "token", "none"]
COOKIE = "PVEAuthCookie"
CSRF_HEADER = "CSRFPreventionToken"


@attrs.frozen(kw_only=True)
class Credentials:
    """The one user and the one API token the simulator accepts."""

    user: str = "root@pam"
    password: str = attrs.field(repr=False)
    token_id: str  # user@realm!name
    token_secret: str = attrs.field(repr=False)

    @property
    def token_name(self) -> str:
        return self.token_id.split("!", 1)[1]

    @property
    def token_user(self) -> str:
        return self.token_id.split("!", 1)[0]

    @property
    def token(self) -> str:
        """The ``--token`` form: ``user@realm!name=secret``."""
        return f"{self.token_id}={self.token_secret}"

    @classmethod
    def make(
        cls, user: str = "root@pam", password: str | None = None, token: str | None = None
    ) -> Credentials:
        """Fill what is not given: a random password and a token ``<user>!proxbox=<uuid>``."""
        if "@" not in user:
            raise ValueError(f"user must be user@realm, got {user!r}")
        if token:
            token_id, sep, secret = token.partition("=")
            if not sep or "!" not in token_id or "@" not in token_id.split("!", 1)[0] or not secret:
                raise ValueError("token must look like user@realm!name=secret")
        else:
            token_id, secret = f"{user}!proxbox", str(uuid.uuid4())
        return cls(
            user=user, password=password or secrets.token_urlsafe(12), token_id=token_id, token_secret=secret
        )


@attrs.frozen
class AuthResult:
    kind: AuthKind
    user: str | None  # None: not authenticated
    reason: str = ""  # the 401 reason when user is None


class Authenticator:
    """Issues and checks tickets, CSRF tokens and API tokens. All state lives in memory."""

    def __init__(self, credentials: Credentials, *, ticket_ttl_s: float = 7200.0) -> None:
        self.credentials = credentials
        self.ticket_ttl_s = ticket_ttl_s
        self._key = secrets.token_bytes(32)
        self._issued: dict[str, tuple[float, str]] = {}  # ticket -> (monotonic issue time, scope)
        self._token_secret = credentials.token_secret

    # ----------------------------------------------------------------------------------- classify

    @staticmethod
    def classify(cookies: Mapping[str, str], headers: Mapping[str, str]) -> AuthKind:
        if cookies.get(COOKIE):
            return "ticket"
        if headers.get("Authorization", "").startswith("PVEAPIToken"):
            return "token"
        return "none"

    def authenticate(
        self, cookies: Mapping[str, str], headers: Mapping[str, str], scope: str | None = None
    ) -> AuthResult:
        """Who sent the request; ``scope`` is the cluster asked (None: a ticket of any cluster will do)."""
        kind = self.classify(cookies, headers)
        if kind == "ticket":
            user = self.check_ticket(cookies[COOKIE], scope)
            return AuthResult(kind, user, "" if user else "invalid PVE ticket")
        if kind == "token":
            user = self.check_token(headers["Authorization"])
            return AuthResult(kind, user, "" if user else "invalid token value!")
        return AuthResult("none", None, "No ticket")

    # ------------------------------------------------------------------------------------ tickets

    def _sign(self, scope: str, text: str) -> str:
        mac = hmac.new(self._key, f"{scope}\n{text}".encode(), hashlib.sha256)
        return base64.b64encode(mac.digest()).decode()

    def issue(self, user: str, scope: str = "") -> tuple[str, str]:
        """A new (ticket, CSRFPreventionToken) for ``user``, good on ``scope`` (a cluster) only."""
        now = time.monotonic()
        stamp = f"{int(time.time()):08X}"
        plain = f"PVE:{user}:{stamp}"
        ticket = f"{plain}::{self._sign(scope, plain)}"
        self._issued = {t: v for t, v in self._issued.items() if now - v[0] < self.ticket_ttl_s}
        self._issued[ticket] = (now, scope)
        csrf = f"{stamp}:{self._sign(scope, f'{stamp}:{user}')}"
        return ticket, csrf

    def check_ticket(self, ticket: str, scope: str | None = None) -> str | None:
        """The ticket's user if it is live and was issued for ``scope`` (None: for any), else None."""
        plain, sep, sig = ticket.partition("::")
        parts = plain.split(":")
        if not sep or len(parts) != 3 or parts[0] != "PVE":
            return None
        issued = self._issued.get(ticket)
        if issued is None or time.monotonic() - issued[0] >= self.ticket_ttl_s:
            return None
        at_scope = issued[1] if scope is None else scope
        if not hmac.compare_digest(sig, self._sign(at_scope, plain)):
            return None
        return parts[1]

    def check_csrf(self, token: str | None, user: str, scope: str = "") -> bool:
        if not token:
            return False
        stamp, sep, sig = token.partition(":")
        return bool(sep) and hmac.compare_digest(sig, self._sign(scope, f"{stamp}:{user}"))

    def login(self, username: str, password: str, realm: str | None = None, scope: str = "") -> str | None:
        """The user a login authenticates (password, or a valid ticket of the same user and scope), else
        None."""
        if realm and "@" not in username:
            username = f"{username}@{realm}"
        if username != self.credentials.user:
            return None
        if hmac.compare_digest(password.encode(), self.credentials.password.encode()):
            return username
        if password.startswith("PVE:") and self.check_ticket(password, scope) == username:
            return username
        return None

    def revoke_tickets(self) -> None:
        """Every ticket issued so far stops working (a new signing key)."""
        self._key = secrets.token_bytes(32)
        self._issued.clear()

    # ------------------------------------------------------------------------------------- tokens

    def check_token(self, header: str) -> str | None:
        value = header[len("PVEAPIToken") :]
        if not value or value[0] not in "= ":
            return None
        token_id, sep, secret = value[1:].strip().partition("=")
        if not sep or token_id != self.credentials.token_id:
            return None
        if not hmac.compare_digest(secret.encode(), self._token_secret.encode()):
            return None
        return token_id.split("!", 1)[0]

    @property
    def token_secret(self) -> str:
        return self._token_secret

    def rotate_token(self, secret: str | None = None) -> str:
        """Replace the token secret; the old one gets 401 from now on."""
        self._token_secret = secret or str(uuid.uuid4())
        return self._token_secret
