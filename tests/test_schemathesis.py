"""Schemathesis walks the backend's own OpenAPI document against a real backend process with a real
admin token: for every operation, generated requests (valid ones and, negative mode, ones that break
the schema) never answer 5xx, and every answer conforms to
the schema. A modest number of examples per operation keeps the run well under a minute."""

from __future__ import annotations

import asyncio

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.support.backends import own_stack

EXAMPLES_PER_OPERATION = 15
# the documentation UIs are HTML pages, not API operations
SKIPPED = ("/schema",)


async def test_every_operation_answers_without_5xx_and_as_its_schema_says(server_urls, workdir, token):
    # a backend and database of its own: as an admin of every site it discards, ends and acknowledges
    # whatever ids it makes up, which in the session's would be other tests' rows
    async with own_stack(server_urls["database_url"], workdir / "schemathesis") as stack:
        await asyncio.to_thread(_walk, stack.backend.url, token('admin', system='queue'))


def _walk(url: str, admin_token: str) -> None:
    schema = schemathesis.openapi.from_url(url + "/schema/openapi.json")
    headers = {"Authorization": f"Bearer {admin_token}"}
    checks = [not_a_server_error, response_schema_conformance]
    tested: list[str] = []
    statuses: list[int] = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok)  # the document loads: every operation of it is one
        operation = result.ok()
        if operation.path.startswith(SKIPPED):
            continue
        tested.append(operation.label)

        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy() | operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))
        def run(case: schemathesis.Case) -> None:
            response = case.call_and_validate(base_url=url, headers=headers, checks=checks,
                                              timeout=10)
            statuses.append(response.status_code)

        run()
    assert len(tested) >= 10, tested
    assert len(statuses) >= 5 * len(tested), "schemathesis generated requests for each operation"
    print(f"schemathesis: {len(tested)} operations, {len(statuses)} requests,"
          f" statuses {sorted(set(statuses))}")
