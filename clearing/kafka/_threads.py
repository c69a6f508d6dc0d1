"""Blocking work off the daemon's event loop, in threads that never hold up its exit."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["in_daemon_thread"]

_T = TypeVar("_T")


async def in_daemon_thread(fn: Callable[..., _T], *args: Any) -> _T:
    """Run blocking ``fn`` in a daemon thread (asyncio.to_thread's executor would make the
    interpreter wait for it at exit, defeating the shutdown bound). Cancelling the await
    leaves the thread to finish or die with the process; its result is then dropped."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[_T] = loop.create_future()

    def settle(result: Any, exc: BaseException | None) -> None:
        if future.done():
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)

    def target() -> None:
        try:
            result = fn(*args)
        except BaseException as exc:
            settle_soon(None, exc)
        else:
            settle_soon(result, None)

    def settle_soon(result: Any, exc: BaseException | None) -> None:
        # RuntimeError: the loop closed meanwhile, nobody waits for the result.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, result, exc)

    threading.Thread(target=target, name=f"clearing-{fn.__name__}", daemon=True).start()
    return await future
