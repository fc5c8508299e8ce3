"""Evaluation sets: which (portrait, speech) pairs a run goes over.

Three forms, chosen by ``dataset=``:

=================  ==========================================================================================
``builtin``        four clips generated locally on first use (nothing is downloaded): scikit-image faces (the
                   astronaut photograph, its mirror image, two LFW faces from ``skimage.data.lfw_subset``
                   upscaled) speaking espeak-ng sentences of 1 to 2.7 s, ordered shortest first. Without
                   espeak-ng, speech-like synthetic audio of the same lengths is used (and logged).
``FILE.csv``       a header row with the columns ``source,audio`` and optionally ``id``, one clip per row;
                   UTF-8, with or without a byte-order mark (:mod:`ditto_research.user_files`).
``FILE.yaml``      a list of mappings ``{source: ..., audio: ..., id: ...}`` (``id`` optional); no anchors.
=================  ==========================================================================================

Relative paths in a file are relative to the folder of that file. Every file is checked before anything
runs: :func:`load_dataset` raises one :class:`InputError` that lists every missing file.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ditto_research.atomic import write_path_atomically
from ditto_research.audio.io import write_wav
from ditto_research.constants import SAMPLE_RATE
from ditto_research.errors import InputError
from ditto_research.user_files import column_problems, list_path, load_structured, read_csv

__all__ = ["BUILTIN_CLIPS", "Clip", "builtin_dataset", "load_dataset", "trim_audio"]

log = logging.getLogger(__name__)

COLUMNS = ("id", "source", "audio", "reference", "video")
DATASET_DEPTH = 2  # a YAML dataset is a list of flat mappings


@dataclass(frozen=True)
class Clip:
    """One evaluation item: a portrait image or video and the speech it says; ``reference``: the real video
    the result is scored against (evaluate.quality), when the dataset gives one. A row with only ``video`` is
    a self-reconstruction: source = that video (its first frame is extracted before the run, see
    :func:`source_frames`), audio = its track, reference = the video itself."""

    clip_id: str
    source: Path
    audio: Path
    reference: Path | None = None


@dataclass(frozen=True)
class BuiltinClip:
    """Recipe of a built-in clip: face name, sentence, espeak-ng voice, length of the synthetic fallback."""

    clip_id: str
    face: str
    text: str
    voice: str
    fallback_s: float


BUILTIN_CLIPS: tuple[BuiltinClip, ...] = (
    BuiltinClip("astronaut_hello", "astronaut", "Hello there.", "en", 1.0),
    BuiltinClip("lfw_a_weather", "lfw_a", "The weather is nice today.", "en+f3", 1.6),
    BuiltinClip("astronaut_mirror_morning", "astronaut_mirror", "Good morning, everyone.", "en-us", 1.7),
    BuiltinClip("lfw_b_numbers", "lfw_b", "One, two, three, four, five.", "en", 2.7),
)


def load_dataset(
    spec: str | Path, *, max_clips: int | None = None, builtin_dir: Path | None = None
) -> list[Clip]:
    """The clips of ``spec`` (``builtin``, a .csv or a .yaml file), the first ``max_clips`` of them.

    Raises InputError naming the problem (unknown format, bad columns, missing files, no clips).
    """
    if str(spec) == "builtin":
        clips = builtin_dataset(builtin_dir)
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise InputError(
                f"dataset file {spec} does not exist; give dataset=builtin, a .csv with columns "
                "source,audio or a .yaml list of {source, audio}"
            )
        suffix = path.suffix.lower()
        if suffix == ".csv":
            rows = _read_csv(path)
        elif suffix in (".yaml", ".yml"):
            rows = _read_yaml(path)
        else:
            raise InputError(
                f"dataset file {spec} must end in .csv, .yaml or .yml (got {suffix or 'no suffix'})"
            )
        clips = _clips_from_rows(rows, path)
    if max_clips is not None:
        clips = clips[:max_clips]
    if not clips:
        raise InputError(f"dataset {spec} has no clips")
    return clips


def _read_csv(path: Path) -> list[dict[str, str]]:
    header, rows = read_csv(path, f"dataset file {path}")
    _check_columns(header, path)
    return rows


def _read_yaml(path: Path) -> list[dict[str, str]]:
    items = load_structured(
        path, f"dataset file {path}", max_depth=DATASET_DEPTH, form="a list of {source, audio, id}"
    )
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise InputError(f"dataset file {path} must hold a YAML list of mappings with keys source and audio")
    for item in items:
        _check_columns([str(k) for k in item], path)
    return [{str(k): str(v) for k, v in item.items()} for item in items]


def _check_columns(names: list[str], path: Path) -> None:
    problems = column_problems(names, () if "video" in names else ("source", "audio"), COLUMNS)
    if problems:
        raise InputError(
            f"dataset file {path}: {problems}; the columns / keys are source, audio and "
            "optionally id, reference — or video alone (real talking videos: self-reconstruction)"
        )


def _clips_from_rows(rows: list[dict[str, str]], path: Path) -> list[Clip]:
    clips: list[Clip] = []
    missing: list[str] = []
    used: set[str] = set()
    for number, row in enumerate(rows, start=1):
        files: dict[str, Path] = {}
        video = (row.get("video") or "").strip()
        keys = ("source", "audio", "reference") if not video else ("video",)
        for key in keys:
            value = (row.get(key) or "").strip()
            file = list_path(value, path)
            if file is None:
                if key == "reference":
                    continue
                raise InputError(f"dataset file {path}, clip {number}: empty {key}")
            files[key] = file
            if not file.is_file():
                missing.append(f"clip {number} {key} {value}")
        if video:
            files = {"source": files["video"], "audio": files["video"], "reference": files["video"]}
        default_id = (
            f"{number:03d}_{files['source'].stem}"
            if video
            else f"{number:03d}_{files['source'].stem}_{files['audio'].stem}"
        )
        clip_id = _unique(_slug(row.get("id") or default_id), used)
        clips.append(Clip(clip_id, files["source"], files["audio"], files.get("reference")))
    if missing:
        shown = "; ".join(missing[:5]) + (f"; and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise InputError(
            f"dataset file {path} names files that do not exist (relative paths are relative to "
            f"the dataset file's folder): {shown}"
        )
    return clips


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "clip"


def _unique(name: str, used: set[str]) -> str:
    candidate, n = name, 2
    while candidate in used:
        candidate, n = f"{name}_{n}", n + 1
    used.add(candidate)
    return candidate


# ---- the built-in set -------------------------------------------------------------------------------------


def builtin_dataset(directory: Path | None = None) -> list[Clip]:
    """The built-in clips, generated into ``directory`` (default: the example cache) on first use."""
    from ditto_research.cache import cache_folder

    root = directory or cache_folder("examples", "eval_builtin")
    root.mkdir(parents=True, exist_ok=True)
    espeak = shutil.which("espeak-ng") or shutil.which("espeak")
    if espeak is None:
        log.warning("espeak-ng is not installed: the built-in clips use synthetic speech-like audio")
    clips = []
    for index, recipe in enumerate(BUILTIN_CLIPS):
        source = _face_image(root, recipe.face)
        audio = _speech(root, recipe, espeak, seed=index)
        clips.append(Clip(recipe.clip_id, source, audio))
    return clips


def _face_image(root: Path, face: str) -> Path:
    """PNG of a built-in face: the astronaut (mirrored), or an LFW face upscaled 25 -> 256 px on a plain 512
    canvas."""
    import cv2

    path = root / f"{face}.png"
    if path.is_file():
        return path
    from skimage import data

    if face.startswith("astronaut"):
        rgb = data.astronaut()
        rgb = rgb[:, ::-1] if face.endswith("mirror") else rgb
    else:
        gray = data.lfw_subset()[{"lfw_a": 0, "lfw_b": 1}[face]]
        big = cv2.resize((gray * 255).round().astype(np.uint8), (256, 256), interpolation=cv2.INTER_CUBIC)
        edge = int(np.median(np.concatenate([big[0], big[-1], big[:, 0], big[:, -1]])))
        big = cv2.copyMakeBorder(big, 128, 128, 128, 128, cv2.BORDER_CONSTANT, value=(edge,))
        rgb = np.repeat(big[..., None], 3, axis=2)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    return write_path_atomically(path, lambda p: cv2.imwrite(str(p), bgr))


def _speech(root: Path, recipe: BuiltinClip, espeak: str | None, seed: int) -> Path:
    if espeak is None:
        from ditto_research.examples import synthetic_speech

        path = root / f"{recipe.clip_id}_synthetic.wav"
        if not path.is_file():
            write_path_atomically(
                path, lambda p: write_wav(p, synthetic_speech(recipe.fallback_s, seed=seed))
            )
        return path
    path = root / f"{recipe.clip_id}.wav"
    if not path.is_file():
        write_path_atomically(
            path,
            lambda p: subprocess.run(
                [espeak, "-v", recipe.voice, "-w", str(p), recipe.text], check=True, capture_output=True
            ),
        )
    return path


def trim_audio(clip: Clip, seconds: float, directory: Path) -> Clip:
    """The clip with its audio cut to the first ``seconds`` (a 16 kHz WAV in ``directory``)."""
    from ditto_research.audio.io import load_audio

    samples = load_audio(clip.audio, SAMPLE_RATE)[: max(1, round(seconds * SAMPLE_RATE))]
    directory.mkdir(parents=True, exist_ok=True)
    path = write_wav(directory / f"{clip.clip_id}.wav", samples)
    return Clip(clip.clip_id, clip.source, path, clip.reference)


def source_frames(clips: list[Clip], directory: Path, frame: int = 0) -> list[Clip]:
    """Self-reconstruction clips (source = the reference video) with their source replaced by frame
    ``frame`` of that video, written as a PNG into ``directory`` (the papers' protocol: one real frame
    animated by the clip's own speech)."""
    import cv2

    from ditto_research.media.source import stream_video

    out = []
    for clip in clips:
        if clip.reference is None or clip.source != clip.reference:
            out.append(clip)
            continue
        with stream_video(clip.reference, max_size=0, fps=25) as video:
            image = next((f for i, f in enumerate(video.frames()) if i == frame), None)
        if image is None:
            raise InputError(f"video {clip.reference} has no frame {frame}; give a longer video")
        directory.mkdir(parents=True, exist_ok=True)
        png = directory / f"{clip.clip_id}_source.png"
        cv2.imwrite(str(png), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        out.append(Clip(clip.clip_id, png, clip.audio, clip.reference))
    return out
