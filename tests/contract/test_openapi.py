"""OpenAI's own OpenAPI document, fuzzed against the edge (schemathesis, on the stack with the
synthetic engine): no request, however odd, gets a 5xx, and every answer matches the document's
schema, on every public route this platform serves (tests/contract/openai-subset.yaml).

Not checked: that every status is one the document lists. OpenAI's document lists only 200 for
most operations, while a request with a bad parameter correctly gets its 4xx.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from tests.stack import Stack

SUBSET = Path(__file__).parent / "openai-subset.yaml"
schema = schemathesis.openapi.from_path(SUBSET)


@pytest.fixture(scope="module")
def contract(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("contract"))
    try:
        s.guard()
        s.scheduler()
        s.worker("w1", "--tokens-per-s", "0", "--completion-tokens", "8")
        s.edge()
        s.wait_for_model("synthetic-chat")
        yield s
    finally:
        s.close()


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_every_route_keeps_openai_s_contract(case: schemathesis.Case, contract: Stack) -> None:
    case.call_and_validate(
        base_url=f"{contract.base_url}/v1",
        headers={"authorization": f"Bearer {contract.api_key}"},
        checks=[not_a_server_error, response_schema_conformance, content_type_conformance],
        timeout=30,
    )
