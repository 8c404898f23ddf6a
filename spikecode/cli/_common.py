"""Small helpers shared by the CLI commands (private).

Light by rule: this module and every command module import at their top only the
standard library, click, this module and light spikecode modules (errors, constants,
the scheme table); numpy, torch, transformers, onnx, nir, matplotlib and the Numba
kernels are imported inside the command functions that use them, so ``--help`` and
option errors answer at once (tests/test_cli_light.py; docs/developing.rst, "Imports").
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from spikecode.encoders.limits import DEFAULT_MAX_SPIKES
from spikecode.encoders.schemes import MAX_UNARY_T, SCHEMES
from spikecode.errors import LARGER, Remedy, SpikecodeError

#: The code every command uses unless --scheme says otherwise: the report's
#: (SpikingBrain's released Int2Spike code, SPEC §3).
DEFAULT_SCHEME = "bitwise-bidirectional"
#: --scheme of the report and plot commands: a stats file may lack the default code.
REPORT_SCHEME_HELP = (
    f"Spike code [default: {DEFAULT_SCHEME}, every command's; a stats file without it: "
    "the file's first]."
)


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
    "--t",
    "T",
    type=click.IntRange(1, MAX_UNARY_T),
    default=None,
    help="Fixed number of steps [default: minimal]. --t is the same option.",
)
#: ``--max-spikes``: the size bound of a train that is built (see spikecode.encode).
MAX_SPIKES_OPTION = click.option(
    "--max-spikes",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_SPIKES,
    show_default=True,
    help="Refuse to build a train of more spikes or step offsets than this.",
)


def scheme_option(
    *, default: str | None = DEFAULT_SCHEME, help: str = "Spike code (SPEC §3)."
) -> Callable[..., Any]:
    """``-s/--scheme``: one of the five codes; every command's default is the report's."""
    return click.option(
        "-s",
        "--scheme",
        type=click.Choice(list(SCHEMES)),
        default=default,
        show_default=default is not None,
        help=help,
    )


def out_option(*, help: str, required: bool = False, dir_okay: bool = False) -> Callable[..., Any]:
    """``-o/--out``: the file (or folder) a command writes."""
    return click.option(
        "-o",
        "--out",
        type=click.Path(path_type=Path, dir_okay=dir_okay),
        required=required,
        help=help,
    )


# -- progress ---------------------------------------------------------------------------

#: Seconds a command runs before progress lines appear in a log (so quick runs and
#: tests stay silent), and seconds between two count lines. Override with the
#: environment variables SPIKECODE_PROGRESS_DELAY and SPIKECODE_PROGRESS_INTERVAL.
#: ``SPIKECODE_PROGRESS_DELAY=inf`` turns the lines off.
PROGRESS_DELAY = 5.0
PROGRESS_INTERVAL = 30.0


def _seconds(variable: str, default: float) -> float:
    try:
        value = float(os.environ.get(variable, default))
    except ValueError:
        return default
    return value if value >= 0 else default  # NaN and negatives: the default


class _LogProgress:
    """Progress as plain lines on stderr, for logs, CI and nohup (stderr not a terminal).

    A line when a stage starts and a count line at most every PROGRESS_INTERVAL seconds
    (and at the end of the count), all only once the command has run PROGRESS_DELAY
    seconds; the first line also names the stage already under way.
    """

    def __init__(self, desc: str, total: int | None, unit: str) -> None:
        self.desc, self.total, self.unit = desc, total, unit
        self.delay = _seconds("SPIKECODE_PROGRESS_DELAY", PROGRESS_DELAY)
        self.interval = _seconds("SPIKECODE_PROGRESS_INTERVAL", PROGRESS_INTERVAL)
        self.start = time.monotonic()
        self.done = 0
        self.stage_name: str | None = None
        self.stage_said = True
        self.last_count = -math.inf

    def _say(self, text: str) -> None:
        elapsed = time.monotonic() - self.start
        click.echo(f"spikecode {self.desc}: {text} [{elapsed:.0f} s]", err=True)

    def _due(self) -> bool:
        return time.monotonic() - self.start >= self.delay

    def stage(self, name: str) -> None:
        self.stage_name, self.stage_said = name, False
        if self._due():
            self._say(name)
            self.stage_said = True

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        final = self.total is not None and self.done >= self.total
        if not self._due() or (now - self.last_count < self.interval and not final):
            return
        if not self.stage_said and self.stage_name is not None:
            self._say(self.stage_name)
            self.stage_said = True
        of = f"/{self.total:,}" if self.total is not None else ""
        share = f" ({self.done / self.total:.0%})" if self.total else ""
        self._say(f"{self.done:,}{of} {self.unit}s{share}")
        self.last_count = now


class _BarProgress:
    """Progress as a tqdm bar on a terminal (erased when done)."""

    def __init__(self, desc: str, total: int | None, unit: str) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=desc, unit=unit, leave=False, file=sys.stderr)

    def stage(self, name: str) -> None:
        self.bar.set_postfix_str(name)

    def update(self, n: int = 1) -> None:
        self.bar.update(n)


class _NoProgress:
    """No progress at all (the other ranks of a distributed run)."""

    def stage(self, name: str) -> None:
        pass

    def update(self, n: int = 1) -> None:
        pass


@contextmanager
def progress(
    desc: str, total: int | None = None, unit: str = "step", *, shown: bool = True
) -> Iterator[Any]:
    """Progress of a long command on stderr; yields an object with ``stage`` and ``update``.

    ``stage(name)`` as each stage starts, ``update(n)`` as ``n`` more of ``total``
    ``unit``s are done. On a terminal: a tqdm bar. Elsewhere (logs, CI, nohup): plain
    lines, see :class:`_LogProgress`. ``shown=False``: nothing. Standard output is
    never touched.
    """
    kind: Any = _BarProgress if sys.stderr.isatty() else _LogProgress
    reporter = kind(desc, total, unit) if shown else _NoProgress()
    try:
        yield reporter
    finally:
        if isinstance(reporter, _BarProgress):
            reporter.bar.close()


@contextmanager
def stages(names: Sequence[str], *, desc: str) -> Iterator[Callable[[str], None]]:
    """Progress over named stages of a command; yields ``advance(name)`` (see progress)."""
    with progress(desc, total=None) as shown:
        yield shown.stage


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


def emit_rendered(report: Any, fmt: str, out: Path | None) -> None:
    """Print ``report.render(fmt)``, or write it atomically to ``out`` and say so on stderr.

    The output of `spikecode report ...` and `spikecode plan`: one rule, so both print
    and write alike.
    """
    from spikecode.io import atomic_write  # not at the top: this module stays light

    text = report.render(fmt)
    if out is None:
        click.echo(text, nl=False)
        return
    with atomic_write(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    click.echo(f"wrote {out}", err=True)


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
            records = parser._long_opt if name.startswith("--") else parser._short_opt
            record = records[name]
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
    """``-k/--k`` with several values (:class:`NumberListOption`), into ``k_values``.

    ``--ks`` (the old name on ``report tradeoff`` and ``plot tradeoff``) is a hidden alias.
    """
    return click.option(
        "-k",
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


class OneKOption(NumberListOption):
    """``-k/--k`` of a command that uses one k: the list grammar, exactly one value.

    The same parser as :func:`k_values_option` (so ``--k 2 3`` means the same everywhere);
    several values are refused naming --k and the commands that take several, rather
    than taking the extra numbers as positional arguments.
    """

    def process_value(self, ctx: click.Context, value: Any) -> Any:
        values = super().process_value(ctx, value)
        if not values:
            return None
        ks = parse_k(values)
        if len(ks) > 1:
            given = " ".join(f"{v:g}" for v in ks)
            names, here = [], ctx
            while here.parent is not None:  # the command's path below the program name
                names.append(here.info_name or "")
                here = here.parent
            raise SpikecodeError(
                f"--k takes one value in 'spikecode {' '.join(reversed(names))}', "
                f"got {given}; several k at once: spikecode report tradeoff --k {given} "
                "(or calibrate, evaluate, plot tradeoff)"
            )
        return ks[0]


def k_option(
    *, default: float | None, help: str = "Threshold divisor k > 0."
) -> Callable[..., Any]:
    """``-k/--k`` taking one value (:class:`OneKOption`), into ``k``."""
    return click.option(
        "-k",
        "--k",
        "k",
        cls=OneKOption,
        default=() if default is None else (str(default),),
        show_default=default is not None,
        metavar="K",
        help=help,
    )


#: ``-k`` and ``-s`` of the report and plot commands (a stats file's own k and codes).
REPORT_K = k_option(
    default=None, help="Threshold divisor [default: 3; a stats file's k closest to 3]."
)
REPORT_SCHEME = scheme_option(default=None, help=REPORT_SCHEME_HELP)
#: ``--table`` of the commands that report energy.
ENERGY_TABLE = click.option(
    "--table",
    "table",
    default=None,
    help="Energy table: a JSON file or a shipped name [default: horowitz-45nm].",
)
