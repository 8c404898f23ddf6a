"""Energy tables: energy per arithmetic operation and per memory access.

A table is a JSON file (schema below). The package ships ``horowitz-45nm``, the 45 nm,
0.9 V figures of Horowitz (ISSCC 2014, doi:10.1109/ISSCC.2014.6757323) that the
SpikingBrain report cites in its section 5.5 (SPEC §6). Users pass their own table as a
path to a JSON file or as a dict with the same layout.

Schema (every key other than ``unit`` and ``operations`` is optional; no other top-level
key is accepted, so that a misspelt key is an error rather than silently ignored)::

    {
      "name": "my-node",                 # default: the file's stem, or "custom" for a dict
      "description": "...",
      "unit": "pJ",                      # one of fJ, pJ, nJ, uJ (µJ), mJ, J; applies to
                                         # every energy in the file
      "source": {"citation": "...", "doi": "..."},   # strings (or one string)
      "operations": {"int8_add": 0.03, "int8_mult": 0.2, "fp16_add": 0.4,
                     "fp16_mult": 1.1, "fp32_add": 0.9, "fp32_mult": 3.7, ...},
      "memory": {"access_bits": 64, "default_level": "dram",
                 "levels": {"sram_8kb": 10, "dram": 1300, ...}},
      "notes": ["...", "..."]
    }

``operations`` must hold at least :data:`REQUIRED_OPERATIONS`, the ones the energy model
uses; further rows (``int32_add``...) are kept. Memory levels give the energy of one
access of ``access_bits`` bits. Energies are finite and non-negative; they are stored in
pJ whatever the file's unit.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from types import MappingProxyType
from typing import Any

from spikecode._validate import as_path
from spikecode.errors import SpikecodeError
from spikecode.io import parse_json, path_kind, read_json, shipped_json_names

__all__ = [
    "DEFAULT_TABLE",
    "REQUIRED_OPERATIONS",
    "UNITS_IN_PJ",
    "EnergyTable",
    "available_tables",
    "load_table",
]

DEFAULT_TABLE = "horowitz-45nm"
"""Name of the table used when none is given (Horowitz, 45 nm, 0.9 V; SPEC §6)."""

REQUIRED_OPERATIONS = ("int8_add", "int8_mult", "fp16_add", "fp16_mult", "fp32_add", "fp32_mult")
"""Operations every table must define: the energy model's four modes use exactly these."""

UNITS_IN_PJ: Mapping[str, float] = MappingProxyType(
    {"fJ": 1e-3, "pJ": 1.0, "nJ": 1e3, "uJ": 1e6, "µJ": 1e6, "mJ": 1e9, "J": 1e12}
)
"""Accepted energy units and their size in picojoules."""

_TOP_KEYS = frozenset({"name", "description", "unit", "source", "operations", "memory", "notes"})
_MEMORY_KEYS = frozenset({"access_bits", "default_level", "levels"})
_TABLE_DIR = "tables"


def _is_number(value: Any) -> bool:
    # JSON true/false arrive as bool, a subclass of int: they are not energies.
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_energy(value: float, field_name: str, origin: str | None) -> None:
    if not math.isfinite(value) or value < 0:
        raise SpikecodeError(
            f"energy table field {field_name!r} must be a finite energy >= 0, got {value!r}",
            file=origin,
            field=field_name,
        )


@dataclass(frozen=True)
class EnergyTable:
    """Energy per operation and per memory access, in picojoules.

    Build one with :func:`load_table`; direct construction validates the values too.

    Parameters
    ----------
    name
        Short name of the table (``"horowitz-45nm"``).
    operations
        Operation name (``"int8_add"``, ``"fp16_mult"``...) to energy in pJ. Must contain
        :data:`REQUIRED_OPERATIONS`.
    memory_levels
        Memory level name (``"sram_8kb"``, ``"dram"``...) to energy in pJ of one access of
        ``access_bits`` bits. May be empty (then memory cannot be modelled).
    access_bits
        Width of one memory access in bits (64 in Horowitz's table).
    default_memory
        The level used when a memory function is given none; must be a key of
        ``memory_levels`` (or None).
    description, source, notes
        Documentation carried along into reports: ``source`` maps ``"citation"``,
        ``"doi"``... to strings.
    origin
        Where the table came from (file path, ``"<dict>"``); used in error messages,
        ignored by equality.
    """

    name: str
    operations: Mapping[str, float]
    memory_levels: Mapping[str, float] = field(default_factory=dict)
    access_bits: int = 64
    default_memory: str | None = None
    description: str = ""
    source: Mapping[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    origin: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        origin = self.origin
        operations = {str(k): float(v) for k, v in dict(self.operations).items()}
        levels = {str(k): float(v) for k, v in dict(self.memory_levels).items()}
        missing = [op for op in REQUIRED_OPERATIONS if op not in operations]
        if missing:
            raise SpikecodeError(
                f"energy table lacks the operation(s) {', '.join(missing)}",
                file=origin,
                field="operations." + missing[0],
            )
        for op, value in operations.items():
            _check_energy(value, f"operations.{op}", origin)
        for level, value in levels.items():
            _check_energy(value, f"memory.levels.{level}", origin)
        if (
            isinstance(self.access_bits, bool)
            or not isinstance(self.access_bits, numbers.Integral)
            or self.access_bits <= 0
        ):
            raise SpikecodeError(
                f"memory access width must be a positive whole number of bits, "
                f"got {self.access_bits!r}",
                file=origin,
                field="memory.access_bits",
            )
        if self.default_memory is not None and self.default_memory not in levels:
            raise SpikecodeError(
                f"default memory level {self.default_memory!r} is not one of the table's "
                f"levels {sorted(levels)}",
                file=origin,
                field="memory.default_level",
            )
        object.__setattr__(self, "operations", MappingProxyType(operations))
        object.__setattr__(self, "memory_levels", MappingProxyType(levels))
        object.__setattr__(self, "access_bits", int(self.access_bits))
        object.__setattr__(self, "source", MappingProxyType(dict(self.source)))
        object.__setattr__(self, "notes", tuple(self.notes))

    def op_pj(self, operation: str) -> float:
        """Energy of one operation, in pJ.

        Parameters
        ----------
        operation
            Row name, e.g. ``"int8_add"``.

        Returns
        -------
        float
            Energy in pJ.
        """
        try:
            return self.operations[operation]
        except KeyError:
            raise SpikecodeError(
                f"energy table {self.name!r} has no operation {operation!r}; it has "
                f"{sorted(self.operations)}",
                file=self.origin,
                field="operations." + operation,
            ) from None

    def add_pj(self, dtype: str) -> float:
        """Energy of one addition (an accumulate, AC) in ``dtype`` (``"int8"``...), in pJ."""
        return self.op_pj(f"{dtype}_add")

    def mac_pj(self, dtype: str) -> float:
        """Energy of one multiply-accumulate in ``dtype``: mult + add (SPEC §6), in pJ.

        With the default table: FP16 1.5 pJ, INT8 0.23 pJ, FP32 4.6 pJ.
        """
        return self.op_pj(f"{dtype}_mult") + self.op_pj(f"{dtype}_add")

    def access_pj(self, level: str | None = None) -> float:
        """Energy of one ``access_bits``-bit access to memory ``level``, in pJ.

        Parameters
        ----------
        level
            Level name; None means the table's ``default_memory``.

        Returns
        -------
        float
            Energy in pJ per access.
        """
        return self.memory_levels[self.resolve_level(level)]

    def resolve_level(self, level: str | None = None) -> str:
        """Return the memory level name ``level`` stands for (None → the default level)."""
        if level is None:
            if self.default_memory is None:
                raise SpikecodeError(
                    f"energy table {self.name!r} names no default memory level; pass one "
                    f"of {sorted(self.memory_levels)}",
                    file=self.origin,
                    field="memory.default_level",
                )
            return self.default_memory
        if level not in self.memory_levels:
            raise SpikecodeError(
                f"energy table {self.name!r} has no memory level {level!r}; it has "
                f"{sorted(self.memory_levels)}",
                file=self.origin,
                field="memory.levels." + str(level),
            )
        return level

    def to_dict(self) -> dict[str, Any]:
        """Return the table in its JSON file layout (energies in pJ).

        ``load_table(table.to_dict())`` gives back an equal table.
        """
        out: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "unit": "pJ",
            "source": dict(self.source),
            "operations": dict(self.operations),
        }
        if self.memory_levels:
            memory: dict[str, Any] = {"access_bits": self.access_bits}
            if self.default_memory is not None:
                memory["default_level"] = self.default_memory
            memory["levels"] = dict(self.memory_levels)
            out["memory"] = memory
        out["notes"] = list(self.notes)
        return out


def _table_dir() -> Any:
    return resources.files(__package__).joinpath(_TABLE_DIR)


def available_tables() -> tuple[str, ...]:
    """Names of the tables shipped with spikecode (``"horowitz-45nm"``...), sorted."""
    return shipped_json_names(_table_dir())


def _require_mapping(value: Any, field_name: str, origin: str | None) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise SpikecodeError(
            f"energy table field {field_name!r} must be a JSON object, got {type(value).__name__}",
            file=origin,
            field=field_name,
        )
    return value


def _require_string(value: Any, field_name: str, origin: str | None) -> str:
    if not isinstance(value, str):
        raise SpikecodeError(
            f"energy table field {field_name!r} must be a string, got {type(value).__name__}",
            file=origin,
            field=field_name,
        )
    return value


def _energies(
    section: Mapping[str, Any], prefix: str, scale: float, origin: str | None
) -> dict[str, float]:
    out = {}
    for key, value in section.items():
        name = f"{prefix}.{key}"
        if not _is_number(value):
            raise SpikecodeError(
                f"energy table field {name!r} must be a number, got {value!r}",
                file=origin,
                field=name,
            )
        try:
            converted = float(value)
        except OverflowError:
            converted = math.inf
        # Value checks (finite, >= 0) happen once, in EnergyTable.__post_init__.
        out[str(key)] = converted * scale
    return out


def _parse_table(data: Any, origin: str | None, default_name: str) -> EnergyTable:
    data = _require_mapping(data, "<top level>", origin)
    unknown = sorted(set(map(str, data)) - _TOP_KEYS)
    if unknown:
        raise SpikecodeError(
            f"energy table has unknown field(s) {unknown}; allowed: {sorted(_TOP_KEYS)}",
            file=origin,
            field=unknown[0],
        )
    if "unit" not in data:
        raise SpikecodeError(
            "energy table lacks the field 'unit' (one of " + ", ".join(UNITS_IN_PJ) + ")",
            file=origin,
            field="unit",
        )
    unit = data["unit"]
    if not isinstance(unit, str) or unit not in UNITS_IN_PJ:
        raise SpikecodeError(
            f"energy table has unknown unit {unit!r}; use one of {', '.join(UNITS_IN_PJ)}",
            file=origin,
            field="unit",
        )
    scale = UNITS_IN_PJ[unit]
    if "operations" not in data:
        raise SpikecodeError(
            "energy table lacks the field 'operations'", file=origin, field="operations"
        )
    operations = _energies(
        _require_mapping(data["operations"], "operations", origin), "operations", scale, origin
    )
    levels: dict[str, float] = {}
    access_bits: Any = 64
    default_level = None
    if "memory" in data:
        memory = _require_mapping(data["memory"], "memory", origin)
        unknown = sorted(set(map(str, memory)) - _MEMORY_KEYS)
        if unknown:
            raise SpikecodeError(
                f"energy table has unknown memory field(s) {unknown}; allowed: "
                f"{sorted(_MEMORY_KEYS)}",
                file=origin,
                field="memory." + unknown[0],
            )
        if "levels" not in memory:
            raise SpikecodeError(
                "energy table field 'memory' lacks 'levels'", file=origin, field="memory.levels"
            )
        levels = _energies(
            _require_mapping(memory["levels"], "memory.levels", origin),
            "memory.levels",
            scale,
            origin,
        )
        access_bits = memory.get("access_bits", 64)
        if "default_level" in memory:
            default_level = _require_string(memory["default_level"], "memory.default_level", origin)
    name = _require_string(data.get("name", default_name), "name", origin)
    description = _require_string(data.get("description", ""), "description", origin)
    source_value = data.get("source", {})
    if isinstance(source_value, str):
        source = {"citation": source_value}
    else:
        source = {
            str(key): _require_string(value, f"source.{key}", origin)
            for key, value in _require_mapping(source_value, "source", origin).items()
        }
    notes_value = data.get("notes", [])
    if isinstance(notes_value, str):
        notes_value = [notes_value]
    if not isinstance(notes_value, list):
        raise SpikecodeError(
            "energy table field 'notes' must be a list of strings", file=origin, field="notes"
        )
    notes = tuple(_require_string(note, "notes", origin) for note in notes_value)
    return EnergyTable(
        name=name,
        operations=operations,
        memory_levels=levels,
        access_bits=access_bits,
        default_memory=default_level,
        description=description,
        source=source,
        notes=notes,
        origin=origin,
    )


def _parse_text(text: str, origin: str, default_name: str) -> EnergyTable:
    return _parse_table(parse_json(text, "energy table", origin), origin, default_name)


def load_table(
    source: str | os.PathLike[str] | Mapping[str, Any] | EnergyTable | None = None,
) -> EnergyTable:
    """Load an energy table.

    Parameters
    ----------
    source
        None for the default table (:data:`DEFAULT_TABLE`, Horowitz 45 nm; SPEC §6); the
        name of a shipped table (see :func:`available_tables`); a path to a JSON table;
        a dict in the JSON layout (see the module docstring); or an :class:`EnergyTable`,
        returned as is.

    Returns
    -------
    EnergyTable
        The validated table, energies in pJ.

    Raises
    ------
    SpikecodeError
        Unknown table name, unreadable file, malformed JSON, unknown fields or unit,
        missing operations, energies that are not finite numbers >= 0. The error names
        the file and the field.
    """
    if source is None:
        source = DEFAULT_TABLE
    if isinstance(source, EnergyTable):
        return source
    if isinstance(source, Mapping):
        return _parse_table(source, "<dict>", "custom")
    if not isinstance(source, (str, os.PathLike)):
        raise SpikecodeError(
            "an energy table is a table name, a path to a JSON file, a dict or an "
            f"EnergyTable, got {type(source).__name__}"
        )
    if isinstance(source, str) and source in available_tables():
        entry = _table_dir().joinpath(source + ".json")
        return _parse_text(entry.read_text(encoding="utf-8"), str(entry), source)
    path = as_path(source, "source")
    if path_kind(path) is None:
        looks_like_name = isinstance(source, str) and not path.suffix and len(path.parts) == 1
        if looks_like_name:
            raise SpikecodeError(
                f"no energy table named {source!r}; shipped tables: "
                f"{', '.join(available_tables())} (or give a path to a JSON file)",
                table=source,
            )
        raise SpikecodeError("energy table file not found", file=str(path))
    return _parse_table(read_json(path, "energy table"), str(path), path.stem)
