"""The checkpoint root's layout: the Hugging Face repository digital-avatar/ditto-talkinghead.

checkpoints/
  ditto_cfg/v0.4_hubert_cfg_pytorch.pkl ...         settings (read with a restricted unpickler)
  ditto_pytorch/models/{appearance_extractor,motion_extractor,warp_network,decoder,stitch_network,
                        lmdm_v0.4_hubert}.pth
  ditto_pytorch/aux_models/{det_10g.onnx,2d106det.onnx,landmark203.onnx,face_landmarker.task,
                            hubert_streaming_fix_kv.onnx}
  ditto_onnx/*.onnx   ditto_trt_*/*.engine
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CFG_FILES",
    "CHECK_PARTS",
    "FACE_FILES",
    "HF_REPO",
    "HUBERT_FILE",
    "MODEL_FILES",
    "PARTS",
    "PART_FOLDERS",
    "CheckpointRoot",
]

HF_REPO = "digital-avatar/ditto-talkinghead"

MODEL_FILES: dict[str, str] = {
    "appearance_extractor": "appearance_extractor.pth",
    "motion_extractor": "motion_extractor.pth",
    "warp_network": "warp_network.pth",
    "decoder": "decoder.pth",
    "stitch_network": "stitch_network.pth",
    "lmdm": "lmdm_v0.4_hubert.pth",
}
FACE_FILES: tuple[str, ...] = ("det_10g.onnx", "2d106det.onnx", "landmark203.onnx", "face_landmarker.task")
HUBERT_FILE = "hubert_streaming_fix_kv.onnx"
CFG_FILES: tuple[str, ...] = (
    "v0.4_hubert_cfg_pytorch.pkl",
    "v0.4_hubert_cfg_trt.pkl",
    "v0.4_hubert_cfg_trt_online.pkl",
)
# What the PyTorch path reads: the default of check and check_root. onnx / trt: the official ditto_onnx/ and
# ditto_trt_*/ folders, checked only on request.
PARTS = ("models", "face", "hubert", "cfg")
CHECK_PARTS = (*PARTS, "onnx", "trt")
PART_FOLDERS = {  # check part -> the top folder (glob) of the checkpoint root holding its files
    "models": "ditto_pytorch",
    "face": "ditto_pytorch",
    "hubert": "ditto_pytorch",
    "cfg": "ditto_cfg",
    "onnx": "ditto_onnx",
    "trt": "ditto_trt_*",
}


@dataclass(frozen=True)
class CheckpointRoot:
    """Paths inside a checkpoint root (nothing is read until asked)."""

    root: Path

    @property
    def models_dir(self) -> Path:
        return self.root / "ditto_pytorch" / "models"

    @property
    def aux_dir(self) -> Path:
        return self.root / "ditto_pytorch" / "aux_models"

    @property
    def onnx_dir(self) -> Path:
        return self.root / "ditto_onnx"

    def model_path(self, name: str, filename: str | None = None) -> Path:
        return self.models_dir / (filename or MODEL_FILES[name])

    def aux_path(self, filename: str) -> Path:
        return self.aux_dir / filename

    def cfg_path(self, filename: str = CFG_FILES[0]) -> Path:
        return self.root / "ditto_cfg" / filename

    def has_face_models(self) -> bool:
        return all(self.aux_path(f).is_file() for f in FACE_FILES)
