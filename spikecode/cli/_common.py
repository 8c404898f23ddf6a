"""Small helpers shared by the CLI commands (private)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import click
from tqdm import tqdm

from spikecode.encoders.limits import DEFAULT_MAX_SPIKES
from spikecode.encoders.schemes import MAX_UNARY_T

#: ``--T``: a fixed number of steps, bounded before anything is allocated.
T_OPTION = click.option(
    "--T",
    "T",
    type=click.IntRange(1, MAX_UNARY_T),
    default=None,
    help="Fixed number of steps [default: minimal].",
)
#: ``--max-spikes``: the size bound of a train that is built (see spikecode.encode).
MAX_SPIKES_OPTION = click.option(
    "--max-spikes",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_SPIKES,
    show_default=True,
    help="Refuse to build a train of more spikes or step offsets than this.",
)


@contextmanager
def stages(names: Sequence[str], *, desc: str) -> Iterator[Any]:
    """A progress bar over named stages of a long command, on stderr.

    Yields a function ``advance(name)`` to call as each stage starts. The bar is shown
    only on a terminal (tqdm's ``disable=None``), so pipes and tests stay clean.
    """
    with tqdm(total=len(names), desc=desc, unit="step", disable=None, leave=False) as bar:

        def advance(name: str) -> None:
            bar.set_postfix_str(name)
            bar.update(1)

        yield advance


def format_value(value: Any) -> str:
    """Human-readable cell: fractions with 4 significant decimals, ints with separators."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.4g}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.4f}"
    if isinstance(value, list | tuple):
        return "×".join(str(v) for v in value) if value else "()"
    return str(value)


def echo_table(rows: Mapping[str, Any], *, title: str | None = None) -> None:
    """Print a two-column key/value table."""
    width = max(len(key) for key in rows)
    if title:
        click.echo(title)
    for key, value in rows.items():
        click.echo(f"  {key:<{width}}  {format_value(value)}")


def echo_json(obj: Any) -> None:
    """Print one JSON object on stdout."""
    click.echo(json.dumps(obj, indent=2, sort_keys=False))
