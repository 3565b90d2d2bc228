"""Fuzzing the API from its own OpenAPI document: never a 500, whatever a client sends.

schemathesis reads ``/api/durable/openapi.json`` from a real server on 127.0.0.1 and, for
every operation, sends requests generated from the schemas (valid ones and deliberately
invalid ones: wrong types, out-of-range numbers, missing and unknown fields, odd
characters in ids). Every response must not be a server error, must use a status code the
document declares, and must match the declared response schema and content type. The
number of examples is bounded so the whole module takes well under a minute.

Some runs exist (one open, one completed) so that generated requests against their ids
reach the endpoints' deeper paths, not only the 404.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks as st_checks

from engine._http._api import OPERATIONS
from engine._http._openapi import openapi_document
from engine.server import _version
from tests.server.conftest import TOKEN, LiveServer, start, start_server, wait_status

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(tmp_path_factory.mktemp("fuzz") / "perdura.db", token=TOKEN)
    with httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        start(api, "greet", "0", "done")
        start(api, "sleeper", "a", 3600)
        wait_status(api, "0", "completed")
    try:
        yield live
    finally:
        live.stop()


# The document the server serves, built the way the server builds it (the test below checks
# that they are the same): schemathesis needs it when the tests are collected, before any
# server runs.
DOCUMENT = openapi_document(OPERATIONS, version=_version(), token_configured=False)
schema = schemathesis.openapi.from_dict(DOCUMENT)


def test_the_fuzzed_document_is_the_one_the_server_serves(fuzzed_server: LiveServer) -> None:
    served = httpx.get(f"{fuzzed_server.url}/api/durable/openapi.json").json()
    assert served == DOCUMENT


CHECKS = [
    st_checks.not_a_server_error,
    st_checks.status_code_conformance,
    st_checks.content_type_conformance,
    st_checks.response_schema_conformance,
]


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_no_request_generated_from_the_openapi_document_gets_a_server_error(
    case: Any, fuzzed_server: LiveServer
) -> None:
    case.call_and_validate(
        base_url=fuzzed_server.url,
        headers={"Authorization": f"Bearer {TOKEN}"},
        checks=CHECKS,
    )
