"""Counter, histogram and gauge families for the request hot path: plain field updates, no locks.

`prometheus_client` guards every value with its own lock and validates exemplars on each call: a histogram
observation takes two locked increments, and a request makes nine of them (~1 µs each here). The families
below are updated only from the event-loop thread that serves requests — the middleware and every handler
coroutine run there, and so does `GET /metrics` (`sync_to_thread=False`) — so a field update needs no lock
and a scrape reads a consistent snapshot. A scrape from another thread (a test reading the registry) may see
a histogram's `_sum` one observation ahead of its buckets, never a torn bucket.

They register on a `prometheus_client` registry as collectors and expose exactly the samples its own
`Counter`, `Histogram` and `Gauge` would (names, label order, `le` formatting, exemplars; tested line for
line), so exposition, content negotiation and `get_sample_value` are unchanged.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from typing import TYPE_CHECKING, Generic, TypeVar

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Exemplar
from prometheus_client.utils import floatToGoString

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from prometheus_client import CollectorRegistry

ExemplarValue = tuple[str, float, float]
"""(trace id, observed value, unix time), turned into a `prometheus_client` `Exemplar` only when scraped."""


def _exemplar(stored: ExemplarValue | None) -> Exemplar | None:
    if stored is None:
        return None
    trace_id, value, timestamp = stored
    return Exemplar({"trace_id": trace_id}, value, timestamp)


class CounterChild:
    """One counter series."""

    __slots__ = ("exemplar", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.exemplar: ExemplarValue | None = None

    def inc(self, amount: float = 1.0, trace_id: str | None = None) -> None:
        """Add `amount` (≥ 0); a sampled request's `trace_id` becomes the series' exemplar."""
        if amount < 0:
            msg = "Counters can only be incremented by non-negative amounts."
            raise ValueError(msg)
        self.value += amount
        if trace_id is not None:
            self.exemplar = (trace_id, amount, time.time())


class GaugeChild:
    """One gauge series."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        """Add `amount`."""
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        """Subtract `amount`."""
        self.value -= amount

    def set(self, value: float) -> None:
        """Set the value."""
        self.value = float(value)


class HistogramChild:
    """One histogram series: a count per bucket (the last is +Inf), the sum, an exemplar per bucket."""

    __slots__ = ("_bounds", "counts", "exemplars", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.exemplars: list[ExemplarValue | None] = [None] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float, trace_id: str | None = None) -> None:
        """Count `value` in the first bucket whose bound is ≥ it (Prometheus' `le`)."""
        index = bisect_left(self._bounds, value)
        self.counts[index] += 1
        self.sum += value
        if trace_id is not None:
            self.exemplars[index] = (trace_id, value, time.time())


Child = TypeVar("Child", CounterChild, GaugeChild, HistogramChild)


class _Family(Generic[Child]):
    """A labelled family registered as a collector; children are created on first use and kept."""

    kind = ""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], Child] = {}
        registry.register(self)

    def labels(self, *values: str) -> Child:
        """The child for these label values, in `labelnames` order."""
        if len(values) != len(self.labelnames):
            msg = f"{self.name} takes {len(self.labelnames)} label values, got {len(values)}"
            raise ValueError(msg)
        key = tuple(str(value) for value in values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._new_child()
        return child

    def _new_child(self) -> Child:
        raise NotImplementedError

    def describe(self) -> list[Metric]:
        """The family's name and type, for the registry's duplicate check."""
        return [Metric(self.name, self.documentation, self.kind)]

    def collect(self) -> Iterator[Metric]:
        """One metric family holding every child's samples."""
        metric = Metric(self.name, self.documentation, self.kind)
        for key, child in list(self._children.items()):
            self._add_samples(metric, dict(zip(self.labelnames, key, strict=True)), child)
        yield metric

    def _add_samples(self, metric: Metric, labels: dict[str, str], child: Child) -> None:
        raise NotImplementedError


class LoopCounter(_Family[CounterChild]):
    """A counter family; `name` without `_total` (exposed as `<name>_total`)."""

    kind = "counter"

    def _new_child(self) -> CounterChild:
        return CounterChild()

    def _add_samples(self, metric: Metric, labels: dict[str, str], child: CounterChild) -> None:
        metric.add_sample(f"{self.name}_total", labels, child.value, None, _exemplar(child.exemplar))


class LoopGauge(_Family[GaugeChild]):
    """A gauge family."""

    kind = "gauge"

    def _new_child(self) -> GaugeChild:
        return GaugeChild()

    def _add_samples(self, metric: Metric, labels: dict[str, str], child: GaugeChild) -> None:
        metric.add_sample(self.name, labels, child.value)


class LoopHistogram(_Family[HistogramChild]):
    """A histogram family with fixed bucket bounds (+Inf is added)."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
        buckets: Sequence[float],
    ) -> None:
        bounds = tuple(float(bound) for bound in buckets if not math.isinf(bound))
        if list(bounds) != sorted(set(bounds)):
            msg = f"{name}: bucket bounds must be distinct and increasing"
            raise ValueError(msg)
        self.bounds = bounds
        self._le = tuple(floatToGoString(bound) for bound in (*bounds, math.inf))  # type: ignore[no-untyped-call]
        super().__init__(name, documentation, labelnames, registry)

    def _new_child(self) -> HistogramChild:
        return HistogramChild(self.bounds)

    def _add_samples(self, metric: Metric, labels: dict[str, str], child: HistogramChild) -> None:
        counts, exemplars, total = list(child.counts), list(child.exemplars), child.sum
        cumulative = 0.0
        for le, count, exemplar in zip(self._le, counts, exemplars, strict=True):
            cumulative += count
            metric.add_sample(
                f"{self.name}_bucket", {**labels, "le": le}, cumulative, None, _exemplar(exemplar)
            )
        metric.add_sample(f"{self.name}_count", labels, cumulative)
        metric.add_sample(f"{self.name}_sum", labels, total)
