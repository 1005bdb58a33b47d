"""The route table: every route once, with all that is known about it.

The app's Starlette routes, the fast lane, the auth guards, the metrics'
route labels and the OpenAPI document are all read from :data:`ROUTES`, so
adding a route is adding a row.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

from tophosts import openapi

Guard = Literal["ingest", "read"]

DOCS = Path(__file__).parent / "docs"
DASHBOARD = Path(__file__).parent / "dashboard"


@dataclasses.dataclass(frozen=True)
class Route:
    path: str
    method: str
    endpoint: str
    """The name of the :class:`tophosts.app.TopHosts` attribute that serves it."""
    operation: dict[str, Any]
    """Its OpenAPI operation."""
    guard: Guard | None = None
    """Which token it needs when one is configured: the ingest or the read token."""
    fast: bool = False
    """The endpoint is a plain ASGI app, called before Starlette (the ingest fast lane)."""


@dataclasses.dataclass(frozen=True)
class Static:
    """A folder of files served under ``path`` (no OpenAPI, no guard, label ``other``)."""

    path: str
    directory: Path
    name: str


ROUTES: tuple[Route, ...] = (
    Route("/counter", "POST", "counter", openapi.COUNTER, guard="ingest", fast=True),
    Route("/counters", "POST", "counters", openapi.COUNTERS, guard="ingest", fast=True),
    Route("/stats", "GET", "stats", openapi.STATS, guard="read"),
    Route("/stats/history", "GET", "stats_history", openapi.HISTORY, guard="read"),
    Route("/healthz", "GET", "healthz", openapi.HEALTHZ),
    Route("/metrics", "GET", "prometheus", openapi.METRICS, guard="read"),
    Route("/openapi.json", "GET", "openapi", openapi.OPENAPI),
    Route("/docs", "GET", "docs", openapi.DOCS),
    Route("/", "GET", "dashboard", openapi.DASHBOARD),
)

STATIC: tuple[Static, ...] = (
    Static("/docs/assets", DOCS, "docs"),
    Static("/dashboard/assets", DASHBOARD, "dashboard"),
)

LABELS = frozenset(route.path for route in ROUTES)


def label(path: str) -> str:
    """The metrics route label of ``path``: itself for a route, else ``other`` (so that
    unknown paths cannot grow the label set)."""
    return path if path in LABELS else "other"


def guarded(guard: Guard) -> tuple[str, ...]:
    """The paths that need the ``guard`` token."""
    return tuple(route.path for route in ROUTES if route.guard == guard)


def paths() -> dict[str, dict[str, Any]]:
    """The OpenAPI ``paths`` object."""
    out: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        out.setdefault(route.path, {})[route.method.lower()] = route.operation
    return out


def listing() -> str:
    """Every route as ``METHOD /path``, for the 404 message."""
    return ", ".join(f"{route.method} {route.path}" for route in ROUTES)
