"""The long schemathesis run (``make chaos``): many more generated requests per operation."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from tests.test_fuzz_api import LiveApi, call_and_check, live_api, schema

__all__ = ["live_api"]  # the fixture, re-used from the short run's module
LONG_EXAMPLES = 300


@pytest.mark.chaos
@schema.parametrize()
@settings(
    max_examples=LONG_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_api_conforms_to_its_document_long(case: Any, live_api: LiveApi) -> None:
    """Every operation answers without 5xx and as the document says, over many requests."""
    call_and_check(case, live_api)
