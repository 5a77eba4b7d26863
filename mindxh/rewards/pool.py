"""A tiny process pool with a deadline per item: a hung item scores a default, the pool lives on.

`multiprocessing.Pool` cannot cancel one stuck task, and math-verify's own timeout relies on
`signal.alarm`, which only works in a process's main thread. Here each worker is a process
that runs `fn(item)` in its main thread; a worker that misses its deadline is killed and
replaced, and its item gets `default`.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import time
from collections import deque
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Iterable

log = logging.getLogger(__name__)

__all__ = ["TimeoutPool"]

_STARTUP_S = 120.0  # a worker that has not started within this is treated as hung


def _worker_loop(fn: Callable[[Any], Any], init: Callable[[], None] | None,
                 conn: Connection) -> None:
    if init is not None:
        init()
    conn.send(None)  # "started": a worker that dies before this never ran at all
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        index, item = msg
        try:
            conn.send((index, True, fn(item)))
        except Exception as exc:  # the item is scored `default`; the worker carries on
            conn.send((index, False, f"{type(exc).__name__}: {exc}"))


class _Worker:
    def __init__(self, ctx, fn: Callable[[Any], Any], init: Callable[[], None] | None):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_loop, args=(fn, init, child), daemon=True)
        self.proc.start()
        child.close()
        self.index: int | None = None  # the item in flight
        self.started = False
        self.deadline = 0.0

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.proc.kill()
        else:
            try:
                self.conn.send(None)
            except OSError:
                self.proc.kill()
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()


class TimeoutPool:
    """`map(items)` runs `fn` on each item in `workers` processes, `timeout_s` per item.

    `fn` and `init` (run once per worker, before its clock starts: slow imports go there)
    must be module-level functions: workers are spawned, not forked, so a parent holding
    threads (MindSpore's) is safe. Results come back in input order.
    """

    def __init__(self, fn: Callable[[Any], Any], workers: int = 2, timeout_s: float = 5.0,
                 default: Any = None, init: Callable[[], None] | None = None):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.fn, self.init, self.n_workers = fn, init, workers
        self.timeout_s, self.default = timeout_s, default
        self._ctx = mp.get_context("spawn")
        self._workers: list[_Worker] = []
        self.timeouts = 0  # items that ran past their deadline, over the pool's life
        self.errors = 0  # items whose fn raised

    def map(self, items: Iterable[Any]) -> list[Any]:
        todo = deque(enumerate(items))
        results = [self.default] * len(todo)
        if not todo:
            return results
        while len(self._workers) < min(self.n_workers, len(todo)):
            self._workers.append(_Worker(self._ctx, self.fn, self.init))
        while todo or any(w.index is not None for w in self._workers):
            for w in self._workers:
                if w.index is None and todo:
                    w.index, item = todo.popleft()
                    # a worker still starting gets its clock set when it says it has started
                    w.deadline = time.monotonic() + self.timeout_s + (0 if w.started else _STARTUP_S)
                    w.conn.send((w.index, item))
            busy = [w for w in self._workers if w.index is not None]
            wait_s = max(0.0, min(w.deadline for w in busy) - time.monotonic())
            ready = set(wait([w.conn for w in busy], timeout=wait_s))
            for w in busy:
                if w.conn in ready:
                    self._collect(w, results)
                elif time.monotonic() >= w.deadline:
                    log.warning("item %d took more than %.1fs; scored %r", w.index, self.timeout_s,
                                self.default)
                    self.timeouts += 1
                    self._replace(w)
        return results

    def _collect(self, w: _Worker, results: list[Any]) -> None:
        try:
            msg = w.conn.recv()
            if msg is None:
                w.started = True
                w.deadline = time.monotonic() + self.timeout_s
                if not w.conn.poll():
                    return
                msg = w.conn.recv()
        except (EOFError, OSError):
            if not w.started:
                self.close()
                raise RuntimeError(
                    "a pool worker exited while starting; if this runs from a script, guard its "
                    "entry point with `if __name__ == '__main__':` (workers are spawned, and "
                    "a spawned process imports the main script)") from None
            log.warning("worker died on item %d; scored %r", w.index, self.default)
            self.errors += 1
            self._replace(w)
            return
        index, ok, value = msg
        if ok:
            results[index] = value
        else:
            log.debug("item %d raised %s; scored %r", index, value, self.default)
            self.errors += 1
        w.index = None

    def _replace(self, w: _Worker) -> None:
        w.stop(kill=True)
        self._workers[self._workers.index(w)] = _Worker(self._ctx, self.fn, self.init)

    def close(self) -> None:
        for w in self._workers:
            w.stop()
        self._workers = []

    def __enter__(self) -> "TimeoutPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
