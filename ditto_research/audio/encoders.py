"""Speech encoders: a 16 kHz chunk of ``L`` samples -> ``T = (L - 80) // 320`` feature rows (50 Hz).

Every encoder has ``feat_dim`` and ``encode(chunk (L,) float32) -> (T, feat_dim) float32`` (also callable,
so it plugs into :mod:`ditto_research.audio.features`). A 6480-sample chunk gives 20 rows.

- :class:`HubertOnnxEncoder`: the official ``hubert_streaming_fix_kv.onnx`` through onnxruntime (input
  ``input_values`` (1, L), output ``encoding_out``), as the reference ``core/aux_models/hubert_stream.py``;
  on CUDA through the CUDA provider (checked to be the one running) with IO binding.
- :class:`HubertTorchEncoder`: a local transformers HuBERT-large folder (last hidden state).
- :class:`UntrainedEncoder`: seeded random features ``tanh(frames @ W)`` for untrained / tiny runs; with the
  golden ``stub_W_seed`` it is the golden data's stub encoder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ditto_research.audio.features import HUBERT_CONTEXT, HUBERT_HOP, StubEncoder
from ditto_research.choices import ENCODER_NAMES, check_choice
from ditto_research.errors import CheckpointError, ConfigError, InputError

__all__ = [
    "ENCODER_NAMES",
    "HubertOnnxEncoder",
    "HubertTorchEncoder",
    "SpeechEncoder",
    "UntrainedEncoder",
    "make_encoder",
    "num_encodings",
]

ONNX_INPUT = "input_values"
ONNX_OUTPUT = "encoding_out"


class SpeechEncoder(Protocol):
    feat_dim: int

    def encode(self, chunk: np.ndarray) -> np.ndarray: ...

    def __call__(self, chunk: np.ndarray) -> np.ndarray: ...


def num_encodings(num_samples: int) -> int:
    """Rows an encoder gives for ``num_samples`` samples: ``(L - 80) // 320`` (0 when too short)."""
    return max((num_samples - HUBERT_CONTEXT) // HUBERT_HOP, 0)


def _as_chunk(chunk: np.ndarray) -> np.ndarray:
    """``(L,)`` or ``(1, L)`` samples -> contiguous ``(L,)`` float32."""
    samples = np.asarray(chunk, dtype=np.float32)
    if samples.ndim == 2 and samples.shape[0] == 1:
        samples = samples[0]
    if samples.ndim != 1:
        raise InputError(f"an audio chunk must be (L,) float32 samples, got shape {samples.shape}")
    return np.ascontiguousarray(samples)


def _parse_device(device: str) -> tuple[str, int]:
    """``"cpu"`` / ``"cuda"`` / ``"cuda:N"`` -> (kind, index)."""
    kind, _, index = device.partition(":")
    if kind not in ("cpu", "cuda") or (index and not index.isdigit()) or (kind == "cpu" and index):
        raise ConfigError(f"device={device!r} is not valid; choose one of: cpu, cuda, cuda:N")
    return kind, int(index or 0)


class UntrainedEncoder:
    """Deterministic random features: 320-sample frames -> ``tanh(frames @ W)``, ``W`` seeded.

    ``W = RandomState(seed).standard_normal((320, feat_dim)) / sqrt(320)`` (float32), the golden stub.
    """

    def __init__(self, seed: int = 0, feat_dim: int = 1024) -> None:
        if feat_dim < 1:
            raise ConfigError(f"feat_dim must be >= 1, got {feat_dim}")
        self._stub = StubEncoder(seed, feat_dim)
        self.feat_dim = feat_dim

    @property
    def weight(self) -> np.ndarray:
        """``(320, feat_dim)`` float32 projection."""
        return self._stub.weight

    def encode(self, chunk: np.ndarray) -> np.ndarray:
        """``(L,)`` -> ``(T, feat_dim)`` float32, ``T = (L - 80) // 320``."""
        return self._stub(_as_chunk(chunk))

    __call__ = encode


class HubertOnnxEncoder:
    """The official streaming HuBERT ONNX (``hubert_streaming_fix_kv.onnx``) on onnxruntime.

    Args:
        path: the ``.onnx`` file.
        device: ``cpu``, ``cuda`` or ``cuda:N``; CUDA needs onnxruntime's CUDAExecutionProvider (no silent CPU
            fallback).
        num_threads: onnxruntime intra-op threads (None: onnxruntime's default).
    """

    def __init__(self, path: str | Path, device: str = "cpu", num_threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path).expanduser()
        kind, index = _parse_device(device)
        if not self.path.is_file():
            raise CheckpointError(
                f"HuBERT ONNX file not found: {self.path}; point audio_encoder.path at "
                "hubert_streaming_fix_kv.onnx from the Ditto checkpoints"
            )
        options = ort.SessionOptions()
        if num_threads is not None:
            options.intra_op_num_threads = num_threads
        providers: list[Any] = ["CPUExecutionProvider"]
        if kind == "cuda":
            providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        available = ", ".join(ort.get_available_providers())
        no_cuda = ConfigError(
            f"onnxruntime cannot run {self.path.name} on {device} (available providers: "
            f"{available}); install onnxruntime-gpu matching your CUDA, or use device=cpu"
        )
        if kind == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
            raise no_cuda
        try:
            self._session = ort.InferenceSession(str(self.path), sess_options=options, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types for unreadable models
            raise CheckpointError(f"cannot load ONNX model {self.path}: {e}") from e
        if kind == "cuda" and "CUDAExecutionProvider" not in self._session.get_providers():
            raise no_cuda  # the provider exists but failed to start: no silent CPU fallback
        self.device = device
        self._check_io()

    def _check_io(self) -> None:
        inputs = self._session.get_inputs()
        outputs = {o.name: o for o in self._session.get_outputs()}
        input_names = [i.name for i in inputs]
        if input_names != [ONNX_INPUT] or ONNX_OUTPUT not in outputs:
            raise CheckpointError(
                f"{self.path} is not the streaming HuBERT model: it has inputs {input_names} and "
                f"outputs {list(outputs)}, expected input '{ONNX_INPUT}' (1, L) and output '{ONNX_OUTPUT}'"
            )
        length = inputs[0].shape[-1] if inputs[0].shape else None
        self.chunk_samples: int | None = length if isinstance(length, int) else None  # fixed L, if any
        width = outputs[ONNX_OUTPUT].shape[-1] if outputs[ONNX_OUTPUT].shape else None
        self.feat_dim: int = width if isinstance(width, int) else 1024

    def encode(self, chunk: np.ndarray) -> np.ndarray:
        """``(L,)`` float32 -> ``(T, feat_dim)`` float32 ``encoding_out`` (batch dimension dropped)."""
        samples = _as_chunk(chunk)
        if self.chunk_samples is not None and samples.shape[0] != self.chunk_samples:
            raise ConfigError(
                f"{self.path.name} takes chunks of exactly {self.chunk_samples} samples, got "
                f"{samples.shape[0]}; use the HuBERT chunksize the model was exported for"
            )
        if num_encodings(samples.shape[0]) == 0:
            return np.zeros((0, self.feat_dim), dtype=np.float32)
        if self.device.startswith("cuda"):
            encoding = self._run_bound(samples)
        else:
            encoding = self._session.run([ONNX_OUTPUT], {ONNX_INPUT: samples[None]})[0]
        if encoding.ndim == 3 and encoding.shape[0] == 1:
            encoding = encoding[0]
        return np.asarray(encoding, dtype=np.float32)

    def _run_bound(self, samples: np.ndarray) -> np.ndarray:
        """On CUDA: the chunk bound from a device tensor and the encoding written into one (IO binding; no
        per-call allocation by onnxruntime), then copied to the host for the condition rows."""
        import torch

        _, index = _parse_device(self.device)
        device = torch.device("cuda", index)
        chunk = torch.from_numpy(samples[None]).to(device)
        out = torch.empty((1, num_encodings(samples.shape[0]), self.feat_dim), device=device)
        binding = self._session.io_binding()
        binding.bind_input(ONNX_INPUT, "cuda", index, np.float32, tuple(chunk.shape), chunk.data_ptr())
        binding.bind_output(ONNX_OUTPUT, "cuda", index, np.float32, tuple(out.shape), out.data_ptr())
        self._session.run_with_iobinding(binding)
        return out.cpu().numpy()

    __call__ = encode


class HubertTorchEncoder:
    """A transformers HuBERT folder (``config.json`` + weights) run in PyTorch; last hidden state.

    Args:
        path: the model folder (e.g. a saved HuBERT-large).
        device: torch device string.
        normalize: zero-mean / unit-variance each chunk before the model (None: the folder's
            ``preprocessor_config.json`` ``do_normalize``, False when absent).
    """

    def __init__(self, path: str | Path, device: str = "cpu", normalize: bool | None = None) -> None:
        try:
            from transformers import HubertModel
        except ImportError as e:
            raise ConfigError(
                "audio_encoder=hubert_torch needs the optional 'transformers' package: "
                "pip install transformers"
            ) from e
        import torch

        self.path = Path(path).expanduser()
        if not (self.path / "config.json").is_file():
            raise CheckpointError(
                f"{self.path} is not a transformers HuBERT folder (no config.json); point "
                "audio_encoder.path at a saved HuBERT-large model folder"
            )
        try:
            model = HubertModel.from_pretrained(str(self.path))
        except (OSError, ValueError) as e:
            raise CheckpointError(f"cannot load the HuBERT model in {self.path}: {e}") from e
        self.device = torch.device(device)
        self._model = model.to(self.device).eval()
        self.feat_dim: int = int(model.config.hidden_size)
        self.normalize = self._read_normalize() if normalize is None else normalize

    def _read_normalize(self) -> bool:
        config = self.path / "preprocessor_config.json"
        if not config.is_file():
            return False
        return bool(json.loads(config.read_text()).get("do_normalize", False))

    def encode(self, chunk: np.ndarray) -> np.ndarray:
        """``(L,)`` float32 -> ``(T, feat_dim)`` float32, trimmed / edge-padded to ``T = (L - 80) // 320``."""
        import torch

        samples = _as_chunk(chunk)
        rows = num_encodings(samples.shape[0])
        if rows == 0:
            return np.zeros((0, self.feat_dim), dtype=np.float32)
        if self.normalize:  # as transformers' Wav2Vec2FeatureExtractor does
            samples = (samples - samples.mean()) / np.sqrt(samples.var() + 1e-7)
        with torch.inference_mode():
            inputs = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))[None].to(self.device)
            hidden = self._model(input_values=inputs).last_hidden_state[0]
        encoding = hidden.float().cpu().numpy()
        if encoding.shape[0] >= rows:
            return encoding[:rows]
        return np.pad(encoding, ((0, rows - encoding.shape[0]), (0, 0)), mode="edge")

    __call__ = encode


def make_encoder(
    name: str, path: str | Path | None = None, seed: int = 0, device: str = "cpu"
) -> SpeechEncoder:
    """Build the encoder ``name`` (``hubert_onnx`` | ``hubert_torch`` | ``untrained``).

    ``path`` is the ONNX file / model folder of the HuBERT encoders (resolve defaults before calling);
    ``seed`` only affects ``untrained``.
    """
    if name == "untrained":
        return UntrainedEncoder(seed)
    check_choice("audio_encoder", name, ENCODER_NAMES)
    if path is None:
        raise ConfigError(
            f"audio_encoder={name} needs audio_encoder.path (the "
            f"{'ONNX file' if name == 'hubert_onnx' else 'model folder'})"
        )
    if name == "hubert_onnx":
        return HubertOnnxEncoder(path, device)
    return HubertTorchEncoder(path, device)
