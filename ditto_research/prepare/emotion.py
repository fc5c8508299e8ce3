"""Per-frame emotion probabilities for training clips, computed the way the released training code does.

The reference is ``prepare_data/scripts/extract_emo_feat_from_video.py`` of the Ditto train branch (commit
7aa0c1b), run by ``prepare_data/prepare_data.sh`` on the *cropped* videos (``crop_video_by_LP.py``: 512x512
LivePortrait crops at 25 fps). What it does, and where this module does the same:

1. Sampling: frames ``fid % 5 == 0`` (``step = max(25 // 5, 1)``, 5 fps out of 25) -> :data:`SAMPLE_STEP`,
   :meth:`EmotionTrack.wants`.
2. Face image: MTCNN (facenet-pytorch, ``keep_all=False, post_process=False, min_face_size=40``) on the
   512 crop frame in RGB; boxes with probability > 0.9, the first one, ``astype(int)``; the classifier sees
   ``crop[y1:y2, x1:x2]`` -> :func:`face_box_crop`. MTCNN is not run here: the caller supplies the box.
3. Classifier: HSEmotion ``enet_b2_8`` (the torch ``hsemotion`` package), ``predict_emotions(face,
   logits=False)``: PIL ``Image.fromarray`` (RGB) -> torchvision ``Resize((260, 260))`` (PIL bilinear) ->
   ``ToTensor`` (float32 / 255) -> ``Normalize`` (ImageNet mean 0.485, 0.456, 0.406, std 0.229, 0.224, 0.225)
   -> logits -> softmax (probabilities, not logits) -> :class:`EmotionClassifier`.
4. Order: HSEmotion's ``idx_to_class`` is {0 Anger, 1 Contempt, 2 Disgust, 3 Fear, 4 Happiness, 5 Neutral,
   6 Sadness, 7 Surprise}; the reference keeps ``scores[[0, 2, 3, 4, 5, 6, 7, 1]]``, Ditto's order (angry,
   disgust, fear, happy, neutral, sad, surprise, contempt) -> :data:`HSEMOTION_TO_DITTO`.
5. A sampled frame whose detection or classification fails is dropped (a bare ``except: pass``).
6. Skip rule: the video is left out when ``detections * 25 / 5 < frames * 0.6`` -> :func:`check_coverage`.
7. Interpolation over all ``frames`` (the cropped video's frame count): a sampled row is kept as is; a frame
   between two rows is ``left * (1 - t) + right * t`` with ``t = (i - left) / (right - left)`` (float32 rows,
   float64 ``t``); frames before the first or after the last row copy it -> :func:`interpolate_emotion`.

The ONNX export of the same network (package ``hsemotion-onnx``, ``enet_b2_8.onnx``) takes input ``input``
(N, 3, 260, 260) float32 and returns (N, 8) logits; that package resizes with OpenCV instead of PIL, so this
module resizes with PIL as the reference does. The model file is the user's: nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ditto_research.constants import FPS
from ditto_research.errors import InputError

__all__ = [
    "HSEMOTION_TO_DITTO",
    "MIN_COVERAGE",
    "SAMPLE_STEP",
    "EmotionClassifier",
    "EmotionTrack",
    "check_coverage",
    "face_box_crop",
    "interpolate_emotion",
]

SAMPLE_FPS = 5  # the reference classifies 5 frames a second ...
SAMPLE_STEP = max(FPS // SAMPLE_FPS, 1)  # ... every 5th frame at 25 fps (frames 0, 5, 10, ...)
MIN_COVERAGE = 0.6  # a video whose detections cover less than this share of its frames is left out
HSEMOTION_TO_DITTO = (0, 2, 3, 4, 5, 6, 7, 1)  # Ditto row j = HSEmotion class HSEMOTION_TO_DITTO[j]
NUM_CLASSES = len(HSEMOTION_TO_DITTO)
DEFAULT_SIZE = 260  # enet_b2 input side (HSEmotion: 224 for the b0 models, else 260)
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
EXPECTED_MODEL = "expected HSEmotion enet_b2_8 exported to ONNX (input (N, 3, 260, 260) float32, 8 outputs)"

Classify = Callable[[Sequence[np.ndarray]], np.ndarray]


def face_box_crop(image: np.ndarray, box: Sequence[float] | np.ndarray) -> np.ndarray | None:
    """The reference's classifier image: ``image[y1:y2, x1:x2]`` with the (4,) box x1, y1, x2, y2 truncated
    by ``astype(int)`` and numpy's slicing rules (a negative coordinate wraps, as there). ``image`` is the
    512x512 LivePortrait crop frame (H, W, 3) RGB uint8 and ``box`` a face box in its pixels (the reference's
    MTCNN box; another detector's box is an approximation). None when the crop is empty: the reference drops
    that frame."""
    x1, y1, x2, y2 = np.asarray(box, dtype=np.float64)[:4].astype(int)
    face = image[y1:y2, x1:x2]
    return face if face.size else None


def interpolate_emotion(num_frames: int, samples: Mapping[int, np.ndarray]) -> np.ndarray:
    """(num_frames, 8) float32 rows from the rows of some frames (``samples``: frame index -> (8,)).

    Kept frames are copied, frames between two kept ones are interpolated linearly, frames before the first
    or after the last copy it (the reference's ``interpolate_missing_frames``, same float32 arithmetic).
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    if not samples:
        raise ValueError("no rows to interpolate from")
    known = np.array(sorted(samples), dtype=np.int64)
    if known[0] < 0 or known[-1] >= num_frames:
        raise ValueError(f"row indices must lie in [0, {num_frames}), got {known[0]}..{known[-1]}")
    rows = np.stack([np.asarray(samples[int(i)], dtype=np.float32).reshape(NUM_CLASSES) for i in known])

    frames = np.arange(num_frames)
    after = np.searchsorted(known, frames, side="left")  # position of the first kept index >= frame
    before = np.searchsorted(known, frames, side="right") - 1  # position of the last kept index <= frame
    left_pos = np.where(before < 0, after, before)  # before the first row: copy it
    right_pos = np.where(after >= len(known), before, after)  # after the last row: copy it
    left, right = known[left_pos], known[right_pos]

    span = right - left
    t = (frames - left) / np.maximum(span, 1)  # float64, as the reference's t (0 where span is 0)
    # float32 row times a Python float: numpy rounds the float to float32 first, then multiplies.
    w_left = (1.0 - t).astype(np.float32)[:, None]
    w_right = t.astype(np.float32)[:, None]
    out = rows[left_pos] * w_left + rows[right_pos] * w_right
    out[span == 0] = rows[left_pos[span == 0]]  # kept frames and copied ends: the row itself
    return out


def check_coverage(num_detections: int, num_frames: int, what: str = "the video") -> None:
    """Raise InputError when the reference would leave the video out: ``detections * 25 / 5 < frames * 0.6``
    (too few sampled frames had a face)."""
    if num_detections * (FPS / SAMPLE_FPS) < num_frames * MIN_COVERAGE:
        sampled = -(-num_frames // SAMPLE_STEP)
        raise InputError(
            f"{what}: a face was classified in only {num_detections} of {sampled} sampled frames (the "
            f"training data needs {MIN_COVERAGE:.0%} of {num_frames} frames covered); use a video with the "
            "face visible throughout"
        )


class EmotionClassifier:
    """HSEmotion ``enet_b2_8`` exported to ONNX, run with onnxruntime: face images -> Ditto's 8 probabilities.

    Args:
        path: the user's ``.onnx`` file (input (N, 3, S, S) float32, output (N, 8) logits in HSEmotion's class
            order; S = 260 for enet_b2_8, taken from the model when static).
        providers: onnxruntime execution providers.
        num_threads: onnxruntime intra-op threads (None: onnxruntime's default).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        num_threads: int | None = None,
    ) -> None:
        import onnxruntime as ort

        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise InputError(f"emotion model not found: {self.path}; {EXPECTED_MODEL}")
        options = ort.SessionOptions()
        if num_threads is not None:
            options.intra_op_num_threads = num_threads
        try:
            self._session = ort.InferenceSession(
                str(self.path), sess_options=options, providers=list(providers)
            )
        except Exception as e:  # onnxruntime raises its own exception types for unreadable models
            raise InputError(
                f"emotion model {self.path} is not a readable ONNX model; {EXPECTED_MODEL}"
            ) from e
        self.input_size, self._batched = self._check_input()
        self._check_output()

    def _check_input(self) -> tuple[int, bool]:
        inputs = self._session.get_inputs()
        shape = list(inputs[0].shape) if len(inputs) == 1 else []
        static = [d if isinstance(d, int) and d > 0 else None for d in shape]
        sides = {d for d in static[2:] if d is not None}
        if len(shape) != 4 or static[1] != 3 or len(sides) > 1 or inputs[0].type != "tensor(float)":
            found = ", ".join(f"{i.name} {i.shape} {i.type}" for i in inputs)
            raise InputError(f"emotion model {self.path} takes {found}; {EXPECTED_MODEL}")
        self._input_name = inputs[0].name
        return (sides.pop() if sides else DEFAULT_SIZE), static[0] != 1

    def _check_output(self) -> None:
        probe = np.zeros((1, 3, self.input_size, self.input_size), dtype=np.float32)
        try:
            shape = np.shape(self._session.run(None, {self._input_name: probe})[0])
        except Exception as e:  # onnxruntime's own exception types
            raise InputError(f"emotion model {self.path} fails on one image; {EXPECTED_MODEL}") from e
        if shape != (1, NUM_CLASSES):
            raise InputError(f"emotion model {self.path} gives {shape} for one image; {EXPECTED_MODEL}")

    def preprocess(self, faces: Sequence[np.ndarray]) -> np.ndarray:
        """(N, 3, S, S) float32 network input from N face images (h, w, 3) RGB uint8 of any size (step 3)."""
        blobs = []
        for face in faces:
            if face.ndim != 3 or face.shape[2] != 3 or face.dtype != np.uint8 or face.size == 0:
                raise ValueError(f"a face image must be (h, w, 3) RGB uint8, got {face.shape} {face.dtype}")
            size = (self.input_size, self.input_size)
            resized = np.asarray(Image.fromarray(face).resize(size, Image.Resampling.BILINEAR))
            blobs.append((resized.astype(np.float32) / np.float32(255) - IMAGENET_MEAN) / IMAGENET_STD)
        return np.ascontiguousarray(np.stack(blobs).transpose(0, 3, 1, 2))

    def logits(self, faces: Sequence[np.ndarray]) -> np.ndarray:
        """(N, 8) float32 logits in HSEmotion's class order (Anger, Contempt, Disgust, ... Surprise)."""
        if not faces:
            return np.zeros((0, NUM_CLASSES), dtype=np.float32)
        blob = self.preprocess(faces)
        if self._batched:
            out = self._session.run(None, {self._input_name: blob})[0]
        else:  # a model exported with batch 1
            out = np.concatenate([self._session.run(None, {self._input_name: b[None]})[0] for b in blob])
        return np.asarray(out, dtype=np.float32)

    def probabilities(self, faces: Sequence[np.ndarray]) -> np.ndarray:
        """(N, 8) float32 softmax probabilities in Ditto's order from N face images (h, w, 3) RGB uint8: the
        face box crops of the 512 LivePortrait crop frames (:func:`face_box_crop`), not the whole crops."""
        rows = []
        for x in self.logits(faces):  # row by row, as the reference's single-image softmax
            e = np.exp(x - np.max(x))
            rows.append((e / e.sum())[list(HSEMOTION_TO_DITTO)])
        return np.stack(rows) if rows else np.zeros((0, NUM_CLASSES), dtype=np.float32)

    __call__ = probabilities


class EmotionTrack:
    """Frames in one by one, (n, 8) emotion rows out: classifies the sampled frames in batches.

    Feed every frame's face image (or None when no face was found) with :meth:`add`; only frames with
    ``index % 5 == 0`` are kept (until their batch runs) and only their (8,) rows stay after that, so memory
    is the (n / 5, 8) rows. :meth:`wants` tells the caller which frames need a face image at all.

    Args:
        classify: face images -> (N, 8) probabilities in Ditto's order (an :class:`EmotionClassifier`).
        batch_size: sampled faces per classifier call.
        what: the input's name for error messages.
    """

    def __init__(self, classify: Classify, *, batch_size: int = 16, what: str = "the video") -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self._classify = classify
        self._batch_size = batch_size
        self._what = what
        self._pending: list[tuple[int, np.ndarray]] = []
        self._rows: dict[int, np.ndarray] = {}
        self._next = 0

    @staticmethod
    def wants(index: int) -> bool:
        """Whether frame ``index`` (25 fps, from 0) is one the reference classifies."""
        return index % SAMPLE_STEP == 0

    def add(self, index: int, face: np.ndarray | None) -> None:
        """Frame ``index`` (in order, from 0) and its face image (as for
        :meth:`EmotionClassifier.probabilities`), None when no face was found (the frame is then interpolated
        over, as in the reference)."""
        if index < self._next:
            raise ValueError(f"frames must come in increasing order: got {index} after {self._next - 1}")
        self._next = index + 1
        if face is None or not self.wants(index):
            return
        self._pending.append((index, face))
        if len(self._pending) >= self._batch_size:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        indices, faces = zip(*self._pending)
        self._pending = []
        probabilities = np.asarray(self._classify(list(faces)), dtype=np.float32)
        if probabilities.shape != (len(faces), NUM_CLASSES):
            raise ValueError(f"the classifier returned {probabilities.shape} for {len(faces)} faces")
        self._rows.update(zip(indices, probabilities))

    def finish(self, num_frames: int) -> np.ndarray:
        """(num_frames, 8) float32 rows; InputError when the reference would leave the video out."""
        self._flush()
        if num_frames < 1:
            raise InputError(f"{self._what} has no frames; use a video with at least one frame")
        if self._next > num_frames:
            raise ValueError(f"{self._next} frames were added but finish() was told {num_frames}")
        check_coverage(len(self._rows), num_frames, self._what)
        return interpolate_emotion(num_frames, self._rows)
