"""The media modules' old homes under render/ (and pipeline.stages.source_index) still answer, with a
DeprecationWarning naming the new one."""

from __future__ import annotations

import importlib
import sys

import pytest


@pytest.mark.parametrize(
    ("old", "new", "names"),
    [
        ("render.source_io", "media.source", ["SourceMedia", "check_resize", "load_source", "mirror_index"]),
        ("render.writer", "media.writer", ["VideoWriter", "probe_video"]),
        (
            "render.output_files",
            "media.output_files",
            ["OutputReservation", "process_alive", "remove_stale_temporaries", "reserve_output", "temp_name"],
        ),
        ("pipeline.output", "media.writer", ["write_frames"]),
    ],
)
def test_an_old_module_warns_and_re_exports(old: str, new: str, names: list[str]) -> None:
    sys.modules.pop(f"ditto_research.{old}", None)
    with pytest.warns(DeprecationWarning, match=f"ditto_research.{old} moved to ditto_research.{new}"):
        module = importlib.import_module(f"ditto_research.{old}")
    target = importlib.import_module(f"ditto_research.{new}")
    assert sorted(module.__all__) == sorted(names)
    assert all(getattr(module, name) is getattr(target, name) for name in names)


def test_the_stitch_stage_s_old_helper_warns_and_answers() -> None:
    from ditto_research.pipeline.stages import source_index

    with pytest.warns(DeprecationWarning, match="moved to ditto_research.media.loop.mirror_index"):
        assert [source_index(i, 3) for i in range(7)] == [0, 1, 2, 2, 1, 0, 0]
