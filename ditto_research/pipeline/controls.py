"""Turn the ``control`` config group into a MotionStitcher and per-frame FrameControls.

Per-frame controls come from ``control.ctrl_info`` (``{frame: {control: value}}``) merged with the YAML/JSON
file ``control.ctrl_info_file`` (same form; the file wins on conflicts), then ``fade_in``/``fade_out`` ramps are
added; ``control.overall_ctrl_info`` applies to every frame underneath.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from torch import nn

from ditto_research.config.schema import ControlConfig
from ditto_research.errors import InputError
from ditto_research.motion.stitch import FrameControls, MotionStitcher, parse_ctrl_info, with_fade_in_out
from ditto_research.pipeline.registration import RegisteredSource


def read_ctrl_info_file(path: str | Path) -> dict[Any, Any]:
    """``{frame: {control: value}}`` from a .yaml/.yml/.json file (one-line errors naming the file)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"control.ctrl_info_file {path} does not exist")
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as e:
        raise InputError(f"control.ctrl_info_file {path} is not valid {path.suffix[1:] or 'YAML'}: {e}".splitlines()[0]) from e
    if data is None:
        return {}
    if not isinstance(data, (Mapping, list)):
        raise InputError(f"control.ctrl_info_file {path} must hold a mapping {{frame: {{control: value}}}} or a list")
    return dict(data) if isinstance(data, Mapping) else dict(enumerate(data))


def build_frame_controls(control: ControlConfig, num_frames: int) -> dict[int, FrameControls]:
    """Per-frame controls with fades applied (frames without entries get only the overall controls)."""
    merged: dict[Any, Any] = {str(k): v for k, v in dict(control.ctrl_info).items()}
    if control.ctrl_info_file:
        merged.update({str(k): v for k, v in read_ctrl_info_file(control.ctrl_info_file).items()})
    return with_fade_in_out(parse_ctrl_info(merged), num_frames, control.fade_in, control.fade_out)


def _load_array(path: str, what: str, shape_hint: str) -> np.ndarray:
    if not Path(path).is_file():
        raise InputError(f"{what} file {path} does not exist; give a {shape_hint} .npy file")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise InputError(f"{what} file {path} is not a .npy array ({e})") from e


def build_stitcher(
    control: ControlConfig, stitch_network: nn.Module, source: RegisteredSource, num_frames: int
) -> MotionStitcher:
    """The stitcher for one clip, with every control of the config."""
    delta_eye = _load_array(control.delta_eye_arr, "control.delta_eye_arr", "(K, 63)") if control.delta_eye_arr else None
    return MotionStitcher(
        stitch_network,
        x_s_info=source.frames[0].x_s_info if source.is_image else None,
        n_frames=num_frames,
        use_d_keys=tuple(control.use_d_keys) if control.use_d_keys else None,
        relative_d=control.relative_d,
        drive_eye=control.drive_eye,
        delta_eye_arr=delta_eye,
        delta_eye_open_n=control.delta_eye_open_n,
        fade_out_keys=tuple(control.fade_out_keys),
        fade_type=control.fade_type,  # type: ignore[arg-type]
        use_stitching=control.flag_stitching,
        is_image=source.is_image,
        overall_controls=FrameControls.from_mapping(dict(control.overall_ctrl_info)),
        rng=random.Random(control.seed),
    )
