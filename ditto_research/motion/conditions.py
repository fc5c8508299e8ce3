"""Per-frame LMDM conditions: audio features plus emotion, eye state and source keypoints.

The reference ``ConditionHandler`` (core/atomic_components/condition_handler.py) concatenates, for each of
the ``n`` frames of an audio-feature window, these column blocks (each present when its flag is on):

=================  =====  =====================================================================
block              width  row used for frame i (j = max(i, 0); windows may start before 0)
=================  =====  =====================================================================
audio features     1024   the window's own row
emotion            8      emotion row ``j mod m`` (m rows; one row -> every frame)
eye open           2      eye row ``mirror(j, n)``: j mod n on even passes, n-1-(j mod n) on odd
eye ball           6      same as eye open (``eye_f0_mode``: row 0 for every frame)
source keypoints   63     the source's canonical keypoints ``sc``, every frame
=================  =====  =====================================================================

All four flags give 1024 + 8 + 2 + 6 + 63 = 1103 columns, the width of the official LMDM's condition
projection.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ditto_research.constants import AUDIO_FEATURE_DIM, EYE_BALL_DIM, EYE_OPEN_DIM, SOURCE_KP_DIM
from ditto_research.errors import ConfigError, InputError
from ditto_research.media.loop import mirror_index

# Label order of the emotion vector (index = label), as listed in the reference.
EMOTION_LABELS: tuple[str, ...] = (
    "angry",
    "disgust",
    "fear",
    "happy",
    "neutral",
    "sad",
    "surprise",
    "contempt",
)
NUM_EMOTIONS = len(EMOTION_LABELS)
EMOTION_LOGIT = 8.0  # the chosen labels get logit 8, the others 0, before the softmax
AUDIO_FEAT_DIM = AUDIO_FEATURE_DIM

EmotionLabel = int | str
EmotionSpec = EmotionLabel | Sequence[EmotionLabel] | Sequence[Sequence[EmotionLabel]] | np.ndarray


@dataclass(frozen=True)
class ConditionFlags:
    """Which optional column blocks follow the audio features (the reference's ``use_*`` switches)."""

    use_emo: bool = True
    use_sc: bool = True
    use_eye_open: bool = True
    use_eye_ball: bool = True


_DEFAULT_FLAGS = ConditionFlags()


def cond_dim(flags: ConditionFlags, audio_dim: int = AUDIO_FEAT_DIM) -> int:
    """Condition width for ``flags``: 1103 with every block on and 1024-wide audio features."""
    return (
        audio_dim
        + NUM_EMOTIONS * flags.use_emo
        + EYE_OPEN_DIM * flags.use_eye_open
        + EYE_BALL_DIM * flags.use_eye_ball
        + SOURCE_KP_DIM * flags.use_sc
    )


def _valid_labels_text() -> str:
    return ", ".join(f"{i}={name}" for i, name in enumerate(EMOTION_LABELS))


def _label_index(label: Any) -> int:
    if isinstance(label, str):
        name = label.strip().lower()
        if name in EMOTION_LABELS:
            return EMOTION_LABELS.index(name)
    elif isinstance(label, (int, np.integer)) and not isinstance(label, bool) and 0 <= label < NUM_EMOTIONS:
        return int(label)
    raise ConfigError(f"unknown emotion label {label!r}; valid labels are {_valid_labels_text()}")


def emotion_vector(labels: Sequence[EmotionLabel]) -> np.ndarray:
    """``softmax`` of a vector with 8 at ``labels`` and 0 elsewhere -> ``(8,)`` float32.

    An empty label list gives the uniform vector (every logit 0), as in the reference.
    """
    logits = np.zeros(NUM_EMOTIONS, dtype=np.float32)
    for label in labels:
        logits[_label_index(label)] = EMOTION_LOGIT
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()


def _is_label(value: Any) -> bool:
    return isinstance(value, (str, int, np.integer)) and not isinstance(value, bool)


def parse_emotion(emotion: EmotionSpec) -> np.ndarray:
    """Emotion spec -> ``(m, 8)`` float32 rows (m = 1: one emotion for the whole clip).

    Accepted forms:
        - a label, ``4`` or ``"neutral"``: one row;
        - a list of labels, ``[3, 4]``: one row mixing them;
        - a per-frame list of label lists, ``[[4], [3, 4], ...]``: one row per frame, cycled;
        - an ``(m, 8)`` float array: used as is (e.g. emotion probabilities from a classifier).
    """
    if isinstance(emotion, np.ndarray):
        if emotion.ndim == 2 and emotion.shape[1] == NUM_EMOTIONS and emotion.shape[0] > 0:
            return emotion.astype(np.float32, copy=False)
        if emotion.dtype.kind == "f" or emotion.ndim > 1:
            raise ConfigError(
                f"an emotion array must have shape (m, {NUM_EMOTIONS}) with m >= 1 (columns: "
                f"{_valid_labels_text()}), got {emotion.shape}"
            )
        emotion = emotion.tolist()  # integer labels: a scalar or a flat list
    if _is_label(emotion):
        return emotion_vector([emotion])[None]
    if isinstance(emotion, (list, tuple)) and len(emotion) > 0:
        if all(_is_label(v) for v in emotion):
            return emotion_vector(emotion)[None]
        if all(isinstance(v, (list, tuple)) for v in emotion):
            return np.stack([emotion_vector(frame) for frame in emotion])
    raise ConfigError(
        f"cannot read emotion {emotion!r}: give a label, a list of labels, a per-frame list of label lists, "
        f"or an (m, {NUM_EMOTIONS}) float array; valid labels are {_valid_labels_text()}"
    )


def _rows(values: Any, width: int, name: str) -> np.ndarray:
    """``(n, width)`` float32 from an array or a list of ``(1, width)`` rows (the reference's lists)."""
    try:
        if isinstance(values, (list, tuple)):
            parts = [np.reshape(np.asarray(v), (-1, width)) for v in values]
            rows = np.concatenate(parts) if parts else None
        else:
            rows = np.reshape(np.asarray(values), (-1, width))
    except ValueError as e:
        raise InputError(f"{name} must be rows of {width} values, got {np.shape(values)}") from e
    if rows is None or rows.shape[0] == 0:
        raise InputError(f"{name} is empty: at least one row of {width} values is needed")
    return rows.astype(np.float32, copy=False)


def _source_keypoints(sc: Any) -> np.ndarray:
    values = np.asarray(sc) if sc is not None else np.zeros(0)
    if values.size != SOURCE_KP_DIM:
        raise InputError(
            f"sc must hold the source's {SOURCE_KP_DIM} canonical keypoint values, got shape {values.shape}"
        )
    return values.reshape(SOURCE_KP_DIM).astype(np.float32, copy=False)


class ConditionBuilder:
    """Builds the ``(n, cond_dim)`` condition of each audio-feature window (the reference ConditionHandler).

    Call :meth:`setup` (or :meth:`setup_from_source_info`) once per source, then call the builder with
    each window of audio features and the global index of its first frame.
    """

    def __init__(self, flags: ConditionFlags = _DEFAULT_FLAGS) -> None:
        self.flags = flags
        self._emotion: np.ndarray | None = None  # (m, 8)
        self._eye_open: np.ndarray | None = None  # (n, 2)
        self._eye_ball: np.ndarray | None = None  # (n, 6)
        self._sc: np.ndarray | None = None  # (63,)
        self._eye_f0_mode = False
        self._is_set_up = False

    @property
    def dim(self) -> int:
        """Condition width with 1024-wide audio features."""
        return cond_dim(self.flags)

    def setup(
        self,
        *,
        sc: np.ndarray | None,
        eye_open: np.ndarray | Sequence[np.ndarray] | None,
        eye_ball: np.ndarray | Sequence[np.ndarray] | None,
        emotion: EmotionSpec | None,
        eye_f0_mode: bool = False,
    ) -> None:
        """Fix the source-dependent blocks; inputs of disabled blocks may be None.

        Args:
            sc: ``(63,)`` canonical keypoints of the source (first source frame).
            eye_open: ``(n, 2)`` eye openness per source frame (or a list of ``(1, 2)`` rows).
            eye_ball: ``(n, 6)`` eye-ball movement per source frame (or a list of ``(1, 6)`` rows).
            emotion: see :func:`parse_emotion`.
            eye_f0_mode: use the first source frame's eye rows for every frame (video sources).
        """
        flags = self.flags
        self._sc = _source_keypoints(sc) if flags.use_sc else None
        self._eye_open = _rows(eye_open, EYE_OPEN_DIM, "eye_open") if flags.use_eye_open else None
        self._eye_ball = _rows(eye_ball, EYE_BALL_DIM, "eye_ball") if flags.use_eye_ball else None
        if flags.use_emo and emotion is None:
            raise ConfigError(
                f"use_emo is on but no emotion was given; valid labels are {_valid_labels_text()}"
            )
        self._emotion = parse_emotion(emotion) if flags.use_emo else None
        self._eye_f0_mode = bool(eye_f0_mode)
        self._is_set_up = True

    def setup_from_source_info(
        self, source_info: Mapping[str, Any], emotion: EmotionSpec | None, eye_f0_mode: bool = False
    ) -> None:
        """:meth:`setup` from a reference-style source-info dict.

        Reads the keys ``sc``, ``eye_open_lst`` and ``eye_ball_lst`` (other keys are ignored).
        """
        self.setup(
            sc=source_info.get("sc"),
            eye_open=source_info.get("eye_open_lst"),
            eye_ball=source_info.get("eye_ball_lst"),
            emotion=emotion,
            eye_f0_mode=eye_f0_mode,
        )

    def __call__(self, aud_feat: np.ndarray, idx: int) -> np.ndarray:
        """Condition rows for one window.

        Args:
            aud_feat: ``(n, D)`` audio features of frames ``idx .. idx + n - 1``.
            idx: global index of the window's first frame; negative for the silent lead-in of the first
                window (those frames use row 0 of every per-frame block).

        Returns:
            ``(n, D + 8 + 2 + 6 + 63)`` float32 (the blocks whose flags are on).
        """
        if not self._is_set_up:
            raise ConfigError("ConditionBuilder.setup() must be called before building conditions")
        feats = np.asarray(aud_feat)
        if feats.ndim != 2:
            raise InputError(f"aud_feat must be (frames, features), got shape {feats.shape}")
        num = feats.shape[0]
        frames = np.maximum(np.arange(idx, idx + num), 0)
        blocks = [feats.astype(np.float32, copy=False)]
        if self._emotion is not None:
            blocks.append(self._emotion[frames % self._emotion.shape[0]])
        for eye in (self._eye_open, self._eye_ball):
            if eye is not None:
                rows = np.zeros_like(frames) if self._eye_f0_mode else mirror_index(frames, eye.shape[0])
                blocks.append(eye[rows])
        if self._sc is not None:
            blocks.append(np.broadcast_to(self._sc, (num, self._sc.shape[0])))
        return np.concatenate(blocks, axis=1)
