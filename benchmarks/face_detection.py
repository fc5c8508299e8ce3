"""Face detection on real photos placed into everyday frames: recall and time, baseline vs current.

    python benchmarks/face_detection.py [--baseline OLD.py] [--photos DIR] [--out results.json]

"after" is the current MediaPipe front-end (:mod:`ditto_research.face.mediapipe_frontend`: tile-pyramid
detection, FaceMesh on a crop around each face). ``--baseline OLD.py``: "before" is the ``MediaPipeFrontend``
class of that file, e.g. an older version of the front-end (``git show REV:ditto_research/face/
mediapipe_frontend.py > OLD.py``), run in an environment that has what it imports (the front-end of
mediapipe 0.10.21's legacy FaceMesh needs that wheel: Python <= 3.12, numpy < 2). Both run on every case of
:mod:`ditto_research.evaluate.face_set` (16:9 frames, face sizes 64-400 px, rotations, mirrors, two and three
people), alternating case by case, scored against the anchors the *baseline* finds on the tight portraits (the
current front-end's when there is no baseline); a case is a hit when the chosen face is the largest one and
its 10 eye / mouth anchors are within max(3 px, 3 % of the face height) of the truth. ``--photos DIR``: also
count the faces each finds on every image there (e.g. group photos). Registration front-end time (locate +
512 crop + the 478 crop landmarks) is the median of 7 alternating runs on a 512x512 portrait and a 1920x1080
frame.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np


def _load_baseline(path: Path):
    spec = importlib.util.spec_from_file_location("baseline_frontend", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"--baseline {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module.MediaPipeFrontend(min_face_size=0)


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
    parser.add_argument("--baseline", type=Path, help="Python file whose MediaPipeFrontend is 'before'")
    parser.add_argument("--photos", type=Path, help="folder of extra photos (faces are counted)")
    parser.add_argument("--out", type=Path, help="write every number as JSON here")
    parser.add_argument(
        "--picture", type=Path, help="draw the three-people case with what each front-end chose"
    )
    args = parser.parse_args(argv)

    fronts = {"after": MediaPipeFrontend(min_face_size=0)}
    if args.baseline:
        fronts = {"before": _load_baseline(args.baseline), **fronts}
    cases = build_face_set(references(next(iter(fronts.values()))))
    rows = []
    for case in cases:
        row = {"case": case.name, "face_px": round(case.target.face_height)}
        for name, frontend in fronts.items():
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

    verdict = {True: "hit", False: "miss"}
    print(f"Face set: {len(cases)} cases built from {', '.join(portrait_photos())}\n")
    print(f"| case | face px | {' | '.join(f'{n}: hit, anchor error px' for n in fronts)} |")
    print("| --- | --- |" + " --- |" * len(fronts))
    for r in rows:
        cells = [f"{verdict[r[n]['hit']]}, {r[n]['anchor_error_px']}" for n in fronts]
        print(f"| {r['case']} | {r['face_px']} | {' | '.join(cells)} |")
    for name in fronts:
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
            row = {"photo": path.name, "size": f"{rgb.shape[1]}x{rgb.shape[0]}"}
            photos.append(row | {name: len(frontend.detect(rgb)) for name, frontend in fronts.items()})
        print(f"\n| photo | size | {' | '.join(f'faces found {n}' for n in fronts)} |")
        print("| --- | --- |" + " --- |" * len(fronts))
        for p in photos:
            print(f"| {p['photo']} | {p['size']} | {' | '.join(str(p[n]) for n in fronts)} |")

    timing = {}
    portrait = portrait_photos()["astronaut"]
    frame = next(c.image for c in cases if c.name == "astronaut 1920x1080 256px center")
    for label, rgb in (("512x512 portrait", portrait), ("1920x1080 frame (256 px face)", frame)):
        times: dict[str, list[float]] = {name: [] for name in fronts}
        for _ in range(7):
            for name, frontend in fronts.items():
                times[name].append(_registration_s(frontend, rgb))
        timing[label] = {name: round(1000 * statistics.median(v), 1) for name, v in times.items()}
    print(f"\n| registration front-end (median of 7) | {' | '.join(f'{n} ms' for n in fronts)} |")
    print("| --- |" + " --- |" * len(fronts))
    for label, t in timing.items():
        print(f"| {label} | {' | '.join(str(t[n]) for n in fronts)} |")

    if args.out:
        args.out.write_text(json.dumps({"cases": rows, "photos": photos, "timing_ms": timing}, indent=1))
    if args.picture:
        case = next(c for c in cases if c.name.startswith("three people"))
        canvas = case.image.copy()
        for face in fronts["after"].detect(case.image):  # every confirmed face: blue box
            x1, y1, x2, y2 = (int(v) for v in face.box)
            cv2.rectangle(canvas, (x1, y1), (x2, y2), (60, 140, 255), 3)
        colors = {"before": (255, 80, 80), "after": (80, 255, 80)}
        for name, frontend in fronts.items():
            color = colors[name]
            located = _locate(frontend, case.image, case.name)
            if located is not None:  # the chosen face's eye / mouth anchors
                for x, y in located.points[:10]:
                    cv2.circle(canvas, (int(x), int(y)), 5, color, -1)
        small = cv2.resize(canvas, (960, 540), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(args.picture), cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
    return 0


if __name__ == "__main__":
    sys.exit(main())
