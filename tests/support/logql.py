"""A strict parser of the LogQL the dashboards use, and an evaluator of its metric queries over given lines.

Loki cannot run here, and the fake Loki (`fake_loki_query`) answers log queries only. So metric queries are
checked the way Loki's own parser would refuse them (LogQL grammar: github.com/grafana/loki, pkg/logql/syntax
— stream selector, line filters, `json`/`logfmt`, label filters, `unwrap`, range aggregations and their unwrap
rules, vector aggregations with `by`/`without`, `topk`, binary operators), and evaluated over a service's real
log lines as one instant query whose range holds them all, so a test can compare "spend by key" with what the
gateway charged. What is outside this subset is a `LogQLError`, never a guess.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>"(?:[^"\\]|\\.)*"|`[^`]*`)
    | (?P<duration>\[\s*(?:\d+(?:ms|s|m|h|d|w|y))+\s*\])
    | (?P<number>\d+(?:\.\d+)?)
    | (?P<op>\|=|\|~|!=|!~|=~|==|>=|<=|[{}(),|=<>+\-*/])
    | (?P<ident>[a-zA-Z_][a-zA-Z0-9_]*)
    )""",
    re.VERBOSE,
)
RANGE_AGGREGATIONS = frozenset(
    {
        "count_over_time",
        "rate",
        "bytes_over_time",
        "bytes_rate",
        "sum_over_time",
        "avg_over_time",
        "max_over_time",
        "min_over_time",
        "first_over_time",
        "last_over_time",
        "stdvar_over_time",
        "stddev_over_time",
        "quantile_over_time",
        "absent_over_time",
        "rate_counter",
    }
)
_NEEDS_UNWRAP = frozenset(
    RANGE_AGGREGATIONS - {"count_over_time", "rate", "bytes_over_time", "bytes_rate", "absent_over_time"}
)
_NO_UNWRAP = frozenset({"count_over_time", "bytes_over_time", "bytes_rate", "absent_over_time"})
VECTOR_AGGREGATIONS = frozenset(
    {"sum", "avg", "min", "max", "count", "stddev", "stdvar", "topk", "bottomk", "sort", "sort_desc"}
)
_PARSERS = frozenset({"json", "logfmt", "pattern", "regexp", "unpack"})
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class LogQLError(ValueError):
    """The query would not parse in Loki (or is outside the subset this module knows)."""


@dataclass(frozen=True)
class LineFilter:
    op: str
    text: str


@dataclass(frozen=True)
class LabelFilter:
    name: str
    op: str
    value: str | float


@dataclass
class LogQuery:
    """`{selector} | pipeline` (line filters, then parsers, label filters and `unwrap` in pipeline order)."""

    selector: dict[str, tuple[str, str]]
    line_filters: list[LineFilter] = field(default_factory=list)
    parsers: list[str] = field(default_factory=list)
    label_filters: list[LabelFilter] = field(default_factory=list)
    unwrap: str | None = None
    unwrap_at: int = 0
    """How many label filters come before `unwrap`."""


@dataclass(frozen=True)
class RangeAggregation:
    op: str
    query: LogQuery
    range: str


@dataclass(frozen=True)
class VectorAggregation:
    op: str
    inner: Expr
    by: tuple[str, ...] | None = None
    without: tuple[str, ...] | None = None
    parameter: float | None = None


@dataclass(frozen=True)
class BinaryOp:
    op: str
    left: Expr
    right: Expr


Expr = LogQuery | RangeAggregation | VectorAggregation | BinaryOp


def _tokens(query: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    query = query.rstrip()
    while position < len(query):
        match = _TOKEN.match(query, position)
        if match is None or match.end() == position:
            raise LogQLError(f"parse error at {position}: unexpected {query[position : position + 20]!r}")
        kind = match.lastgroup or ""
        tokens.append((kind, match[kind]))
        position = match.end()
    return tokens


class _Parser:
    def __init__(self, query: str) -> None:
        self.tokens = _tokens(query)
        self.at = 0

    def peek(self, offset: int = 0) -> tuple[str, str]:
        index = self.at + offset
        return self.tokens[index] if index < len(self.tokens) else ("end", "")

    def take(self, kind: str | None = None, value: str | None = None) -> str:
        found_kind, found = self.peek()
        if (kind is not None and found_kind != kind) or (value is not None and found != value):
            raise LogQLError(f"parse error: expected {value or kind}, found {found or 'the end'!r}")
        self.at += 1
        return found

    def expression(self) -> Expr:
        left = self.operand()
        while self.peek()[1] in {"+", "-", "*", "/", "or", "and", "unless"}:
            op = self.take()
            right = self.operand()
            if isinstance(left, LogQuery) or isinstance(right, LogQuery):
                raise LogQLError("parse error: binary operations need metric queries on both sides")
            left = BinaryOp(op, left, right)
        return left

    def operand(self) -> Expr:
        kind, value = self.peek()
        if value == "(":
            self.take()
            inner = self.expression()
            self.take(value=")")
            return inner
        if value == "{":
            return self.log_query()
        if kind == "ident" and value in RANGE_AGGREGATIONS:
            return self.range_aggregation()
        if kind == "ident" and value in VECTOR_AGGREGATIONS:
            return self.vector_aggregation()
        raise LogQLError(f"parse error: unexpected {value or 'end of query'!r}")

    def grouping(self) -> tuple[str, tuple[str, ...]] | None:
        if self.peek()[1] not in {"by", "without"}:
            return None
        how = self.take()
        self.take(value="(")
        labels = []
        while self.peek()[1] != ")":
            labels.append(self.take("ident"))
            if self.peek()[1] == ",":
                self.take()
        self.take(value=")")
        return how, tuple(labels)

    def vector_aggregation(self) -> VectorAggregation:
        op = self.take("ident")
        grouping = self.grouping()
        self.take(value="(")
        parameter = None
        if op in {"topk", "bottomk"}:
            parameter = float(self.take("number"))
            self.take(value=",")
        inner = self.expression()
        self.take(value=")")
        if grouping is None:
            grouping = self.grouping()
        if isinstance(inner, LogQuery):
            raise LogQLError(f"parse error: {op} needs a metric query, not a log query")
        by = grouping[1] if grouping and grouping[0] == "by" else None
        without = grouping[1] if grouping and grouping[0] == "without" else None
        return VectorAggregation(op, inner, by, without, parameter)

    def range_aggregation(self) -> RangeAggregation:
        op = self.take("ident")
        self.take(value="(")
        if op == "quantile_over_time":
            self.take("number")
            self.take(value=",")
        query = self.log_query()
        window = self.take("duration")
        self.take(value=")")
        if self.grouping() is not None and op not in _NEEDS_UNWRAP:
            raise LogQLError(f"parse error: grouping not allowed for {op}")
        if op in _NEEDS_UNWRAP and query.unwrap is None:
            raise LogQLError(f"parse error: {op} requires an unwrap expression")
        if op in _NO_UNWRAP and query.unwrap is not None:
            raise LogQLError(f"parse error: {op} does not take an unwrap expression")
        return RangeAggregation(op, query, window.strip("[] "))

    def log_query(self) -> LogQuery:
        self.take(value="{")
        selector: dict[str, tuple[str, str]] = {}
        while self.peek()[1] != "}":
            name = self.take("ident")
            op = self.take("op")
            if op not in {"=", "!=", "=~", "!~"}:
                raise LogQLError(f"parse error: bad matcher operator {op!r}")
            selector[name] = (op, _unquote(self.take("string")))
            if self.peek()[1] == ",":
                self.take()
        self.take(value="}")
        if not any(op in {"=", "=~"} and value for op, value in selector.values()):
            raise LogQLError("parse error: queries require at least one regexp or equality matcher")
        query = LogQuery(selector)
        while True:
            _, value = self.peek()
            if value in {"|=", "|~", "!=", "!~"}:
                self.take()
                query.line_filters.append(LineFilter(value, _unquote(self.take("string"))))
            elif value == "|":
                self.take()
                self.stage(query)
            else:
                return query

    def stage(self, query: LogQuery) -> None:
        name = self.take("ident")
        if name in _PARSERS:
            if query.unwrap is not None:
                raise LogQLError("parse error: a parser after unwrap")
            query.parsers.append(name)
            return
        if name == "unwrap":
            if query.unwrap is not None:
                raise LogQLError("parse error: unwrap twice")
            query.unwrap = self.take("ident")
            query.unwrap_at = len(query.label_filters)
            return
        if not _LABEL.match(name):
            raise LogQLError(f"parse error: bad label {name!r}")
        op = self.take("op")
        if op not in {"=", "!=", "=~", "!~", "==", ">", ">=", "<", "<="}:
            raise LogQLError(f"parse error: bad label filter operator {op!r}")
        kind, _ = self.peek()
        if kind == "string":
            value: str | float = _unquote(self.take("string"))
        elif kind == "number":
            if op in {"=~", "!~"}:
                raise LogQLError("parse error: a regular expression must be a string")
            value = float(self.take("number"))
        else:
            raise LogQLError(f"parse error: label filter {name} {op} needs a value")
        query.label_filters.append(LabelFilter(name, op, value))


def _unquote(text: str) -> str:
    if text.startswith("`"):
        return text[1:-1]
    return json.loads(text)


def parse(query: str) -> Expr:
    """The query's syntax tree; `LogQLError` where Loki would answer `parse error`."""
    parser = _Parser(query)
    expr = parser.expression()
    if parser.peek()[0] != "end":
        raise LogQLError(f"parse error: unexpected {parser.peek()[1]!r} after the query")
    return expr


def log_queries(expr: Expr) -> list[LogQuery]:
    """Every log query inside `expr`."""
    if isinstance(expr, LogQuery):
        return [expr]
    if isinstance(expr, RangeAggregation):
        return [expr.query]
    if isinstance(expr, VectorAggregation):
        return log_queries(expr.inner)
    return log_queries(expr.left) + log_queries(expr.right)


# -- evaluation ----------------------------------------------------------------------------------------------

Labels = frozenset[tuple[str, str]]
Entry = tuple[Mapping[str, str], str]
"""(stream labels, line)."""


def _matches(query: LogQuery, stream: Mapping[str, str], line: str) -> dict[str, str] | None:  # noqa: PLR0912 - one pipeline stage per branch
    for name, (op, value) in query.selector.items():
        have = stream.get(name, "")
        if (op == "=" and have != value) or (op == "!=" and have == value):
            return None
        if op in {"=~", "!~"} and (re.fullmatch(value, have) is None) == (op == "=~"):
            return None
    for line_filter in query.line_filters:
        found = (
            line_filter.text in line if line_filter.op in {"|=", "!="} else re.search(line_filter.text, line)
        )
        if bool(found) != (line_filter.op in {"|=", "|~"}):
            return None
    labels = dict(stream)
    for parser in query.parsers:
        if parser != "json":
            raise LogQLError(f"evaluation of `| {parser}` is not supported here")
        try:
            parsed = json.loads(line)
        except ValueError:
            labels["__error__"] = "JSONParserErr"
            continue
        for name, value in parsed.items():
            if isinstance(value, dict | list):
                continue
            labels[name] = (
                "" if value is None else (str(value).lower() if isinstance(value, bool) else str(value))
            )
    for index, label_filter in enumerate([*query.label_filters, None]):
        if query.unwrap is not None and index == query.unwrap_at and not _unwrap(labels, query.unwrap):
            labels["__error__"] = "SampleExtractionErr"
        if label_filter is None:
            break
        if not _compare(labels.get(label_filter.name, ""), label_filter.op, label_filter.value):
            return None
    if "__error__" in labels:
        # Loki fails the whole query on a sample whose pipeline erred, unless `| __error__=""` dropped it.
        raise LogQLError(f"pipeline error: {labels['__error__']} for line {line[:120]!r}")
    return labels


def _unwrap(labels: dict[str, str], name: str) -> bool:
    try:
        labels["__value__"] = str(float(labels[name]))
    except (KeyError, ValueError):
        return False
    del labels[name]
    return True


def _compare(have: str, op: str, want: str | float) -> bool:
    if isinstance(want, float):
        try:
            number = float(have)
        except ValueError:
            return False
        return {
            "==": number == want,
            "=": number == want,
            "!=": number != want,
            ">": number > want,
            ">=": number >= want,
            "<": number < want,
            "<=": number <= want,
        }[op]
    if op in {"=~", "!~"}:
        return (re.fullmatch(want, have) is not None) == (op == "=~")
    return (have == want) == (op in {"=", "=="})


def evaluate(expr: Expr, entries: Iterable[Entry]) -> dict[Labels, float]:
    """`expr` as one instant query whose range holds every entry: series labels → value."""
    entries = list(entries)
    if isinstance(expr, RangeAggregation):
        if expr.op not in {"sum_over_time", "count_over_time"}:
            raise LogQLError(f"evaluation of {expr.op} is not supported here")
        series: dict[Labels, float] = {}
        for stream, line in entries:
            labels = _matches(expr.query, stream, line)
            if labels is None:
                continue
            value = float(labels.pop("__value__", "1")) if expr.op == "sum_over_time" else 1.0
            key = frozenset(labels.items())
            series[key] = series.get(key, 0.0) + value
        return series
    if isinstance(expr, VectorAggregation):
        inner = evaluate(expr.inner, entries)
        if expr.op in {"topk", "bottomk"}:
            ranked = sorted(inner.items(), key=lambda item: item[1], reverse=expr.op == "topk")
            return dict(ranked[: int(expr.parameter or 0)])
        if expr.op != "sum":
            raise LogQLError(f"evaluation of {expr.op} is not supported here")
        grouped: dict[Labels, float] = {}
        for labels, value in inner.items():
            kept = frozenset(
                (name, label)
                for name, label in labels
                if (expr.by is not None and name in expr.by)
                or (expr.without is not None and name not in expr.without)
            )
            grouped[kept] = grouped.get(kept, 0.0) + value
        return grouped
    if isinstance(expr, BinaryOp) and expr.op == "+":
        left, right = evaluate(expr.left, entries), evaluate(expr.right, entries)
        return {labels: value + right[labels] for labels, value in left.items() if labels in right}
    raise LogQLError("evaluation of this expression is not supported here")
