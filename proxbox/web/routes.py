"""The whole URL surface, in one list."""

from __future__ import annotations

from aiohttp import web

from proxbox import metrics
from proxbox.web import http, status, ws


def routes() -> list[web.RouteDef]:
    return [
        # WebSocket (authenticate after the upgrade: header or first message)
        web.get("/", ws.counter, allow_head=False),
        web.get("/ws", ws.commands, allow_head=False),
        web.get("/ws/virtual-machines", ws.virtual_machines, allow_head=False),
        web.get("/ws/runs/{run_id}", ws.watch_run, allow_head=False),
        # HTTP
        web.post("/sync/{kind}", http.start_sync),
        web.get("/runs", http.list_runs),
        web.get("/runs/{run_id}", http.get_run),
        web.get("/runs/{run_id}/events", http.run_events, allow_head=False),
        web.post("/runs/{run_id}/cancel", http.cancel_run),
        web.get("/health", http.health),
        web.get("/ready", http.ready),
        web.get("/version", http.version),
        # operations: Prometheus metrics, the live status page (proxbox.metrics, proxbox.web.status)
        web.get("/metrics", metrics.handler),
        *status.routes(),
    ]
