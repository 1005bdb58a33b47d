"""The route table is the one truth: Starlette, the fast lane, the guards, the
metrics labels and the OpenAPI document all agree with it, as served."""

from __future__ import annotations

import pytest
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from tests.conftest import MakeClient
from tophosts import routes
from tophosts.app import create_app
from tophosts.config import Settings

INGEST = "ingest-token-0123456789"
READ = "read-token-0123456789abc"


def test_starlette_serves_exactly_the_table() -> None:
    app = create_app()
    served = {
        (method, route.path)
        for route in app.router.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }
    assert served == {(route.method, route.path) for route in routes.ROUTES}
    mounts = {route.path for route in app.router.routes if isinstance(route, Mount)}
    assert mounts == {static.path for static in routes.STATIC}
    assert set(app.fast) == {(r.method, r.path) for r in routes.ROUTES if r.fast}


def test_the_openapi_document_is_the_table(client: TestClient) -> None:
    documented = client.get("/openapi.json").json()["paths"]
    assert {(m.upper(), path) for path, item in documented.items() for m in item} == {
        (route.method, route.path) for route in routes.ROUTES
    }


@pytest.mark.parametrize("route", routes.ROUTES, ids=lambda r: f"{r.method} {r.path}")
def test_each_route_is_guarded_and_labelled_as_its_row_says(
    make_client: MakeClient, route: routes.Route
) -> None:
    client = make_client(ingest_token=INGEST, read_token=READ)
    response = client.request(route.method, route.path)
    assert (response.status_code == 401) == (route.guard is not None)
    if route.guard is not None:
        token = INGEST if route.guard == "ingest" else READ
        answered = client.request(
            route.method, route.path, headers={"authorization": f"Bearer {token}"}
        )
        assert answered.status_code != 401
    scrape = client.get("/metrics", headers={"authorization": f"Bearer {READ}"}).text
    assert f'route="{routes.label(route.path)}",status="{response.status_code}"' in scrape
    assert routes.label(route.path) == route.path


def test_unknown_paths_share_one_label_and_the_404_lists_the_table() -> None:
    client = TestClient(create_app(Settings()))
    for path in ("/nope", "/docs/assets/nope.js", "/stats/"):
        assert routes.label(path) == "other"
    body = client.get("/nope").json()
    assert body["error"].endswith(routes.listing())
    for route in routes.ROUTES:
        assert f"{route.method} {route.path}" in body["error"]
