"""Shared fixtures. The emulator fixtures are session-scoped: each server starts once, on its own
free port, and nothing global (environment variables included) is set; a test points its client
or subprocess at `emulator.endpoint` itself. See tests/emulators.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import emulators


def _fail_if_missing(tool: str) -> None:
    # Fail, never skip: a suite that silently skips its end-to-end tests looks green.
    problem = emulators.missing_tool(tool)
    if problem:
        pytest.fail(problem, pytrace=False)


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory) -> Iterator[emulators.GcsEmulator]:
    """fake-gcs-server: `.endpoint` ("http://127.0.0.1:PORT", for STORAGE_EMULATOR_HOST)."""
    _fail_if_missing("gcs")
    with emulators.gcs_server(tmp_path_factory.mktemp("gcs-emulator")) as emulator:
        yield emulator


@pytest.fixture(scope="session")
def bigquery_emulator(tmp_path_factory) -> Iterator[emulators.BigQueryEmulator]:
    """local-bigquery: `.endpoint` ("http://127.0.0.1:PORT") and `.project` ("test-project")."""
    _fail_if_missing("bigquery")
    with emulators.bigquery_server(tmp_path_factory.mktemp("bigquery-emulator")) as emulator:
        yield emulator


@pytest.fixture(scope="session")
def pubsub_emulator(tmp_path_factory) -> Iterator[emulators.PubSubEmulator]:
    """The official Pub/Sub emulator: `.host` ("127.0.0.1:PORT", for PUBSUB_EMULATOR_HOST),
    `.endpoint` (the same port over HTTP, REST API) and `.project`."""
    binary = emulators.find_pubsub_emulator()
    if binary is None:
        # It comes only with the Google Cloud CLI, which no package registry here provides.
        pytest.skip(
            "Pub/Sub emulator not found: install the Google Cloud CLI with its "
            "pubsub-emulator component (gcloud components install pubsub-emulator)"
        )
    with emulators.pubsub_server(tmp_path_factory.mktemp("pubsub-emulator"), binary) as emulator:
        yield emulator
