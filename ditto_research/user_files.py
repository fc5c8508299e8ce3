"""Text files a user hands us (a dataset CSV or YAML, a per-frame controls file), read so that none can
surprise a run.

- Text is UTF-8, with or without a byte-order mark (Excel saves "CSV UTF-8" with one). Anything else is one
  :class:`InputError` naming the file, the byte offset and line of the first byte that is not UTF-8, and the
  fix, instead of a UnicodeDecodeError traceback or a header column called ``\\ufeffsource``.
- Every CSV goes through :func:`read_csv` (header names stripped, malformed rows one line).
- YAML / JSON go through :func:`load_structured`, which is bounded before anything is built: the size from
  the file's stat (optional), no YAML anchors or aliases (361 bytes of nested aliases expand to gigabytes:
  "billion laughs"), a maximum nesting depth (YAML from the event stream, JSON after a parse whose recursion
  is caught), and libyaml's C parser when PyYAML has it.

Errors name the file and the problem, never quote the file's contents.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ditto_research.errors import InputError

__all__ = [
    "column_problems",
    "decode_text",
    "list_path",
    "load_structured",
    "parse_csv",
    "read_csv",
    "read_text",
]

_BOM = b"\xef\xbb\xbf"


def decode_text(data: bytes, what: str) -> str:
    """``data`` as UTF-8 text, a leading byte-order mark dropped; InputError naming ``what``, the byte
    offset and the line of the first byte that is not UTF-8."""
    skip = len(_BOM) if data.startswith(_BOM) else 0
    try:
        return data[skip:].decode("utf-8")
    except UnicodeDecodeError as e:
        offset = skip + e.start
        line = data.count(b"\n", 0, offset) + 1
        raise InputError(
            f"{what} is not UTF-8 text (byte 0x{data[offset]:02x} at offset {offset}, line {line}); "
            "save it as UTF-8 (with or without BOM)"
        ) from e


def read_text(path: Path, what: str, max_bytes: int | None = None, fix: str = "") -> str:
    """The UTF-8 text of ``path``. With ``max_bytes``, a larger file is refused from its stat, unread (the
    line ends with ``fix``, what to do instead)."""
    try:
        if max_bytes is not None:
            size = path.stat().st_size
            if size > max_bytes:
                raise InputError(
                    f"{what} is {size:,} bytes, over the {max_bytes / 2**20:g} MB limit for this file"
                    + (f"; {fix}" if fix else "")
                )
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"{what} cannot be read ({e.strerror or e})") from e
    return decode_text(data, what)


def parse_csv(text: str, what: str) -> tuple[list[str], list[dict[str, str]]]:
    """The header (names stripped) and the rows (``{name: value}``, values stripped; cells past the header
    dropped, missing ones empty) of CSV ``text``."""
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = [name.strip() for name in reader.fieldnames or []]
        rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    except csv.Error as e:
        raise InputError(f"{what} is not a valid CSV file ({e})") from e
    return header, rows


def read_csv(path: Path, what: str) -> tuple[list[str], list[dict[str, str]]]:
    """:func:`parse_csv` of the file ``path`` (UTF-8 with or without BOM)."""
    return parse_csv(read_text(path, what), what)


def column_problems(names: list[str], required: tuple[str, ...], allowed: tuple[str, ...]) -> str | None:
    """``"missing a, b; unknown c"`` for a header that lacks a required column or has one not allowed, else
    None (the lists' readers add which file and what the columns are)."""
    missing = [c for c in required if c not in names]
    unknown = sorted(set(names) - set(allowed))
    parts = [f"missing {', '.join(missing)}"] * bool(missing) + [f"unknown {', '.join(unknown)}"] * bool(
        unknown
    )
    return "; ".join(parts) or None


def list_path(value: str, list_file: Path) -> Path | None:
    """A path cell of a list file: ``~`` expanded, relative paths taken from the list's folder; None when the
    cell is empty."""
    value = value.strip()
    if not value:
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else list_file.parent / path


def load_structured(
    path: Path, what: str, *, max_depth: int, form: str, max_bytes: int | None = None, fix: str = ""
) -> Any:
    """The content of a YAML file, or a JSON one (``.json``), checked before anything is built from it.

    Args:
        path: the file.
        what: how the errors name it (``"control.ctrl_info_file x.yaml"``).
        max_depth: the most containers (mappings, lists) nested inside each other the format has.
        form: the format in words, for the too-deep error (``"{frame: {control: value}}"``).
        max_bytes, fix: see :func:`read_text`.

    Raises:
        InputError: not UTF-8, too big, not valid YAML / JSON, YAML anchors or aliases, nested too deep.
    """
    text = read_text(path, what, max_bytes, fix)
    too_deep = f"{what} nests deeper than {max_depth} levels; its form is {form}"
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except RecursionError as e:
            raise InputError(too_deep) from e
        except ValueError as e:  # JSONDecodeError, and an integer past Python's digit limit
            raise InputError(f"{what} is not valid json: {_first_line(e)}") from e
        if _depth(data) > max_depth:
            raise InputError(too_deep)
        return data
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when PyYAML was built with it
    try:
        for depth, event in _yaml_depths(yaml.parse(text, Loader=loader)):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
                raise InputError(
                    f"{what} uses YAML anchors or aliases (&name / *name), which it may not; write every "
                    "value out in full (PyYAML's dump writes them for an object it meets twice)"
                )
            if depth > max_depth:
                raise InputError(too_deep)
        return yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader, after the checks above
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or _first_line(e)  # not the context lines: they quote the file
        if "nesting depth" in problem:  # libyaml's own limit, met while scanning ahead of the first event
            raise InputError(too_deep) from e
        raise InputError(f"{what} is not valid YAML: {problem}") from e
    except ValueError as e:  # an integer past Python's digit limit
        raise InputError(f"{what} is not valid YAML: {_first_line(e)}") from e
    except RecursionError as e:
        raise InputError(too_deep) from e


def _yaml_depths(events: Iterator[Any]) -> Iterator[tuple[int, Any]]:
    """Each YAML event with the number of collections open around it (its own included)."""
    import yaml

    depth = 0
    for event in events:
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
        yield depth, event
        if isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def _depth(data: Any) -> int:
    """How many containers (dicts, lists) are nested inside each other in parsed JSON (no recursion)."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        value, level = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
