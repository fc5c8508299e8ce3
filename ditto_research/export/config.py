"""Structured configs of ``python -m ditto_research.export.onnx`` (``conf/export.yaml``) and
``python -m ditto_research.export.tensorrt``.

Every knob is declared once here with what it does; ``register_export_configs()`` stores the schemas in
Hydra's ConfigStore (``base_export`` extended by ``conf/export.yaml``; ``export_tensorrt`` used as is).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from ditto_research.backends.base import RENDER_NETWORKS
from ditto_research.choices import BACKEND_PRECISIONS, GRID_SAMPLE_MODES, LMDM_FORMS, check_choice
from ditto_research.config import register_configs
from ditto_research.config.schema import ModelConfig, MotionConfig
from ditto_research.errors import ConfigError

__all__ = [
    "EXPORT_NETWORKS",
    "LMDM_FORMS",
    "ExportConfig",
    "TensorRTExportConfig",
    "register_export_configs",
    "resolve_output_dir",
]

EXPORT_NETWORKS = (*RENDER_NETWORKS, "hubert")
MIN_OPSET, MAX_OPSET = 17, 20  # 17: LayerNorm; 20: 5-D GridSample (and the TorchScript exporter's ceiling)


def _check_networks(key: str, networks: list[str]) -> None:
    unknown = [n for n in networks if n not in EXPORT_NETWORKS]
    if unknown or not networks:
        raise ConfigError(f"{key}={list(networks)} is not valid; choose from: {', '.join(EXPORT_NETWORKS)}")


@dataclass
class ExportConfig:
    """Root of ``python -m ditto_research.export.onnx``."""

    model: ModelConfig = MISSING
    # Condition flags: the LMDM's condition width for model=untrained/tiny (model=ditto reads it from the
    # file).
    motion: MotionConfig = field(default_factory=MotionConfig)
    # Folder laid out like the official ditto_onnx/ (null: <checkpoint_root>/ditto_onnx for model=ditto,
    # exports/<model>_onnx otherwise). Other files in it are left alone.
    output_dir: str | None = None
    # Replace files of the exported networks that output_dir already holds (and remove an earlier cached LMDM
    # pair that a guided_step LMDM would otherwise be shadowed by). false: refuse before exporting anything.
    overwrite: bool = False
    # Networks to export; "hubert" also needs hubert_path.
    networks: list[str] = field(default_factory=lambda: list(RENDER_NETWORKS))
    # ONNX opset (17..20). 5-D GridSample exists from 20 on; below that use grid_sample=decomposed.
    opset: int = 20
    # Make the batch axis of every input and output dynamic (the official files have batch 1).
    dynamic_batch: bool = False
    # fp32 | fp16. fp16 converts the renderer networks (appearance, warp, decoder) and keeps float32 I/O; grid
    # sampling, the motion extractor, the stitching MLP and the LMDM stay float32, as in the original.
    precision: str = "fp32"
    # native: the standard 5-D GridSample op; decomposed: gathers + trilinear weights, for runtimes without
    # 5-D GridSample (TensorRT < 11.2 and others). Both give the same values.
    grid_sample: str = "native"
    # Classifier-free guidance weight baked into the LMDM graph (the original: 2); the cached pair's default.
    lmdm_guidance_weight: float = 2.0
    # How the LMDM is written. guided_step: the official lmdm_v0.4_hubert.onnx (one guided step, condition
    # encoder included). cached: two graphs with the sampler speedups baked in, lmdm_v0.4_hubert_memory.onnx
    # (the condition memory, run once per window) and lmdm_v0.4_hubert_step.onnx (the guided step over it, any
    # time and guidance weight); the ONNX / TensorRT backends prefer them. both: all three files.
    lmdm_form: str = "guided_step"
    # transformers HuBERT folder: also export it as hubert.onnx (input_values (1, L) -> encoding_out).
    hubert_path: str | None = None
    # Compare onnxruntime with torch on random inputs right after writing each file.
    verify: bool = True
    # Largest accepted max|ort - torch| / max|torch| (null: 1e-4 for fp32, 5e-2 for fp16).
    tolerance: float | None = None
    # Seed of the verification inputs.
    verify_seed: int = 0
    # Side of the square image the trace and the verification use (the networks are trained on 256).
    image_size: int = 256

    def __post_init__(self) -> None:
        _check_networks("networks", list(self.networks))
        check_choice("precision", self.precision, BACKEND_PRECISIONS["onnx"])  # what the ONNX backend runs
        check_choice("grid_sample", self.grid_sample, GRID_SAMPLE_MODES)
        if not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise ConfigError(f"opset={self.opset} is out of range; choose {MIN_OPSET}..{MAX_OPSET}")
        check_choice("lmdm_form", self.lmdm_form, LMDM_FORMS)
        if self.opset < 20 and self.grid_sample == "native" and "warp_network" in self.networks:
            raise ConfigError(
                f"opset={self.opset} has no 5-D GridSample; use opset=20 or grid_sample=decomposed"
            )
        if "hubert" in self.networks and not self.hubert_path:
            raise ConfigError("networks includes hubert: set hubert_path=DIR (a transformers HuBERT folder)")
        if self.tolerance is not None and self.tolerance <= 0:
            raise ConfigError(f"tolerance={self.tolerance} must be > 0")
        if self.image_size < 64 or self.image_size % 64:
            raise ConfigError(f"image_size={self.image_size} must be a positive multiple of 64")

    @property
    def all_networks(self) -> list[str]:
        """The requested networks, plus hubert when hubert_path is set."""
        names = list(dict.fromkeys(self.networks))
        if self.hubert_path and "hubert" not in names:
            names.append("hubert")
        return names

    @property
    def verify_tolerance(self) -> float:
        if self.tolerance is not None:
            return float(self.tolerance)
        return 1e-4 if self.precision == "fp32" else 5e-2


def resolve_output_dir(cfg: ExportConfig) -> Path:
    if cfg.output_dir:
        return Path(cfg.output_dir)
    if cfg.model.name == "ditto":
        return Path(cfg.model.checkpoint_root) / "ditto_onnx"
    return Path("exports") / f"{cfg.model.name}_onnx"


@dataclass
class TensorRTExportConfig:
    """Root of ``python -m ditto_research.export.tensorrt``: engines from the ONNX files of
    ``python -m ditto_research.export.onnx``."""

    # Folder of ONNX files laid out like ditto_onnx/ (ours, or the official one).
    onnx_dir: str = "checkpoints/ditto_onnx"
    # Where engines go (null: <onnx_dir>/../ditto_trt_<gpu>). Names carry GPU and TensorRT version.
    engine_dir: str | None = None
    # Networks to build (null: every network whose ONNX file is in onnx_dir).
    networks: list[str] | None = None
    # fp16 | fp32. fp16 keeps grid sampling in fp32 and builds the motion extractor, stitching MLP, LMDM and
    # HuBERT fully in fp32, as the original does.
    precision: str = "fp16"
    # Optimisation profile of dynamic batch axes: batch 1 (opt) up to max_batch.
    max_batch: int = 1
    # Optimisation profile of HuBERT's dynamic sample axis: [min, opt, max] samples (the original's).
    hubert_samples: list[int] = field(default_factory=lambda: [3240, 6480, 12960])
    # TensorRT builder optimisation level 0..5 (the original uses 5: slow build, fastest engines).
    builder_optimization_level: int = 5
    # Builder workspace limit in GiB.
    workspace_gib: float = 4.0
    # Timing cache file, reused across builds (null: <engine_dir>/timing.cache).
    timing_cache: str | None = None
    # Rebuild engines that already exist.
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.networks is not None:
            _check_networks("networks", list(self.networks))
        check_choice("precision", self.precision, BACKEND_PRECISIONS["tensorrt"])
        if self.max_batch < 1:
            raise ConfigError(f"max_batch={self.max_batch} must be >= 1")
        samples = list(self.hubert_samples)
        if len(samples) != 3 or not 0 < samples[0] <= samples[1] <= samples[2]:
            raise ConfigError(f"hubert_samples={samples} must be [min, opt, max] with 0 < min <= opt <= max")
        if not 0 <= self.builder_optimization_level <= 5:
            raise ConfigError(
                f"builder_optimization_level={self.builder_optimization_level} must lie in 0..5"
            )
        if self.workspace_gib <= 0:
            raise ConfigError(f"workspace_gib={self.workspace_gib} must be > 0")


def register_export_configs() -> None:
    """Store the export schemas (and the shared group schemas that conf/model/*.yaml extend)."""
    register_configs()
    cs = ConfigStore.instance()
    cs.store(name="base_export", node=ExportConfig)
    cs.store(name="export_tensorrt", node=TensorRTExportConfig)
