"""Every LogQL query of the catalog parses as Loki would parse it, and has the shape spend by key needs.

The strict parser is `support.logql`; these tests also show it refuses what Loki refuses, so a passing query
is evidence. Evaluating the spend queries over the gateway's real log lines is in
tests/unit/gateway/test_spend_by_key.py.
"""

from __future__ import annotations

import pytest

from support.logql import LogQLError, RangeAggregation, VectorAggregation, log_queries, parse
from telemetry.queries import (
    LOGQL_QUERIES,
    REFUSALS_BY_KEY,
    SPEND_BY_KEY,
    TOKENS_BY_KEY,
    TOP_KEYS_BY_SPEND,
    loki_panels,
    resolve_variables,
)


def grafana(expr: str) -> str:
    """As Grafana sends it: variables replaced, a real trace id for the `<id>` placeholder."""
    return resolve_variables(expr).replace("<id>", "4bf92f3577b34da6a3ce929d0e0e4736")


class TestEveryQueryParses:
    @pytest.mark.parametrize("query", LOGQL_QUERIES)
    def test_catalog_queries(self, query):
        """The LogQL users run (SPEC §9, and spend/tokens/refusals by key) parses."""
        parse(grafana(query))

    @pytest.mark.parametrize(("title", "expr"), [(panel.title, panel.expr) for _, panel in loki_panels()])
    def test_dashboard_panels(self, title, expr):
        """Every Loki panel of every dashboard parses."""
        parse(grafana(expr))

    def test_the_key_panels_are_on_the_inference_dashboard(self):
        """Spend, tokens, top keys and refusals by key are Loki panels there."""
        titles = {panel.title for board, panel in loki_panels() if board.uid == "gatewayz-inference"}
        assert {"Spend By Key", "Tokens By Key", "Top Keys By Spend", "Refusals By Key"} <= titles


class TestTheParserIsStrict:
    @pytest.mark.parametrize(
        "query",
        [
            'sum by (key_alias) (sum_over_time({service="gatewayz-api"} | json [1m]))',  # no unwrap
            'count_over_time({service="gatewayz-api"} | json | unwrap credits [1m])',  # unwrap not allowed
            "sum(count_over_time({} [1m]))",  # no matcher
            'sum(count_over_time({service!="x"} [1m]))',  # only a negative matcher
            'sum(count_over_time({service="gatewayz-api"}))',  # no range
            'sum(count_over_time({service="gatewayz-api"} [1 m]))',  # not a duration
            'topk(sum(count_over_time({service="gatewayz-api"} [1m])))',  # topk needs its k
            'sum({service="gatewayz-api"} | json)',  # an aggregation of a log query
            '{service="gatewayz-api"} + {service="gatewayz-api"}',  # arithmetic on log queries
            'sum_over_time({service="gatewayz-api"} | json | unwrap credits | json [1m])',  # after unwrap
            '{service="gatewayz-api"} | json | credits =~ 3',  # regex on a number
            'nope_over_time({service="gatewayz-api"} [1m])',
            '{service="gatewayz-api"} | json )',
        ],
    )
    def test_refuses_what_loki_refuses(self, query):
        """Each of these is a parse error in Loki, and here."""
        with pytest.raises(LogQLError):
            parse(query)


class TestSpendByKeyShape:
    def test_spend_sums_credits_by_key_alias(self):
        """sum by key_alias of sum_over_time(credits) over the gateway's inference lines, errors dropped."""
        expr = parse(grafana(SPEND_BY_KEY))
        assert isinstance(expr, VectorAggregation)
        assert (expr.op, expr.by) == ("sum", ("key_alias",))
        assert isinstance(expr.inner, RangeAggregation)
        assert expr.inner.op == "sum_over_time"
        (query,) = log_queries(expr)
        assert query.selector == {"service": ("=", "gatewayz-api")}
        assert [f.text for f in query.line_filters] == ['"credits":']  # before the parser: the cheap filter
        assert query.parsers == ["json"]
        assert query.unwrap == "credits"
        assert [(f.name, f.value) for f in query.label_filters] == [("__error__", "")]

    def test_tokens_add_prompt_and_completion_by_key(self):
        """Two sums by key_alias, of prompt_tokens and completion_tokens, added."""
        assert [q.unwrap for q in log_queries(parse(grafana(TOKENS_BY_KEY)))] == [
            "prompt_tokens",
            "completion_tokens",
        ]

    def test_top_keys_and_refusals(self):
        """topk 10 of spend by (key_alias, user_id) and of refusals by (key_alias, reason)."""
        top = parse(grafana(TOP_KEYS_BY_SPEND))
        assert (top.op, top.parameter, top.inner.by) == ("topk", 10, ("key_alias", "user_id"))
        refusals = parse(grafana(REFUSALS_BY_KEY))
        assert refusals.inner.by == ("key_alias", "reason")
        (query,) = log_queries(refusals)
        assert query.selector["level"] == ("=", "WARNING")
        assert query.unwrap is None
