"""`SpoolSender`: pushes spooled batches to Loki oldest first, at least once, and acknowledges them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Protocol

from loguru import logger

from log_shipper.batch import is_protobuf, push_parts, split_body
from log_shipper.loki import Outcome, PushResult
from log_shipper.metrics import ShipperMetrics
from log_shipper.spool import Segment, Spool
from telemetry.retry import Backoff
from telemetry.throttle import LogThrottle


class Pusher(Protocol):
    """What delivers one push body (`LokiClient`, or a fake in tests)."""

    async def push(self, parts: Sequence[bytes]) -> PushResult:
        """Push the uncompressed body that `parts` make together."""
        ...


class SpoolSender:
    """The one consumer of the spool: take up to a batch of segments, push, retry or split, then ack."""

    def __init__(
        self,
        *,
        spool: Spool,
        pusher: Pusher,
        metrics: ShipperMetrics,
        batch_bytes: int,
        backoff: Backoff,
    ) -> None:
        self.spool = spool
        self.pusher = pusher
        self.metrics = metrics
        self.batch_bytes = batch_bytes
        self.backoff = backoff
        self.failing = False
        self.last_success: float | None = None
        self._throttle = LogThrottle()

    async def run(self) -> None:
        """Deliver for ever (until cancelled); a cancelled push leaves its segments in the spool."""
        while True:
            segments = self.spool.take(self.batch_bytes)
            if not segments:
                await self.spool.wait()
                continue
            try:
                await self.deliver(segments)
            except Exception as exc:  # noqa: BLE001 - a bug must not stop shipping for good: log, go on
                self.spool.release(segments)
                self._throttle.error("sender", "Sending a spooled batch failed; retrying", error=repr(exc))
                await asyncio.sleep(1.0)
                continue
            except BaseException:
                self.spool.release(segments)
                raise
            self.spool.ack(segments)

    async def deliver(self, segments: list[Segment]) -> None:
        """Push the segments as one body until Loki takes it, splits it or rejects it for good."""
        # One push per run of segments in one format (a spool written before LOKI_PUSH_ENCODING changed
        # holds the other): Loki takes both, but not mixed in one body.
        runs: list[tuple[list[bytes], int]] = []
        for segment in segments:
            try:
                body = self.spool.read(segment)
            except OSError as exc:  # removed or unreadable behind our back: nothing left to send
                self.metrics.dropped_by_reason["spool_unreadable"].inc(segment.lines)
                self._throttle.error("spool_read", "A spooled batch cannot be read; dropped", error=str(exc))
                continue
            if runs and is_protobuf(runs[-1][0][0]) == is_protobuf(body):
                runs[-1][0].append(body)
                runs[-1] = (runs[-1][0], runs[-1][1] + segment.lines)
            else:
                runs.append(([body], segment.lines))
        for bodies, lines in runs:
            await self._push(push_parts(bodies), lines)

    async def _push(self, parts: list[bytes], lines: int) -> None:
        while True:
            result = await self.pusher.push(parts)
            if result.outcome is Outcome.SHIPPED:
                self._shipped(result, lines)
                return
            if result.outcome is Outcome.RETRY:
                await self._wait_to_retry(result)
                continue
            if result.outcome is Outcome.SPLIT:
                halves = split_body(b"".join(parts))
                if len(halves) > 1:
                    self.metrics.batches.labels("split").inc()
                    for half, count in halves:
                        await self._push([half], count)
                    return
            self._rejected(result, lines)
            return

    def _shipped(self, result: PushResult, lines: int) -> None:
        metrics = self.metrics
        metrics.lines_shipped.inc(lines)
        metrics.bytes_pushed.inc(result.sent_bytes)
        metrics.batches.labels("success").inc()
        self.backoff.reset()
        self.last_success = time.time()
        if self.failing:
            self.failing = False
            logger.info("Loki accepts pushes again", spool_bytes=self.spool.bytes)

    async def _wait_to_retry(self, result: PushResult) -> None:
        self.metrics.retries.labels(result.reason).inc()
        delay = self.backoff.next(result.retry_after)
        if not self.failing:
            self.failing = True
        self._throttle.warning(
            "retry",
            "Loki push failed; retrying",
            status=result.status,
            reason=result.reason,
            detail=result.detail,
            retry_in_seconds=round(delay, 3),
            spool_bytes=self.spool.bytes,
        )
        await asyncio.sleep(delay)

    def _rejected(self, result: PushResult, lines: int) -> None:
        reason = "too_large" if result.outcome is Outcome.SPLIT else "loki_rejected"
        self.metrics.batches.labels("dropped").inc()
        self.metrics.dropped_by_reason[reason].inc(lines)
        self.backoff.reset()
        self._throttle.error(
            "rejected:" + reason,
            "Loki rejected a batch; dropped, not retried",
            status=result.status,
            reason=reason,
            lines=lines,
            detail=result.detail,
        )
