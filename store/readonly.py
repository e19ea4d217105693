"""Run an analyst's SQL read-only and bounded, one ``SELECT`` at a time: for the API's query endpoint.

The engine reads the query, not this module: nothing here tokenises SQL. :func:`run_readonly`

1. has the engine format the text (``formatQuerySingleLine``, the text passed as a bound value): comments
   go, escapes in identifiers are decoded, whatever the engine takes for blank (a zero-width space) is
   blank. That formatted statement, and nothing else, is vetted and run;
2. vets the engine's parse tree of it (``EXPLAIN AST``, which only parses) with :func:`vet_ast`: one
   ``SELECT``, no ``SETTINGS``, ``FORMAT`` or ``INTO OUTFILE`` of the caller's, no table function but
   ``numbers``, no table or column of another database (``system`` and ``information_schema``
   included), no function that reaches outside the data (:func:`function_refusal`), no syntax it does not
   know (``APPLY`` names a function out of sight, for one). A tree it cannot read back unambiguously
   (a name holding a line break) is refused;
3. vets what the engine resolved (``EXPLAIN QUERY TREE``, under the limits below) with
   :func:`vet_query_tree`: every table read belongs to the store's database;
4. runs it with ``readonly=1`` and the limits of :class:`SqlLimits`, reading the result one block at a
   time and stopping as soon as it holds more rows or bytes than allowed.

On the embedded engine (chdb) this vetting is the barrier: chdb's one user holds the ``FILE`` grant and
cannot give it up, and ``file()`` reads absolute paths whatever ``user_files_path`` says. On a ClickHouse
server, give the API a user that can only read the cvops database (docs/security.md): there the grant is
the barrier and this module a second one.

>>> functions = Catalog.of([("file", "", 0, "Other"), ("substring", "", 0, "String")])
>>> vet_ast(EXAMPLE_AST, "cvops", functions)  # SELECT substring(FILE('/etc/hostname'), 1, 20) AS f
Traceback (most recent call last):
store.readonly.RefusedQuery: forbidden_function: FILE() is not open to queries
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from store.client import QueryResult, Store

# The table functions of ClickHouse 26.9 (chdb 4.4), lower case (system.table_functions; a test checks the list).
# Their names are refused wherever they are called, ``numbers`` but in a FROM clause.
TABLE_FUNCTIONS = frozenset(
    """arrowstream azureblobstorage azureblobstoragecluster bigquery cluster clusterallreplicas cosn deltalake
    deltalakeazure deltalakeazurecluster deltalakecluster deltalakelocal deltalakes3 deltalakes3cluster
    dictionary eval executable file filecluster filesystem format fuzzjson fuzzquery gcs generate_series
    generaterandom generateseries hdfs hdfscluster hudi hudicluster iceberg icebergazure icebergazurecluster
    icebergcluster iceberghdfs iceberghdfscluster iceberglocal iceberglocalcluster icebergs3
    icebergs3cluster input jdbc loop merge mergetreeanalyzeindexes mergetreeanalyzeindexesuuid
    mergetreecodecblockcounts mergetreeindex mergetreeprojection mergetreetextindex mongodb mysql null
    numbers numbers_mt odbc oss paimon paimonazure paimonazurecluster paimoncluster paimonhdfs
    paimonhdfscluster paimonlocal paimons3 paimons3cluster postgresql primes prometheusquery
    prometheusqueryrange python redis remote remotesecure s3 s3cluster sqlite sqlstandardvalues
    timeseriesdata timeseriesmetricfamilies timeseriesmetrics timeseriessamples timeseriesselector
    timeseriestags url urlcluster values view viewexplain viewifpermitted ytsaurus zeros zeros_mt""".split()  # noqa: SIM905
)
ALLOWED_TABLE_FUNCTIONS = frozenset({"numbers"})
FORBIDDEN_DATABASES = frozenset({"system", "information_schema"})
TEMPORARY = "_temporary_and_external_tables._tmp_"
# Functions whose category (system.functions) holds what reaches outside the data: files (file,
# filesystem*), the server and its set-up (getServerSetting, getMacro, hostName, ...), other tables by name
# (joinGet, hasColumnInTable), dictionaries, models and the network (ai*, catboostEvaluate). Refused but the
# few reviewed below; a function the engine adds to these categories is refused until reviewed.
DENIED_CATEGORIES = frozenset(
    {"Other", "Internal", "Dictionary", "Embedded Dictionary", "AI", "Introspection", "Machine Learning"}
)
REVIEWED_SAFE = frozenset(
    """bar blocknumber blocksize bytesize currentdatabase finalizeaggregation formatreadabledecimalsize
    formatreadablequantity formatreadablesize formatreadabletimedelta identity ignore indexhint
    initializeaggregation isconstant isdecimaloverflow materialize neighbor parsereadablesize
    parsereadablesizeornull parsereadablesizeorzero parsetimedelta parseiso8601duration rownumberinallblocks
    rownumberinblock runningaccumulate runningdifference runningdifferencestartingwithfirstvalue sleep
    sleepeachrow throwif tocolumntypename totypename transform variantelement varianttype visiblewidth
    getsetting getsettingordefault countdigits getsubcolumn lowcardinalityindices lowcardinalitykeys
    defaultvalueofargumenttype defaultvalueoftypename macnumtostring macstringtonum macstringtooui
    casewithexpression _cast""".split()  # noqa: SIM905
)
# Refused by name too, whatever the engine's catalogue says (a server too old to have categories).
DENIED_NAMES = frozenset(
    """file catboostevaluate hascolumnintable getserversetting getmacro getmergetreesetting showcertificate
    getclienthttpheader getmaxtablenamelengthfordatabase globalvariable hostname fqdn getserverport""".split()  # noqa: SIM905
)
DENIED_PREFIXES = ("dict", "joinget", "filesystem", "getserver", "naivebayes", "__", "ai", "region")
# Parsed as functions, not in system.functions.
SYNTAX_FUNCTIONS = frozenset({"lambda", "exists", "grouping", "untuple"})
# Every kind of node an analyst's SELECT may hold; any other is refused (APPLY, for one, names a function
# the tree does not show).
NODE_KINDS = frozenset(
    """SelectWithUnionQuery SelectIntersectExceptQuery SelectQuery ExpressionList TablesInSelectQuery
    TablesInSelectQueryElement TableExpression TableIdentifier TableJoin ArrayJoin SampleRatio Subquery
    WithElement Function Identifier Literal Asterisk QualifiedAsterisk ColumnsRegexpMatcher ColumnsListMatcher
    QualifiedColumnsRegexpMatcher QualifiedColumnsListMatcher ColumnsTransformerList ColumnsExceptTransformer
    ColumnsReplaceTransformer ColumnsReplaceTransformer::Replacement OrderByElement InterpolateElement
    WindowDefinition WindowListElement""".split()  # noqa: SIM905
)
_LINE = re.compile(r"^( *)([A-Za-z_]+(?:::[A-Za-z_]+)?)(.*?)(?: \(children (\d+)\))?$")
_ERROR_CODE = re.compile(r"\(([A-Z][A-Z_]+)\)")
_TABLE_NAME = re.compile(r"\btable_name: ([^,\s]+)")
_TABLE_FUNCTION_NAME = re.compile(r"\btable_function_name: ([^,\s]+)")
_FUNCTION_NAME = re.compile(r"\bfunction_name: ([^,\s]+)")
_PLACEHOLDER = re.compile(r"\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*:")


class RefusedQuery(ValueError):
    """A query refused before or by the engine. ``reason`` is a short code, ``detail`` says why."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class SqlLimits:
    max_rows: int = 10_000
    max_result_bytes: int = 64 << 20
    max_execution_s: float = 10.0
    max_memory_bytes: int = 1 << 30

    def settings(self) -> dict:
        """The engine's settings for a query within these limits; ``readonly`` last, for once read-only the
        engine refuses any further setting change."""
        return {
            "max_result_rows": self.max_rows,
            "max_result_bytes": self.max_result_bytes,
            "result_overflow_mode": "throw",
            "max_execution_time": self.max_execution_s,
            "max_memory_usage": self.max_memory_bytes,
            "readonly": 1,
        }


@dataclass(frozen=True)
class Catalog:
    """What the engine holds, as far as vetting needs it: its functions by lower-case name (each a set of
    ``(canonical lower-case name, category, is_aggregate)``), its aggregate combinators, its databases."""

    functions: dict[str, frozenset[tuple[str, str, bool]]]
    combinators: tuple[str, ...] = ()
    databases: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def of(cls, rows: Iterable[tuple[str, str, int, str]], combinators=(), databases=()) -> Catalog:
        """From rows of ``(name, alias_to, is_aggregate, category)`` as system.functions lists them.

        >>> Catalog.of([("count", "", 1, "Aggregate Functions"), ("COUNT", "count", 1, "")]).functions["count"]
        frozenset({('count', 'Aggregate Functions', True)})
        """
        rows = list(rows)
        by_name = {name: (alias_to or name, bool(aggregate), category) for name, alias_to, aggregate, category in rows}
        functions: dict[str, set] = {}
        for name, (canonical, aggregate, _) in by_name.items():
            category = by_name.get(canonical, (canonical, aggregate, ""))[2]
            functions.setdefault(name.lower(), set()).add((canonical.lower(), category, aggregate))
        return cls(
            {k: frozenset(v) for k, v in functions.items()},
            tuple(sorted({c.lower() for c in combinators}, key=len, reverse=True)),
            frozenset(databases),
        )

    def resolve(self, name: str, depth: int = 0) -> frozenset[tuple[str, str, bool]]:
        """The functions ``name`` may call: itself, or an aggregate function with combinators
        (``countIf``, ``sumMergeState``); empty when the engine has no such function."""
        key = name.lower()
        if key in self.functions:
            return self.functions[key]
        if depth < 4:
            for suffix in self.combinators:
                if key.endswith(suffix) and len(key) > len(suffix):
                    found = frozenset(f for f in self.resolve(key[: -len(suffix)], depth + 1) if f[2])
                    if found:
                        return found
        return frozenset()


@dataclass
class Node:
    kind: str
    text: str  # what follows the kind on its line: a name, an alias, a literal
    children: list[Node] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The name a Function, Identifier or TableIdentifier line gives, without alias or anything after."""
        return self.text.strip().split(" (", 1)[0]

    def walk(self):
        """Every node under this one and this one, each with its parent."""
        stack: list[tuple[Node, Node | None]] = [(self, None)]
        while stack:
            node, parent = stack.pop()
            yield node, parent
            stack.extend((child, node) for child in reversed(node.children))


def parse_ast(lines: Sequence[str]) -> Node:
    """The tree that ``EXPLAIN AST`` prints, one node a line, children one space deeper and counted on
    their parent's line. :class:`RefusedQuery` (``unreadable``) unless every line is a node and every
    node has exactly the children it announces: a name holding a line break cannot pass for nodes.

    >>> parse_ast(["SelectWithUnionQuery (children 1)", " ExpressionList"]).children[0].kind
    'ExpressionList'
    >>> parse_ast(["Literal UInt64_1 (alias x", "Function file)"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    store.readonly.RefusedQuery: unreadable: the engine's reading of the query is ambiguous (line 2): ...
    """
    parsed = []
    for number, line in enumerate(lines, 1):
        m = _LINE.match(line)
        if not m or _invisible(line, m.group(2)):
            raise _unreadable(number)
        parsed.append((len(m.group(1)), m.group(2), m.group(3), int(m.group(4) or 0), number))
    # Iterative, not recursive: the engine parses deeper than Python recurses.
    root: Node | None = None
    open_nodes: list[list] = []  # [node, children still to come], the innermost last
    for depth, kind, text, count, number in parsed:
        while open_nodes and open_nodes[-1][1] == 0:
            open_nodes.pop()
        node = Node(kind, text)
        if root is None and depth == 0:
            root = node
        elif open_nodes and depth == len(open_nodes):
            open_nodes[-1][0].children.append(node)
            open_nodes[-1][1] -= 1
        else:
            raise _unreadable(number)
        if count:
            open_nodes.append([node, count])
    if root is None or any(left for _, left in open_nodes):
        raise _unreadable(len(parsed))
    return root


def _invisible(line: str, kind: str) -> bool:
    """Whether ``line`` holds a character the eye does not see (control, format, odd blanks), outside a
    literal (whose text the engine prints as the caller wrote it)."""
    if kind == "Literal":
        return any(unicodedata.category(c) == "Cc" for c in line)
    return any(
        unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp", "Co", "Cn") or (c.isspace() and c != " ") for c in line
    )


def _unreadable(line: int) -> RefusedQuery:
    return RefusedQuery(
        "unreadable", f"the engine's reading of the query is ambiguous (line {line}): name columns and aliases plainly"
    )


EXAMPLE_AST = """SelectWithUnionQuery (children 2)
 ExpressionList (children 1)
  SelectQuery (children 1)
   ExpressionList (children 1)
    Function substring (alias f) (children 1)
     ExpressionList (children 3)
      Function FILE (children 1)
       ExpressionList (children 1)
        Literal '/etc/hostname'
      Literal UInt64_1
      Literal UInt64_20
 Identifier Native""".splitlines()


def vet_ast(lines: Sequence[str], database: str, catalog: Catalog) -> None:
    """:class:`RefusedQuery` unless the engine's parse tree (``EXPLAIN AST`` lines) is one SELECT that reads
    only ``database``'s tables with functions that stay inside the data; see the module's docstring."""
    root = parse_ast(lines)
    if root.kind != "SelectWithUnionQuery":
        raise RefusedQuery("not_a_select", "only SELECT or WITH … SELECT may run")
    extra = root.children[1:]
    if extra and extra[-1].kind == "Identifier" and extra[-1].name == "Native":  # the client's FORMAT
        extra = extra[:-1]
    if not root.children or root.children[0].kind != "ExpressionList" or extra:
        raise RefusedQuery("forbidden_clause", "FORMAT and INTO OUTFILE are set by the service, not the query")
    for node, parent in root.walk():
        if node.kind == "Set":
            raise RefusedQuery("forbidden_clause", "SETTINGS are set by the service, not the query")
        if node.kind not in NODE_KINDS:
            raise RefusedQuery("unsupported_syntax", f"{node.kind} is not open to queries")
        if node.kind == "Function":
            if parent is not None and parent.kind == "TableExpression":
                if node.name.lower() not in ALLOWED_TABLE_FUNCTIONS:
                    raise RefusedQuery("forbidden_table", f"table function {node.name}() is not open to queries")
            elif refusal := function_refusal(node.name, catalog):
                raise refusal
        elif node.kind in ("TableIdentifier", "Identifier"):
            _vet_name(node, database, catalog)


def _vet_name(node: Node, database: str, catalog: Catalog) -> None:
    parts = node.name.split(".")
    if len(parts) < 2:
        return
    first = parts[0]
    if first == database:
        return
    if node.kind == "TableIdentifier" or first in catalog.databases or first.lower() in FORBIDDEN_DATABASES:
        raise RefusedQuery("forbidden_table", f"tables of database {first} are not open to queries")


def function_refusal(name: str, catalog: Catalog) -> RefusedQuery | None:
    """Why the function ``name`` may not be called, or None when it may.

    >>> catalog = Catalog.of([("substring", "", 0, "String"), ("joinGet", "", 0, "Other"), ("sum", "", 1, "")], ["If"])
    >>> [function_refusal(name, catalog) for name in ("SUBSTRING", "sumIf", "lambda")]
    [None, None, None]
    >>> for name in ("joinget", "file", "nosuch"):
    ...     print(function_refusal(name, catalog))
    forbidden_function: joinget() is not open to queries
    forbidden_function: file() is not open to queries
    unknown_function: the engine has no function nosuch()
    """
    key = name.lower()
    if key in SYNTAX_FUNCTIONS:
        return None
    refused = RefusedQuery("forbidden_function", f"{name}() is not open to queries")
    if _denied_name(key):
        return refused
    found = catalog.resolve(name)
    if not found:
        return RefusedQuery("unknown_function", f"the engine has no function {name}()")
    for canonical, category, _ in found:
        if _denied_name(canonical) or (category in DENIED_CATEGORIES and canonical not in REVIEWED_SAFE):
            return refused
    return None


def _denied_name(key: str) -> bool:
    return (
        key in DENIED_NAMES
        or key.startswith(DENIED_PREFIXES)
        or (key in TABLE_FUNCTIONS and key not in ALLOWED_TABLE_FUNCTIONS)
    )


def vet_query_tree(lines: Iterable[str], database: str) -> None:
    """:class:`RefusedQuery` unless every table that ``EXPLAIN QUERY TREE`` resolved belongs to ``database``
    (or is ``system.one``, the engine's table of a SELECT without FROM, or the temporary table of a
    recursive CTE, whose database no query can name: :func:`vet_ast` refuses it), every table function is
    ``numbers`` and no function refused by name is called.

    >>> vet_query_tree(["TABLE id: 3, alias: __table1, table_name: cvops.alerts"], "cvops")
    >>> vet_query_tree(["TABLE id: 6, table_name: default.secrets"], "cvops")
    Traceback (most recent call last):
    store.readonly.RefusedQuery: forbidden_table: default.secrets is not open to queries
    """
    for line in lines:
        for table in _TABLE_NAME.findall(line):
            temporary = table.startswith(TEMPORARY) and "temporary_table_name: " in line  # WITH RECURSIVE's
            if not table.startswith(f"{database}.") and table != "system.one" and not temporary:
                raise RefusedQuery("forbidden_table", f"{table} is not open to queries")
        for function in _TABLE_FUNCTION_NAME.findall(line):
            if function.lower() not in ALLOWED_TABLE_FUNCTIONS:
                raise RefusedQuery("forbidden_table", f"table function {function}() is not open to queries")
        for function in _FUNCTION_NAME.findall(line):
            if _denied_name(function.lower()):
                raise RefusedQuery("forbidden_function", f"{function}() is not open to queries")


def run_readonly(
    store: Store, sql: str, parameters: dict | None = None, limits: SqlLimits | None = None
) -> QueryResult:
    """Vet ``sql`` and run it read-only within ``limits``; columns, types and rows, or :class:`RefusedQuery`."""
    limits = limits or SqlLimits()
    settings = limits.settings()
    reader = store.reader()
    try:
        statement = _formatted(reader, sql, settings)
        if not statement.startswith(("SELECT ", "WITH ")):
            raise RefusedQuery("not_a_select", f"only SELECT or WITH … SELECT may run, not {statement.split()[0]}")
        used = set(_PLACEHOLDER.findall(statement))
        bound = {k: v for k, v in (parameters or {}).items() if k in used} or None
        ast = [line for (line,) in reader.query(f"EXPLAIN AST {statement}", parameters=bound)]
        vet_ast(ast, store.database, catalog(store))
        tree = reader.query(f"EXPLAIN QUERY TREE {statement}", parameters=bound, settings=settings)
        vet_query_tree((line for (line,) in tree), store.database)
        return _bounded(reader, statement, bound, settings, limits)
    except RefusedQuery:
        raise
    except Exception as exc:
        store.drop_reader()  # whatever state the failure left on that session goes with it
        raise _engine_refusal(exc) from None


def _formatted(reader: Store, sql: str, settings: dict) -> str:
    """``sql`` as the engine reads it, on one line, or :class:`RefusedQuery` when it reads no one statement."""
    try:
        [(statement,)] = reader.query("SELECT formatQuerySingleLine({q:String})", {"q": sql}, settings)
    except Exception as exc:
        message = str(exc)
        if "Empty query" in message:
            raise RefusedQuery("empty", "no statement") from None
        if "Multi-statements are not allowed" in message:
            raise RefusedQuery("multiple_statements", "one statement at a time") from None
        raise
    return statement


def _bounded(reader: Store, statement: str, parameters, settings: dict, limits: SqlLimits) -> QueryResult:
    """Run ``statement`` and read its result block by block, refusing as soon as it holds more than
    ``limits`` allow: at most one block is held beyond them (the engine's memory limit bounds a block)."""
    rows: list[tuple] = []
    size = 0
    with reader.query_stream(statement, parameters, settings) as (columns, types, blocks):
        for block in blocks:
            size += _size(block)
            rows.extend(tuple(row) for row in block)
            if len(rows) > limits.max_rows:
                raise RefusedQuery("result_too_large", f"the result holds more than {limits.max_rows} rows")
            if size > limits.max_result_bytes:
                raise RefusedQuery(
                    "result_too_large", f"the result holds more than {limits.max_result_bytes} bytes: select less"
                )
    return QueryResult(columns, types, rows)


def _engine_refusal(exc: Exception) -> RefusedQuery:
    codes = _ERROR_CODE.findall(str(exc))
    code = codes[-1].lower() if codes else type(exc).__name__
    return RefusedQuery(f"engine_{code}", short_reason(str(exc)))


_catalogs: dict[str, tuple[dict, tuple]] = {}


def catalog(store: Store) -> Catalog:
    """The engine's functions (read once per DSN) and databases (read each time: they come and go)."""
    reader = store.reader()
    if store.dsn not in _catalogs:
        try:
            rows = reader.query("SELECT name, alias_to, is_aggregate, categories FROM system.functions")
        except Exception:  # a server without categories: the names refused by name still are
            rows = [
                (n, a, g, "") for n, a, g in reader.query("SELECT name, alias_to, is_aggregate FROM system.functions")
            ]
        combinators = [name for (name,) in reader.query("SELECT name FROM system.aggregate_function_combinators")]
        _catalogs[store.dsn] = (rows, tuple(combinators))
    rows, combinators = _catalogs[store.dsn]
    return Catalog.of(rows, combinators, _databases(reader))


def _databases(reader: Store) -> list[str]:
    """The databases the engine holds; none when it will not say (on a server, the grant is the boundary)."""
    try:
        return [name for (name,) in reader.query("SELECT name FROM system.databases")]
    except Exception:
        return []


def _size(value) -> int:
    """About how many bytes ``value`` (rows of cells) holds: text and bytes by length, other scalars 8."""
    if isinstance(value, str | bytes | bytearray):
        return len(value)
    if isinstance(value, list | tuple | set | frozenset):
        return sum(_size(v) for v in value) + 8
    if isinstance(value, dict):
        return sum(_size(k) + _size(v) for k, v in value.items()) + 8
    return 8


_ENGINE_PREFIX = re.compile(r"^(?:Code: \d+\.\s*|DB::\w+:\s*)+")
_ENGINE_TAIL = re.compile(r"[.:,]?\s*(?:In scope |while executing |Stack trace|SETTINGS )")
_PATH = re.compile(r"(?<![\w'\"])/(?:[^\s/'\",;:()]+/)+[^\s'\",;:()]*")


def short_reason(message: str) -> str:
    """An engine error as its first line, without the error number, the echoed query and settings, the
    internals after it, or file paths.

    >>> short_reason("Code: 107. DB::ErrnoException: Cannot open file /srv/x/y: , errno: 2. In scope SELECT 1")
    'Cannot open file …: , errno: 2'
    >>> short_reason("Code: 164. DB::Exception: default: Cannot execute query in readonly mode. (READONLY)")
    'default: Cannot execute query in readonly mode.'
    >>> short_reason("Code: 241. DB::Exception: Code: 241. DB::Exception: Out of memory. (MEMORY) (version 26.9). (X")
    'Out of memory.'
    """
    lines = message.strip().splitlines()
    first = _ENGINE_PREFIX.sub("", lines[0] if lines else "")
    first = _ENGINE_TAIL.split(first, maxsplit=1)[0]
    first = re.split(r"\s*\([A-Z][A-Z_]+\)|\s*\(version ", first, maxsplit=1)[0]
    return _PATH.sub("…", first).strip()[:300] or "the engine refused the query"
