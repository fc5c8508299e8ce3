"""Turn the ``control`` config group into a MotionStitcher and per-frame FrameControls.

Per-frame controls come from ``control.ctrl_info`` (``{frame: {control: value}}``) with the frames of the
YAML/JSON file ``control.ctrl_info_file`` (same form; the file's frames replace ``ctrl_info``'s), then
``fade_in``/``fade_out`` ramps are added; ``control.overall_ctrl_info`` applies to every frame underneath. The
config schema validated every one of them with the same parsers (:mod:`ditto_research.motion.controls`) and
kept what it read from files: the controls file and the blink array come from the config, not from a second
read (which could differ from what was checked).
"""

from __future__ import annotations

import logging
import random

from torch import nn

from ditto_research.config.schema import ControlConfig
from ditto_research.motion.controls import (  # noqa: F401  (read_ctrl_info_file: re-exported)
    FrameControls,
    parse_ctrl_info,
    parse_overall_ctrl_info,
    read_ctrl_info_file,
)
from ditto_research.motion.stitch import MotionStitcher, with_fade_in_out
from ditto_research.pipeline.registration import RegisteredSource

log = logging.getLogger(__name__)


def overall_controls(control: ControlConfig) -> FrameControls:
    """``control.overall_ctrl_info`` as FrameControls."""
    return parse_overall_ctrl_info(dict(control.overall_ctrl_info))


def build_frame_controls(control: ControlConfig, num_frames: int) -> dict[int, FrameControls]:
    """Per-frame controls with fades applied (frames without entries get only the overall controls);
    ``num_frames < 0``: an open-ended stream. Controls given for frames past a known clip's end are
    warned about (they have no effect)."""
    frames = parse_ctrl_info(dict(control.ctrl_info), source="control.ctrl_info")
    frames.update(control.file_frames())
    late = sorted(frame for frame in frames if 0 <= num_frames <= frame)
    if late:
        shown = ", ".join(map(str, late[:5])) + (", ..." if len(late) > 5 else "")
        log.warning(
            "per-frame controls for frame(s) %s are past the clip's last frame %d: they have no effect",
            shown,
            num_frames - 1,
        )
    return with_fade_in_out(frames, max(num_frames, 0), control.fade_in, control.fade_out)


def build_stitcher(
    control: ControlConfig,
    stitch_network: nn.Module,
    source: RegisteredSource,
    num_frames: int,
    blink_rng: random.Random | None = None,
) -> MotionStitcher:
    """The stitcher for one clip, with every control of the config.

    The random blink schedule draws from ``blink_rng`` (None: ``random.Random(control.seed)``) in the
    reference's order: a 3000-frame schedule first (its setup, length unknown), then the clip's own
    (``num_frames >= 0``), so a given seed gives the reference's blinks.
    """
    stitcher = MotionStitcher(
        stitch_network,
        x_s_info=source.frames[0].x_s_info if source.is_image else None,
        n_frames=-1,
        use_d_keys=tuple(control.use_d_keys) if control.use_d_keys else None,
        relative_d=control.relative_d,
        drive_eye=control.drive_eye,
        delta_eye_arr=control.blink_array(),
        delta_eye_open_n=(
            control.delta_eye_open_n
            if isinstance(control.delta_eye_open_n, int)
            else [int(v) for v in control.delta_eye_open_n]
        ),
        fade_out_keys=tuple(control.fade_out_keys),
        fade_type=control.fade_type,  # type: ignore[arg-type]
        use_stitching=control.flag_stitching,
        fade_pose_in_degrees=control.fade_pose_in_degrees,
        is_image=source.is_image,
        overall_controls=overall_controls(control),
        rng=random.Random(control.seed) if blink_rng is None else blink_rng,
    )
    if num_frames >= 0:
        stitcher.set_num_frames(num_frames)
    return stitcher
