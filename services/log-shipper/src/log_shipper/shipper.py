"""`LogShipper`: sources → batcher → spool → sender → Loki, started and stopped as one."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from loguru import logger
from prometheus_client import CollectorRegistry

from log_shipper.batcher import LogBatcher, SpoolWriteError
from log_shipper.labels import StreamLabels, parse_static_labels
from log_shipper.loki import LokiClient
from log_shipper.metrics import ShipperMetrics
from log_shipper.parser import LineParser
from log_shipper.positions import Positions
from log_shipper.sender import Pusher, SpoolSender
from log_shipper.settings import ShipperSettings
from log_shipper.sources.files import FileTailer, parse_file_specs
from log_shipper.sources.stdin import StdinSource
from log_shipper.spool import Segment, Spool
from telemetry.retry import Backoff

POSITIONS_FILE = "positions.json"


class LogShipper:
    """Everything but the HTTP routes; `start()` in the app's lifespan, `stop()` flushes within a bound."""

    def __init__(
        self, settings: ShipperSettings, registry: CollectorRegistry, pusher: Pusher | None = None
    ) -> None:
        self.settings = settings
        self.metrics = ShipperMetrics(registry)
        labels = StreamLabels(
            settings.environment,
            parse_static_labels(settings.shipper_static_labels),
            settings.shipper_default_service,
        )
        self.default_service = labels.default_service
        self.parser = LineParser(
            labels, settings.shipper_max_line_bytes, protobuf=settings.loki_push_encoding == "protobuf"
        )
        spool_dir = Path(settings.shipper_spool_dir)
        spool_dir.mkdir(parents=True, exist_ok=True)
        self.positions = Positions(spool_dir / POSITIONS_FILE)
        self.spool: Spool | None = None
        self.sender: SpoolSender | None = None
        self._client: LokiClient | None = None
        if settings.loki_enabled:
            self.spool = Spool(spool_dir, settings.shipper_spool_max_bytes, self._spool_dropped)
            if pusher is None:
                pusher = self._client = LokiClient(settings, self.metrics)
            self.sender = SpoolSender(
                spool=self.spool,
                pusher=pusher,
                metrics=self.metrics,
                batch_bytes=settings.shipper_batch_bytes,
                backoff=Backoff(settings.loki_retry_min_seconds, settings.loki_retry_max_seconds),
            )
        self.batcher = LogBatcher(
            parser=self.parser,
            spool=self.spool,
            positions=self.positions if settings.shipper_files else None,
            metrics=self.metrics,
            batch_bytes=settings.shipper_batch_bytes,
            wait=settings.shipper_batch_wait_seconds,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._source_tasks: list[asyncio.Task[None]] = []
        self.started = False

    def _spool_nearly_full(self) -> bool:
        """True while the spool has no room for two more batches: then files are not read further.

        Unlike a pipe or a request, a file keeps its lines; reading on would only make the spool drop
        older ones.
        """
        spool = self.spool
        if spool is None:
            return False
        return spool.bytes + 2 * self.settings.shipper_batch_bytes > spool.max_bytes

    def _spool_dropped(self, segment: Segment) -> None:
        self.metrics.dropped_by_reason["spool_full"].inc(segment.lines)
        logger.error(
            "Spool full: dropped the oldest batch",
            lines=segment.lines,
            spool_max_bytes=self.settings.shipper_spool_max_bytes,
        )

    async def start(self) -> None:
        """Open the spool, resume from saved positions and start every task."""
        settings = self.settings
        if self.spool is not None:
            spool = self.spool
            spool.open()
            self.metrics.watch_spool(lambda: spool.bytes, lambda: len(spool), spool.oldest_age)
            if len(spool):
                logger.info("Resuming spooled batches", segments=len(spool), lines=spool.lines)
        self._tasks.append(self._spawn(self.batcher.run()))
        if self.sender is not None:
            self._tasks.append(self._spawn(self.sender.run()))
        if settings.shipper_files:
            tailer = FileTailer(
                specs=parse_file_specs(settings.shipper_files, self.default_service),
                batcher=self.batcher,
                saved=self.positions.load(),
                max_line_bytes=settings.shipper_max_line_bytes,
                poll=settings.shipper_poll_seconds,
                paused=self._spool_nearly_full,
            )
            self.batcher.watch(tailer)
            self._source_tasks.append(self._spawn(tailer.run()))
        if settings.shipper_stdin:
            stdin = StdinSource(
                batcher=self.batcher,
                service=self.default_service,
                max_line_bytes=settings.shipper_max_line_bytes,
                on_eof=self._stdin_closed,
            )
            self._source_tasks.append(self._spawn(stdin.run()))
        self.started = True
        # Everything alive now (imports, the app) lives for the whole process: moving it out of the
        # collector's sight keeps each full collection from walking half a million objects again.
        gc.freeze()
        logger.info(
            "Log shipper started",
            loki_enabled=settings.loki_enabled,
            loki_push_url=settings.loki_push_url,
            stdin=settings.shipper_stdin,
            files=list(settings.shipper_files),
            spool_dir=settings.shipper_spool_dir,
        )

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coroutine)
        task.add_done_callback(_report_crash)
        return task

    async def _stdin_closed(self) -> None:
        if not self.settings.shipper_stdin_exit_at_eof:
            return
        logger.info("stdin closed; shipping what is left, then stopping")
        await self.wait_shipped(self.settings.shipper_shutdown_timeout_seconds)
        os.kill(os.getpid(), signal.SIGTERM)

    async def wait_shipped(self, seconds: float) -> bool:
        """Until the spool is empty (True) or `seconds` pass (False)."""
        deadline = time.monotonic() + seconds
        while self.spool is not None and len(self.spool):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def stop(self) -> None:
        """Stop reading, spool what was read, push until the shutdown timeout; the rest stays spooled."""
        if not self.started:
            return
        self.started = False
        deadline = time.monotonic() + self.settings.shipper_shutdown_timeout_seconds
        await _cancel(self._source_tasks)
        try:
            await self.batcher.flush()
        except SpoolWriteError:
            logger.error("Could not spool the last lines read at shutdown")
        shipped = await self.wait_shipped(max(0.0, deadline - time.monotonic()))
        if self._client is not None:
            # A push still in flight would hold the exit for up to LOKI_TIMEOUT_SECONDS: cut it; its batch
            # stays in the spool for the next start.
            self._client.abort()
        await _cancel(self._tasks)
        left = self.spool.lines if self.spool is not None else 0
        logger.info("Log shipper stopped", all_shipped=shipped, lines_left_in_spool=left)

    def readiness(self) -> tuple[bool, dict[str, object]]:
        """Ready when started and Loki (if enabled) is not failing; the details for `/ready`."""
        if not self.settings.loki_enabled:
            return self.started, {"loki": "disabled", "shipping": False}
        failing = self.sender is not None and self.sender.failing
        spool = self.spool
        details: dict[str, object] = {
            "loki": "failing" if failing else "ok",
            "spool_bytes": spool.bytes if spool is not None else 0,
            "lag_seconds": round(spool.oldest_age(), 3) if spool is not None else 0.0,
        }
        return self.started and not failing, details


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.opt(exception=task.exception()).error("Log shipper task crashed", task=task.get_name())


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    tasks.clear()
