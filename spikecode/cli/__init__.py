"""The ``spikecode`` command line: a click group whose commands live in sibling modules.

Every command raises :class:`~spikecode.errors.SpikecodeError` for user errors; the group
turns it into a one-line message on stderr and exit status 1, never a traceback. The
error's remedies are named as command-line flags (``--saturate``, ``leaving out --T``), never as
Python arguments (:func:`spikecode.cli._common.flag_remedy`). SIGTERM is handled like
Ctrl-C: no temporary is left and old outputs survive.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

import click

from spikecode._atomic import terminate_as_interrupt
from spikecode.cli._common import _is_number_list, flag_remedy
from spikecode.errors import SpikecodeError

#: Longest error message the CLI prints; longer ones (echoing hostile input) are cut.
MAX_MESSAGE = 500


def one_line(message: str, limit: int = MAX_MESSAGE) -> str:
    """An error message as one line of at most ``limit`` characters."""
    text = " ".join(message.split())
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _with_flags(command: click.Command) -> None:
    """Make ``command`` report SpikecodeError naming only the flags it has."""
    flags = frozenset(o for p in command.params if isinstance(p, click.Option) for o in p.opts)
    callback: Callable[..., Any] = command.callback  # type: ignore[assignment]

    @functools.wraps(callback)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return callback(*args, **kwargs)
        except SpikecodeError as err:
            spell = functools.partial(flag_remedy, flags=flags)
            raise click.ClickException(one_line(err.render(spell, lead="try"))) from None

    command.callback = run


_EXTRA = re.compile(r"Got unexpected extra arguments? \((?P<values>[^)]*)\)")


def _k_hint(message: str) -> str:
    """Click's "unexpected extra argument" for stray numbers, told where numbers go."""
    found = _EXTRA.search(message)
    if found is None:
        return message
    values = found["values"].split()
    if not values or not all(_is_number_list(v) for v in values):
        return message
    return (
        f"{message}; numbers are k values only right after --k (several: --k 2 3 4, "
        "where the command takes several)"
    )


class _Group(click.Group):
    """A click group that reports SpikecodeError as a clean CLI error."""

    def invoke(self, ctx: click.Context) -> Any:
        # SIGTERM unwinds like Ctrl-C (temporaries removed, old outputs kept), then still
        # ends the process by SIGTERM.
        try:
            with terminate_as_interrupt():
                return super().invoke(ctx)
        except SpikecodeError as err:
            raise click.ClickException(one_line(err.render(flag_remedy, lead="try"))) from None
        except OSError as err:  # a file problem no reader named: still one line
            where = f" [file={err.filename}]" if err.filename else ""
            raise click.ClickException(one_line(f"{err.strerror or err}{where}")) from None
        except click.ClickException as err:  # usage errors echo what was typed
            err.message = one_line(_k_hint(err.message), MAX_MESSAGE - 100)  # room for prefix
            raise
        except MemoryError:
            raise click.ClickException(
                "out of memory; try a smaller input or fewer samples"
            ) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="spikecode")
def main() -> None:
    """Spike-code SpikingBrain-style language models (SPEC: adaptive threshold, five codes)."""


def _register() -> None:
    from spikecode.cli.calibrate import advise_command, calibrate_command, evaluate_command
    from spikecode.cli.encode import encode_command
    from spikecode.cli.env import env_command
    from spikecode.cli.export import export_group
    from spikecode.cli.merge import merge_stats_command
    from spikecode.cli.plan import plan_command
    from spikecode.cli.plot import plot_group
    from spikecode.cli.report import report_group

    main.add_command(encode_command)
    main.add_command(calibrate_command)
    main.add_command(evaluate_command)
    main.add_command(advise_command)
    main.add_command(merge_stats_command)
    main.add_command(export_group)
    main.add_command(report_group)
    main.add_command(plot_group)
    main.add_command(plan_command)
    main.add_command(env_command)
    pending: list[click.Command] = list(main.commands.values())
    while pending:
        command = pending.pop()
        if isinstance(command, click.Group):
            pending.extend(command.commands.values())
        else:
            _with_flags(command)


_register()

__all__ = ["main"]
