"""``GET /ready``: is NetBox reachable (and the token accepted), and every Proxmox endpoint?

Probes are plain aiohttp requests wrapped in aiohttp-retry: connection errors, timeouts and 5xx answers are
retried with exponential backoff (``retries`` attempts from ``backoff_s``, per endpoint settings).

- NetBox: ``GET {url}/api/status/`` with the API token (``Bearer`` for v2 ``nbt_`` tokens, ``Token`` for v1).
- Proxmox: ``GET https://host:port/api2/json/version`` with the API token header, or after a ticket login
  (``POST /api2/json/access/ticket``) when the endpoint uses a password.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Any

import aiohttp
import attrs
from aiohttp_retry import ExponentialRetry, RetryClient

from proxbox.config import ProxmoxSettings, Settings, VerifySSL
from proxbox.logsetup import get_logger

log = get_logger(__name__)

_RETRY_EXCEPTIONS: set[type[Exception]] = {aiohttp.ClientConnectionError, asyncio.TimeoutError}


@attrs.frozen(kw_only=True)
class Check:
    name: str
    target: str  # URL probed (never carries a secret)
    ok: bool
    status: int | None = None
    latency_ms: float | None = None
    detail: str = ""


def _ssl(verify: VerifySSL) -> ssl.SSLContext | bool:
    if verify is False:
        return False
    if isinstance(verify, str) and verify.lower() not in ("true", "1", "yes"):
        return ssl.create_default_context(cafile=verify)
    return True


def _retry(attempts: int, backoff_s: float) -> ExponentialRetry:
    return ExponentialRetry(
        attempts=max(1, attempts),
        start_timeout=backoff_s,
        max_timeout=max(backoff_s, 5.0),
        exceptions=_RETRY_EXCEPTIONS,
        retry_all_server_errors=True,
    )


def netbox_auth_header(token: str) -> str:
    return f"Bearer {token}" if token.startswith("nbt_") else f"Token {token}"


class Readiness:
    """Owns one client session (created by :meth:`start`, closed by :meth:`close`)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(raise_for_status=False)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self, attempts: int, backoff_s: float) -> RetryClient:
        assert self._session is not None, "Readiness.start() was not called"
        return RetryClient(client_session=self._session, retry_options=_retry(attempts, backoff_s))

    async def check(self) -> list[Check]:
        probes = [self._netbox()]
        probes += [self._proxmox(px) for px in self._settings.proxmox]
        return list(await asyncio.gather(*probes))

    async def _timed(self, name: str, target: str, fn: Any) -> Check:
        started = time.monotonic()
        try:
            status, detail = await fn()
        except (TimeoutError, aiohttp.ClientError, OSError, ssl.SSLError) as exc:
            detail = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
            log.warning("ready.unreachable", check=name, target=target, error=detail)
            return Check(name=name, target=target, ok=False, detail=detail)
        latency = round((time.monotonic() - started) * 1000, 1)
        ok = status == 200
        return Check(name=name, target=target, ok=ok, status=status, latency_ms=latency, detail=detail)

    async def _netbox(self) -> Check:
        nb = self._settings.netbox
        url = f"{nb.url}/api/status/"
        timeout = aiohttp.ClientTimeout(total=nb.timeout)

        async def probe() -> tuple[int, str]:
            client = self._client(nb.retries, nb.backoff_s)
            headers = {"Authorization": netbox_auth_header(nb.token), "Accept": "application/json"}
            async with client.get(url, headers=headers, ssl=_ssl(nb.verify_ssl), timeout=timeout) as resp:
                if resp.status == 200:
                    body = await resp.json(content_type=None)
                    version = body.get("netbox-version", "") if isinstance(body, dict) else ""
                    return resp.status, f"NetBox {version}".strip()
                return resp.status, resp.reason or ""

        return await self._timed("netbox", url, probe)

    async def _proxmox(self, px: ProxmoxSettings) -> Check:
        base = f"https://{px.host}:{px.port}/api2/json"
        url = f"{base}/version"
        timeout = aiohttp.ClientTimeout(total=px.timeout, connect=px.connect_timeout)
        ssl_arg = _ssl(px.verify_ssl)

        async def probe() -> tuple[int, str]:
            client = self._client(px.retries, px.backoff_s)
            headers = {"Accept": "application/json"}
            if px.uses_token:
                headers["Authorization"] = f"PVEAPIToken={px.user}!{px.token_name}={px.token_value}"
            else:
                login = {"username": px.user, "password": px.password}
                async with client.post(
                    f"{base}/access/ticket", data=login, ssl=ssl_arg, timeout=timeout
                ) as resp:
                    if resp.status != 200:
                        return resp.status, f"login failed: {resp.reason or ''}".strip()
                    ticket = (await resp.json(content_type=None) or {}).get("data") or {}
                    headers["Cookie"] = f"PVEAuthCookie={ticket.get('ticket', '')}"
            async with client.get(url, headers=headers, ssl=ssl_arg, timeout=timeout) as resp:
                if resp.status == 200:
                    data = (await resp.json(content_type=None) or {}).get("data") or {}
                    return resp.status, f"Proxmox VE {data.get('version', '')}".strip()
                return resp.status, resp.reason or ""

        return await self._timed(f"proxmox:{px.label}", url, probe)
