"""Shared fixtures. The emulator fixtures are session-scoped: each server starts once, on its own
free port, and nothing global (environment variables included) is set; a test points its client
or subprocess at `emulator.endpoint` itself. See tests/emulators.py."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from tests import emulators, zetasql_check


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
def bigquery_emulator(tmp_path_factory, gcs_emulator) -> Iterator[emulators.BigQueryEmulator]:
    """local-bigquery: `.endpoint` ("http://127.0.0.1:PORT") and `.project` ("test-project").
    Its EXPORT DATA writes to the session's fake-gcs-server, as BigQuery's to Cloud Storage."""
    _fail_if_missing("bigquery")
    work = tmp_path_factory.mktemp("bigquery-emulator")
    with emulators.bigquery_server(work, storage_endpoint=gcs_emulator.endpoint) as emulator:
        yield emulator


# Set to 1 only where the Google Cloud CLI cannot be installed: the push tests are then
# reported as skipped, by name, instead of failing.
NO_PUBSUB_OPT_OUT = "CLUSTERING_TESTS_WITHOUT_PUBSUB_EMULATOR"


@pytest.fixture(scope="session")
def pubsub_emulator(tmp_path_factory) -> Iterator[emulators.PubSubEmulator]:
    """The official Pub/Sub emulator: `.host` ("127.0.0.1:PORT", for PUBSUB_EMULATOR_HOST),
    `.endpoint` (the same port over HTTP, REST API) and `.project`."""
    import os

    binary = emulators.find_pubsub_emulator()
    if binary is None:
        # It comes only with the Google Cloud CLI, which no package registry here provides.
        problem = (
            "the Pub/Sub emulator is not installed, so the deployed delivery path (log sink -> "
            "topic -> push subscription -> function) cannot be tested: install the Google "
            "Cloud CLI with its pubsub-emulator component (gcloud components install "
            f"pubsub-emulator), or set {NO_PUBSUB_OPT_OUT}=1 to leave these tests out"
        )
        if os.environ.get(NO_PUBSUB_OPT_OUT) == "1":
            pytest.skip(f"{NO_PUBSUB_OPT_OUT}=1: {problem}")
        pytest.fail(problem, pytrace=False)
    with emulators.pubsub_server(tmp_path_factory.mktemp("pubsub-emulator"), binary) as emulator:
        yield emulator


# --- Every warehouse statement analyzed by ZetaSQL (tests/zetasql_check.py) --------------------


@pytest.fixture(scope="session")
def zetasql_analyzer(tmp_path_factory) -> Iterator[zetasql_check.Analyzer]:
    """The ZetaSQL local service (GoogleSQL's reference analyzer), started once."""
    problem = zetasql_check.missing_tool()
    if problem:
        pytest.fail(problem, pytrace=False)
    with zetasql_check.zetasql_server(tmp_path_factory.mktemp("zetasql")) as analyzer:
        yield analyzer


@pytest.fixture(autouse=True)
def googlesql_checked(request) -> Iterator[zetasql_check.Checked | None]:
    """In every test on the BigQuery emulator, each query the app sends (a call of
    google.cloud.bigquery.Client.query from a `clustering` module: every job of the warehouse
    adapter, dry runs included, and the boundaries query) is first analyzed by ZetaSQL against
    the schemas its tables have on the emulator at that moment, with the typed parameters of its
    job config; the test fails on any error, naming the job and the statement. The tests' own
    SQL is not checked. A test that means to send SQL BigQuery refuses says so with
    @pytest.mark.googlesql_rejects(step, match=...): those steps must then be rejected (a
    statement is named by its job id, which ends in its step, or else by the function that
    sent it, e.g. clustering.adapters.bigquery.read_boundaries). None without the emulator."""
    if "bigquery_emulator" not in request.fixturenames:
        yield None
        return
    from google.api_core import exceptions
    from google.cloud import bigquery

    client = emulators.bigquery_client(request.getfixturevalue("bigquery_emulator"))

    def schema_of(table_id: str) -> list[dict] | None:
        try:
            return [f.to_api_repr() for f in client.get_table(table_id).schema]
        except (exceptions.NotFound, exceptions.BadRequest):
            return None

    checked = zetasql_check.Checked(request.getfixturevalue("zetasql_analyzer"), schema_of)
    send = bigquery.Client.query

    def query(self, sql, *args, **kwargs):
        frame = sys._getframe(1)
        caller = f"{frame.f_globals.get('__name__', '')}.{frame.f_code.co_name}"
        config = kwargs.get("job_config", args[0] if args else None)
        if caller.startswith("clustering.") and not (config and config.use_legacy_sql):
            parameters = [p.to_api_repr() for p in (config.query_parameters if config else ())]
            checked.check(kwargs.get("job_id") or caller, sql, zetasql_check.typed(parameters))
        return send(self, sql, *args, **kwargs)

    expected = {
        step: marker.kwargs.get("match", "")
        for marker in request.node.iter_markers("googlesql_rejects")
        for step in marker.args
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bigquery.Client, "query", query)
        yield checked
    client.close()
    problem = checked.verdict(expected)
    if problem:
        pytest.fail(problem, pytrace=False)
