"""Group commit for a network database: one call in flight, and whatever arrives meanwhile goes in the next.

A statement to PostgreSQL costs the client a round trip's worth of CPU (pool, protocol, two syscalls) however
little it does. `Batcher` sends the first item at once — alone when traffic is light, so nothing waits
longer than it would have — and while that call is out, queues the items that arrive; when it returns they
all go in one call. Under load the cost per item falls with the batch size, and no timer delays anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Batcher(Generic[Item, Result]):
    """`await submit(item)` returns that item's result from `send(batch)`, which answers in batch order.

    A failed `send` fails every item of its batch with the same exception. `abandoned(item, result)` is
    called for an item whose submitter was cancelled while its batch was out, so a result that took effect
    (a reservation granted) can be undone.
    """

    def __init__(
        self,
        send: Callable[[list[Item]], Awaitable[list[Result]]],
        *,
        max_batch: int = 256,
        abandoned: Callable[[Item, Result], None] | None = None,
    ) -> None:
        self._send = send
        self._max_batch = max_batch
        self._abandoned = abandoned
        self._queue: list[tuple[Item, asyncio.Future[Result]]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Result:
        """Queue `item` and wait for its result."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._drainer is None:
            self._drainer = asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        batch: list[tuple[Item, asyncio.Future[Result]]] = []
        try:
            while self._queue:
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                try:
                    results = await self._send([item for item, _ in batch])
                except Exception as exc:  # noqa: BLE001 - handed to every submitter of the batch
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (item, future), result in zip(batch, results, strict=True):
                    if future.done():  # the submitter was cancelled meanwhile
                        if self._abandoned is not None:
                            self._abandoned(item, result)
                    else:
                        future.set_result(result)
                batch = []
        finally:
            self._drainer = None
            for _, future in batch + self._queue:  # only when cancelled itself (shutdown)
                future.cancel()
            if batch:
                self._queue.clear()

    async def wait_idle(self) -> None:
        """Return once nothing is queued or in flight."""
        while self._drainer is not None:
            await asyncio.shield(self._drainer)
