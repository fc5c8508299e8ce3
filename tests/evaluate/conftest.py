"""Fixtures of the evaluate app tests: tiny settings, short media, a SyncNet weight file, a dataset CSV."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from skimage import data

from ditto_research.audio.io import write_wav
from ditto_research.evaluate.results import ClipResult, RunRecord, StageLatency, write_run
from ditto_research.examples import synthetic_speech

# Tiny random networks, the random speech encoder, MediaPipe, two diffusion steps: the whole pipeline in
# seconds.
TINY = ["model=tiny", "audio_encoder=untrained", "face=mediapipe", "sampler.steps=2"]


@pytest.fixture(scope="session")
def eval_media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A portrait, a faceless image, 0.6 s of speech-like audio and another 0.6 s, and a text file."""
    folder = tmp_path_factory.mktemp("eval_media")
    face = folder / "face.png"
    cv2.imwrite(str(face), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    wall = folder / "wall.png"
    cv2.imwrite(str(wall), np.full((256, 256, 3), 127, np.uint8))
    notes = folder / "notes.txt"
    notes.write_text("not a weight file\n")
    return {
        "face": face,
        "wall": wall,
        "speech": write_wav(folder / "speech.wav", synthetic_speech(0.6, seed=1)),
        "speech2": write_wav(folder / "speech2.wav", synthetic_speech(0.6, seed=2)),
        "notes": notes,
    }


@pytest.fixture(scope="session")
def syncnet_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A deterministic random SyncNet state dict saved like syncnet_v2.model."""
    from ditto_research.evaluate.metrics.syncnet import SyncNet

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("syncnet") / "syncnet_random.model"
    torch.save(SyncNet().state_dict(), path)
    return path


def write_csv(path: Path, rows: list[tuple[str, str]], header: str = "source,audio") -> Path:
    path.write_text(header + "\n" + "".join(f"{s},{a}\n" for s, a in rows), encoding="utf-8")
    return path


def write_synthetic_run(
    folder: Path,
    sampler: str,
    steps: int,
    fps: float,
    status: str = "ok",
    latency: tuple[float, ...] = (),
    lse: float | None = None,
    mode: str = "offline",
) -> RunRecord:
    """A results.json as python -m ditto_research.evaluate.run writes it, with made-up numbers (report /
    notebook tests)."""
    params = {
        "model": "untrained",
        "sampler": sampler,
        "steps": steps,
        "mode": mode,
        "eta": 1.0 if sampler == "ddim" else None,
    }
    clip = ClipResult(
        "c1",
        "face.png",
        "a.wav",
        frames=25,
        audio_s=1.0,
        seconds=25 / max(fps, 0.1),
        fps=fps,
        frame_latency_ms=list(latency),
        metrics={"lse_d": lse} if lse is not None else {},
        notes={} if lse is not None else {"sync_proxy": "no face found in any output frame"},
    )
    record = RunRecord(
        str(folder),
        status=status,
        params=params,
        clips=[clip] if status == "ok" else [],
        error=None if status == "ok" else "sampler=heun is not available",
        stages=[
            StageLatency("warp", 25, 1000 / fps * 0.6, 1, 2, 3),
            StageLatency("decode", 25, 1000 / fps * 0.4, 1, 2, 3),
        ]
        if status == "ok"
        else [],
        summary={
            "fps": fps,
            "rtf": 1 / max(fps, 0.1),
            "clips": 1,
            "clips_ok": int(status == "ok"),
            "lse_d": lse,
        },
        system={"cpus": 2, "torch": "2.13"},
    )
    write_run(record, folder)
    return record
