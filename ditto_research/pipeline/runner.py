"""A generic threaded stage runner: one thread per stage, bounded queues, typed end/cancel/error.

Stages hold no threading code. A stage is an object with

    name: str
    setup() -> None                       called in the stage's own thread before the first item
    process(item) -> Iterable[item]       zero or more outputs per input
    flush() -> Iterable[item]             at end of stream, before the end marker moves on
    close() -> None                       always called, also after an error or a cancel

Semantics (pipecat-like, on bounded thread queues):
- ``END`` flushes every stage in order and ends the iteration.
- ``cancel()`` (or leaving the iteration early) stops every stage at once.
- A stage error stops all stages within one poll interval and is re-raised to the caller as a
  :class:`StageError` carrying the stage name and the cause (a :class:`DittoError` cause is re-raised as is,
  so users see its message). Nothing is swallowed and no thread is left running.
- Every queue ``put``/``get`` times out and re-checks the stop event, so no neighbour can deadlock a stage.
- Whoever wants per-call timings registers an observer (``on_stage_call(stage, seconds)``, called on the
  stage's thread); the runner itself keeps only bounded counters (:class:`StageStats`).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ditto_research.errors import DittoError, StageError


class Stage(Protocol):
    name: str

    def setup(self) -> None: ...

    def process(self, item: Any) -> Iterable[Any]: ...

    def flush(self) -> Iterable[Any]: ...

    def close(self) -> None: ...


class BaseStage:
    """Convenience base: no-op setup/flush/close."""

    name = "stage"

    def setup(self) -> None:
        return None

    def process(self, item: Any) -> Iterable[Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def flush(self) -> Iterable[Any]:
        return ()

    def close(self) -> None:
        return None


class _End:
    """End-of-stream marker (a singleton type, never a bare None)."""

    def __repr__(self) -> str:
        return "END"


END = _End()


class _Stopped(Exception):
    """Internal: the stop event was set while waiting on a queue."""


class StageCallObserver(Protocol):
    def on_stage_call(self, stage: str, seconds: float) -> None: ...


@dataclass
class StageStats:
    """Counters of one stage: ``process`` calls, their total wall time (s), items emitted, setup time (s)."""

    name: str
    calls: int = 0
    busy_s: float = 0.0
    emitted: int = 0
    setup_s: float = 0.0


class PipelineRunner:
    """Run ``stages`` over the items of ``source``; iterate the outputs of the last stage.

    Args:
        stages: stage objects, in order.
        queue_size: capacity of every queue between stages (memory bound of the pipeline).
        poll_s: how often a blocked thread re-checks the stop event.
        observers: told the wall time of every ``process`` call (:class:`StageCallObserver`).
    """

    def __init__(
        self,
        stages: Sequence[Stage],
        queue_size: int = 4,
        poll_s: float = 0.05,
        observers: Sequence[StageCallObserver] = (),
    ) -> None:
        if not stages:
            raise ValueError("PipelineRunner needs at least one stage")
        names = [s.name for s in stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        self.stages = list(stages)
        self.queue_size = queue_size
        self.poll_s = poll_s
        self.stats = {s.name: StageStats(s.name) for s in stages}
        self.observers = list(observers)
        self._stop = threading.Event()
        self._error: tuple[str, BaseException] | None = None
        self._error_lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    # -------------------------------------------------------------------------------------------- public API

    def cancel(self) -> None:
        """Stop every stage as soon as possible (items in flight are dropped)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """True once the run was cancelled, failed or ended (a live source uses it to stop waiting)."""
        return self._stop.is_set()

    def run(self, source: Iterable[Any], sink: Callable[[Any], None] | None = None) -> None:
        """Run to the end, handing every output to ``sink`` (in the caller's thread)."""
        for item in self.iterate(source):
            if sink is not None:
                sink(item)

    def iterate(self, source: Iterable[Any]) -> Iterator[Any]:
        """Start the threads and yield outputs of the last stage as they arrive."""
        if self._threads:
            raise RuntimeError("a PipelineRunner runs once; build a new one")
        queues = [queue.Queue(maxsize=self.queue_size) for _ in range(len(self.stages) + 1)]
        self._threads.append(
            threading.Thread(target=self._feed, args=(source, queues[0]), name="source", daemon=True)
        )
        for i, stage in enumerate(self.stages):
            self._threads.append(
                threading.Thread(
                    target=self._work,
                    args=(stage, queues[i], queues[i + 1]),
                    name=f"stage-{stage.name}",
                    daemon=True,
                )
            )
        for t in self._threads:
            t.start()
        out = queues[-1]
        try:
            while True:
                try:
                    item = self._get(out)
                except _Stopped:
                    break
                if item is END:
                    break
                yield item
        finally:
            # After END every stage has already finished; otherwise the caller left early or cancelled.
            self._stop.set()
            self._join()
        self._raise_if_failed()

    # ----------------------------------------------------------------------------------------------- threads

    def _fail(self, stage: str, error: BaseException) -> None:
        with self._error_lock:
            if self._error is None:
                self._error = (stage, error)
        self._stop.set()

    def _raise_if_failed(self) -> None:
        if self._error is None:
            return
        stage, error = self._error
        if isinstance(error, DittoError):
            raise error
        raise StageError(stage, error) from error

    def _get(self, q: queue.Queue) -> Any:
        while True:
            if self._stop.is_set():
                raise _Stopped
            try:
                return q.get(timeout=self.poll_s)
            except queue.Empty:
                continue

    def _put(self, q: queue.Queue, item: Any) -> None:
        while True:
            if self._stop.is_set():
                raise _Stopped
            try:
                q.put(item, timeout=self.poll_s)
                return
            except queue.Full:
                continue

    def _feed(self, source: Iterable[Any], out: queue.Queue) -> None:
        try:
            for item in source:
                self._put(out, item)
            self._put(out, END)
        except _Stopped:
            pass
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            self._fail("source", e)

    def _work(self, stage: Stage, inq: queue.Queue, out: queue.Queue) -> None:
        stats = self.stats[stage.name]
        try:
            t0 = time.perf_counter()
            stage.setup()
            stats.setup_s = time.perf_counter() - t0
            while True:
                item = self._get(inq)
                if item is END:
                    for result in stage.flush():
                        self._put(out, result)
                        stats.emitted += 1
                    self._put(out, END)
                    return
                t0 = time.perf_counter()
                results = list(stage.process(item))
                seconds = time.perf_counter() - t0
                stats.calls += 1
                stats.busy_s += seconds
                for observer in self.observers:
                    observer.on_stage_call(stage.name, seconds)
                for result in results:
                    self._put(out, result)
                    stats.emitted += 1
        except _Stopped:
            pass
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            self._fail(stage.name, e)
        finally:
            try:
                stage.close()
            except BaseException as e:  # noqa: BLE001
                self._fail(stage.name, e)

    def _join(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            # A stage stuck inside a single long call (e.g. a native op) cannot be interrupted; say so loudly.
            raise RuntimeError(f"pipeline threads did not stop within {timeout_s:.0f}s: {', '.join(alive)}")
