"""Fault injection: rules that match requests, decide (seeded) whether to fire, and misbehave on the wire.

A rule is a flat mapping (JSON for ``POST /_sim/faults``, kwargs for ``sim.add_fault``)::

    {"path": "/nodes/*/qemu/*/agent/*", "cluster": "lab-a", "probability": 0.3, "seed": 7,
     "action": "status", "status": 500, "message": "QEMU guest agent is not running"}

Match (all optional, all must hold): ``method``; ``path`` (glob on the path below ``/api2/json``, ``*``
crosses ``/``) or ``path_regex`` (``re.search``); ``cluster``; ``node`` (the ``{node}`` of the URL); ``auth``
(ticket | token | none).

Schedule, over the requests the rule matches: ``times`` (fire at most N times), ``every`` (every k-th),
``probability`` (seeded: ``seed``, default the world seed), ``burst`` (each trigger fires N consecutive
requests; alone it means "the first N, then recover"), ``after_s``/``for_s`` (a time window from the rule's
creation).

Actions: ``latency`` (only ``latency_ms``/``jitter_ms``, which any rule may also carry), ``status``
(``status``, ``message``; 401/595/596 have an empty body), ``hang`` (``hang_s``, then close unanswered),
``drop`` (abort before any byte), ``reset_mid_body`` (announce the length, send half, abort),
``malformed_json`` (200, truncated JSON), ``html`` (``html_status``, default 502, proxy error page),
``wrong_shape`` (a dict where a list was and vice versa), ``no_envelope`` (the payload without ``data``),
``empty_data`` (``{"data":null}``), ``slow_body`` (``chunk_bytes`` every ``chunk_delay_ms``).

Rules are evaluated in order: every firing ``latency`` rule adds its delay; the first other rule that fires
decides the answer, and later non-latency rules do not see the request.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import random
import re
import time
from collections.abc import Mapping
from typing import Any

import attrs
from aiohttp import web

ACTIONS = (
    "latency",
    "status",
    "hang",
    "drop",
    "reset_mid_body",
    "malformed_json",
    "html",
    "wrong_shape",
    "no_envelope",
    "empty_data",
    "slow_body",
)
# actions that need the normal answer first, then mangle it
POST_ACTIONS = frozenset({"reset_mid_body", "malformed_json", "wrong_shape", "no_envelope", "slow_body"})
ANYEVENT_REASONS = {595: "No route to host", 596: "TLS handshake failed"}
DEFAULT_MESSAGES = {
    400: "Parameter verification failed.",
    401: "authentication failure",
    403: "Permission check failed",
    500: "internal error",
    501: "not implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
HTML_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>{status} {reason}</title></head>\n<body><center><h1>{status} "
    "{reason}</h1></center>\n<hr><center>nginx/1.26.3</center>\n</body></html>\n"
)
HTML_REASONS = {
    200: "OK",
    502: "Bad Gateway",
    503: "Service Temporarily Unavailable",
    504: "Gateway Time-out",
}


@attrs.define(kw_only=True)
class FaultRule:
    id: int
    action: str
    method: str | None = None
    path: str | None = None
    path_regex: str | None = None
    cluster: str | None = None
    node: str | None = None
    auth: str | None = None
    probability: float | None = None
    times: int | None = None
    every: int | None = None
    burst: int | None = None
    after_s: float | None = None
    for_s: float | None = None
    seed: int | str | None = None
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    status: int | None = None
    message: str | None = None
    hang_s: float = 30.0
    html_status: int = 502
    chunk_bytes: int = 64
    chunk_delay_ms: float = 50.0
    # state
    matched: int = 0
    fired: int = 0
    burst_left: int = 0
    created: float = attrs.field(factory=time.monotonic)
    rng: random.Random = attrs.field(factory=random.Random, repr=False)
    pattern: re.Pattern[str] | None = attrs.field(default=None, repr=False)

    SPEC_FIELDS = (
        "action",
        "method",
        "path",
        "path_regex",
        "cluster",
        "node",
        "auth",
        "probability",
        "times",
        "every",
        "burst",
        "after_s",
        "for_s",
        "seed",
        "latency_ms",
        "jitter_ms",
        "status",
        "message",
        "hang_s",
        "html_status",
        "chunk_bytes",
        "chunk_delay_ms",
    )

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], rule_id: int, default_seed: int | str) -> FaultRule:
        """Validate a rule mapping; raises ValueError naming the offending key."""
        unknown = sorted(set(spec) - set(cls.SPEC_FIELDS))
        if unknown:
            raise ValueError(
                f"unknown fault keys: {', '.join(unknown)} (known: {', '.join(cls.SPEC_FIELDS)})"
            )
        action = spec.get("action") or (
            "latency" if spec.get("latency_ms") else "status" if spec.get("status") else None
        )
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)}, got {spec.get('action')!r}")
        kw = {k: v for k, v in spec.items() if k != "action" and v is not None}
        if action == "status" and "status" not in kw:
            raise ValueError("action 'status' needs a status code")
        if kw.get("auth") not in (None, "ticket", "token", "none"):
            raise ValueError("auth must be ticket, token or none")
        if "probability" in kw and not 0 <= float(kw["probability"]) <= 1:
            raise ValueError("probability must be between 0 and 1")
        for name in ("times", "every", "burst"):
            if name in kw and (not isinstance(kw[name], int) or kw[name] < 1):
                raise ValueError(f"{name} must be a positive integer")
        if "method" in kw:
            kw["method"] = str(kw["method"]).upper()
        if kw.get("path") and not str(kw["path"]).startswith("/"):
            kw["path"] = "/" + kw["path"]
        rule = cls(id=rule_id, action=action, **kw)
        if rule.burst and not rule.every and rule.probability is None:
            rule.times, rule.burst = (rule.times or rule.burst), None
        try:
            rule.pattern = re.compile(rule.path_regex) if rule.path_regex else None
        except re.error as exc:
            raise ValueError(f"path_regex: {exc}") from None
        rule.rng = random.Random(f"{rule.seed if rule.seed is not None else default_seed}:fault:{rule_id}")
        return rule

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in ("id", *self.SPEC_FIELDS) if getattr(self, k) is not None}
        return out | {"matched": self.matched, "fired": self.fired}

    def matches(self, method: str, path: str, cluster: str, node: str | None, auth: str) -> bool:
        return (
            (self.method is None or self.method == method)
            and (self.cluster is None or self.cluster == cluster)
            and (self.node is None or self.node == node)
            and (self.auth is None or self.auth == auth)
            and (self.path is None or fnmatch.fnmatchcase(path, self.path))
            and (self.pattern is None or self.pattern.search(path) is not None)
        )

    def decide(self, now: float) -> bool:
        age = now - self.created
        if self.after_s is not None and age < self.after_s:
            return False
        if self.for_s is not None and age >= (self.after_s or 0) + self.for_s:
            return False
        if self.times is not None and self.fired >= self.times:
            return False
        self.matched += 1
        if self.burst_left > 0:
            self.burst_left -= 1
            self.fired += 1
            return True
        trigger = self.every is None or self.matched % self.every == 0
        if trigger and self.probability is not None:
            trigger = self.rng.random() < self.probability
        if not trigger:
            return False
        self.fired += 1
        if self.burst:
            self.burst_left = self.burst - 1
        return True

    def delay_s(self) -> float:
        jitter = self.rng.uniform(0, self.jitter_ms) if self.jitter_ms else 0.0
        return max(0.0, self.latency_ms + jitter) / 1000


@attrs.frozen
class Decision:
    delay_s: float
    rule: FaultRule | None


class FaultBook:
    """The ordered rule list of one simulator (shared by every cluster's site)."""

    def __init__(self, default_seed: int | str) -> None:
        self.default_seed = default_seed
        self.rules: list[FaultRule] = []
        self._next_id = 1

    def add(self, spec: Mapping[str, Any]) -> FaultRule:
        rule = FaultRule.from_spec(spec, self._next_id, self.default_seed)
        self._next_id += 1
        self.rules.append(rule)
        return rule

    def remove(self, rule_id: int) -> bool:
        before = len(self.rules)
        self.rules = [r for r in self.rules if r.id != rule_id]
        return len(self.rules) != before

    def clear(self) -> None:
        self.rules.clear()

    def evaluate(self, method: str, path: str, cluster: str, node: str | None, auth: str) -> Decision:
        if not self.rules:
            return Decision(0.0, None)
        now = time.monotonic()
        delay = 0.0
        chosen: FaultRule | None = None
        for rule in self.rules:
            if rule.action != "latency" and chosen is not None:
                continue
            if rule.matches(method, path, cluster, node, auth) and rule.decide(now):
                delay += rule.delay_s()
                if rule.action != "latency":
                    chosen = rule
        return Decision(delay, chosen)


# --------------------------------------------------------------------------------------------- actions

JSON_TYPE = "application/json;charset=UTF-8"


def wrong_shape(payload: Any) -> Any:
    if isinstance(payload, list):
        return {str(i): v for i, v in enumerate(payload)}
    if isinstance(payload, dict):
        return [payload]
    return {"value": payload}


async def abort(request: web.Request) -> web.Response:
    """Close the connection without a byte of answer."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=200)


async def pre_action(rule: FaultRule, request: web.Request) -> web.StreamResponse | None:
    """Answer a request for an action that replaces the normal answer; None for post actions."""
    action = rule.action
    if action == "drop":
        return await abort(request)
    if action == "hang":
        await asyncio.sleep(rule.hang_s)
        return await abort(request)
    if action == "empty_data":
        return web.Response(body=b'{"data":null}', content_type=None, headers={"Content-Type": JSON_TYPE})
    if action == "html":
        reason = HTML_REASONS.get(rule.html_status, "Error")
        resp = web.Response(
            status=rule.html_status,
            reason=reason,
            content_type="text/html",
            text=HTML_PAGE.format(status=rule.html_status, reason=reason),
        )
        if rule.html_status >= 400:
            resp.force_close()
        return resp
    if action == "status":
        status = int(rule.status or 500)
        message = rule.message or ANYEVENT_REASONS.get(status) or DEFAULT_MESSAGES.get(status, "error")
        return error_response(status, message, empty_body=status in (401, 595, 596))
    return None


async def post_action(rule: FaultRule, request: web.Request, resp: web.Response) -> web.StreamResponse:
    """Mangle a normal answer."""
    body = resp.body if isinstance(resp.body, bytes) else b""
    action = rule.action
    if action in ("wrong_shape", "no_envelope") and resp.status == 200:
        doc = json.loads(body)
        payload = doc.get("data")
        out = wrong_shape(payload) if action == "wrong_shape" else payload
        if action == "wrong_shape":
            out = {**doc, "data": out}
        return json_bytes_response(json.dumps(out, separators=(",", ":")).encode())
    if action == "malformed_json":
        return json_bytes_response(body[: max(1, len(body) // 2)] if body else b'{"data":[{"vmid":1')
    if action == "reset_mid_body":
        stream = web.StreamResponse(
            status=resp.status, reason=resp.reason, headers={"Content-Type": JSON_TYPE}
        )
        stream.content_length = len(body)
        await stream.prepare(request)
        await stream.write(body[: len(body) // 2])
        if request.transport is not None:
            request.transport.abort()
        return stream
    if action == "slow_body":
        stream = web.StreamResponse(
            status=resp.status, reason=resp.reason, headers={"Content-Type": JSON_TYPE}
        )
        stream.content_length = len(body)
        await stream.prepare(request)
        step = max(1, rule.chunk_bytes)
        for i in range(0, len(body), step):
            if i:
                await asyncio.sleep(rule.chunk_delay_ms / 1000)
            await stream.write(body[i : i + step])
        await stream.write_eof()
        return stream
    return resp


def json_bytes_response(body: bytes, status: int = 200) -> web.Response:
    return web.Response(status=status, body=body, headers={"Content-Type": JSON_TYPE})


def error_response(
    status: int, message: str, *, errors: Mapping[str, str] | None = None, empty_body: bool = False
) -> web.Response:
    """PVE's error framing: reason = first line of the message, ``{"data":null,"message":"...\\n"}``,
    ``errors`` on 400, no body at all for 401/595/596, and the connection closed after the answer."""
    reason = message.split("\n", 1)[0].strip() or "error"
    if empty_body:
        body = b""
    else:
        doc: dict[str, Any] = {"data": None}
        if errors:
            doc["errors"] = dict(errors)
        doc["message"] = message if message.endswith("\n") else message + "\n"
        body = json.dumps(doc, separators=(",", ":")).encode()
    resp = web.Response(
        status=status, reason=reason, body=body, headers={"Content-Type": JSON_TYPE} if body else None
    )
    resp.force_close()
    return resp
