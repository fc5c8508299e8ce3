"""Face detection on real photos placed into everyday frames: recall and time, before vs after.

    python benchmarks/face_detection.py [--photos DIR] [--out results.json]

"before" is the previous MediaPipe front-end (FaceMesh alone on the whole frame, the largest of up to 4
faces); "after" is the current one (tile-pyramid detection, FaceMesh on a crop around each face,
:mod:`ditto_research.face.mediapipe_frontend`). Both run on every case of
:mod:`ditto_research.evaluate.face_set` (16:9 frames, face sizes 64-400 px, rotations, mirrors, two and
three people), alternating case by case; a case is a hit when the chosen face is the largest one and its 10
eye / mouth anchors are within max(3 px, 3 % of the face height) of the truth. ``--photos DIR``: also count
the faces each finds on every image there (e.g. group photos). Registration front-end time (locate + 512
crop + the 478 crop landmarks) is the median of 5 alternating runs on a 512x512 portrait and a 1920x1080
frame.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np


class FullFrameFaceMesh:
    """The previous front-end's detection: FaceMesh (static, up to 4 faces) on the whole frame, largest."""

    def __init__(self) -> None:
        from mediapipe.python.solutions.face_mesh import FaceMesh

        from ditto_research.face.mediapipe_frontend import FACEMESH_CROP_GROUPS, FACEMESH_CROP_POINTS

        self.mesh = FaceMesh(static_image_mode=True, max_num_faces=4, refine_landmarks=True)
        self.crop_mesh = FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True)
        self.points, self.groups = list(FACEMESH_CROP_POINTS), FACEMESH_CROP_GROUPS

    def landmarks478(self, crop: np.ndarray) -> object:
        return self.crop_mesh.process(crop)

    def locate(self, rgb: np.ndarray, what: str = "") -> object | None:
        from ditto_research.face.frontend import FaceLandmarks, points_box

        result = self.mesh.process(rgb)
        if not result.multi_face_landmarks:
            return None
        h, w = rgb.shape[:2]
        faces = [
            np.array([(p.x * w, p.y * h) for p in f.landmark], np.float32)
            for f in result.multi_face_landmarks
        ]
        boxes = [points_box(f) for f in faces]
        best = int(np.argmax([(b[2] - b[0]) * (b[3] - b[1]) for b in boxes]))
        return FaceLandmarks(faces[best][self.points], self.groups, boxes[best], len(faces))

    def count(self, rgb: np.ndarray) -> int:
        result = self.mesh.process(rgb)
        return len(result.multi_face_landmarks or [])


def _locate(frontend, rgb: np.ndarray, what: str):
    from ditto_research.errors import InputError

    try:
        return frontend.locate(rgb, what=what)
    except InputError:
        return None


def _registration_s(frontend, rgb: np.ndarray) -> float:
    from ditto_research.face.frontend import crop_face

    t0 = time.perf_counter()
    face = frontend.locate(rgb)
    if face is not None:
        crop = crop_face(rgb, face)
        frontend.landmarks478(crop.img_crop)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    from ditto_research.evaluate.face_set import build_face_set, portrait_photos, references, score_case
    from ditto_research.face.mediapipe_frontend import MediaPipeFrontend

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, help="folder of extra photos (faces are counted)")
    parser.add_argument("--out", type=Path, help="write every number as JSON here")
    parser.add_argument(
        "--picture", type=Path, help="draw the three-people case with what each front-end chose"
    )
    args = parser.parse_args(argv)

    after, before = MediaPipeFrontend(min_face_size=0), FullFrameFaceMesh()
    cases = build_face_set(references(after))
    rows = []
    for case in cases:
        row = {"case": case.name, "face_px": round(case.target.face_height)}
        for name, frontend in (("before", before), ("after", after)):
            t0 = time.perf_counter()
            located = _locate(frontend, case.image, case.name)
            score = score_case(case, located)
            row[name] = {
                "hit": score.hit,
                "found": score.found,
                "anchor_error_px": None if not score.found else round(score.anchor_error_px, 2),
                "ms": round(1000 * (time.perf_counter() - t0), 1),
            }
        rows.append(row)

    print(f"Face set: {len(cases)} cases built from {', '.join(portrait_photos())}\n")
    print("| case | face px | before | after | after: anchor error px | after ms |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        b, a = r["before"], r["after"]
        verdict = {True: "hit", False: "miss"}
        print(
            f"| {r['case']} | {r['face_px']} | {verdict[b['hit']]} | {verdict[a['hit']]} "
            f"| {a['anchor_error_px']} | {a['ms']:.0f} |"
        )
    for name in ("before", "after"):
        hits = sum(r[name]["hit"] for r in rows)
        print(f"\n{name}: recall {hits}/{len(rows)} ({hits / len(rows):.0%})", end="")
        sizes = [
            r["face_px"] for r in rows if r[name]["hit"] and "1920x1080" in r["case"] and "px " in r["case"]
        ]
        if sizes:
            print(f"; smallest face found in a 1920x1080 frame: {min(sizes)} px", end="")
    print()

    photos = []
    if args.photos:
        for path in sorted(args.photos.iterdir()):
            image = cv2.imread(str(path))
            if image is None:
                continue
            rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
            photos.append(
                {
                    "photo": path.name,
                    "size": f"{rgb.shape[1]}x{rgb.shape[0]}",
                    "before": before.count(rgb),
                    "after": len(after.detect(rgb)),
                }
            )
        print("\n| photo | size | faces found before | after |\n| --- | --- | --- | --- |")
        for p in photos:
            print(f"| {p['photo']} | {p['size']} | {p['before']} | {p['after']} |")

    timing = {}
    portrait = portrait_photos()["astronaut"]
    frame = next(c.image for c in cases if c.name == "astronaut 1920x1080 256px center")
    for label, rgb in (("512x512 portrait", portrait), ("1920x1080 frame (256 px face)", frame)):
        times: dict[str, list[float]] = {"before": [], "after": []}
        for _ in range(5):
            for name, frontend in (("before", before), ("after", after)):
                times[name].append(_registration_s(frontend, rgb))
        timing[label] = {name: round(1000 * statistics.median(v), 1) for name, v in times.items()}
    print("\n| registration front-end (median of 5) | before ms | after ms |\n| --- | --- | --- |")
    for label, t in timing.items():
        print(f"| {label} | {t['before']} | {t['after']} |")

    if args.out:
        args.out.write_text(json.dumps({"cases": rows, "photos": photos, "timing_ms": timing}, indent=1))
    if args.picture:
        case = next(c for c in cases if c.name.startswith("three people"))
        canvas = case.image.copy()
        for face in after.detect(case.image):  # every confirmed face: blue box
            x1, y1, x2, y2 = (int(v) for v in face.box)
            cv2.rectangle(canvas, (x1, y1), (x2, y2), (60, 140, 255), 3)
        for frontend, color in ((before, (255, 80, 80)), (after, (80, 255, 80))):
            located = _locate(frontend, case.image, case.name)
            if located is not None:  # the chosen face's eye / mouth anchors
                for x, y in located.points[:10]:
                    cv2.circle(canvas, (int(x), int(y)), 5, color, -1)
        small = cv2.resize(canvas, (960, 540), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(args.picture), cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
    return 0


if __name__ == "__main__":
    sys.exit(main())
