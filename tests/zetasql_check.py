"""ZetaSQL, the reference implementation of GoogleSQL (the SQL BigQuery speaks), checking the
statements the warehouse engine sends in the tests.

The local emulator runs GoogleSQL on DuckDB and accepts SQL that BigQuery refuses (and the
other way round), so a green emulator test alone does not show the SQL is right. Each
statement is analyzed here the way BigQuery's front end analyzes it: parsed, every name
resolved against the real schemas of the tables it names (read from the emulator just before
the statement runs), every expression type-checked with its typed query parameters.

make/zetasql.mk builds .tools/zetasql: the local-service server of the npm package
@fivetrandevelopers/zetasql and its .proto files compiled for Python. This module imports
only the standard library, grpc and those generated modules, so the tool environment's own
Python can run `python -m tests.zetasql_check --check` to prove the server answers.
(tests/zetasql.py would shadow the generated `zetasql` package: pytest puts tests/ on sys.path.)
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests import emulators

TOOL_DIR = emulators.TOOLS_DIR / "zetasql"
SERVER = TOOL_DIR / "remote_server.so"
STAMP = TOOL_DIR / ".installed"
GENERATED = TOOL_DIR / "python"
# What the server is asked to analyze at most; a scoring statement is ~100 kB.
MESSAGE_BYTES = 64 * 1024 * 1024
# BigQuery's type names (the API's legacy ones too) -> ZetaSQL's TypeKind names.
TYPE_KINDS = {
    "INTEGER": "TYPE_INT64",
    "INT64": "TYPE_INT64",
    "FLOAT": "TYPE_DOUBLE",
    "FLOAT64": "TYPE_DOUBLE",
    "BOOLEAN": "TYPE_BOOL",
    "BOOL": "TYPE_BOOL",
    "STRING": "TYPE_STRING",
    "BYTES": "TYPE_BYTES",
    "DATE": "TYPE_DATE",
    "DATETIME": "TYPE_DATETIME",
    "TIME": "TYPE_TIME",
    "TIMESTAMP": "TYPE_TIMESTAMP",
    "GEOGRAPHY": "TYPE_GEOGRAPHY",
    "NUMERIC": "TYPE_NUMERIC",
    "BIGNUMERIC": "TYPE_BIGNUMERIC",
    "JSON": "TYPE_JSON",
}
# ZetaSQL's one-line errors end in the position: "... [at 1:2345]".
POSITION = re.compile(r"\[at (\d+):(\d+)\]")


def missing_tool() -> str | None:
    """Why the analyzer cannot start, or None when .tools/zetasql is built."""
    if STAMP.exists() and SERVER.exists():
        return None
    return (
        f"ZetaSQL is not installed ({SERVER.relative_to(emulators.REPO_ROOT)} is missing): run "
        "`make test` (or `make zetasql`) to build .tools/zetasql, then run pytest again"
    )


def _modules():
    """The generated modules (imported on first use: they exist only once the tool is built)."""
    if str(GENERATED) not in sys.path:
        sys.path.append(str(GENERATED))
    import local_service_pb2
    import local_service_pb2_grpc
    from zetasql.proto import options_pb2, simple_catalog_pb2
    from zetasql.public import options_pb2 as public_options_pb2
    from zetasql.public import simple_table_pb2, type_pb2

    return (
        local_service_pb2,
        local_service_pb2_grpc,
        options_pb2,
        public_options_pb2,
        simple_catalog_pb2,
        simple_table_pb2,
        type_pb2,
    )


@dataclass(frozen=True)
class Column:
    """One column of a table as BigQuery describes it (SchemaField's api_repr)."""

    name: str
    type: str  # "INTEGER", "FLOAT64", "RECORD", ...
    mode: str = "NULLABLE"  # "REPEATED" makes it an ARRAY
    fields: tuple[Column, ...] = ()

    @classmethod
    def from_api(cls, field: Mapping) -> Column:
        nested = tuple(cls.from_api(f) for f in field.get("fields") or ())
        return cls(field["name"], field["type"].upper(), (field.get("mode") or "NULLABLE"), nested)


@dataclass(frozen=True)
class Parameter:
    """A typed query parameter: `type` is a BigQuery type name or ARRAY<name>."""

    name: str
    type: str


class Analyzer:
    """A connection to a running ZetaSQL local service with BigQuery's language: every
    feature ZetaSQL has (GetLanguageOptions(maximum_features)), every statement kind (DDL and
    EXPORT DATA included: the maximum keeps only queries), external product mode (BigQuery's
    type names: FLOAT64, no INT32)."""

    def __init__(self, address: str) -> None:
        import grpc

        (service, stubs, options, public, catalog, table, types) = _modules()
        self._service, self._options, self._public = service, options, public
        self._catalog, self._table, self._type = catalog, table, types
        limits = [
            ("grpc.max_send_message_length", MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MESSAGE_BYTES),
        ]
        self._channel = grpc.insecure_channel(address, options=limits)
        self._stub = stubs.ZetaSqlLocalServiceStub(self._channel)
        language = self._stub.GetLanguageOptions(
            self._service.LanguageOptionsRequest(maximum_features=True), timeout=30
        )
        del language.supported_statement_kinds[:]
        language.product_mode = public.PRODUCT_EXTERNAL
        self.language = language

    def close(self) -> None:
        self._channel.close()

    def table_names(self, sql: str) -> list[tuple[str, ...]]:
        """The name paths of the tables a statement names (a parse error: none)."""
        import grpc

        request = self._service.ExtractTableNamesFromStatementRequest(
            sql_statement=sql, options=self.language
        )
        try:
            found = self._stub.ExtractTableNamesFromStatement(request, timeout=60)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.INVALID_ARGUMENT:
                raise
            return []
        return [tuple(name.table_name_segment) for name in found.table_name]

    def analyze(
        self,
        sql: str,
        parameters: Iterable[Parameter],
        tables: Mapping[tuple[str, ...], Sequence[Column]],
    ) -> str | None:
        """ZetaSQL's error for `sql` against `tables` (name path -> columns) with the typed
        `parameters`, or None when it analyzes cleanly."""
        import grpc

        options = self._options.AnalyzerOptionsProto(
            language_options=self.language,
            error_message_mode=self._public.ERROR_MESSAGE_ONE_LINE,
            query_parameters=[
                self._options.AnalyzerOptionsProto.QueryParameterProto(
                    name=p.name, type=self.type_of(p.type)
                )
                for p in parameters
            ],
        )
        request = self._service.AnalyzeRequest(
            options=options, simple_catalog=self.catalog(tables), sql_statement=sql
        )
        try:
            self._stub.Analyze(request, timeout=120)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.INVALID_ARGUMENT:
                raise
            return error.details()
        return None

    def catalog(self, tables: Mapping[tuple[str, ...], Sequence[Column]]):
        """A SimpleCatalogProto with the builtin functions and each table at its path: a
        sub-catalog per leading segment (`project`.`dataset`.`table` is project -> dataset ->
        table), and the dotted name as one segment too (`project.dataset.table`)."""
        root = self._catalog.SimpleCatalogProto(name="bigquery")
        root.builtin_function_options.language_options.CopyFrom(self.language)
        for path, columns in tables.items():
            table = self._table.SimpleTableProto(
                name=path[-1],
                full_name=".".join(path),
                column=[
                    self._table.SimpleColumnProto(name=c.name, type=self.column_type(c))
                    for c in columns
                ],
            )
            _sub_catalog(root, path[:-1]).table.append(table)
            if len(path) > 1:
                dotted = root.table.add()
                dotted.CopyFrom(table)
                dotted.name = ".".join(path)
        return root

    def column_type(self, column: Column):
        if column.type in ("RECORD", "STRUCT"):
            kind = self._type.TypeProto(type_kind=self._type.TYPE_STRUCT)
            for nested in column.fields:
                kind.struct_type.field.add(
                    field_name=nested.name, field_type=self.column_type(nested)
                )
        else:
            kind = self.type_of(column.type)
        if column.mode == "REPEATED":
            return self._type.TypeProto(
                type_kind=self._type.TYPE_ARRAY, array_type={"element_type": kind}
            )
        return kind

    def type_of(self, name: str):
        """A TypeProto for a BigQuery type name (`ARRAY<STRING>` too)."""
        name = name.strip().upper()
        if name.startswith("ARRAY<") and name.endswith(">"):
            element = self.type_of(name[len("ARRAY<") : -1])
            return self._type.TypeProto(
                type_kind=self._type.TYPE_ARRAY, array_type={"element_type": element}
            )
        if name not in TYPE_KINDS:
            raise ValueError(f"no ZetaSQL type for the BigQuery type {name!r}")
        return self._type.TypeProto(type_kind=self._type.TypeKind.Value(TYPE_KINDS[name]))


def _sub_catalog(root, path: Sequence[str]):
    catalog = root
    for name in path:
        found = next((c for c in catalog.catalog if c.name == name), None)
        catalog = found if found is not None else catalog.catalog.add(name=name)
    return catalog


@contextlib.contextmanager
def zetasql_server(work_dir: Path) -> Iterator[Analyzer]:
    """The ZetaSQL local service on a free loopback port until the block exits; its log in
    work_dir. Only the server must exist: make's own check runs before the stamp is made."""
    if not SERVER.exists():
        raise emulators.ToolMissingError(missing_tool())
    port = emulators.free_port()
    command = [str(SERVER), "localhost", str(port)]
    log_path = work_dir / "zetasql.log"
    with emulators.running_process(
        "zetasql", command, log_path=log_path, ready=lambda: _listening(port)
    ):
        analyzer = Analyzer(f"{emulators.HOST}:{port}")
        try:
            yield analyzer
        finally:
            analyzer.close()


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((emulators.HOST, port)) == 0


# --- The check of the warehouse engine's statements ------------------------------------------


@dataclass
class Checked:
    """The statements one test sent, each analyzed when sent; `rejected` lists ZetaSQL's
    errors as (step, message, statement)."""

    analyzer: Analyzer
    schema_of: object  # table id -> list of SchemaField api_repr dicts, None when absent
    statements: list[tuple[str, str]] = field(default_factory=list)
    rejected: list[tuple[str, str, str]] = field(default_factory=list)

    def check(self, step: str, sql: str, parameters: Iterable[Parameter]) -> str | None:
        """Analyze one statement against the tables it names as they are now; its error or
        None."""
        tables = {}
        for path in self.analyzer.table_names(sql):
            schema = self.schema_of(".".join(path))
            if schema is not None:
                tables[path] = [Column.from_api(f) for f in schema]
        error = self.analyzer.analyze(sql, parameters, tables)
        self.statements.append((step, sql))
        if error is not None:
            self.rejected.append((step, error, sql))
        return error

    def on_request(self, method: str, path: str, body: bytes) -> str:
        """A FaultProxy rule (tests/emulators.py) for a process the tests cannot patch, the
        functions-framework server: each query job it inserts is analyzed before the
        emulator sees it, named by its job id; every request then passes."""
        if method == "POST" and path.split("?")[0].endswith("/jobs") and body:
            job = json.loads(body)
            sent = job.get("configuration", {}).get("query")
            if sent and not sent.get("useLegacySql"):
                step = job.get("jobReference", {}).get("jobId", "query")
                self.check(step, sent["query"], typed(sent.get("queryParameters") or ()))
        return "pass"

    def verdict(self, expected: Mapping[str, str]) -> str | None:
        """Why the test fails, or None: a rejection not `expected` (step -> a pattern its
        message must match), or an expected step that was never rejected."""

        def meant(label: str, message: str) -> bool:
            return any(
                _names(label, step) and re.search(pattern, message)
                for step, pattern in expected.items()
            )

        problems = [
            f"ZetaSQL rejects the {label} statement: {message}\n{_around(sql, message)}"
            for label, message, sql in self.rejected
            if not meant(label, message)
        ]
        for step, pattern in expected.items():
            if any(_names(label, step) for label, _, _ in self.rejected):
                continue
            sent = any(_names(label, step) for label, _ in self.statements)
            problems.append(
                f"the {step} statement was expected to be rejected by ZetaSQL"
                f"{f' (matching {pattern!r})' if pattern else ''}, and was "
                f"{'accepted' if sent else 'not sent'}"
            )
        return "\n\n".join(problems) or None


def _names(label: str, step: str) -> bool:
    """A statement's label names `step`: its job id (neighborhood_clusters_<run>_<step>) or
    the function that sent it (module.function) ends in it."""
    return label == step or label.endswith((f"_{step}", f".{step}"))


def typed(parameters: Iterable[Mapping]) -> list[Parameter]:
    """Query parameters as the REST API sends them (queryParameters), with their types."""
    return [Parameter(p["name"], _type_name(p["parameterType"])) for p in parameters]


def _type_name(parameter_type: Mapping) -> str:
    """A query parameter's type as the REST API sends it, as a name: ARRAY<STRING>."""
    if parameter_type["type"] == "ARRAY":
        return f"ARRAY<{_type_name(parameter_type['arrayType'])}>"
    return parameter_type["type"]


def _around(sql: str, message: str, width: int = 120) -> str:
    """The statement, or where it is long the text around the error's position, marked."""
    found = POSITION.search(message)
    if not found:
        return sql if len(sql) <= 4 * width else sql[: 4 * width] + " ..."
    line, column = int(found.group(1)), int(found.group(2))
    text = sql.splitlines()[line - 1] if line <= len(sql.splitlines()) else sql
    at = column - 1
    before, after = text[max(at - width // 2, 0) : at], text[at : at + width]
    return f"line {line}: ...{before}<<HERE>>{after}..."


def main(argv: Sequence[str]) -> int:
    """`--check DIR`: start the built server, analyze one statement each way, and say so."""
    import tempfile

    if list(argv[:1]) != ["--check"]:
        print("usage: python -m tests.zetasql_check --check", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as work, zetasql_server(Path(work)) as analyzer:
        table = {("p", "d", "t"): [Column("a", "INTEGER")]}
        good = analyzer.analyze("SELECT a + 1 FROM `p`.`d`.`t`", [], table)
        bad = analyzer.analyze("SELECT b FROM `p`.`d`.`t`", [], table)
    if good is not None or bad is None:
        print(f"error: ZetaSQL does not analyze as expected: {good!r}, {bad!r}", file=sys.stderr)
        return 1
    print(f"ZetaSQL answers ({bad})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
