"""Small helpers shared by the CLI commands (private)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import click
from tqdm import tqdm

from spikecode.errors import LARGER, Remedy


def flag(argument: str) -> str:
    """The flag of a Python parameter: ``trust_remote_code`` -> ``--trust-remote-code``.

    Every spikecode command names its options after the library parameters they feed
    (click's convention, ``_`` spelled ``-``), so one rule covers them all.
    """
    return "--" + argument.replace("_", "-")


def flag_remedy(remedy: Remedy) -> str:
    """A :class:`~spikecode.errors.Remedy` in command-line terms.

    ``saturate=True`` -> ``--saturate``; ``T=None`` -> ``leaving out --T``; a larger
    ``T`` -> ``a larger --T``; ``integrator='I'`` -> ``--integrator I`` (after "try").
    """
    name = flag(remedy.argument)
    if remedy.value is LARGER:
        return f"a larger {name}"
    if remedy.value is None:
        return f"leaving out {name}"
    if remedy.value is True:
        return name
    return f"{name} {remedy.value}"


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


class ZeroPointType(click.ParamType):
    """``--zero-point``: ``auto`` or an integer (unsigned codes, SPEC §3)."""

    name = "auto|INT"

    def convert(self, value: Any, param: Any, ctx: Any) -> int | str:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        text = str(value).strip()
        if text.lower() == "auto":
            return "auto"
        try:
            return int(text)
        except ValueError:
            self.fail(f"takes 'auto' or an integer, not {value!r}", param, ctx)


ZERO_POINT = click.option(
    "--zero-point",
    type=ZeroPointType(),
    default="auto",
    show_default=True,
    help="Unsigned codes (binary, bitwise) carry count - zero point; 'auto' = min(0, min "
    "count). With a fixed --T, choose it so the counts that matter fit.",
)

#: Share of elements above which ``--saturate`` clipping is reported as a warning: beyond
#: 1 % the train no longer describes the activations (a few outliers clipped is the point
#: of saturating; most of the tensor clipped is a wrong --T or --zero-point).
SATURATION_WARN_SHARE = 0.01


def warn_saturation(clipped: int, elements: int, what: str = "") -> None:
    """Print a warning on stderr when saturation clipped more than 1 % of the elements."""
    if elements and clipped > SATURATION_WARN_SHARE * elements:
        where = f" in {what}" if what else ""
        click.echo(
            f"WARNING: --saturate clipped {clipped:,} of {elements:,} elements{where} "
            f"({clipped / elements:.1%}); the train no longer describes the activations. "
            "Use a larger --T, or --zero-point for unsigned codes",
            err=True,
        )


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
