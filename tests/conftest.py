"""Shared pytest wiring. Fixture modules live in tests/fixtures/ (one per area) and are all loaded here."""

from __future__ import annotations

import pkgutil

import tests.fixtures

pytest_plugins = [f"tests.fixtures.{m.name}" for m in pkgutil.iter_modules(tests.fixtures.__path__)]
