"""``train.render_every``: a held-out clip rendered through the inference engine with the weights being
trained, so a run can be watched, not only read.

The source is the first frame of the first held-out clip whose video is still where it was prepared from,
the audio its first ``train.render_seconds`` seconds; the engine is the run's config (model, face, sampler,
...) with the LMDM replaced by a copy of :meth:`~ditto_research.train.module.LmdmTraining.weights`. Videos go
to ``renders/step<N>.mp4`` and, with the W&B logger and ``logger.log_media``, to the run.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import cv2
import lightning as L
import numpy as np

from ditto_research.audio.io import write_wav
from ditto_research.audio.stream import AudioStream
from ditto_research.constants import FPS, SAMPLE_RATE
from ditto_research.errors import DittoError
from ditto_research.media.source import stream_video
from ditto_research.train.config import TrainConfig

log = logging.getLogger(__name__)

__all__ = ["RenderCallback"]


class RenderCallback(L.Callback):
    def __init__(self, cfg: TrainConfig, folder: Path, clips: list[Any]) -> None:
        self.cfg, self.folder, self.clips = cfg, folder / "renders", clips
        self.every = cfg.train.render_every
        self._inputs: tuple[Path, Path] | None = None
        self._engine: Any = None
        self._syncnet: Any = None
        self._done = -1

    def _prepare_inputs(self) -> tuple[Path, Path] | None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for clip in self.clips:
            source = Path(str(clip.meta.get("source", "")))
            if not source.is_file() or clip.meta.get("flipped"):
                continue
            start = clip.meta.get("segment", [0, 0])[0] / FPS
            seconds = min(self.cfg.train.render_seconds, clip.frames / FPS)
            try:
                with stream_video(source, self.cfg.face.max_size, fps=FPS, start_s=start) as frames:
                    first = next(frames.frames(), None)
                with AudioStream(source, SAMPLE_RATE, start_s=start, duration_s=seconds) as audio:
                    samples = audio.read(int(seconds * SAMPLE_RATE))
            except DittoError as e:
                log.warning("render: cannot read %s (%s); trying another held-out clip", source, e)
                continue
            if first is None or samples.size == 0:
                continue
            image = self.folder / "source.png"
            cv2.imwrite(str(image), cv2.cvtColor(np.asarray(first), cv2.COLOR_RGB2BGR))
            return image, write_wav(self.folder / "audio.wav", samples)
        log.warning(
            "render: no held-out clip's video is available (moved since it was prepared?); no renders"
        )
        return None

    def render(self, trainer: L.Trainer, module: Any) -> Path | None:
        step = trainer.global_step
        if not trainer.is_global_zero or step == self._done:
            return None
        self._done = step
        if self._inputs is None:
            self._inputs = self._prepare_inputs() or (Path(), Path())
        if not self._inputs[0].name:
            return None
        from ditto_research.pipeline.clip import run_clip
        from ditto_research.pipeline.engine import Engine

        if self._engine is None:
            self._engine = Engine(self.cfg)
        weights = copy.deepcopy(module.weights()).cpu().eval()
        self._engine.networks.lmdm.module = weights.to(self._engine.device)
        output = self.folder / f"step{step:07d}.mp4"
        run_clip(self._engine, self._inputs[0], self._inputs[1], output, overwrite=True, progress=False)
        scores = self.lip_sync(output)
        for logger in trainer.loggers:
            logger.log_metrics(scores, step=step)
        for logger in trainer.loggers:
            if type(logger).__name__ == "WandbLogger" and self.cfg.logger and self.cfg.logger.log_media:
                import wandb

                logger.experiment.log({"val/render": wandb.Video(str(output), format="mp4")}, step=step)
        log.info("render: %s", output)
        return output

    def lip_sync(self, video: Path) -> dict[str, float]:
        """The evaluation's lip-sync measures of a render: the sync proxy, and SyncNet's LSE-C / LSE-D / AV
        offset with ``train.syncnet_weights`` (a render without a visible face, e.g. random weights: none)."""
        from ditto_research.audio.io import load_audio
        from ditto_research.evaluate.metrics.sync_proxy import mouth_opening_series, sync_proxy_score
        from ditto_research.evaluate.metrics.syncnet import crop_face_track, load_syncnet, lse_scores
        from ditto_research.media.source import load_source

        media = load_source(video, max_size=512)
        try:
            frames = media.all_frames()
        finally:
            media.close()
        audio = load_audio(self._inputs[1] if self._inputs else video, SAMPLE_RATE)
        scores: dict[str, float] = {}
        mouth = mouth_opening_series(frames)
        if np.isfinite(mouth).any():
            proxy = sync_proxy_score(mouth, audio, SAMPLE_RATE, FPS)
            if proxy.offset is not None:
                scores |= {"val/render_proxy_corr": proxy.peak_corr, "val/render_proxy_offset": proxy.offset}
        if self.cfg.train.syncnet_weights:
            try:
                if self._syncnet is None:
                    self._syncnet = load_syncnet(self.cfg.train.syncnet_weights)
                sync = lse_scores(crop_face_track(frames), audio, self._syncnet)
                scores |= {"val/render_lse_c": sync.lse_c, "val/render_lse_d": sync.lse_d}
                scores["val/render_av_offset"] = sync.av_offset
            except DittoError as e:
                log.warning("render: no SyncNet scores for %s (%s)", video.name, e)
        return scores

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        if trainer.global_step > 0 and trainer.global_step % self.every == 0:
            self.render(trainer, module)

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.render(trainer, module)
        if self._engine is not None:
            self._engine.close()
