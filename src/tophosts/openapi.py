"""The OpenAPI 3.1 contract of every route, served at ``/openapi.json``."""

from __future__ import annotations

from typing import Any

from tophosts import __version__
from tophosts.events import MAX_COUNT

MAX_LIMIT = 1000


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {
    "400": _json(_ref("Error"), "Invalid body, field or parameter; nothing was applied."),
    "413": _json(_ref("Error"), "The body is larger than --max-body; nothing was applied."),
    "503": {
        **_json(_ref("Error"), "The store is unavailable; nothing was applied. Retry."),
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    },
}

# Ingest only, Redis store only: see README, "When Redis fails".
_UNCERTAIN = {
    "504": _json(
        _ref("Error"),
        "Redis stopped answering mid-write: the events may or may not have been applied. "
        "A retry with the same Idempotency-Key gets the true outcome.",
    )
}

# Ingest only: see README, "Idempotency keys".
_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": (
        "Makes a retry safe: the outcome of the first request with this key that was "
        "applied (200) is kept for --idempotency-ttl, and a retry of the same request "
        "(path and body byte for byte) gets it again, with Idempotent-Replayed: true, "
        "instead of being applied again. Refusals are not kept."
    ),
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
}
_KEYED = {
    "409": {
        **_json(
            _ref("Error"),
            "A request with this Idempotency-Key is still being handled; nothing was "
            "applied. Retry after Retry-After.",
        ),
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    },
    "422": _json(
        _ref("Error"),
        "This Idempotency-Key was used for a different request; nothing was applied.",
    ),
    "429": _json(
        _ref("Error"),
        "A new host past --max-tracked-hosts, or a new Idempotency-Key past "
        "--max-idempotency-keys; nothing was applied.",
    ),
}
_REPLAYED = {
    "Idempotent-Replayed": {
        "description": "true when this is the kept outcome of an earlier request with the "
        "same Idempotency-Key: nothing was applied now.",
        "schema": {"type": "string", "enum": ["true"]},
    }
}

SCHEMAS: dict[str, Any] = {
    "Event": {
        "type": "object",
        "description": (
            'One counter: "timestamp" in Unix seconds (UTC) and at least one host with '
            "its request count. Host names are 1 to 255 UTF-8 bytes."
        ),
        "properties": {"timestamp": {"type": "integer", "minimum": 0, "maximum": MAX_COUNT}},
        "required": ["timestamp"],
        "additionalProperties": {"type": "integer", "minimum": 0, "maximum": MAX_COUNT},
        "propertyNames": {"minLength": 1, "maxLength": 255},
        "minProperties": 2,
        "example": {"timestamp": 1764470000, "example.com": 3, "api.example.com": 1},
    },
    "Accepted": {
        "type": "object",
        "properties": {"status": {"type": "string", "enum": ["ok", "expired"]}},
        "required": ["status"],
        "additionalProperties": False,
    },
    "BatchAccepted": {
        "type": "object",
        "properties": {
            "status": {"const": "ok"},
            "accepted": {"type": "integer", "minimum": 0},
            "expired": {"type": "integer", "minimum": 0},
        },
        "required": ["status", "accepted", "expired"],
        "additionalProperties": False,
    },
    "TopHosts": {
        "type": "object",
        "properties": {
            "top_hosts": {
                "type": "object",
                "description": "Host to count, by count descending then host name ascending.",
                "additionalProperties": {"type": "integer", "minimum": 1},
            }
        },
        "required": ["top_hosts"],
        "additionalProperties": False,
        "example": {"top_hosts": {"b.com": 9, "a.com": 5}},
    },
    "Status": {
        "type": "object",
        "properties": {"status": {"const": "ok"}},
        "required": ["status"],
        "additionalProperties": False,
    },
    "Error": {
        "type": "object",
        "properties": {
            "error": {"type": "string", "description": "What was wrong and what is accepted."},
            "index": {
                "type": "integer",
                "minimum": 0,
                "description": "For a batch, the 0-based position of the first bad event.",
            },
        },
        "required": ["error"],
        "additionalProperties": False,
    },
}

# One OpenAPI operation per route; tophosts.routes puts each beside its path.
COUNTER: dict[str, Any] = {
    "summary": "Ingest one event",
    "description": (
        "The body is read as JSON whatever the Content-Type says. Events older "
        "than the start of the past round hour answer expired and are not stored."
    ),
    "parameters": [_IDEMPOTENCY_KEY],
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": _ref("Event")}},
    },
    "responses": {
        "200": {**_json(_ref("Accepted"), "Stored, or expired."), "headers": _REPLAYED},
        **_ERRORS,
        **_KEYED,
        **_UNCERTAIN,
    },
}

COUNTERS: dict[str, Any] = {
    "summary": "Ingest a batch of events, all or nothing",
    "parameters": [_IDEMPOTENCY_KEY],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "array", "items": _ref("Event")}},
            "application/x-ndjson": {
                "schema": {"type": "string", "description": "One event per line."}
            },
        },
    },
    "responses": {
        "200": {**_json(_ref("BatchAccepted"), "The whole batch."), "headers": _REPLAYED},
        **_ERRORS,
        **_KEYED,
        **_UNCERTAIN,
    },
}

STATS: dict[str, Any] = {
    "summary": "Top hosts of the past round minute or hour",
    "parameters": [
        {
            "name": "stats_type",
            "in": "query",
            "schema": {"type": "string", "enum": ["minute", "hour"], "default": "minute"},
        },
        {
            "name": "limit",
            "in": "query",
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
            "description": "Hosts to list; the default is --top (10).",
        },
    ],
    "responses": {
        "200": {
            **_json(_ref("TopHosts"), "The top hosts."),
            "headers": {
                "X-Window-Start": {
                    "description": "Start of the window answered, Unix seconds (UTC).",
                    "schema": {"type": "integer"},
                },
                "X-Window-End": {
                    "description": "End of the window answered (excluded), Unix seconds.",
                    "schema": {"type": "integer"},
                },
            },
        },
        "400": _ERRORS["400"],
        "503": _ERRORS["503"],
    },
}

HEALTHZ: dict[str, Any] = {
    "summary": "Health",
    "responses": {
        "200": _json(_ref("Status"), "Serving."),
        "503": _ERRORS["503"],
    },
}

METRICS: dict[str, Any] = {
    "summary": "Prometheus metrics",
    "responses": {
        "200": {
            "description": "Prometheus text format, or OpenMetrics when asked for.",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
}

OPENAPI: dict[str, Any] = {
    "summary": "This document",
    "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1.")},
}

DOCS: dict[str, Any] = {
    "summary": "This document, rendered for people",
    "responses": {
        "200": {
            "description": "An HTML page.",
            "content": {"text/html": {"schema": {"type": "string"}}},
        }
    },
}

DASHBOARD: dict[str, Any] = {
    "summary": "A live dashboard of the top hosts, for people",
    "description": (
        "Polls /stats and /metrics every 2 s; its script and style are served "
        "from /dashboard/assets/."
    ),
    "responses": {
        "200": {
            "description": "An HTML page.",
            "content": {"text/html": {"schema": {"type": "string"}}},
        }
    },
}


def spec(paths: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The OpenAPI document of ``paths`` (path -> method -> operation)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tophosts",
            "version": __version__,
            "description": (
                "Which hosts got the most requests in the past round minute and hour. "
                "Every error is a JSON object with an `error` text."
            ),
        },
        "paths": paths,
        "components": {"schemas": SCHEMAS},
    }
