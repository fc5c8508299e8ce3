"""pipeline.run: the CLI's run gives its output reservation back whatever stops it."""

from __future__ import annotations

import pytest

from ditto_research.config import compose
from ditto_research.errors import CheckpointError


def test_a_failure_after_the_output_is_reserved_leaves_no_lock(tmp_path, monkeypatch):
    import ditto_research.pipeline.engine as engine_module
    from ditto_research.pipeline.run import run

    monkeypatch.setenv("DITTO_CACHE_DIR", str(tmp_path / "cache"))  # the bundled example goes there
    seen: list[list[str]] = []

    def failing_engine(cfg, *args, **kwargs):
        seen.append(sorted(p.name for p in (tmp_path / "out").iterdir()))  # the reservation is held here
        raise CheckpointError("simulated: a network file cannot be loaded")

    monkeypatch.setattr(engine_module, "Engine", failing_engine)
    (tmp_path / "out").mkdir()
    cfg = compose("infer", ["model=tiny", "progress=false", f"output={tmp_path / 'out' / 'clip.mp4'}"])
    with pytest.raises(CheckpointError, match="simulated"):
        run(cfg)
    assert seen == [[".clip.mp4.lock"]]
    assert list((tmp_path / "out").iterdir()) == []
