"""The generic stage runner: order, flush, bounded memory, errors with stage names, cancel, no leftover
threads."""

from __future__ import annotations

import threading
import time

import pytest

from ditto_research.errors import InputError, StageError
from ditto_research.pipeline.runner import BaseStage, PipelineRunner


class Double(BaseStage):
    name = "double"

    def __init__(self) -> None:
        self.closed = False
        self.setup_thread = None

    def setup(self) -> None:
        self.setup_thread = threading.current_thread().name

    def process(self, item):
        yield item * 2

    def close(self) -> None:
        self.closed = True


class Batch(BaseStage):
    """Emits pairs; the last odd item comes out at flush."""

    name = "batch"

    def __init__(self) -> None:
        self.pending = []

    def process(self, item):
        self.pending.append(item)
        if len(self.pending) == 2:
            out, self.pending = tuple(self.pending), []
            yield out

    def flush(self):
        if self.pending:
            yield tuple(self.pending)


class FailAt(BaseStage):
    def __init__(self, n: int, error: Exception, name: str = "fail") -> None:
        self.n, self.error, self.name = n, error, name
        self.closed = False

    def process(self, item):
        if item == self.n:
            raise self.error
        yield item

    def close(self) -> None:
        self.closed = True


class Slow(BaseStage):
    name = "slow"

    def process(self, item):
        time.sleep(0.01)
        yield item


def _no_stage_threads() -> bool:
    return not any(t.name.startswith("stage-") or t.name == "source" for t in threading.enumerate())


def test_order_flush_and_close():
    double, batch = Double(), Batch()
    out = list(PipelineRunner([double, batch]).iterate(range(5)))
    assert out == [(0, 2), (4, 6), (8,)]
    assert double.closed and double.setup_thread == "stage-double"
    assert _no_stage_threads()


def test_stats_count_items():
    calls = []

    class Watch:
        def on_stage_call(self, stage, seconds):
            calls.append((stage, threading.current_thread().name, seconds))

    runner = PipelineRunner([Double(), Batch()], observers=[Watch()])
    runner.run(range(6))
    assert runner.stats["double"].calls == 6 and runner.stats["batch"].calls == 6
    assert runner.stats["double"].emitted == 6 and runner.stats["batch"].emitted == 3
    assert sorted({(stage, thread) for stage, thread, _ in calls}) == [
        ("batch", "stage-batch"),
        ("double", "stage-double"),
    ]
    assert len(calls) == 12 and all(seconds >= 0 for *_, seconds in calls)
    assert runner.stats["double"].busy_s == pytest.approx(sum(s for st, _, s in calls if st == "double"))


def test_stage_error_carries_stage_name_and_stops_everything():
    fail = FailAt(6, ValueError("boom"), name="warp")
    runner = PipelineRunner([Double(), Slow(), fail], queue_size=2)
    seen = []
    with pytest.raises(StageError) as info:
        for item in runner.iterate(iter(range(0, 1000, 1))):
            seen.append(item)
    assert info.value.stage == "warp" and isinstance(info.value.cause, ValueError)
    assert "warp" in str(info.value) and "boom" in str(info.value)
    assert fail.closed
    assert len(seen) < 10
    assert _no_stage_threads()


def test_user_errors_surface_unchanged():
    with pytest.raises(InputError, match="bad chunk"):
        PipelineRunner([FailAt(1, InputError("bad chunk"))]).run(range(3))


def test_source_error_is_reported_as_source():
    def source():
        yield 1
        raise RuntimeError("mic unplugged")

    with pytest.raises(StageError, match="source"):
        PipelineRunner([Double()]).run(source())
    assert _no_stage_threads()


def test_leaving_early_cancels_and_joins():
    runner = PipelineRunner([Slow()], queue_size=1)
    for i, _ in enumerate(runner.iterate(iter(range(10_000)))):
        if i == 3:
            break
    assert _no_stage_threads()


def test_cancel_from_another_thread():
    runner = PipelineRunner([Slow()], queue_size=1)
    threading.Timer(0.1, runner.cancel).start()
    t0 = time.perf_counter()
    out = list(runner.iterate(iter(range(10_000))))
    assert time.perf_counter() - t0 < 5 and len(out) < 10_000
    assert _no_stage_threads()


def test_memory_is_bounded_by_queue_size():
    produced = []

    def source():
        for i in range(100):
            produced.append(i)
            yield i

    runner = PipelineRunner([Double(), Slow()], queue_size=2)
    it = runner.iterate(source())
    next(it)
    time.sleep(0.2)
    # source->double->slow->out: at most 3 queues x 2 items + one item per thread in hand are ahead of us.
    assert len(produced) <= 2 * 3 + 4
    it.close()
    assert _no_stage_threads()


def test_runner_runs_once_and_needs_stages():
    with pytest.raises(ValueError):
        PipelineRunner([])
    runner = PipelineRunner([Double()])
    runner.run([1])
    with pytest.raises(RuntimeError):
        runner.run([1])
