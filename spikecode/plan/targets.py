"""Neuromorphic targets: the published per-core and per-chip limits, read from data files.

A target is a JSON file (schema below) so that another chip is a table away. The package
ships ``loihi2`` (Intel Loihi 2) and ``spinnaker2`` (SpiNNaker 2); users pass their own
table as a path to a JSON file or as a dict with the same layout.

Schema (no other key is accepted, so that a misspelt key is an error rather than a limit
silently ignored)::

    {
      "name": "loihi2",                   # default: the file's stem, or "custom"
      "description": "...",
      "chip": {"cores": 128, "neurons": 1048576, "synapses": 120000000,
               "synaptic_memory_bits": null},
      "core": {"neurons": 8192, "synapses": 937500, "synaptic_memory_bits": null},
      "neuron": {"fan_in": null, "fan_out": null},
      "weight_bits": 8,                   # bits one stored synaptic weight takes
      "state_bits": 24,                   # integrator state width (null: not published)
      "payload_bits": 24,                 # graded spike payload (null: binary spikes only)
      "sources": {"chip.cores": "citation", ...},
      "derived": {"core.neurons": "how it was derived from published figures", ...},
      "notes": ["...", "..."]
    }

Every limit is a positive integer or ``null`` (not published: the plan does not apply it);
``chip.cores`` and ``weight_bits`` are required.
Every number must name where it comes from: a key in ``sources`` (published) or in
``derived`` (computed from published figures, with the computation). A number without
either is refused, so that a table cannot carry an unexplained figure.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from spikecode.errors import SpikecodeError
from spikecode.io import path_kind, read_json, shipped_json_names

__all__ = [
    "CHIP_LIMITS",
    "CORE_LIMITS",
    "DEFAULT_TARGET",
    "NEURON_LIMITS",
    "Target",
    "available_targets",
    "load_target",
]

#: The target ``spikecode plan`` uses when none is given.
DEFAULT_TARGET = "loihi2"
#: Limits of one chip: neuro cores, neurons, synapses, synaptic memory (bits).
CHIP_LIMITS = ("cores", "neurons", "synapses", "synaptic_memory_bits")
#: Limits of one core: neurons, synapses, synaptic memory (bits).
CORE_LIMITS = ("neurons", "synapses", "synaptic_memory_bits")
#: Limits of one neuron: synapses into it (fan-in) and out of one input (fan-out).
NEURON_LIMITS = ("fan_in", "fan_out")
_WIDTHS = ("weight_bits", "state_bits", "payload_bits")
_TOP_KEYS = frozenset(
    {"name", "description", "chip", "core", "neuron", *_WIDTHS, "sources", "derived", "notes"}
)
_SECTIONS = {"chip": CHIP_LIMITS, "core": CORE_LIMITS, "neuron": NEURON_LIMITS}
_TABLE_DIR = "tables"


@dataclass(frozen=True)
class Target:
    """The limits of a neuromorphic chip that a deployment plan respects.

    Build one with :func:`load_target`; direct construction validates too.

    Attributes
    ----------
    name, description
        Short name (``"loihi2"``) and one line about the chip.
    chip, core, neuron
        Limit name → positive int or None (not published). Keys: :data:`CHIP_LIMITS`,
        :data:`CORE_LIMITS`, :data:`NEURON_LIMITS`.
    weight_bits
        Bits one stored synaptic weight takes on the chip (the INT8 weights need 8).
    state_bits, payload_bits
        Width of the integrating neuron's state and of a graded spike's payload; None
        when not published (payload: the chip has binary spikes only).
    sources, derived
        Field (``"core.neurons"``) → citation of the published figure, or → how the
        figure was derived from published ones.
    notes
        Further remarks carried into the plan.
    origin
        Where the table came from (file path, ``"<dict>"``); ignored by equality.
    """

    name: str
    chip: Mapping[str, int | None]
    core: Mapping[str, int | None]
    neuron: Mapping[str, int | None]
    weight_bits: int
    state_bits: int | None = None
    payload_bits: int | None = None
    description: str = ""
    sources: Mapping[str, str] = field(default_factory=dict)
    derived: Mapping[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    origin: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for section, keys in _SECTIONS.items():
            given = dict(getattr(self, section))
            unknown = sorted(set(given) - set(keys))
            if unknown:
                raise SpikecodeError(
                    f"target table has unknown {section} limit(s) {unknown}; allowed: {list(keys)}",
                    file=self.origin,
                    field=f"{section}.{unknown[0]}",
                )
            values = {key: _limit(given.get(key), f"{section}.{key}", self.origin) for key in keys}
            object.__setattr__(self, section, MappingProxyType(values))
        for width in _WIDTHS:
            value = getattr(self, width)
            if value is None and width == "weight_bits":
                raise SpikecodeError(
                    "target table lacks 'weight_bits'", file=self.origin, field="weight_bits"
                )
            object.__setattr__(self, width, _limit(value, width, self.origin))
        object.__setattr__(self, "sources", MappingProxyType(dict(self.sources)))
        object.__setattr__(self, "derived", MappingProxyType(dict(self.derived)))
        object.__setattr__(self, "notes", tuple(self.notes))
        for name, value in self.figures().items():
            if value is not None and name not in self.sources and name not in self.derived:
                raise SpikecodeError(
                    f"target table gives {name} = {value} without a source: name where it is "
                    "published in 'sources' or how it was derived in 'derived'",
                    file=self.origin,
                    field=name,
                )
        if self.chip["cores"] is None:
            raise SpikecodeError(
                "target table lacks chip.cores (cores per chip)",
                file=self.origin,
                field="chip.cores",
            )

    def figures(self) -> dict[str, int | None]:
        """Every number of the table by dotted field name (``"core.neurons"``)."""
        out: dict[str, int | None] = {}
        for section in _SECTIONS:
            out.update({f"{section}.{k}": v for k, v in getattr(self, section).items()})
        out.update({width: getattr(self, width) for width in _WIDTHS})
        return out

    def to_dict(self) -> dict[str, Any]:
        """The table in its JSON file layout; ``load_target(t.to_dict())`` is equal."""
        return {
            "name": self.name,
            "description": self.description,
            **{section: dict(getattr(self, section)) for section in _SECTIONS},
            **{width: getattr(self, width) for width in _WIDTHS},
            "sources": dict(self.sources),
            "derived": dict(self.derived),
            "notes": list(self.notes),
        }


def _limit(value: Any, name: str, origin: str | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise SpikecodeError(
            f"target table field {name!r} must be a positive integer or null, got {value!r}",
            file=origin,
            field=name,
        )
    return int(value)


def _table_dir() -> Any:
    return resources.files(__package__).joinpath(_TABLE_DIR)


def available_targets() -> tuple[str, ...]:
    """Names of the targets shipped with spikecode (``"loihi2"``...), sorted."""
    return shipped_json_names(_table_dir())


def _strings(value: Any, name: str, origin: str | None) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise SpikecodeError(
            f"target table field {name!r} must map field names to strings",
            file=origin,
            field=name,
        )
    return dict(value)


def _parse(data: Any, origin: str | None, default_name: str) -> Target:
    if not isinstance(data, Mapping):
        raise SpikecodeError("a target table must be a JSON object", file=origin)
    unknown = sorted(set(map(str, data)) - _TOP_KEYS)
    if unknown:
        raise SpikecodeError(
            f"target table has unknown field(s) {unknown}; allowed: {sorted(_TOP_KEYS)}",
            file=origin,
            field=unknown[0],
        )
    sections = {}
    for section in _SECTIONS:
        value = data.get(section, {})
        if not isinstance(value, Mapping):
            raise SpikecodeError(
                f"target table field {section!r} must be a JSON object",
                file=origin,
                field=section,
            )
        sections[section] = value
    name = data.get("name", default_name)
    description = data.get("description", "")
    notes = data.get("notes", [])
    if isinstance(notes, str):
        notes = [notes]
    for what, value in (("name", name), ("description", description)):
        if not isinstance(value, str):
            raise SpikecodeError(
                f"target table field {what!r} must be a string", file=origin, field=what
            )
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise SpikecodeError(
            "target table field 'notes' must be a list of strings", file=origin, field="notes"
        )
    return Target(
        name=name,
        description=description,
        chip=sections["chip"],
        core=sections["core"],
        neuron=sections["neuron"],
        weight_bits=data.get("weight_bits"),
        state_bits=data.get("state_bits"),
        payload_bits=data.get("payload_bits"),
        sources=_strings(data.get("sources", {}), "sources", origin),
        derived=_strings(data.get("derived", {}), "derived", origin),
        notes=tuple(notes),
        origin=origin,
    )


def load_target(
    source: str | os.PathLike[str] | Mapping[str, Any] | Target | None = None,
) -> Target:
    """Load a target table: a shipped name, a JSON file, a dict or a :class:`Target`.

    Parameters
    ----------
    source
        None (the default, :data:`DEFAULT_TARGET`), a shipped name
        (:func:`available_targets`), a path to a JSON file, or a dict in the file layout.

    Returns
    -------
    Target

    Raises
    ------
    SpikecodeError
        An unknown name, an unreadable file, or a table that breaks the schema (the
        message names the file and the field).
    """
    if isinstance(source, Target):
        return source
    if source is None:
        source = DEFAULT_TARGET
    if isinstance(source, Mapping):
        return _parse(source, "<dict>", "custom")
    text = os.fspath(source)
    if text in available_targets():
        entry = _table_dir().joinpath(f"{text}.json")
        with resources.as_file(entry) as path:
            return _parse(read_json(path, "the target table"), f"<shipped {text}>", text)
    if path_kind(text) is None and not text.endswith(".json"):
        raise SpikecodeError(
            f"unknown target {text!r}: name one of {', '.join(available_targets())} or a "
            "JSON file in the target-table layout"
        )
    path = Path(text)
    return _parse(read_json(path, "the target table"), str(path), path.stem)
