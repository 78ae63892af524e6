"""What a failed Proxmox call means, and how long to wait before the next try. Pure: no I/O, no clock.

:func:`classify` turns whatever proxmoxer/requests raised (or a payload that failed :func:`check_shape`) into
a :class:`Failure`: retry or not, re-login or not, "absent" (a known *no data* answer) or a typed error.
The decision is made on types and status codes; the only text matched is PVE's own reason phrase for the
documented "no data" 500s (PVE has no other signal for them) and the status code proxmoxer embeds in its
login error (it keeps no attribute for it).

Policy (see docs/discovery.md):

==========================================  =======  =====================================================
what happened                                retried  becomes
==========================================  =======  =====================================================
connection refused/reset/dropped, TLS error  yes      ProxmoxUnavailable
connect/read timeout, outer guard timeout    yes      ProxmoxUnavailable
5xx, 595, 596 (and 597-599)                  yes      ProxmoxUnavailable
2xx that is not JSON / has no ``data`` /     yes      ProxmoxMalformedResponse
wrong container type
500 agent not configured/running, VM/CT not  no       *absent* (the client returns None)
running, config file does not exist
401                                          once     after one re-login: ProxmoxAuthError
ticket login refused (401/403/400)           no       ProxmoxAuthError
403                                          no       ProxmoxPermissionError
400 (and other 4xx)                          no       ProxmoxBadRequest
404, 501                                     no       ProxmoxNotFound
TLS certificate verification failure         no       ProxmoxUnavailable (a configuration problem)
==========================================  =======  =====================================================
"""

from __future__ import annotations

import json
import random
import re
import ssl
from collections.abc import Sequence
from typing import Any, Literal

import attrs
import requests
from proxmoxer import AuthenticationError, ResourceException

from proxbox.errors import (
    ProxmoxAuthError,
    ProxmoxBadRequest,
    ProxmoxError,
    ProxmoxMalformedResponse,
    ProxmoxNotFound,
    ProxmoxPermissionError,
    ProxmoxUnavailable,
)

# PVE's reason phrase (the first line of its message) for answers that mean "there is no such data right now".
ABSENT_500 = (
    re.compile(r"No QEMU guest agent configured", re.IGNORECASE),
    re.compile(r"QEMU guest agent is not running", re.IGNORECASE),
    re.compile(r"\b(VM|CT) \d+ (is )?not running", re.IGNORECASE),
    re.compile(r"Configuration file '[^']*' does not exist", re.IGNORECASE),
)

# 500s that no retry will change. A node the cluster lists but this one cannot resolve (being removed or
# renamed) is *not* "no data": an empty answer would make its guests look deleted. It fails at once instead,
# and the node is left incomplete.
PERMANENT_500 = (re.compile(r"hostname lookup '[^']*' failed", re.IGNORECASE),)

Shape = Literal["list", "dict", "list_or_null", "any"]


class MalformedPayload(Exception):
    """Raised by the client for a 2xx payload that failed :func:`check_shape`."""


@attrs.frozen(kw_only=True)
class Failure:
    kind: str  # stats key: "500", "595", "timeout", "connection", "malformed", "login", ...
    reason: str  # safe human text (never a secret)
    error: type[ProxmoxError]
    status: int | None = None
    retry: bool = False
    relogin: bool = False
    absent: bool = False


def _status_failure(status: int, reason: str) -> Failure:
    kind = str(status)
    if status == 401:
        return Failure(kind=kind, reason=reason, error=ProxmoxAuthError, status=status, relogin=True)
    if status == 403:
        return Failure(kind=kind, reason=reason, error=ProxmoxPermissionError, status=status)
    if status in (404, 501):
        return Failure(kind=kind, reason=reason, error=ProxmoxNotFound, status=status)
    if status == 500 and any(p.search(reason) for p in ABSENT_500):
        return Failure(kind="absent", reason=reason, error=ProxmoxNotFound, status=status, absent=True)
    if status == 500 and any(p.search(reason) for p in PERMANENT_500):
        return Failure(kind=kind, reason=reason, error=ProxmoxUnavailable, status=status)
    if status >= 500 or status in (408, 429):
        return Failure(kind=kind, reason=reason, error=ProxmoxUnavailable, status=status, retry=True)
    return Failure(kind=kind, reason=reason, error=ProxmoxBadRequest, status=status)


def _cert_verify_failed(exc: BaseException) -> bool:
    """Whether an ssl.SSLCertVerificationError hides anywhere in the chain (requests → urllib3 → ssl)."""
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        current = todo.pop()
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return True
        todo.extend([current.__cause__, current.__context__, getattr(current, "reason", None), *current.args])
    return False


_LOGIN_CODE = re.compile(r"code: (\d{3})")


def classify(exc: BaseException) -> Failure:
    """The meaning of one failed attempt."""
    if isinstance(exc, ResourceException):
        reason = str(exc.content or exc.status_message or "").strip().splitlines()
        text = f"HTTP {exc.status_code} {reason[0] if reason else ''}".strip()
        return _status_failure(int(exc.status_code), text)
    if isinstance(exc, AuthenticationError):
        match = _LOGIN_CODE.search(str(exc))
        status = int(match.group(1)) if match else None
        if status is not None and (status >= 500 or status in (408, 429)):
            return Failure(
                kind=str(status),
                reason=f"ticket login: HTTP {status}",
                error=ProxmoxUnavailable,
                status=status,
                retry=True,
            )
        return Failure(
            kind="login",
            reason=f"ticket login refused (HTTP {status})" if status else "ticket login refused",
            error=ProxmoxAuthError,
            status=status,
        )
    if isinstance(exc, ProxmoxError):  # raised by the client itself (e.g. closed meanwhile)
        return Failure(kind=exc.code, reason=exc.message, error=type(exc), retry=False)
    if isinstance(exc, MalformedPayload):
        return Failure(kind="malformed", reason=str(exc), error=ProxmoxMalformedResponse, retry=True)
    if isinstance(exc, requests.exceptions.SSLError) and _cert_verify_failed(exc):
        return Failure(
            kind="tls_verify", reason="TLS certificate verification failed", error=ProxmoxUnavailable
        )
    if isinstance(exc, requests.exceptions.Timeout | TimeoutError):
        return Failure(kind="timeout", reason="timed out", error=ProxmoxUnavailable, retry=True)
    if isinstance(exc, requests.exceptions.InvalidJSONError | json.JSONDecodeError):
        # a login answer that is not JSON
        return Failure(
            kind="malformed", reason="answer is not JSON", error=ProxmoxMalformedResponse, retry=True
        )
    if isinstance(exc, requests.exceptions.ConnectionError):
        return Failure(
            kind="connection", reason=_short(exc, "connection failed"), error=ProxmoxUnavailable, retry=True
        )
    if isinstance(exc, requests.exceptions.ChunkedEncodingError | requests.exceptions.ContentDecodingError):
        return Failure(
            kind="connection", reason="connection broken mid-body", error=ProxmoxUnavailable, retry=True
        )
    if isinstance(exc, KeyError | TypeError):
        # proxmoxer does json.loads(body)["data"]: a JSON body without the envelope
        return Failure(
            kind="malformed",
            reason="answer has no 'data' envelope",
            error=ProxmoxMalformedResponse,
            retry=True,
        )
    if isinstance(exc, requests.exceptions.RequestException | OSError):
        return Failure(
            kind="connection", reason=_short(exc, "request failed"), error=ProxmoxUnavailable, retry=True
        )
    return Failure(kind="internal", reason=f"{type(exc).__name__}: {exc}", error=ProxmoxError)


def _short(exc: BaseException, default: str) -> str:
    """A one-line description of a transport error without URLs (they are in the error's context already)."""
    name = type(exc).__name__
    text = str(exc)
    for marker in (
        "Connection refused",
        "Connection reset",
        "Remote end closed",
        "timed out",
        "No route to host",
    ):
        if marker.lower() in text.lower():
            return f"{name}: {marker}"
    return f"{name}: {default}"


def check_shape(payload: Any, shape: Shape) -> str | None:
    """Why ``payload`` is malformed for an endpoint of ``shape``, or None when it is fine."""
    if isinstance(payload, dict) and set(payload) == {"errors"} and isinstance(payload["errors"], bytes):
        return "answer is not JSON"
    if shape == "list" and not isinstance(payload, list):
        return f"expected a list, got {_type_name(payload)}"
    if shape == "dict" and not isinstance(payload, dict):
        return f"expected an object, got {_type_name(payload)}"
    if shape == "list_or_null" and payload is not None and not isinstance(payload, list):
        return f"expected a list, got {_type_name(payload)}"
    return None


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


_SHAPES: tuple[tuple[tuple[str, ...], Shape], ...] = (
    (("version",), "dict"),
    (("access", "permissions"), "dict"),
    (("cluster", "status"), "list"),
    (("cluster", "resources"), "list"),
    (("cluster", "backup"), "list"),
    (("cluster", "backup", "*"), "dict"),
    (("cluster", "replication"), "list"),
    (("cluster", "tasks"), "list"),
    (("cluster", "ha", "resources"), "list"),
    (("pools",), "list"),
    (("storage",), "list"),
    (("nodes",), "list"),
    (("nodes", "*", "status"), "dict"),
    (("nodes", "*", "version"), "dict"),
    (("nodes", "*", "network"), "list"),
    (("nodes", "*", "qemu"), "list"),
    (("nodes", "*", "lxc"), "list"),
    (("nodes", "*", "storage"), "list"),
    (("nodes", "*", "storage", "*", "status"), "dict"),
    (("nodes", "*", "storage", "*", "content"), "list"),
    (("nodes", "*", "tasks"), "list"),
    (("nodes", "*", "tasks", "*", "status"), "dict"),
    (("nodes", "*", "qemu", "*", "config"), "dict"),
    (("nodes", "*", "qemu", "*", "pending"), "list"),
    (("nodes", "*", "qemu", "*", "status", "current"), "dict"),
    (("nodes", "*", "qemu", "*", "agent", "*"), "dict"),
    (("nodes", "*", "qemu", "*", "snapshot"), "list"),
    (("nodes", "*", "lxc", "*", "config"), "dict"),
    (("nodes", "*", "lxc", "*", "status", "current"), "dict"),
    (("nodes", "*", "lxc", "*", "interfaces"), "list_or_null"),
    (("nodes", "*", "lxc", "*", "snapshot"), "list"),
)


_SHAPES_BY_LENGTH: dict[int, tuple[tuple[tuple[str, ...], Shape], ...]] = {
    n: tuple(entry for entry in _SHAPES if len(entry[0]) == n) for n in {len(t) for t, _ in _SHAPES}
}


def expected_shape(parts: Sequence[str]) -> Shape:
    """The container type the API documents for a path (``("nodes", "pve1", "qemu")`` → ``"list"``)."""
    for template, shape in _SHAPES_BY_LENGTH.get(len(parts), ()):
        if all(t in ("*", p) for t, p in zip(template, parts, strict=True)):
            return shape
    return "any"


def backoff_delay(attempt: int, base_s: float, rng: random.Random, cap_s: float = 30.0) -> float:
    """Full jitter: uniform(0, min(cap, base * 2**(attempt-1))) before retry number ``attempt`` (1-based)."""
    ceiling = min(cap_s, base_s * (2 ** max(attempt - 1, 0)))
    return rng.uniform(0.0, ceiling) if ceiling > 0 else 0.0
