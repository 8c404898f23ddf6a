"""``spikecode report``: sparsity, energy and k trade-off tables of a source.

A SOURCE is a calibration stats file (``spikecode calibrate --out stats.json``), an
activation file (``--key`` picks one array; without it each array is a layer) or a
checkpoint folder (run on ``--data``); without SOURCE the bundled sample is used.
The tables are built by :mod:`spikecode.reports`; this module parses options and prints
or writes (atomically) the rendered text.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from spikecode.cli._common import (
    ENERGY_TABLE,
    REPORT_K,
    REPORT_SCHEME,
    emit_rendered,
    k_values_option,
    out_option,
    parse_k,
)
from spikecode.errors import SpikecodeError

#: The report formats (spikecode.reports.FORMATS; a test checks they agree).
FORMATS = ("table", "json", "csv", "markdown")

__all__ = ["open_source", "parse_ints", "report_group", "source_options"]


def parse_ints(text: str | None, option: str) -> tuple[int, ...] | None:
    """Parse a comma-separated list of integers (``"16,64,256"``)."""
    if text is None:
        return None
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise SpikecodeError(f"{option} takes comma-separated integers, got {text!r}") from None
    if not values:
        raise SpikecodeError(f"{option} takes comma-separated integers, got {text!r}")
    return values


def source_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """SOURCE argument, ``--key``, ``--data`` and ``--samples``, shared by report and plot."""
    func = click.option(
        "--samples",
        type=click.IntRange(min=1),
        default=None,
        help="Checkpoint folder: how many samples of --data to run [default: 8].",
    )(func)
    func = click.option(
        "--data",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help="Checkpoint folder: text file (one sample per line) or JSONL, as for calibrate "
        "[default: the bundled corpus].",
    )(func)
    func = click.option(
        "--key",
        default=None,
        help="Array to use when SOURCE holds several [default: each array is a layer].",
    )(func)
    return click.argument(
        "source", metavar="[SOURCE]", required=False, type=click.Path(path_type=Path)
    )(func)


def open_source(
    source: Path | None, key: str | None, data: Path | None, samples: int | None, desc: str
) -> Any:
    """:func:`spikecode.reports.load_source`, with progress lines for a checkpoint folder."""
    from spikecode.cli._common import plural, progress
    from spikecode.reports import load_source

    if source is None or not source.is_dir():  # files load in seconds: no progress
        return load_source(source, key=key, data=data, samples=samples)
    with progress(desc) as shown:
        shown.stage(f"running {source} on {plural(samples or 8, 'sample')}")
        return load_source(source, key=key, data=data, samples=samples)


def _format_option(func: Callable[..., Any]) -> Callable[..., Any]:
    # A plain string checked by check_format: an unknown format is a one-line error with
    # exit status 1, like every other bad input.
    return click.option(
        "--format",
        "fmt",
        default="table",
        show_default=True,
        metavar="|".join(FORMATS),
        help="Output format.",
    )(func)


def _out_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return out_option(help="Write to this file (atomically) instead of printing.")(func)


@click.group("report")
def report_group() -> None:
    """Sparsity, energy and k trade-off reports of a stats file or activations.

    SOURCE is a calibration stats file (.json from spikecode calibrate), an activation
    file (.npy, .npz, .safetensors, .pt; a 3-D array is read as [layer, token,
    feature]; a file of several arrays, such as numpy.savez of collect_linear_inputs,
    is one layer per array unless --key picks one), or a checkpoint folder, run on the
    first --samples texts of --data. Without SOURCE the bundled MiniLM sample is used.
    """


@report_group.command("sparsity")
@source_options
@REPORT_K
@REPORT_SCHEME
@click.option(
    "--by",
    default="layer",
    show_default=True,
    metavar="layer|family|expert",
    help="A row per layer, per layer family, or per routed expert of a MoE stats file.",
)
@_format_option
@_out_option
def sparsity_command(
    source: Path | None,
    key: str | None,
    data: Path | None,
    samples: int | None,
    k: float | None,
    scheme: str | None,
    by: str,
    fmt: str,
    out: Path | None,
) -> None:
    """Per-layer (or grouped) and total spike statistics (SPEC §5)."""
    from spikecode.reports import check_format, sparsity_report

    check_format(fmt)
    source_ = open_source(source, key, data, samples, "report")
    emit_rendered(sparsity_report(source_, k, scheme, by=by), fmt, out)


@report_group.command("energy")
@source_options
@REPORT_K
@REPORT_SCHEME
@click.option(
    "--avg-spikes",
    type=float,
    default=None,
    help="What-if without data: equation 24 at this many spikes per element.",
)
@ENERGY_TABLE
@click.option(
    "--memory",
    default=None,
    help="Add the weight-fetch model at this memory level (dram, sram_1mb, ...).",
)
@click.option(
    "--block-sizes", default=None, help="Block sizes for block skipping [default: 16,64,256]."
)
@click.option(
    "--out-features",
    type=int,
    default=None,
    help="Fan-out of each layer of an activation file [default: in_features].",
)
@_format_option
@_out_option
def energy_command(
    source: Path | None,
    key: str | None,
    data: Path | None,
    samples: int | None,
    k: float | None,
    scheme: str | None,
    avg_spikes: float | None,
    table: str | None,
    memory: str | None,
    block_sizes: str | None,
    out_features: int | None,
    fmt: str,
    out: Path | None,
) -> None:
    """Energy per layer: dense FP16/INT8 against spike-driven arithmetic (SPEC §6).

    With --memory, also the weight-fetch energy with dense fetching, channel skipping
    and block skipping. With --avg-spikes, the report's equation 24 for that many
    spikes per element, without any data.
    """
    from spikecode.reports import check_format, energy_report, equation24_report

    check_format(fmt)
    sizes = parse_ints(block_sizes, "--block-sizes")
    if avg_spikes is not None:
        given = {
            "SOURCE": source,
            "--key": key,
            "--data": data,
            "--samples": samples,
            "--k": k,
            "--scheme": scheme,
            "--memory": memory,
            "--block-sizes": sizes,
            "--out-features": out_features,
        }
        extra = [name for name, value in given.items() if value is not None]
        if extra:
            raise SpikecodeError(
                "--avg-spikes is a what-if without data; it does not combine with "
                + ", ".join(extra)
            )
        emit_rendered(equation24_report(avg_spikes, table), fmt, out)
        return
    report = energy_report(
        open_source(source, key, data, samples, "report"),
        k,
        scheme,
        table=table,
        memory=memory,
        block_sizes=sizes,
        out_features=out_features,
    )
    emit_rendered(report, fmt, out)


@report_group.command("tradeoff")
@source_options
@k_values_option(default=None, help="k values [default: 2 2.5 3 3.5 4; a stats file's own].")
@REPORT_SCHEME
@click.option(
    "--by",
    default=None,
    metavar="family|expert|layer",
    help="A row per k and group (layer family, routed expert of a MoE stats file, or "
    "layer) [default: the network's totals per k].",
)
@_format_option
@_out_option
def tradeoff_command(
    source: Path | None,
    key: str | None,
    data: Path | None,
    samples: int | None,
    k_values: tuple[str, ...],
    scheme: str | None,
    by: str | None,
    fmt: str,
    out: Path | None,
) -> None:
    """Sparsity and error against k (the report's table 11)."""
    from spikecode.reports import check_format, tradeoff_report

    check_format(fmt)
    values = parse_k(k_values) if k_values else None
    source_ = open_source(source, key, data, samples, "report")
    emit_rendered(tradeoff_report(source_, values, scheme, by=by), fmt, out)


@report_group.command("experts")
@source_options
@REPORT_K
@REPORT_SCHEME
@ENERGY_TABLE
@_format_option
@_out_option
def experts_command(
    source: Path | None,
    key: str | None,
    data: Path | None,
    samples: int | None,
    k: float | None,
    scheme: str | None,
    table: str | None,
    fmt: str,
    out: Path | None,
) -> None:
    """Routing and spikes per expert of a MoE model's stats file (SPEC §8).

    Tokens and load per routed expert, its spikes per element, sparsity and energy per
    token; per MoE layer the load imbalance, the macro (routing) and micro (spiking)
    sparsity and the two combined; for the model the energy against dense FP16 of the
    same active size and of all experts.
    """
    from spikecode.reports import check_format, experts_report

    check_format(fmt)
    report = experts_report(
        open_source(source, key, data, samples, "report"), k, scheme, table=table
    )
    emit_rendered(report, fmt, out)
