"""Logging: JSON lines off a TTY, stdlib loggers share the processors, secrets never rendered."""

from __future__ import annotations

import io
import json
import logging

from proxbox.logsetup import configure_logging, get_logger


def test_structlog_and_stdlib_loggers_write_json_lines_when_not_a_tty():
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    get_logger("proxbox.test").info("run.started", run_id="r1", token="nb-SECRET")
    logging.getLogger("aiohttp.server").warning("stdlib says %s", "hello")

    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["event"] == "run.started" and lines[0]["run_id"] == "r1" and lines[0]["level"] == "info"
    assert lines[0]["token"] == "***"
    assert lines[1]["event"] == "stdlib says hello" and lines[1]["logger"] == "aiohttp.server"
    assert "timestamp" in lines[1]
    assert "SECRET" not in stream.getvalue()


def test_level_filters_debug_events():
    stream = io.StringIO()
    configure_logging("warning", "json", stream=stream)
    get_logger("proxbox.test").info("not.shown")
    get_logger("proxbox.test").warning("shown")
    assert [json.loads(x)["event"] for x in stream.getvalue().splitlines()] == ["shown"]
