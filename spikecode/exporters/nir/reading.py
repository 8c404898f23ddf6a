"""Checks behind :func:`~spikecode.exporters.nir.load_nir` (private).

A NIR export is read from files of unknown origin: the folder's index, the graph files
it lists and the metadata inside each graph. Every value is checked for its type and
range before use, and every file is a regular file inside the folder (a symbolic link
could lead anywhere).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from spikecode._atomic import name_max
from spikecode._validate import short_repr
from spikecode.errors import SpikecodeError
from spikecode.io import os_cause

__all__ = [
    "check_graph_file",
    "index_entries",
    "meta_array",
    "meta_bool",
    "meta_float",
    "meta_int",
    "meta_text",
]


def _fail(key: str, expected: str, value: Any, label: str) -> SpikecodeError:
    return SpikecodeError(
        f"graph metadata {key!r} must be {expected}, not {short_repr(value, 60)}", file=label
    )


def meta_int(meta: Mapping[str, Any], key: str, label: str, minimum: int | None = None) -> int:
    """An integer metadata value (Python or NumPy, 0-d), at least ``minimum``."""
    value = meta[key]
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise _fail(key, "an integer", value, label)
    if minimum is not None and value < minimum:
        raise _fail(key, f"an integer >= {minimum}", value, label)
    return int(value)


def meta_float(meta: Mapping[str, Any], key: str, label: str) -> float:
    """A finite real metadata value."""
    value = meta[key]
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    ok = isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )
    if not ok or not np.isfinite(value):
        raise _fail(key, "a finite number", value, label)
    return float(value)


def meta_bool(meta: Mapping[str, Any], key: str, label: str) -> bool:
    """A boolean metadata value."""
    value = meta[key]
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if not isinstance(value, bool | np.bool_):
        raise _fail(key, "true or false", value, label)
    return bool(value)


def meta_text(meta: Mapping[str, Any], key: str, label: str, default: str | None = None) -> str:
    """A text metadata value (``str``, or UTF-8 ``bytes`` as HDF5 may return it)."""
    value = meta.get(key, default)
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, bytes | np.bytes_):
        try:
            value = bytes(value).decode("utf8")
        except UnicodeDecodeError:
            raise _fail(key, "UTF-8 text", value, label) from None
    if not isinstance(value, str):
        raise _fail(key, "text", value, label)
    return str(value)


def meta_array(meta: Mapping[str, Any], key: str, label: str, dtype: Any) -> np.ndarray:
    """A numeric metadata array (finite values), as ``dtype`` (None: as stored)."""
    value = meta[key]
    try:
        array = np.asarray(value)
        if array.dtype.kind not in "biuf":
            raise TypeError
        array = array if dtype is None else array.astype(dtype)
    except (TypeError, ValueError, OverflowError):
        raise _fail(key, "a numeric array", value, label) from None
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise _fail(key, "a finite numeric array", value, label)
    return array


def index_entries(index: Mapping[str, Any], index_path: Path) -> list[tuple[str, str]]:
    """The ``(name, file)`` pairs of a folder index: at least one, no name or file twice."""
    projections = index.get("projections")
    if not isinstance(projections, list) or not projections:
        raise SpikecodeError("the index lists no projections", file=str(index_path))
    entries = []
    for i, entry in enumerate(projections):
        name = entry.get("name") if isinstance(entry, dict) else None
        file = entry.get("file") if isinstance(entry, dict) else None
        if not (isinstance(name, str) and name and isinstance(file, str) and file):
            raise SpikecodeError(
                f"index entry {i} must be an object with a text 'name' and 'file'",
                file=str(index_path),
            )
        entries.append((name, file))
    for what, position in (("projection", 0), ("file", 1)):
        seen: set[str] = set()
        for entry in entries:
            if entry[position] in seen:
                raise SpikecodeError(
                    f"the index lists the {what} {short_repr(entry[position], 60)} twice",
                    file=str(index_path),
                )
            seen.add(entry[position])
    return entries


def check_graph_file(folder: Path, file: str, index_path: Path) -> Path:
    """The path of a file an index lists: a plain name, a regular file in ``folder``.

    Refused: names with a separator, NUL, ``.`` or ``..`` (they leave the folder), names
    longer than the file system allows, missing files and anything but a regular file
    (a symbolic link could point out of the folder, a device could block).
    """
    if "\0" in file or Path(file).name != file or file in (".", ".."):
        raise SpikecodeError(
            f"index entry {short_repr(file, 60)} leaves the folder", file=str(index_path)
        )
    if len(os.fsencode(file)) > name_max(folder):
        raise SpikecodeError(
            f"index entry {short_repr(file, 60)} is longer than file names on this system "
            f"may be ({name_max(folder)} bytes)",
            file=str(index_path),
        )
    target = folder / file
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        raise SpikecodeError(
            f"the index lists {file}, which is missing", file=str(folder)
        ) from None
    except OSError as err:
        raise SpikecodeError(f"cannot read {file}: {os_cause(err)}", file=str(target)) from None
    if stat.S_ISLNK(mode):
        raise SpikecodeError(
            f"{file} is a symbolic link; a NIR folder is read only from its own regular files",
            file=str(target),
        )
    if not stat.S_ISREG(mode):
        raise SpikecodeError(f"{file} is not a regular file", file=str(target))
    return target
