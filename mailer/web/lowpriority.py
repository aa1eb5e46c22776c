"""Web service: slow CPU work (the admin login's argon2 check) on threads of its own at the lowest
OS priority, so the threads that answer requests get the CPU first.

On Linux the nice value belongs to each thread: `os.setpriority(PRIO_PROCESS, native thread id, 19)`
in a pool thread's initializer lowers that thread alone, and the threads argon2 starts for its lanes
inherit it. argon2-cffi releases the GIL while it hashes, so on a machine with few cores the
kernel runs the request-serving threads (nice 0) whenever they have work, and the checks take the
CPU time left over (docs/admin.md, "Login rate limits"). Elsewhere the priority is left as it is
(`os.setpriority` there would lower the whole process). Only ever lowered: an unprivileged process
may not raise it back, which is why these threads serve nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

log = logging.getLogger("mailer.web")
LOWEST = 19
T = TypeVar("T")


def lower_this_thread(nice: int = LOWEST) -> None:
    """The calling thread's nice value set to `nice` (Linux: this thread only); elsewhere nothing."""
    if sys.platform != "linux":
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except OSError as exc:            # (a sandbox may refuse; the checks then run at normal priority)
        log.warning("could not lower the password check thread's priority: %s", exc)


class LowPriorityPool:
    """`workers` threads at nice 19, made at the first `run`; `run` awaits `fn(*args)` on one."""

    def __init__(self, workers: int, name: str) -> None:
        self.workers, self.name = workers, name
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix=self.name,
                                                initializer=lower_this_thread)
            return self._pool

    async def run(self, fn: Callable[..., T], *args) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor(), fn, *args)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
