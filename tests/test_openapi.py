from __future__ import annotations

import os
from typing import Any

import hypothesis
import msgspec
import schemathesis
from schemathesis.checks import positive_data_acceptance
from starlette.testclient import TestClient

from tophosts.app import create_app

app = create_app()
EXAMPLES = int(os.environ.get("TOPHOSTS_SCHEMATHESIS_EXAMPLES", "25"))


def test_every_operation_documents_its_responses(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for path, item in spec["paths"].items():
        for method, op in item.items():
            assert "200" in op["responses"], (method, path)
            if method == "post":
                for status in ("400", "409", "413", "422", "429", "503"):
                    assert op["responses"][status]["content"]["application/json"]["schema"] == {
                        "$ref": "#/components/schemas/Error"
                    }


def test_the_ingest_routes_document_the_idempotency_key(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for path in ("/counter", "/counters"):
        op = spec["paths"][path]["post"]
        (key,) = [p for p in op["parameters"] if p["name"] == "Idempotency-Key"]
        assert (key["in"], key["required"]) == ("header", False)
        assert (key["schema"]["minLength"], key["schema"]["maxLength"]) == (1, 255)
        assert "Retry-After" in op["responses"]["409"]["headers"]
        assert "Idempotent-Replayed" in op["responses"]["200"]["headers"]
        assert "Idempotency-Key" in op["responses"]["504"]["description"]


def test_docs_page_renders_from_vendored_assets(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert '<script src="/docs/assets/docs.js"' in page.text
    assert "<script>" not in page.text
    script = client.get("/docs/assets/docs.js")
    assert script.status_code == 200
    assert 'fetch("/openapi.json")' in script.text
    assert client.get("/docs/assets/docs.css").status_code == 200


@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx: object, value: object) -> bytes:
    return value.encode() if isinstance(value, str) else msgspec.json.encode(value)


schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.parametrize()
@hypothesis.settings(max_examples=EXAMPLES, deadline=None, derandomize=True)
def test_the_live_app_honours_its_contract(case: schemathesis.Case[Any]) -> None:
    # Schema-valid events can still be refused by design, with a documented 400:
    # a timestamp too far ahead, or a total past 2^53 - 1. Everything else holds:
    # no 5xx, documented statuses, content types, headers and response schemas.
    case.call_and_validate(excluded_checks=[positive_data_acceptance])
