"""``GET /status``: the live status page (plain HTML, one script, one stylesheet, no build step).

The page itself is public: it holds no data. Its script reads the API (``GET /runs``, ``GET /version``) with
the API key from the page's ``#key=...`` fragment (or a form; kept in the tab's sessionStorage), and follows
the current run over ``/ws/runs/{id}?since=N``, sending ``{"api_key": ...}`` as the first message.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from proxbox.web.auth import public

STATIC = Path(__file__).with_name("static")
PAGE = "status.html"
ASSETS: dict[str, str] = {
    "status.js": "text/javascript; charset=utf-8",
    "status.css": "text/css; charset=utf-8",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:;"
        " base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@public
async def page(request: web.Request) -> web.StreamResponse:
    headers = {**SECURITY_HEADERS, "Content-Type": "text/html; charset=utf-8"}
    return web.FileResponse(STATIC / PAGE, headers=headers)


@public
async def asset(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    content_type = ASSETS.get(name)
    if content_type is None:
        raise web.HTTPNotFound(reason=f"no asset {name!r}")
    return web.FileResponse(STATIC / name, headers={**SECURITY_HEADERS, "Content-Type": content_type})


def routes() -> list[web.RouteDef]:
    return [
        web.get("/status", page),
        web.get("/status/{name}", asset),
    ]
