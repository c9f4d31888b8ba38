"""What a caller's SQL may be: one read-only SELECT over the tables its caller may read.

Checked with ClickHouse's own parser and analyzer, never a regex, so that what is checked is what
runs:

1. ``formatQuery`` parses the text as the engine does and prints it back; it refuses several
   statements. The printed text, not the caller's, is what later runs, so the engine cannot parse
   the query any other way than it was checked.
2. ``EXPLAIN AST`` of that text: the query must be a SELECT (or a UNION of them) with no FORMAT,
   INTO OUTFILE or SETTINGS clause; every table function must be on a short allow-list (``merge``,
   ``file``, ``url``, ``mergeTreeIndex`` are not); every function must be known and not one that
   reads outside the query's rows (files, settings, dictionaries, other tables, the host); the
   right side of IN must be a list or a subquery, not a table's name; every table named must be one
   the caller may read (or a WITH name). The tree is read back with each node's child count
   checked, so a name with a line break in it cannot pass for a node.
3. ``EXPLAIN QUERY TREE``, run with the caller's filters and limits (the analyzer evaluates scalar
   subqueries): the tables the analyzer resolved, after WITH scopes and aliases, must all be
   allowed.

The tenant filter in the database (``additional_table_filters``) stays as a second wall behind
this one, built at each query from the tables that exist then.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from clickhouse_connect.driver.client import Client

from llmaas.errors import InvalidRequest

TENANT_TABLES = frozenset({"usage", "usage_minute", "usage_hour", "usage_day", "alert_events"})
"""What a tenant's SQL may read, each under its tenant filter; a new table joins only by name here."""

TABLE_FUNCTIONS = frozenset(
    {"numbers", "numbers_mt", "zeros", "zeros_mt", "generate_series", "generateSeries"}
)
"""Table functions that only make numbers: anything reading storage, files or the network is out."""

_PARSER_FUNCTIONS = frozenset({"lambda", "exists", "caseWithExpression"})
"""Names the parser itself writes into the tree (``x -> …``, ``EXISTS (…)``, ``CASE x WHEN``)."""

_REFUSED_CATEGORIES = frozenset({"Introspection", "Dictionary", "Embedded Dictionary", "AI", "Internal"})

_PURE_OTHER = frozenset(
    """
    MACNumToString MACStringToNum MACStringToOUI bar blockNumber blockSerializedSize blockSize byteSize
    colorOKLABToSRGB colorOKLCHToSRGB colorSRGBToOKLAB colorSRGBToOKLCH countDigits currentDatabase
    defaultValueOfArgumentType defaultValueOfTypeName digits dumpColumnStructure errorCodeToName
    finalizeAggregation flipCoordinates formatQuery formatQueryOrNull formatQuerySingleLine
    formatQuerySingleLineOrNull formatReadableDecimalSize formatReadableQuantity formatReadableSize
    formatReadableTimeDelta getSizeOfEnumType getSubcolumn getTypeSerializationStreams icebergBucket
    icebergTruncate identity ignore indexHint initializeAggregation isConstant isDecimalOverflow
    lowCardinalityIndices lowCardinalityKeys materialize minSampleSizeContinuous
    minSampleSizeConversion neighbor normalizeQuery normalizeQueryKeepNames normalizedQueryHash
    normalizedQueryHashKeepNames parseISO8601Duration parseReadableSize parseReadableSizeOrNull
    parseReadableSizeOrZero parseTimeDelta partitionId rowNumberInAllBlocks rowNumberInBlock
    runningAccumulate runningDifference runningDifferenceStartingWithFirstValue throwIf
    toColumnTypeName toTypeName transform variantElement variantType visibleWidth version
    """.split()
)
"""Functions of the catch-all 'Other' category that compute from their arguments alone. The rest of
it reads the host, the server or its settings (``file``, ``getSetting``, ``hostName``,
``filesystemAvailable``, ``showCertificate``...), other tables (``joinGet``, ``hasColumnInTable``),
or waits (``sleep``)."""

_COMBINATORS = (
    "SimpleState", "MergeState", "OrDefault", "Resample", "Distinct", "ForEach", "ArgMin", "ArgMax",
    "OrNull", "State", "Merge", "Array", "Map", "If",
)  # fmt: skip
"""Aggregate function combinators (``sumIf``, ``uniqMergeState``...), longest first."""

_IN = frozenset(
    {"in", "notIn", "globalIn", "globalNotIn", "nullIn", "notNullIn", "globalNullIn", "globalNotNullIn"}
)

_NODE = re.compile(r"^(?P<depth> *)(?P<kind>[A-Za-z]+)(?: (?P<rest>.*))?$")
_CHILDREN = re.compile(r" ?\(children (?P<n>\d+)\)$")
_ALIAS = re.compile(r" \(alias .*\)$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?$")
_RESOLVED_TABLE = re.compile(r"^ *TABLE id: \d+,(?: alias: [^,]*,)? table_name: (?P<name>.+?)$", re.MULTILINE)
_RESOLVED_FUNCTION = re.compile(
    r"^ *TABLE_FUNCTION id: \d+,.*? table_function_name: (?P<name>[^,\n]+)", re.MULTILINE
)


@dataclass(frozen=True)
class Scope:
    """What one caller's SQL may read: tables as ``database.table``, or whole databases."""

    database: str
    tables: frozenset[str]
    databases: frozenset[str] = frozenset()

    @classmethod
    def tenant(cls, database: str) -> Scope:
        return cls(database, frozenset(f"{database}.{t}" for t in TENANT_TABLES) | {"system.one"})

    @classmethod
    def administrator(cls, database: str) -> Scope:
        """Every table of ours and the engine's own (still one read-only SELECT)."""
        return cls(database, frozenset(), frozenset({database, "system"}))

    def allows(self, name: str) -> bool:
        qualified = name if "." in name else f"{self.database}.{name}"
        return qualified in self.tables or qualified.split(".", 1)[0] in self.databases


@dataclass
class Node:
    kind: str
    name: str
    children: list[Node] = field(default_factory=list)

    def walk(self) -> Iterator[Node]:
        yield self
        for child in self.children:
            yield from child.walk()


class Functions:
    """The engine's functions, read once from ``system.functions``: which a caller may call."""

    def __init__(self, client: Client) -> None:
        rows = client.query(
            "SELECT name, categories, alias_to, case_insensitive, is_aggregate FROM system.functions"
        ).result_rows
        self._category: dict[str, str] = {}
        self._aggregate = {row[0] for row in rows if row[4]} | {row[0].lower() for row in rows if row[4]}
        aliases: dict[str, str] = {}
        for name, category, alias_to, case_insensitive, _ in rows:
            for key in {name, name.lower()} if case_insensitive else {name}:
                if alias_to:
                    aliases[key] = alias_to
                else:
                    self._category[key] = category
        for key, target in aliases.items():
            self._category[key] = self._category.get(target, self._category.get(target.lower(), ""))

    def allowed(self, name: str) -> bool:
        if name in _PARSER_FUNCTIONS:
            return True
        category = self._category.get(name, self._category.get(name.lower()))
        if category is None:
            base = _aggregate_base(name, self._aggregate)
            return base is not None and self.allowed(base)
        if category == "Other":
            return name in _PURE_OTHER
        return category not in _REFUSED_CATEGORIES


def _aggregate_base(name: str, aggregates: set[str]) -> str | None:
    """``sumIfOrNull`` -> ``sum``: the aggregate a combinator chain is built on, if any."""
    for suffix in _COMBINATORS:
        if name.endswith(suffix) and len(name) > len(suffix):
            stem = name[: -len(suffix)]
            if stem in aggregates or stem.lower() in aggregates:
                return stem
            deeper = _aggregate_base(stem, aggregates)
            if deeper is not None:
                return deeper
    return None


def refuse(message: str) -> InvalidRequest:
    return InvalidRequest(message, param="query", code="query_refused")


def canonical(client: Client, sql: str) -> str:
    """The query as the engine parses it, printed back; a 400 for several statements or bad SQL."""
    try:
        text = client.query("SELECT formatQuery({q:String})", parameters={"q": sql}).result_rows[0][0]
    except Exception as exc:
        message = str(exc)
        if "Multi-statements" in message:
            raise refuse("Only one statement is allowed: send one SELECT.") from None
        detail = re.search(r"Syntax error[^:]*: (failed at position \d+)", message)
        raise InvalidRequest(
            f"The query failed: syntax error{f', {detail.group(1)}' if detail else ''}.",
            param="query",
            code="query_failed",
        ) from None
    return str(text)


def parse_tree(text: str) -> Node:
    """``EXPLAIN AST`` output as a tree, each node's announced child count checked."""
    lines = text.rstrip("\n").split("\n")
    stack: list[tuple[int, Node, int]] = []  # depth, node, children announced
    root: Node | None = None
    for line in lines:
        match = _NODE.match(line)
        if match is None:
            raise refuse("The query could not be checked.")
        depth = len(match["depth"])
        rest = match["rest"] or ""
        children = _CHILDREN.search(rest)
        announced = int(children["n"]) if children else 0
        name = _ALIAS.sub("", rest[: children.start()] if children else rest)
        node = Node(match["kind"], name)
        while stack and stack[-1][0] >= depth:
            _close(stack.pop())
        if not stack:
            if root is not None or depth != 0:
                raise refuse("The query could not be checked.")
            root = node
        else:
            if depth != stack[-1][0] + 1:
                raise refuse("The query could not be checked.")
            stack[-1][1].children.append(node)
        stack.append((depth, node, announced))
    while stack:
        _close(stack.pop())
    if root is None:
        raise refuse("The query could not be checked.")
    return root


def _close(entry: tuple[int, Node, int]) -> None:
    _, node, announced = entry
    if len(node.children) != announced:
        raise refuse("The query could not be checked.")


def check_tree(root: Node, scope: Scope, functions: Functions) -> None:
    """Refuses what a caller's query may not do (see the module's text), naming it."""
    if root.kind != "SelectWithUnionQuery" or len(root.children) != 1:
        raise refuse("Only a SELECT is allowed, without FORMAT or INTO OUTFILE.")
    table_functions = {
        id(child)
        for node in root.walk()
        if node.kind == "TableExpression"
        for child in node.children
        if child.kind == "Function"
    }
    for node in root.walk():
        if node.kind == "Set":
            raise refuse("SETTINGS are not allowed in a query.")
        if node.kind in {"InsertQuery", "CreateQuery", "AlterQuery", "DropQuery"}:
            raise refuse("Only a SELECT is allowed.")
        if id(node) in table_functions:
            if node.name not in TABLE_FUNCTIONS:
                raise refuse(
                    f"The table function {node.name[:100]!r} is not allowed "
                    f"(allowed: {', '.join(sorted(TABLE_FUNCTIONS))})."
                )
            continue
        if node.kind == "TableIdentifier" and not (
            # An unqualified name may be a WITH subquery's, which the AST does not name: the
            # analyzer's tree decides (check_resolved).
            _NAME.match(node.name) and (scope.allows(node.name) or "." not in node.name)
        ):
            raise refuse(f"Unknown table {node.name[:100]!r}: {_readable(scope)}")
        if node.kind == "Function":
            if not functions.allowed(node.name):
                raise refuse(f"The function {node.name[:100]!r} is not allowed.")
            if node.name in _IN:
                arguments = node.children[0].children if node.children else []
                if len(arguments) == 2 and arguments[1].kind in {"Identifier", "TableIdentifier"}:
                    raise refuse("IN takes a list or a subquery, not a table's name.")


def check_resolved(tree: str, scope: Scope) -> None:
    """``EXPLAIN QUERY TREE``: every table the analyzer resolved must be allowed."""
    for match in _RESOLVED_TABLE.finditer(tree):
        name = match["name"].split(",")[0].strip()
        if not scope.allows(name):
            raise refuse(f"Unknown table {name[:100]!r}: {_readable(scope)}")
    for match in _RESOLVED_FUNCTION.finditer(tree):
        if match["name"].strip() not in TABLE_FUNCTIONS:
            raise refuse(f"The table function {match['name'].strip()[:100]!r} is not allowed.")


def _readable(scope: Scope) -> str:
    if scope.databases:
        return f"you may read the tables of {', '.join(sorted(scope.databases))}."
    names = sorted(t.split(".", 1)[1] for t in scope.tables if t.startswith(f"{scope.database}."))
    return f"you may read {', '.join(names)}."


def checked(client: Client, sql: str, scope: Scope, functions: Functions, settings: dict[str, object]) -> str:
    """The text to run for ``sql`` once every check passed (on ``client``'s own session)."""
    text = canonical(client, sql)
    check_tree(parse_tree(client.raw_query(f"EXPLAIN AST {text}").decode()), scope, functions)
    resolved = client.query(f"EXPLAIN QUERY TREE {text}", settings=settings).result_rows
    check_resolved("\n".join(str(row[0]) for row in resolved), scope)
    return text
