"""A synchronous reader of Kafka: one consumer over a private event loop.

Recovery is plain synchronous code (``clearing.sequencer.recover``) that the daemon runs
in a worker thread while its own loop keeps serving health checks; the readers it uses
(the journal topic, the snapshot topic) therefore drive aiokafka from a loop of their
own. ``SyncReader`` is that lifecycle, once: ``open()`` makes the loop and lets the
subclass start its consumer, ``close()`` stops the consumer and closes the loop, and a
``with`` block does both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Self, TypeVar

from aiokafka import AIOKafkaConsumer

from clearing.ops.config import Config

__all__ = ["SyncReader"]

_T = TypeVar("_T")


class SyncReader:
    """Owns an event loop and (once ``open()`` succeeded) at most one consumer. Use from
    a thread without a running event loop. Subclasses start the consumer in
    ``_connect`` (or return None when there is nothing to read)."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._loop: asyncio.AbstractEventLoop | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def _connect(self) -> AIOKafkaConsumer | None:
        """Start and return the consumer (runs on the reader's loop)."""
        raise NotImplementedError

    def _run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coro`` to its end on the reader's loop."""
        assert self._loop is not None, f"{type(self).__name__}.open() first"
        return self._loop.run_until_complete(coro)

    def open(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._consumer = self._run(self._connect())
        except BaseException:
            self.close()  # the loop, too: the caller gets no reader to close
            raise

    def close(self) -> None:
        if self._loop is None:
            return
        try:
            if self._consumer is not None:
                self._run(self._consumer.stop())
        finally:
            self._consumer = None
            self._loop.close()
            self._loop = None

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
