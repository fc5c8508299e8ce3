"""One clip of a run: generate it, then score it (latency, motion statistics, lip-sync metrics).

A clip that fails to generate is recorded as ``status="failed"`` with its error and the run goes on; a metric
that cannot be computed (no face found in random-weight output, a clip too short for SyncNet) is left out with
a note saying why. Peak memory is measured per clip where Linux allows resetting the high-water mark.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from ditto_research.constants import FPS, SAMPLE_RATE
from ditto_research.errors import DittoError
from ditto_research.evaluate.config import EvaluateConfig
from ditto_research.evaluate.dataset import Clip
from ditto_research.evaluate.generate import ClipRenderer, Generation
from ditto_research.evaluate.results import ClipResult, stage_latency
from ditto_research.memory import peak_rss_mb, reset_peak_rss

if TYPE_CHECKING:
    from ditto_research.evaluate.metrics.syncnet import SyncNet
    from ditto_research.evaluate.quality import QualityScorers, SetStats

__all__ = ["ClipContext", "describe_error", "evaluate_clip", "peak_rss_mb", "reset_peak_rss"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipContext:
    """What every clip of a run shares: the config, the run folder, the SyncNet model (or None), the quality
    scorers (None: metric ``quality`` not selected) and the set-level feature statistics (FID / FVD)."""

    cfg: EvaluateConfig
    output_dir: Path
    syncnet: SyncNet | None
    quality: QualityScorers | None = None
    set_stats: SetStats | None = None


def describe_error(error: BaseException) -> str:
    """One line for results and reports: our errors are written for users; others get their type."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return text if isinstance(error, DittoError) else f"{type(error).__name__}: {text}".rstrip(": ")


def evaluate_clip(
    renderer: ClipRenderer, clip: Clip, ctx: ClipContext
) -> tuple[ClipResult, Generation | None]:
    """Generate and score one clip; never raises for a failure of the clip itself (it is recorded)."""
    cfg = ctx.cfg
    result = ClipResult(clip.clip_id, str(clip.source), str(clip.audio))
    video = ctx.output_dir / "videos" / f"{clip.clip_id}.mp4" if cfg.save_videos else None
    if video is not None:
        video.parent.mkdir(parents=True, exist_ok=True)
    reset_peak_rss()
    try:
        gen = renderer.render(clip, video, cfg.sample_frames, cfg.metrics_max_size)
    except Exception as e:
        log.error(
            "clip %s failed: %s", clip.clip_id, describe_error(e), exc_info=not isinstance(e, DittoError)
        )
        result.status, result.error = "failed", describe_error(e)
        return result, None
    result.peak_rss_mb = peak_rss_mb()
    _fill_timing(result, gen)
    result.video = str(gen.report.output) if gen.report.output is not None else None
    result.samples = _save_samples(gen, ctx.output_dir / "samples", clip.clip_id)
    result.metrics, result.notes = clip_metrics(gen, ctx)
    if ctx.quality is not None and clip.reference is not None:
        _quality(result, clip, ctx)
    return result, gen


def _quality(result: ClipResult, clip: Clip, ctx: ClipContext) -> None:
    """PSNR / SSIM / LPIPS / LMD / CSIM of the written video against the clip's reference, and its FID / FVD
    features (evaluate.quality; the lip-sync metrics are this module's own)."""
    from ditto_research.evaluate.quality import score_pair
    from ditto_research.evaluate.results import QUALITY_KEYS

    assert ctx.quality is not None
    if result.video is None:
        result.notes["quality"] = "n/a: needs save_videos=true (the written video is what is scored)"
        return
    try:
        scored = score_pair(
            result.video,
            clip.reference,  # type: ignore[arg-type]
            ctx.quality,
            source=clip.source,
            set_stats=ctx.set_stats,
            lip_sync=False,
            reference_may_be_longer=True,
        )
    except DittoError as e:
        result.notes["quality"] = describe_error(e)
        log.warning("clip %s: quality not computed: %s", clip.clip_id, result.notes["quality"])
        return
    result.metrics.update({key: scored.metrics.get(key) for key in QUALITY_KEYS})
    result.notes.update({f"quality_{key}": value for key, value in scored.notes.items()})


def _fill_timing(result: ClipResult, gen: Generation) -> None:
    """The clip's numbers as the one run path defines them (pipeline.clip.ClipReport)."""
    report = gen.report
    frames = report.frames
    result.frames = frames
    result.audio_s = report.audio_s
    result.seconds = report.seconds
    result.fps = report.fps
    result.render_fps = report.render_fps
    result.rtf = report.real_time_factor
    result.register_s = report.register_s
    result.first_frame_ms = 1000.0 * report.first_frame_s if report.first_frame_s is not None else None
    result.frame_latency_ms = [1000.0 * s for s in report.latency_s]
    if report.stage_calls_s:
        result.stages = [stage_latency(name, calls, frames) for name, calls in report.stage_calls_s.items()]
    else:  # only busy totals are known: no per-call percentiles
        result.stages = [stage_latency(name, [], frames) for name in report.stage_ms_per_frame]
        for s in result.stages:
            s.ms_per_frame = report.stage_ms_per_frame[s.stage]


def _save_samples(gen: Generation, folder: Path, clip_id: str) -> list[str]:
    if not gen.samples:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, image in sorted(gen.samples.items()):
        path = folder / f"{clip_id}_{index:05d}.png"
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        paths.append(str(path))
    return paths


def clip_metrics(gen: Generation, ctx: ClipContext) -> tuple[dict[str, float | int | None], dict[str, str]]:
    """The selected metrics of one generated clip, and a note for each one that could not be computed."""
    cfg = ctx.cfg
    metrics: dict[str, float | int | None] = {}
    notes: dict[str, str] = {}
    steps = {"motion": _motion, "sync_proxy": _sync_proxy, "syncnet": _syncnet}
    for name in cfg.metrics:
        if name == "syncnet" and ctx.syncnet is None:
            continue  # noted once for the whole run
        if name == "quality":
            continue  # against the clip's reference video: evaluate_clip (it needs the clip)
        try:
            metrics.update(steps[name](gen, ctx))
        except Exception as e:
            notes[name] = describe_error(e)
            log.warning(
                "clip metric %s not computed: %s", name, notes[name], exc_info=not isinstance(e, DittoError)
            )
    return metrics, notes


def _motion(gen: Generation, ctx: ClipContext) -> dict[str, float | int | None]:
    from ditto_research.evaluate.metrics.motion_stats import motion_stats

    if gen.motion is None or len(gen.motion) == 0:
        raise DittoError("the renderer did not expose the generated motion")
    stats: dict[str, float | int | None] = dict(motion_stats(gen.motion).as_dict())
    stats.pop("num_frames", None)
    return stats


def _sync_proxy(gen: Generation, ctx: ClipContext) -> dict[str, float | int | None]:
    from ditto_research.evaluate.metrics.sync_proxy import mouth_opening_series, sync_proxy_score

    mouth = mouth_opening_series(gen.frames)
    if not np.isfinite(mouth).any():
        raise DittoError("no face found in any output frame (random-weight models do not render faces)")
    score = sync_proxy_score(mouth, gen.audio, SAMPLE_RATE, FPS, max_offset=ctx.cfg.sync_max_offset)
    if score.offset is None:
        raise DittoError("mouth opening or audio envelope is constant: no correlation is defined")
    return {"proxy_corr": score.peak_corr, "proxy_offset": score.offset}


def _syncnet(gen: Generation, ctx: ClipContext) -> dict[str, float | int | None]:
    from ditto_research.evaluate.metrics.syncnet import crop_face_track, lse_scores

    assert ctx.syncnet is not None
    crops = crop_face_track(gen.frames)
    scores = lse_scores(crops, gen.audio, ctx.syncnet, vshift=ctx.cfg.sync_max_offset)
    return {"lse_d": scores.lse_d, "lse_c": scores.lse_c, "av_offset": scores.av_offset}
