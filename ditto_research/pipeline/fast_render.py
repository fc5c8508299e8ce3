"""Warp + decode with less overhead: compiled networks (``backend.compile``) and CUDA graphs
(``backend.cuda_graphs``), prepared once at setup.

On a GPU the renderer is dispatch-bound, not compute-bound: eager warp + decode issue about two thousand
kernel launches per frame. ``cuda_graphs`` captures warp -> decode -> the [0, 255] post-processing as one
graph per batch size, with static input and output buffers, and replays it: one launch per batch.
``compile`` runs ``torch.compile`` (Inductor) on both networks, which fuses elementwise work (on the CPU
too). Both are prepared in :class:`FastRenderer`'s constructor, on the thread that builds the pipeline,
before any stage thread starts (capturing lazily on the first frame fails intermittently while other threads
issue work); a failure is a :class:`~ditto_research.errors.ConfigError` at setup, never a crash mid-run.

Shapes are static: a batch smaller than a prepared size (the last one of a clip) is padded by repeating its
last frame and the extra outputs are dropped, so neither a graph nor a compiled kernel sees a new shape.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ditto_research.errors import ConfigError
from ditto_research.pipeline.observers import PipelineObserver
from ditto_research.pipeline.registration import RegisteredSource
from ditto_research.pipeline.stages import RenderBatch, _BatchingStage, notify_renders, to_image

__all__ = ["FastRenderer", "RenderStage"]

log = logging.getLogger(__name__)

FEATURE_SIZE = 64  # spatial side of the appearance volume (a 256 crop, down-sampled twice)


def _first_line(error: BaseException) -> str:
    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return text if len(text) <= 200 else text[:200] + "..."


class FastRenderer:
    """``render(f_s, x_s, x_d) -> (B, 3, 512, 512)`` images in [0, 255] through compiled networks and/or
    captured CUDA graphs, for the ``batch_sizes`` prepared at construction.

    Args:
        warp_network, decoder: the PyTorch runners (:class:`~ditto_research.backends.pytorch.TorchNetwork`:
            their ``module`` is compiled in place, their precision's autocast is kept).
        device: the run's device (CUDA graphs need CUDA).
    """

    def __init__(
        self,
        warp_network: Any,
        decoder: Any,
        device: torch.device | str,
        *,
        compile_networks: bool = False,
        cuda_graphs: bool = False,
        batch_sizes: Sequence[int] = (1,),
    ) -> None:
        self.warp, self.decoder = warp_network, decoder
        self.device = torch.device(device)
        self.batch_sizes = tuple(sorted(set(batch_sizes)))
        if cuda_graphs and self.device.type != "cuda":
            raise ConfigError("backend.cuda_graphs=true needs backend.device=cuda")
        module = getattr(warp_network, "module", None)
        if not isinstance(module, nn.Module) or not isinstance(getattr(decoder, "module", None), nn.Module):
            raise ConfigError("backend.compile / backend.cuda_graphs need backend=pytorch networks")
        self._volume = (module.reshape_channel, module.reshape_depth, FEATURE_SIZE, FEATURE_SIZE)
        if compile_networks:
            self._compile()
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, list[torch.Tensor], torch.Tensor]] = {}
        for size in self.batch_sizes:  # compile (and check) every shape now, then capture
            try:
                with torch.no_grad():
                    self._eager(*self._example(size))
                if cuda_graphs:
                    self._graphs[size] = self._capture(size)
            except ConfigError:
                raise
            except Exception as e:  # Inductor / CUDA raise many types; one line names what failed
                what = "capturing warp + decode as a CUDA graph" if cuda_graphs else "compiling warp / decode"
                flag = "cuda_graphs" if cuda_graphs else "compile"
                raise ConfigError(
                    f"{what} for batch {size} failed at setup: {type(e).__name__}: {_first_line(e)}; run "
                    f"without backend.{flag}"
                ) from e
        log.info(
            "fast renderer: compile=%s cuda_graphs=%s batch sizes %s",
            compile_networks,
            cuda_graphs,
            self.batch_sizes,
        )

    # ---- setup ------------------------------------------------------------------------------------------

    def _compile(self) -> None:
        for runner in (self.warp, self.decoder):
            runner.module = torch.compile(runner.module, dynamic=False)

    def _example(self, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(0)
        f_s = torch.randn((size, *self._volume), generator=gen).to(self.device)
        x_s = (torch.rand((size, 21, 3), generator=gen) * 1.2 - 0.6).to(self.device)
        x_d = x_s + 0.01
        return f_s, x_s, x_d

    def _eager(self, f_s: torch.Tensor, x_s: torch.Tensor, x_d: torch.Tensor) -> torch.Tensor:
        return to_image(self.decoder(self.warp(f_s, x_s, x_d)))

    def _capture(self, size: int) -> tuple[torch.cuda.CUDAGraph, list[torch.Tensor], torch.Tensor]:
        static = [t.clone() for t in self._example(size)]
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.no_grad(), torch.cuda.stream(side):
            for _ in range(3):  # warm-up on a side stream (cuDNN / allocator state), as the graph docs ask
                self._eager(*static)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(graph):
            output = self._eager(*static)
        return graph, static, output

    # ---- per batch ----------------------------------------------------------------------------------------

    def _prepared_size(self, batch: int) -> int:
        for size in self.batch_sizes:
            if size >= batch:
                return size
        raise ConfigError(f"a batch of {batch} frames is larger than the prepared sizes {self.batch_sizes}")

    @torch.no_grad()
    def render(self, f_s: torch.Tensor, x_s: torch.Tensor, x_d: torch.Tensor) -> torch.Tensor:
        """f_s (B, C, D, 64, 64), x_s / x_d (B, 21, 3) -> (B, 3, 512, 512) float32 in [0, 255]."""
        batch = x_s.shape[0]
        size = self._prepared_size(batch)
        if size != batch:  # pad with the last frame: the prepared shapes only
            pad = size - batch
            f_s, x_s, x_d = (torch.cat([t, t[-1:].expand(pad, *t.shape[1:])]) for t in (f_s, x_s, x_d))
        if size not in self._graphs:
            return self._eager(f_s, x_s, x_d)[:batch]
        graph, static, output = self._graphs[size]
        for buffer, value in zip(static, (f_s, x_s, x_d)):
            buffer.copy_(value)
        graph.replay()
        return output[:batch].clone()  # the next replay overwrites the static output

    def stage(
        self,
        source: RegisteredSource,
        batch_size: int,
        num_threads: int = 0,
        observers: Sequence[PipelineObserver] = (),
    ) -> RenderStage:
        return RenderStage(self, source, batch_size, num_threads, observers)


class RenderStage(_BatchingStage):
    """Warp + decode in one stage through a :class:`FastRenderer` (``backend.compile`` / ``cuda_graphs``).

    Observers see ``on_render`` but not ``on_warp``: the fused path keeps no warped feature.
    """

    name = "render"

    def __init__(
        self,
        renderer: FastRenderer,
        source: RegisteredSource,
        batch_size: int = 1,
        num_threads: int = 0,
        observers: Sequence[PipelineObserver] = (),
    ) -> None:
        super().__init__(source, batch_size, num_threads)
        self.renderer, self.observers = renderer, observers

    def run_batch(
        self,
        indices: tuple[int, ...],
        source_indices: tuple[int, ...],
        f_s: torch.Tensor,
        x_s: torch.Tensor,
        x_d: torch.Tensor,
    ) -> RenderBatch:
        images = self.renderer.render(f_s, x_s, x_d)
        notify_renders(self.observers, indices, images)
        return RenderBatch(indices, source_indices, images)
