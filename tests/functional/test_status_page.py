"""The live status page in a real headless Chromium, against a real server (real sockets, scripted job)."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from tests.fixtures.server import API_KEY, ScriptedJob


async def _start_run(handle: Any) -> str:
    async with (
        aiohttp.ClientSession() as http,
        http.post(handle.url("/sync/full"), headers=handle.headers) as resp,
    ):
        assert resp.status == 202, await resp.text()
        return str((await resp.json())["run"]["id"])


async def test_status_page_is_public_and_locked_down(proxbox_server: Any, server_settings: Any) -> None:
    handle = await proxbox_server(settings=server_settings(api_keys=[API_KEY]))
    async with aiohttp.ClientSession() as http:
        async with http.get(handle.url("/status")) as resp:
            assert resp.status == 200
            assert resp.content_type == "text/html"
            assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
            assert '<script src="status/status.js">' in await resp.text()
        async with http.get(handle.url("/status/status.js")) as resp:
            assert resp.status == 200
            assert resp.content_type == "text/javascript"
        async with http.get(handle.url("/status/status.py")) as resp:  # only the page's own assets
            assert resp.status == 404
        async with http.get(handle.url("/status/nothing.js")) as resp:
            assert resp.status == 404
        async with http.get(handle.url("/runs")) as resp:  # the data behind the page still needs the key
            assert resp.status == 401


async def test_page_shows_a_run_live_and_then_its_completion(
    proxbox_server: Any, server_settings: Any, browser: Any
) -> None:
    job = ScriptedJob(items=4)
    handle = await proxbox_server(settings=server_settings(api_keys=[API_KEY]), job=job)
    job.hold.clear()  # the run stops before its first item until the test lets it go
    run_id = await _start_run(handle)

    page = await browser.new_page()
    await page.goto(handle.url("/status") + "#key=" + API_KEY)

    # live: the page attached to the running run and shows its phase with its total, nothing done yet
    await page.wait_for(f"document.getElementById('live').dataset.runId === {json.dumps(run_id)}")
    await page.wait_for("document.querySelector('.phase[data-phase=creation]')?.dataset.total === '4'")
    assert await page.evaluate("document.getElementById('live-status').dataset.status") == "running"
    assert await page.evaluate("document.querySelector('.phase[data-phase=creation]').dataset.done") == "0"
    assert await page.evaluate("location.hash") == ""  # the key does not stay in the address bar

    job.hold.set()
    await page.wait_for("document.getElementById('live-status').dataset.status === 'succeeded'")
    assert await page.evaluate("document.querySelector('.phase[data-phase=creation]').dataset.done") == "4"
    assert (
        await page.evaluate("document.querySelector('.phase[data-phase=creation]').dataset.finished")
        == "true"
    )
    summary = await page.evaluate("document.getElementById('live-summary').textContent")
    assert "created 4" in summary
    # the recent-runs table catches up with the finished run
    await page.wait_for(f"document.getElementById('run-{run_id}')?.dataset.status === 'succeeded'")
    assert page.problems == []


async def test_page_follows_a_run_started_after_it_was_opened(
    proxbox_server: Any, server_settings: Any, browser: Any
) -> None:
    handle = await proxbox_server(settings=server_settings(), job=ScriptedJob(items=3))
    page = await browser.new_page()
    await page.goto(handle.url("/status"))  # no API keys configured: no key needed
    await page.wait_for("document.getElementById('connection').dataset.state === 'live'")
    assert await page.evaluate("document.getElementById('live').dataset.state") == "none"

    run_id = await _start_run(handle)
    await page.wait_for(f"document.getElementById('live').dataset.runId === {json.dumps(run_id)}")
    await page.wait_for("document.getElementById('live-status').dataset.status === 'succeeded'")
    assert page.problems == []


async def test_page_asks_for_an_api_key_and_uses_the_one_given(
    proxbox_server: Any, server_settings: Any, browser: Any
) -> None:
    handle = await proxbox_server(settings=server_settings(api_keys=[API_KEY]), job=ScriptedJob(items=2))
    run_id = await _start_run(handle)
    page = await browser.new_page()
    await page.goto(handle.url("/status"))
    await page.wait_for("!document.getElementById('auth').hidden")
    assert await page.evaluate("document.getElementById('connection').dataset.state") == "unauthorized"

    await page.evaluate(
        f"document.getElementById('api-key').value = {json.dumps(API_KEY)};"
        "document.getElementById('auth').requestSubmit(); true"
    )
    await page.wait_for(f"document.getElementById('run-{run_id}') !== null")
    await page.wait_for("document.getElementById('live-status').dataset.status === 'succeeded'")
    assert await page.evaluate("document.getElementById('auth').hidden") is True
