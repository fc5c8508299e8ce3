"""The engine: one copy of the stack under every session, observers instead of stats dicts, arrows pointing
down."""

from __future__ import annotations

import ast
import threading
from pathlib import Path

import numpy as np
import pytest

import ditto_research
from ditto_research.audio.io import load_audio, num_video_frames, write_wav
from ditto_research.examples import example_source, synthetic_speech
from ditto_research.pipeline import engine as engine_module
from ditto_research.pipeline.engine import Engine
from ditto_research.pipeline.observers import MotionRecorder, StageTimer
from ditto_research.pipeline.online import StreamingSession
from ditto_research.pipeline.session import TalkingHeadSession

OVERRIDES = ["model=tiny", "face=mediapipe", "progress=false", "sampler.steps=2"]
PACKAGE = Path(ditto_research.__file__).parent

# Lower layers never import the layers built on them (pipeline, serve, evaluate, export).
UPPER = (
    "ditto_research.pipeline",
    "ditto_research.serve",
    "ditto_research.evaluate",
    "ditto_research.export",
)
LOWER = (
    "audio",
    "backends",
    "checkpoints",
    "config",
    "data",
    "diffusion",
    "face",
    "media",
    "models",
    "motion",
    "render",
)


@pytest.fixture(scope="module")
def engine():
    e = Engine.from_overrides(OVERRIDES)
    yield e
    e.close()


@pytest.fixture(scope="module")
def clip(engine):
    audio = synthetic_speech(0.6)
    source = engine.register(example_source())
    yield source, audio
    source.media.close()


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("layer", LOWER)
def test_dependency_arrows_point_down(layer):
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(n for n in _imports(path) if n.startswith(UPPER))
        for path in (PACKAGE / layer).rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_sessions_share_one_engine(engine):
    offline, online = TalkingHeadSession(engine), StreamingSession(engine)
    assert offline.networks is online.engine.networks is engine.networks
    assert offline.encoder is engine.encoder and offline.frontend is engine.frontend


def test_components_are_built_once_under_concurrent_first_use(monkeypatch):
    calls = []
    real = engine_module.build_networks

    def counting(*args, **kwargs):
        calls.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(engine_module, "build_networks", counting)
    e = Engine.from_overrides(OVERRIDES)
    seen, barrier = [], threading.Barrier(4)

    def first_use():
        barrier.wait()
        seen.append(e.networks)

    threads = [threading.Thread(target=first_use) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(calls) == 1 and len(seen) == 4 and all(n is seen[0] for n in seen)


def test_observers_see_the_motion_and_every_stage(engine, clip):
    source, audio = clip
    expected = engine.generate_motion(audio, source)
    timer, motion = StageTimer(), MotionRecorder()
    frames = list(TalkingHeadSession(engine).frames(source, audio, [timer, motion]))
    assert len(frames) == expected.shape[0] == 15
    np.testing.assert_array_equal(motion.array(), expected)  # same seed, same draws: the same motion
    assert set(timer.busy_s()) == {"motion", "stitch", "warp", "decode", "paste"}
    calls = timer.call_seconds()
    assert len(calls["motion"]) == 1 and all(
        len(calls[s]) == 15 for s in ("stitch", "warp", "decode", "paste")
    )


def test_online_observers_and_offline_frame_count(engine, clip, tmp_path):
    source, audio = clip
    wav = write_wav(tmp_path / "a.wav", audio)
    motion = MotionRecorder()
    stream = StreamingSession(engine)
    seen = []
    result = stream.run_file(example_source(), wav, None, observers=[motion], on_frame=seen.append)
    n = len(load_audio(wav, 16000))
    assert result.frames == len(seen) == num_video_frames(n) == motion.array().shape[0]
    assert [f.index for f in seen] == list(range(result.frames))
    assert set(stream.stage_ms_per_frame()) == {"features", "motion", "stitch", "warp", "decode", "paste"}
    assert result.output is None


def test_repeated_runs_are_identical(engine, clip):
    source, audio = clip
    a = [f.image for f in TalkingHeadSession(engine).frames(source, audio)]
    b = [f.image for f in TalkingHeadSession(engine).frames(source, audio)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_derived_engine_shares_components_and_refuses_other_ones(engine):
    from dataclasses import replace

    from ditto_research.errors import ConfigError

    cfg = engine.cfg
    child = engine.derive(
        replace(cfg, sampler=replace(cfg.sampler, steps=1), control=replace(cfg.control, emo=3))
    )
    assert child.networks is engine.networks and child.encoder is engine.encoder
    assert child.frontend is engine.frontend and child.cfg.sampler.steps == 1
    child.close()  # leaves the shared front-end to the engine it came from
    assert engine.frontend is child.frontend
    with pytest.raises(ConfigError, match="model is fixed by this engine"):
        engine.derive(replace(cfg, model=replace(cfg.model, name="untrained")))
    with pytest.raises(ConfigError, match="motion.use_emo is fixed"):
        engine.derive(replace(cfg, motion=replace(cfg.motion, use_emo=False)))
