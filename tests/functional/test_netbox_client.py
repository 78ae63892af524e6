"""The NetBox client against a real NetBox (and, for faults, through a small HTTP proxy in front of it)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import attrs
import pytest
from aiohttp import web

from proxbox.config import NetBoxSettings
from proxbox.errors import NetBoxAuthError, NetBoxRejected, NetBoxUnavailable
from proxbox.netbox.client import NetBoxClient, item_errors

pytestmark = pytest.mark.netbox


def settings(url: str, token: str, **kw: Any) -> NetBoxSettings:
    return NetBoxSettings(url=url, token=token, **{"retries": 3, "backoff_s": 0.01, "timeout": 30, **kw})


@pytest.fixture
async def nb(netbox: Any) -> AsyncIterator[NetBoxClient]:
    client = NetBoxClient(settings(netbox.url, netbox.token))
    yield client
    client.close()


async def test_bulk_create_update_delete_round_trip(nb: NetBoxClient):
    rows = await nb.create("extras.tags", [{"name": f"t{i}", "slug": f"t{i}"} for i in range(5)])
    assert [r["slug"] for r in rows] == [f"t{i}" for i in range(5)]
    await nb.update("extras.tags", [{"id": r["id"], "description": "x"} for r in rows[:2]])
    await nb.delete("extras.tags", [rows[4]["id"]])
    listed = await nb.list("extras.tags", fields=("id", "slug", "description"))
    assert {(r["slug"], r["description"]) for r in listed} == {
        ("t0", "x"),
        ("t1", "x"),
        ("t2", ""),
        ("t3", ""),
    }
    assert nb.stats.snapshot() == {"POST": 1, "PATCH": 1, "DELETE": 1, "GET": 1}


async def test_list_reads_every_page_with_only_the_requested_fields(nb: NetBoxClient):
    await nb.create("extras.tags", [{"name": f"tag{i:02}", "slug": f"tag{i:02}"} for i in range(23)])
    rows = await nb.list("extras.tags", fields=("id", "slug"), page_size=10)
    assert sorted(r["slug"] for r in rows) == [f"tag{i:02}" for i in range(23)]
    assert all(set(r) == {"id", "slug"} for r in rows)
    assert nb.stats.snapshot()["GET"] == 3
    assert await nb.list("extras.tags", slug=["tag01", "tag02"]) != []
    assert {r["slug"] for r in await nb.list("extras.tags", slug=["tag01", "tag02"])} == {"tag01", "tag02"}


async def test_rejected_bulk_write_names_the_bad_items(nb: NetBoxClient):
    await nb.create("extras.tags", [{"name": "taken", "slug": "taken"}])
    with pytest.raises(NetBoxRejected) as info:
        await nb.create(
            "extras.tags",
            [
                {"name": "ok1", "slug": "ok1"},
                {"name": "taken", "slug": "taken"},
                {"name": "ok2", "slug": "ok2"},
            ],
        )
    assert [(by, i) for by, i, _ in item_errors(info.value.body)] == [("index", 1)]  # type: ignore[attr-defined]
    assert "already exists" in str(info.value)
    assert {r["slug"] for r in await nb.list("extras.tags")} == {"taken"}  # one transaction: nothing landed
    assert nb.stats.snapshot()["POST"] == 2  # a rejection is not retried


async def test_wrong_token_is_an_auth_error_and_not_retried(netbox: Any):
    client = NetBoxClient(settings(netbox.url, "0" * 40))
    try:
        with pytest.raises(NetBoxAuthError):
            await client.list("extras.tags")
        assert client.stats.snapshot() == {"GET": 1}
    finally:
        client.close()


async def test_unreachable_netbox_is_retried_then_unavailable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    sleeps: list[float] = []

    async def sleep(delay: float) -> None:
        sleeps.append(delay)

    client = NetBoxClient(settings(f"http://127.0.0.1:{port}", "t", retries=3), sleep=sleep)
    try:
        with pytest.raises(NetBoxUnavailable) as info:
            await client.list("extras.tags")
        assert info.value.retryable
        assert len(sleeps) == 2 and client.stats.snapshot() == {"GET": 3}
    finally:
        client.close()


# ------------------------------------------------------------------------------------- fault proxy


@attrs.define
class FaultProxy:
    """Forwards to NetBox; ``faults`` decide per request: ``lose_answer`` (forward, then answer 502) or
    ``fail`` (answer 503 without forwarding)."""

    target: str
    faults: list[tuple[str, str, str]] = attrs.Factory(
        list
    )  # (method, path fragment, action), used once each
    seen: list[tuple[str, str, int]] = attrs.Factory(list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        action = None
        for i, (method, fragment, what) in enumerate(self.faults):
            if request.method == method and fragment in request.path:
                action = what
                del self.faults[i]
                break
        if action == "fail":
            self.seen.append((request.method, request.path, 503))
            return web.Response(status=503, text="Service Unavailable")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method, self.target + request.path_qs, data=body or None, headers=headers
            ) as resp,
        ):
            payload = await resp.read()
            status = resp.status
            content_type = resp.headers.get("Content-Type", "application/json")
        self.seen.append((request.method, request.path, status))
        if action == "lose_answer":
            return web.Response(status=502, text="Bad Gateway")
        return web.Response(status=status, body=payload, headers={"Content-Type": content_type})


@pytest.fixture
async def proxy(netbox: Any, aiohttp_server: Callable[..., Any]) -> FaultProxy:
    fp = FaultProxy(target=netbox.url)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fp.handle)
    server = await aiohttp_server(app)
    fp.url = str(server.make_url("")).rstrip("/")
    return fp


async def test_create_whose_answer_was_lost_is_not_created_twice(netbox: Any, proxy: FaultProxy):
    proxy.faults.append(("POST", "/api/extras/tags/", "lose_answer"))
    client = NetBoxClient(settings(proxy.url, netbox.token))
    try:
        rows = await client.create(
            "extras.tags", [{"name": "once", "slug": "once"}], lookups=[{"slug": "once"}]
        )
    finally:
        client.close()
    assert len(rows) == 1 and rows[0]["id"]
    assert [s for s in proxy.seen if s[0] == "POST"] == [("POST", "/api/extras/tags/", 201)]
    assert len(list(netbox.api().extras.tags.filter(slug="once"))) == 1


async def test_create_that_did_not_land_is_retried(netbox: Any, proxy: FaultProxy):
    proxy.faults.append(("POST", "/api/extras/tags/", "fail"))
    client = NetBoxClient(settings(proxy.url, netbox.token))
    try:
        rows = await client.create(
            "extras.tags", [{"name": "retry", "slug": "retry"}], lookups=[{"slug": "retry"}]
        )
    finally:
        client.close()
    assert rows[0]["slug"] == "retry"
    assert [s[2] for s in proxy.seen if s[0] == "POST"] == [503, 201]


async def test_create_without_a_lookup_is_never_retried(netbox: Any, proxy: FaultProxy):
    proxy.faults.append(("POST", "/api/extras/tags/", "fail"))
    client = NetBoxClient(settings(proxy.url, netbox.token))
    try:
        with pytest.raises(NetBoxUnavailable):
            await client.create("extras.tags", [{"name": "x", "slug": "x"}])
    finally:
        client.close()
    assert [s[2] for s in proxy.seen if s[0] == "POST"] == [503]


async def test_transient_read_failure_is_retried(netbox: Any, proxy: FaultProxy):
    proxy.faults.append(("GET", "/api/extras/tags/", "fail"))
    client = NetBoxClient(settings(proxy.url, netbox.token))
    try:
        assert await client.list("extras.tags") == []
    finally:
        client.close()
    assert [s[2] for s in proxy.seen] == [503, 200]
