"""Local servers for the end-to-end tests: Cloud Storage, BigQuery and Pub/Sub emulators, and a
functions-framework server.

Each server runs as a subprocess in its own process group on a free loopback port, writes its
output to a log file (a pipe that nobody reads fills up and hangs the server), is polled until it
answers, and is always stopped on the way out. The emulators' tool environments are built by
make/emulators.mk into .tools/; the Pub/Sub emulator comes with the Google Cloud CLI.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
TOOLS_DIR = REPO_ROOT / ".tools"
GCS_BINARY = TOOLS_DIR / "gcs" / "fake-gcs-server"
GCS_STAMP = TOOLS_DIR / "gcs" / ".installed"
BIGQUERY_BINARY = TOOLS_DIR / "bigquery" / "bin" / "local-bigquery"
BIGQUERY_STAMP = TOOLS_DIR / "bigquery" / ".installed"
# DuckDB (inside local-bigquery) finds its offline extensions under $HOME/.duckdb.
BIGQUERY_HOME = TOOLS_DIR / "bigquery" / "home"
PUBSUB_EMULATOR_RELPATH = Path("platform", "pubsub-emulator", "bin", "cloud-pubsub-emulator")
# The interpreter running the tests is the app's venv, the one the function is deployed with.
FUNCTIONS_FRAMEWORK = Path(sys.prefix) / "bin" / "functions-framework"

DEFAULT_PROJECT = "test-project"
HOST = "127.0.0.1"
# Generous: a cold start on a busy 2-core CI machine is much slower than the usual 0.05-2 s.
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


class ToolMissingError(RuntimeError):
    """An emulator's tool environment has not been built."""


@dataclass(frozen=True)
class GcsEmulator:
    endpoint: str  # "http://127.0.0.1:PORT": the value for STORAGE_EMULATOR_HOST
    log_path: Path


@dataclass(frozen=True)
class BigQueryEmulator:
    endpoint: str  # "http://127.0.0.1:PORT": client_options api_endpoint / BIGQUERY_EMULATOR_HOST
    project: str
    grpc_address: str  # "127.0.0.1:PORT" (the Storage Read API; the app's clients do not use it)
    data_dir: Path
    log_path: Path


@dataclass(frozen=True)
class PubSubEmulator:
    host: str  # "127.0.0.1:PORT": the value for PUBSUB_EMULATOR_HOST (no scheme)
    endpoint: str  # "http://127.0.0.1:PORT": the same port also serves the REST API
    project: str
    log_path: Path


@dataclass(frozen=True)
class FunctionServer:
    url: str  # "http://127.0.0.1:PORT/"
    port: int
    log_path: Path

    def read_log(self) -> str:
        return self.log_path.read_text(errors="replace")


def free_ports(count: int = 1) -> list[int]:
    """Ports free right now on the loopback interface (all sockets stay open until every port is
    chosen, so the ports differ from each other)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in sockets]


def free_port() -> int:
    return free_ports(1)[0]


# Loopback servers only: an http_proxy in the environment must not reroute these requests.
LOCAL_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_answers(url: str, *, ok_only: bool = True) -> bool:
    """True when an HTTP server answers at url (with 2xx when ok_only)."""
    try:
        with LOCAL_HTTP.open(url, timeout=2) as response:
            return 200 <= response.status < 300
    except urllib.error.HTTPError:
        return not ok_only
    except (OSError, ValueError):
        return False


def _log_tail(log_path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop_process(process: subprocess.Popen) -> None:
    """SIGTERM the process group, then SIGKILL it if it has not exited in time."""
    if process.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
            return
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def running_process(
    name: str,
    command: list[str],
    *,
    log_path: Path,
    ready: Callable[[], bool],
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = START_TIMEOUT_S,
) -> Iterator[subprocess.Popen]:
    """Run command until the block exits, after ready() has returned True.

    Fails with the log's tail if the process exits early or is not ready in time.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        # A new session makes the process a group leader, so stopping it also stops anything it
        # spawned (a wrapper script's JVM, gunicorn's workers).
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with code {process.returncode} before it was ready; "
                    f"log {log_path}:\n{_log_tail(log_path)}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{name} was not ready after {timeout:.0f} s; log {log_path}:\n"
                    f"{_log_tail(log_path)}"
                )
            time.sleep(0.05)
        yield process
    finally:
        stop_process(process)


_TOOLS = {
    "gcs": (GCS_BINARY, GCS_STAMP, "Cloud Storage"),
    "bigquery": (BIGQUERY_BINARY, BIGQUERY_STAMP, "BigQuery"),
}


def missing_tool(name: str) -> str | None:
    """Why the emulator `name` ("gcs" or "bigquery") cannot start, or None when it is built."""
    binary, stamp, what = _TOOLS[name]
    if stamp.exists() and binary.exists():
        return None
    return (
        f"the {what} emulator is not installed ({binary.relative_to(REPO_ROOT)} is missing): "
        "run `make test` (or `make emulator-tools`) to build .tools/, then run pytest again"
    )


def _require_tool(name: str) -> None:
    problem = missing_tool(name)
    if problem:
        raise ToolMissingError(problem)


@contextlib.contextmanager
def gcs_server(work_dir: Path) -> Iterator[GcsEmulator]:
    """fake-gcs-server with in-memory storage; its log goes to work_dir."""
    _require_tool("gcs")
    port = free_port()
    endpoint = f"http://{HOST}:{port}"
    log_path = work_dir / "fake-gcs-server.log"
    # -external-url: the server writes it into mediaLink/resumable upload URLs it hands back.
    command = [
        str(GCS_BINARY),
        *("-scheme", "http", "-host", HOST, "-port", str(port)),
        *("-backend", "memory", "-external-url", endpoint, "-log-level", "warn"),
    ]
    with running_process(
        "fake-gcs-server",
        command,
        log_path=log_path,
        ready=lambda: http_answers(f"{endpoint}/storage/v1/b"),
    ):
        yield GcsEmulator(endpoint=endpoint, log_path=log_path)


@contextlib.contextmanager
def bigquery_server(
    work_dir: Path, project: str = DEFAULT_PROJECT, storage_endpoint: str | None = None
) -> Iterator[BigQueryEmulator]:
    """local-bigquery with its data under work_dir/data and its log in work_dir; with
    `storage_endpoint` (a fake-gcs-server), EXPORT DATA to gs:// writes there."""
    _require_tool("bigquery")
    port, grpc_port = free_ports(2)
    endpoint = f"http://{HOST}:{port}"
    data_dir = work_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = work_dir / "local-bigquery.log"
    # --host and --data-dir always: the defaults are 0.0.0.0 and /data.
    command = [
        str(BIGQUERY_BINARY),
        "serve",
        *("--host", HOST, "--port", str(port), "--grpc-port", str(grpc_port)),
        *("--project", project, "--data-dir", str(data_dir)),
    ]
    env = {**os.environ, "HOME": str(BIGQUERY_HOME)}
    if storage_endpoint:
        env["STORAGE_EMULATOR_HOST"] = storage_endpoint
    with running_process(
        "local-bigquery",
        command,
        log_path=log_path,
        env=env,
        ready=lambda: http_answers(f"{endpoint}/bigquery/v2/projects/{project}/datasets"),
    ):
        yield BigQueryEmulator(
            endpoint=endpoint,
            project=project,
            grpc_address=f"{HOST}:{grpc_port}",
            data_dir=data_dir,
            log_path=log_path,
        )


def find_pubsub_emulator() -> Path | None:
    """The Pub/Sub emulator of the installed Google Cloud CLI, or None where there is none."""
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        return None
    try:
        sdk_root = subprocess.run(
            [gcloud, "info", "--format=value(installation.sdk_root)"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    binary = Path(sdk_root) / PUBSUB_EMULATOR_RELPATH
    return binary if sdk_root and binary.is_file() else None


@contextlib.contextmanager
def pubsub_server(
    work_dir: Path, binary: Path, project: str = DEFAULT_PROJECT
) -> Iterator[PubSubEmulator]:
    """The official Pub/Sub emulator (binary from find_pubsub_emulator); log in work_dir."""
    port = free_port()
    host = f"{HOST}:{port}"
    endpoint = f"http://{host}"
    log_path = work_dir / "pubsub-emulator.log"
    with running_process(
        "pubsub emulator",
        [str(binary), f"--host={HOST}", f"--port={port}"],
        log_path=log_path,
        ready=lambda: http_answers(f"{endpoint}/v1/projects/{project}/topics"),
    ):
        yield PubSubEmulator(host=host, endpoint=endpoint, project=project, log_path=log_path)


@contextlib.contextmanager
def functions_framework_server(
    target_file: Path | str,
    env: Mapping[str, str | None] | None = None,
    port: int | None = None,
    *,
    target: str = "recluster",
    signature_type: str = "http",
    log_path: Path | None = None,
) -> Iterator[FunctionServer]:
    """Serve target_file's `target` with functions-framework until the block exits.

    env is laid over this process's environment (a None value removes a variable). port
    defaults to a free one; the log (stdout and stderr) defaults to a file in a new temporary
    folder. The working directory is target_file's folder, as in Cloud Functions.
    """
    source = Path(target_file).resolve()
    port = port or free_port()
    if log_path is None:
        log_path = Path(tempfile.mkdtemp(prefix="functions-framework-")) / "server.log"
    server_env = dict(os.environ)
    server_env["PYTHONUNBUFFERED"] = "1"
    for key, value in (env or {}).items():
        if value is None:
            server_env.pop(key, None)
        else:
            server_env[key] = value
    url = f"http://{HOST}:{port}/"
    command = [
        str(FUNCTIONS_FRAMEWORK),
        *("--target", target, "--signature-type", signature_type),
        *("--source", str(source), "--port", str(port), "--host", HOST),
    ]
    # Any HTTP answer means the app is loaded: the function answers a bare GET with 405.
    with running_process(
        "functions-framework",
        command,
        log_path=log_path,
        env=server_env,
        cwd=source.parent,
        ready=lambda: http_answers(url, ok_only=False),
    ):
        yield FunctionServer(url=url, port=port, log_path=log_path)


def bigquery_client(emulator: BigQueryEmulator):
    """An unmodified google.cloud.bigquery.Client talking to the emulator.

    client_options is used rather than BIGQUERY_EMULATOR_HOST: it touches no global state, and
    the environment variable alone does not stop the client from looking for credentials.
    """
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    return bigquery.Client(
        project=emulator.project,
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": emulator.endpoint},
    )


def storage_client(emulator: GcsEmulator, project: str = DEFAULT_PROJECT):
    """An unmodified google.cloud.storage.Client talking to the emulator (see bigquery_client)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(
        project=project,
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": emulator.endpoint},
    )


class FaultProxy:
    """An HTTP proxy in front of an emulator that injects faults the emulators never produce:
    a response lost after the request was applied, or an error answer (a 403 rate limit, a
    503) instead of forwarding.

    `rule(method, path, body)` is asked for every request and returns "pass", "drop" (forward, then
    close the connection without answering, as a network failure after the server acted does)
    or (status, JSON body) to answer without forwarding. Every request is recorded in
    `.requests` as "METHOD path action".
    """

    def __init__(self, target: str, rule: Callable[[str, str, bytes], object]) -> None:
        import http.client
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import urlsplit

        self.requests: list[str] = []
        proxy = self
        upstream = urlsplit(target)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                action = rule(self.command, self.path, body or b"")
                proxy.requests.append(f"{self.command} {self.path} {action}")
                if isinstance(action, tuple):
                    status, payload = action
                    self._answer(status, [], json.dumps(payload).encode())
                    return
                connection = http.client.HTTPConnection(
                    upstream.hostname, upstream.port, timeout=60
                )
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                connection.request(self.command, self.path, body=body, headers=headers)
                response = connection.getresponse()
                content = response.read()
                connection.close()
                if action == "drop":
                    self.close_connection = True
                    return
                self._answer(response.status, response.getheaders(), content)

            def _answer(self, status: int, headers, content: bytes) -> None:
                self.send_response(status)
                skip = {"content-length", "transfer-encoding", "connection"}
                for name, value in headers:
                    if name.lower() not in skip:
                        self.send_header(name, value)
                self.send_header(
                    "Content-Type", dict(headers).get("Content-Type", "application/json")
                )
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.endpoint = f"http://{HOST}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
