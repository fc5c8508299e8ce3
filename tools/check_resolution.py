"""The package's dependency set resolves for every supported CPython, against the built wheel.

    python tools/check_resolution.py                      # CPython 3.10 .. 3.14, manylinux_2_28 x86_64
    python tools/check_resolution.py --python 3.13        # one version (repeatable)
    python tools/check_resolution.py --keep wheelhouse/   # keep the wheels and pip's reports

Needs network access to PyPI (it resolves against the live index; nothing is installed). Run it with the
environment of the README install (``pip install -e ".[dev]"``): it uses that environment's pip.

1. builds the project wheel (``pip wheel --no-deps``) from a copy of the package, so the checkout stays clean;
2. for each Python, asks pip for a binary-only resolution of ``WHEEL[dev]``: ``pip install --dry-run
   --ignore-installed --only-binary=:all: --python-version X --platform manylinux_2_28_x86_64 --target TMP
   --find-links WHEELHOUSE --report REPORT.json``. A requirement that fails only because it publishes nothing
   but an sdist (python_speech_features, antlr4-python3-runtime: looked up on PyPI) is built into the
   wheelhouse with ``pip wheel --no-deps`` and the resolution is repeated; such a wheel must be pure Python;
3. checks each report (:func:`check_report`): the project and torch are in it, torch is exactly the wheel's
   pin and appears once, no distribution appears twice, numpy >= 2;
4. prints one line per Python (versions chosen, seconds) and exits 1 naming each failing version with
   pip's last error lines.

Three things pip does not do for a foreign target, done here:

* pip evaluates environment markers (``python_version < "3.11"``) against the interpreter that runs it,
  not against ``--python-version`` (pypa/pip#11010, #13296): pip runs under a shim that makes its marker
  environment that of the target (CPython X on Linux x86_64);
* pip < 23.3 ``install`` checks each wheel's own Requires-Python (the project's included) against the
  running interpreter (pypa/pip#12216): the same shim hands the target version to the resolver;
* pip 23.2 does not widen ``--platform manylinux_2_28_x86_64`` to the older manylinux tags a glibc 2.28
  system accepts (``manylinux_2_27``, ``manylinux2014``, ...): every one of them is passed as a
  ``--platform``.
"""

from __future__ import annotations

import argparse
import email
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

REPO = Path(__file__).resolve().parents[1]
PYTHONS = ("3.10", "3.11", "3.12", "3.13", "3.14")
GLIBC_MINOR = 28  # manylinux_2_28: the oldest glibc the torch wheels support
LEGACY_MANYLINUX = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
PYPI_SIMPLE = "https://pypi.org/simple/"
PIP_TIMEOUT_S = 600  # one resolution; about 35 s on a fast network
BUILD_ATTEMPTS = 6  # resolutions per Python: each failed one may name one more sdist-only requirement
# table columns: heading -> distribution
COLUMNS = {
    "numpy": "numpy",
    "torch": "torch",
    "protobuf": "protobuf",
    "wandb": "wandb",
    "mediapipe": "mediapipe",
    "opencv": "opencv-contrib-python",
}

# Runs pip for the target Python (argv[1]: its marker environment, JSON): markers evaluate to the target's
# values, and the resolver checks Requires-Python against the target (pip < 23.3 "install" checks each
# wheel's own Requires-Python against the running interpreter, pypa/pip#12216; newer pip passes it itself).
PIP_SHIM = """\
import json, runpy, sys
from pip._vendor.packaging import markers
from pip._internal.cli.req_command import RequirementCommand
target = json.loads(sys.argv.pop(1))
host = markers.default_environment
markers.default_environment = lambda: {**host(), **target}
method = RequirementCommand.__dict__["make_resolver"]  # a classmethod or a staticmethod
def make_target_resolver(*args, **kwargs):
    kwargs.setdefault("py_version_info", tuple(map(int, target["python_version"].split("."))))
    return method.__func__(*args, **kwargs)
RequirementCommand.make_resolver = type(method)(make_target_resolver)
sys.argv[0] = "pip"
runpy.run_module("pip", run_name="__main__", alter_sys=True)
"""
# pip names a requirement it could not meet in one of these two forms (the second after backtracking)
UNSATISFIED = re.compile(r"(?:satisfies the requirement|depends on) (.+?)(?: \(from .*)?$", re.MULTILINE)


class CheckError(Exception):
    """A step before the resolutions failed (no PyPI, the wheel does not build); one line for the user."""


@dataclass(frozen=True)
class Check:
    """What one report says: the version chosen per distribution, and what is wrong with it."""

    versions: Mapping[str, str]  # canonical name -> version
    problems: tuple[str, ...]


@dataclass(frozen=True)
class Outcome:
    """One Python version's resolution."""

    python: str
    check: Check
    pip_error: tuple[str, ...]  # pip's last error lines, when it failed
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.check.problems


def check_report(report: Mapping[str, Any] | None, torch: str, project: str = "ditto-research") -> Check:
    """Check a ``pip install --report`` (None: pip found no resolution and wrote none).

    Problems: no report; ``project`` or torch missing; a distribution chosen twice (a second torch); torch
    other than ``torch`` exactly (a local label such as ``+cpu`` is allowed); numpy older than 2.
    """
    if report is None:
        return Check({}, ("pip found no resolution",))
    chosen = [
        (canonicalize_name(item["metadata"]["name"]), item["metadata"]["version"])
        for item in report.get("install", [])
    ]
    versions = dict(chosen)
    problems = []
    counts = Counter(name for name, _ in chosen)
    for name, count in sorted(counts.items()):
        if count > 1:
            found = ", ".join(v for n, v in chosen if n == name)
            problems.append(f"{name} chosen {count} times ({found})")
    if canonicalize_name(project) not in versions:
        problems.append(f"{project} is not in the resolution")
    if "torch" not in versions:
        problems.append("torch is not in the resolution")
    elif counts["torch"] == 1 and Version(Version(versions["torch"]).public) != Version(torch):
        problems.append(f"torch {versions['torch']} chosen, the pin is torch=={torch}")
    if "numpy" not in versions:
        problems.append("numpy is not in the resolution")
    elif Version(versions["numpy"]) < Version("2"):
        problems.append(f"numpy {versions['numpy']} chosen, numpy >= 2 expected")
    return Check(versions, tuple(problems))


def manylinux_platforms(glibc_minor: int = GLIBC_MINOR, arch: str = "x86_64") -> list[str]:
    """Every platform tag a manylinux_2_<glibc_minor> system accepts, newest first (PEP 600 + legacy)."""
    tags = []
    for minor in range(glibc_minor, 4, -1):
        tags.append(f"manylinux_2_{minor}_{arch}")
        if minor in LEGACY_MANYLINUX:
            tags.append(f"{LEGACY_MANYLINUX[minor]}_{arch}")
    return tags


def marker_environment(python: str) -> dict[str, str]:
    """PEP 508 marker values of CPython ``python`` (e.g. "3.10") on Linux x86_64."""
    return {
        "implementation_name": "cpython",
        "implementation_version": f"{python}.0",
        "os_name": "posix",
        "platform_machine": "x86_64",
        "platform_python_implementation": "CPython",
        "platform_system": "Linux",
        "python_full_version": f"{python}.0",
        "python_version": python,
        "sys_platform": "linux",
    }


def _pip(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=PIP_TIMEOUT_S
        )
    except subprocess.TimeoutExpired as e:
        raise CheckError(f"pip {args[0]} did not finish within {PIP_TIMEOUT_S} s") from e


def _last_lines(text: str, count: int = 8) -> tuple[str, ...]:
    return tuple([line for line in text.splitlines() if line.strip()][-count:])


def pip_error(output: str, count: int = 8) -> tuple[str, ...]:
    """The last ``count`` lines of pip's explanation (conflicts and ERROR lines) in its output."""
    keep, in_conflict = [], False
    for line in output.splitlines():
        if line.startswith("The conflict is caused by"):
            in_conflict = True
        elif line.startswith("To fix this") or not line.strip():
            in_conflict = False
        if in_conflict or line.startswith("ERROR"):
            keep.append(line.rstrip())
    return tuple(keep[-count:])


def require_pypi() -> None:
    """Raise CheckError when PyPI's simple index does not answer."""
    try:
        with urllib.request.urlopen(f"{PYPI_SIMPLE}pip/", timeout=30) as response:
            response.read(1)
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise CheckError(
            f"PyPI ({PYPI_SIMPLE}) is unreachable ({reason}); this check needs network access"
        ) from e


def build_project(wheelhouse: Path, scratch: Path) -> Path:
    """Build this checkout's wheel into ``wheelhouse`` from a copy (the build writes build/, egg-info)."""
    tree = scratch / "tree"
    shutil.copytree(
        REPO / "ditto_research", tree / "ditto_research", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, tree / name)
    for stale in wheelhouse.glob("ditto_research-*.whl"):
        stale.unlink()
    proc = _pip("wheel", "--no-deps", "-q", "-w", str(wheelhouse), str(tree))
    if proc.returncode != 0:
        raise CheckError(f"the project wheel does not build: {' | '.join(_last_lines(proc.stderr, 3))}")
    (wheel,) = wheelhouse.glob("ditto_research-*.whl")
    return wheel


@dataclass(frozen=True)
class Project:
    """The built wheel and what its metadata says that the check needs."""

    wheel: Path
    torch: str  # the version of Requires-Dist: torch==X
    requires_python: SpecifierSet

    @classmethod
    def read(cls, wheel: Path) -> Project:
        with zipfile.ZipFile(wheel) as archive:
            (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
            metadata = email.message_from_bytes(archive.read(name))
        for line in metadata.get_all("Requires-Dist", []):
            requirement = Requirement(line)
            pins = [s.version for s in requirement.specifier if s.operator == "=="]
            if requirement.name == "torch" and len(pins) == 1:
                return cls(wheel, pins[0], SpecifierSet(metadata.get("Requires-Python", "")))
        raise CheckError(f"{wheel.name} pins no torch version (Requires-Dist: torch==X)")


def sdist_only(requirement: str) -> bool:
    """Whether PyPI has only sdists of the releases that match ``requirement`` (e.g. "antlr4==4.9.*")."""
    try:
        parsed = Requirement(requirement)
    except InvalidRequirement:
        return False
    request = urllib.request.Request(
        f"{PYPI_SIMPLE}{canonicalize_name(parsed.name)}/",
        headers={"Accept": "application/vnd.pypi.simple.v1+json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            files = json.load(response)["files"]
    except (urllib.error.URLError, OSError):  # not on PyPI (404), or no answer: pip's error stands
        return False
    wheels = sdists = 0
    for file in files:
        name = file["filename"]
        try:
            if name.endswith(".whl"):
                version, is_wheel = parse_wheel_filename(name)[1], True
            elif name.endswith((".tar.gz", ".zip")):
                version, is_wheel = parse_sdist_filename(name)[1], False
            else:
                continue
        except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
            continue
        if file.get("yanked") or not parsed.specifier.contains(version, prereleases=True):
            continue
        wheels, sdists = wheels + is_wheel, sdists + (not is_wheel)
    return sdists > 0 and wheels == 0


def build_sdist_wheel(requirement: str, wheelhouse: Path) -> str:
    """Build ``requirement``'s sdist into a wheel; returns its file name (it must be pure Python)."""
    before = set(wheelhouse.glob("*.whl"))
    proc = _pip("wheel", "--no-deps", "-q", "-w", str(wheelhouse), requirement)
    built = sorted(set(wheelhouse.glob("*.whl")) - before)
    if proc.returncode != 0 or len(built) != 1:
        raise CheckError(
            f"{requirement} (sdist only) does not build: {' | '.join(_last_lines(proc.stderr, 3))}"
        )
    if not built[0].name.endswith("-none-any.whl"):
        raise CheckError(f"{requirement} publishes only an sdist with compiled code ({built[0].name})")
    return built[0].name


def resolve(python: str, wheel: Path, wheelhouse: Path, report: Path) -> tuple[dict[str, Any] | None, str]:
    """One binary-only dry-run resolution of ``wheel[dev]`` for CPython ``python``: (report, pip's output
    when it found none)."""
    report.unlink(missing_ok=True)
    platforms = [arg for tag in manylinux_platforms() for arg in ("--platform", tag)]
    with tempfile.TemporaryDirectory(prefix="target-") as target:
        args = [
            *("install", "--dry-run", "--ignore-installed", "--only-binary=:all:", "--progress-bar", "off"),
            *("--python-version", python, "--implementation", "cp", *platforms),
            *("--target", target, "--find-links", str(wheelhouse), "--report", str(report)),
            f"{wheel}[dev]",
        ]
        try:
            proc = subprocess.run(
                [sys.executable, "-c", PIP_SHIM, json.dumps(marker_environment(python)), *args],
                capture_output=True,
                text=True,
                timeout=PIP_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            return None, f"ERROR: pip did not finish within {PIP_TIMEOUT_S} s"
    if proc.returncode != 0 or not report.exists():
        return None, proc.stdout + proc.stderr
    return json.loads(report.read_text()), ""


def check_python(python: str, project: Project, wheelhouse: Path, built: set[str]) -> Outcome:
    """Resolve for ``python``, building sdist-only requirements (recorded in ``built``) as pip names them.

    A Python that the wheel's Requires-Python excludes fails at once: pip would backtrack through every
    other requirement before it gives up on the root.
    """
    started = time.monotonic()
    if Version(python) not in project.requires_python:
        problem = f"the wheel's Requires-Python ({project.requires_python}) excludes {python}"
        return Outcome(python, Check({}, (problem,)), (), time.monotonic() - started)
    for _ in range(BUILD_ATTEMPTS):
        report, output = resolve(python, project.wheel, wheelhouse, wheelhouse / f"report-{python}.json")
        if report is not None:
            break
        named = dict.fromkeys(r.strip() for r in UNSATISFIED.findall(output))
        missing = [r for r in named if r not in built and sdist_only(r)]
        if not missing:
            break
        for requirement in missing:
            name = build_sdist_wheel(requirement, wheelhouse)
            built.add(requirement)
            print(f"  {requirement} publishes only an sdist: built {name}", flush=True)
    error = () if report is not None else pip_error(output)
    return Outcome(python, check_report(report, project.torch), error, time.monotonic() - started)


def table(outcomes: Sequence[Outcome]) -> list[str]:
    """One line per Python: result, the versions chosen (COLUMNS), seconds."""
    rows = [["python", "result", *COLUMNS, "seconds"]]
    for o in outcomes:
        chosen = [o.check.versions.get(name, "-") for name in COLUMNS.values()]
        rows.append([o.python, "ok" if o.ok else "failed", *chosen, f"{o.seconds:.0f}"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def run(pythons: Sequence[str], wheelhouse: Path, scratch: Path) -> list[Outcome]:
    require_pypi()
    wheelhouse.mkdir(parents=True, exist_ok=True)
    project = Project.read(build_project(wheelhouse, scratch))
    print(
        f"built {project.wheel.name} (Requires-Python {project.requires_python}, torch=={project.torch}); "
        f"resolving for CPython {', '.join(pythons)}",
        flush=True,
    )
    outcomes, built = [], set()
    for python in pythons:
        outcome = check_python(python, project, wheelhouse, built)
        print(f"  {python}: {'ok' if outcome.ok else 'failed'} in {outcome.seconds:.0f} s", flush=True)
        outcomes.append(outcome)
    return outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--python",
        action="append",
        choices=PYTHONS,
        help="a CPython version to check (repeatable; default all)",
    )
    parser.add_argument(
        "--keep", type=Path, metavar="DIR", help="keep the wheelhouse and pip's reports in DIR"
    )
    args = parser.parse_args(argv)
    pythons = args.python or list(PYTHONS)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="check-resolution-") as scratch:
        wheelhouse = args.keep or Path(scratch) / "wheelhouse"
        try:
            outcomes = run(pythons, wheelhouse.resolve(), Path(scratch))
        except CheckError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    print("\n".join(table(outcomes)))
    print(f"total {time.monotonic() - started:.0f} s")
    failed = [o for o in outcomes if not o.ok]
    for o in failed:
        print(f"error: Python {o.python} does not resolve: {'; '.join(o.check.problems)}", file=sys.stderr)
        for line in o.pip_error:
            print(f"    {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
