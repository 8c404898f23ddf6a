"""Small helpers shared by the CLI commands (private)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import click
from tqdm import tqdm

from spikecode.encoders.limits import DEFAULT_MAX_SPIKES
from spikecode.encoders.schemes import MAX_UNARY_T
from spikecode.errors import LARGER, Remedy, SpikecodeError


def flag(argument: str) -> str:
    """The flag of a Python parameter: ``trust_remote_code`` -> ``--trust-remote-code``.

    Every spikecode command names its options after the library parameters they feed
    (click's convention, ``_`` spelled ``-``), so one rule covers them all.
    """
    return "--" + argument.replace("_", "-")


def flag_remedy(remedy: Remedy, flags: Collection[str] | None = None) -> str | None:
    """A :class:`~spikecode.errors.Remedy` in command-line terms.

    ``saturate=True`` -> ``--saturate``; ``T=None`` -> ``leaving out --T``; a larger
    ``T`` -> ``a larger --T``; ``integrator='I'`` -> ``--integrator I`` (after "try").
    None when ``flags`` (the options of the command that failed) lacks the flag: a
    command never suggests an option it does not have.
    """
    name = flag(remedy.argument)
    if flags is not None and name not in flags:
        return None
    if remedy.value is LARGER:
        return f"a larger {name}"
    if remedy.value is None:
        return f"leaving out {name}"
    if remedy.value is True:
        return name
    return f"{name} {remedy.value}"


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


def plural(n: int, noun: str) -> str:
    """``n`` and the noun in the right number: ``1 sample``, ``2 samples``, ``1,024 tokens``."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


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


# -- lists of k ----------------------------------------------------------------------------

_NUMBER = re.compile(r"[+]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_SEPARATORS = re.compile(r"[,\s]+")


def _is_number_list(token: str) -> bool:
    """Whether ``token`` is one or more plain numbers (``3``, ``2.5``, ``2,3``, ``"2 3"``)."""
    parts = [part for part in _SEPARATORS.split(token.strip()) if part]
    return bool(parts) and all(_NUMBER.fullmatch(part) for part in parts)


def parse_k(values: Sequence[str], option: str = "--k") -> tuple[float, ...]:
    """Parse k values given as repeats, comma- or space-separated lists (``("2", "2.5 3")``)."""
    result = []
    for value in values:
        for part in _SEPARATORS.split(value.strip()):
            if not part:
                continue
            try:
                result.append(float(part))
            except ValueError:
                raise SpikecodeError(f"{option} takes numbers, got {part!r}") from None
    if not result:
        raise SpikecodeError(f"{option} needs at least one number")
    return tuple(result)


class NumberListOption(click.Option):
    """An option that takes several numbers after one flag: ``--k 2 3 4``.

    Click options take a fixed number of values, so after the first value the option
    keeps taking the following arguments while they are plain numbers or lists of them
    (a positional argument such as a checkpoint folder ends the list; so does ``--``).
    Repeats (``--k 2 --k 3``) and comma or quoted lists (``--k 2,3``, ``--k "2 3"``) work
    too; every form gives strings for :func:`parse_k`. Extra option names in ``hidden``
    are accepted as old aliases but not shown in ``--help``.
    """

    def __init__(self, *args: Any, hidden_aliases: Sequence[str] = (), **kwargs: Any) -> None:
        kwargs["multiple"] = True
        super().__init__(*args, **kwargs)
        self.hidden_aliases = tuple(hidden_aliases)

    def add_to_parser(self, parser: Any, ctx: click.Context) -> None:
        super().add_to_parser(parser, ctx)
        # click has no public hook for a variable number of values; the parser's option
        # records (``_long_opt``, click >= 8.0) are the narrowest place to add one.
        for name in self.opts:
            record = parser._long_opt[name]
            take_one = record.process

            def take_all(value: Any, state: Any, take_one: Callable[..., Any] = take_one) -> None:
                take_one(value, state)
                while state.rargs and _is_number_list(state.rargs[0]):
                    take_one(state.rargs.pop(0), state)

            record.process = take_all

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        record = super().get_help_record(ctx)
        if record is None or not self.hidden_aliases:
            return record
        names = record[0]
        for alias in self.hidden_aliases:
            names = names.replace(f", {alias}", "")
        return names, record[1]


def k_values_option(*, default: str | None, help: str) -> Callable[..., Any]:
    """``--k`` with several values (:class:`NumberListOption`), into ``k_values``.

    ``--ks`` (the old name on ``report tradeoff`` and ``plot tradeoff``) is a hidden alias.
    """
    return click.option(
        "--k",
        "--ks",
        "k_values",
        cls=NumberListOption,
        hidden_aliases=("--ks",),
        default=() if default is None else (default,),
        show_default=default is not None,
        metavar="K...",
        help=help + " Several values: --k 2 2.5 3, --k 2,2.5,3 or --k 2 --k 2.5.",
    )
