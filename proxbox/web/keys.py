"""Typed application state: one ``web.AppKey`` per resource, all declared here."""

from __future__ import annotations

from aiohttp import web

from proxbox.bus import EventBus
from proxbox.config import Settings
from proxbox.frames import Codec
from proxbox.history import History
from proxbox.jobs import Job
from proxbox.runs import RunManager
from proxbox.web.ready import Readiness
from proxbox.web.watchers import Watchers

SETTINGS = web.AppKey("proxbox_settings", Settings)
CODEC = web.AppKey("proxbox_codec", Codec)
JOB: web.AppKey[Job] = web.AppKey("proxbox_job")
HISTORY = web.AppKey("proxbox_history", History)
BUS = web.AppKey("proxbox_bus", EventBus)
RUNS = web.AppKey("proxbox_runs", RunManager)
READINESS = web.AppKey("proxbox_readiness", Readiness)
WATCHERS = web.AppKey("proxbox_watchers", Watchers)
STARTED_AT = web.AppKey("proxbox_started_at", float)
