

def test_threads_per_render_stage_splits_the_cores_between_warp_and_decode(monkeypatch):
    import os

    from ditto_research.backends import threads_per_render_stage

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert threads_per_render_stage(0) == 8
    assert threads_per_render_stage(3) == 3  # an explicit count is kept
    assert threads_per_render_stage(0, "cuda") == 0  # library default on GPU
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert threads_per_render_stage(0) == 1
