"""JSON answers of the Starlette routes: a body, an error, the store being down."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from starlette.responses import Response

from tophosts.store import StoreUnavailable

RETRY_AFTER = "1"
"""Seconds a client is asked to wait before retrying a 503."""


def json_response(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Response:
    return Response(msgspec.json.encode(payload), status, headers, "application/json")


def error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return json_response(status, {"error": message}, headers)


def unavailable(exc: StoreUnavailable) -> Response:
    return error(503, f"the store is unavailable: {exc}", {"Retry-After": RETRY_AFTER})
