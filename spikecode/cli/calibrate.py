"""``spikecode calibrate``, ``spikecode evaluate`` and ``spikecode advise``.

- ``calibrate CHECKPOINT_DIR``: stream a text set through the model and measure every
  projection's spike input for several k (:func:`spikecode.calibration.calibrate`); print a
  summary per k and optionally write the stats file (``--out stats.json`` plus the CSV
  beside it).
- ``evaluate CHECKPOINT_DIR``: the float model against its W8ASpike twin, one row per k
  (:func:`spikecode.calibration.evaluate.evaluate`).
- ``advise STATS``: per-layer k from a stats file for a sparsity or error target
  (:func:`spikecode.calibration.advisor.advise`).

``--k`` takes several values after one flag (``--k 2 2.5 3``), repeats (``--k 2 --k 2.5``)
or one quoted, comma- or space-separated list (``--k "2 2.5 3"``, ``--k 2,2.5,3``); the
forms combine (:class:`spikecode.cli._common.NumberListOption`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from spikecode._constants import DEFAULT_RECIPE, RECIPES
from spikecode.cli._common import (
    DEFAULT_SCHEME,
    echo_json,
    format_value,
    k_values_option,
    out_option,
    parse_k,
    plural,
    progress,
    scheme_option,
)
from spikecode.encoders.schemes import SCHEMES
from spikecode.errors import SpikecodeError

__all__ = ["advise_command", "calibrate_command", "evaluate_command", "parse_k"]

_DEFAULT_K = "2 2.5 3 3.5 4"
_DEFAULT_SAMPLES = 128
#: ``evaluate`` without ``--full``: a first look in seconds rather than minutes (the full
#: run is six passes over 128 samples; this is four passes over 16).
_QUICK_K = "2 3 4"
_QUICK_SAMPLES = 16
_WINDOW_NOTE = (
    "* window-3 sparsity: each element occupies ceil(len(c)/3)*3 steps, len = its own "
    "minimal length under the code, len(0) = 1 (SPEC §5)"
)
_TOTALS = (
    ("spikes_per_element", "spikes/elem"),
    ("firing_rate", "firing rate"),
    ("sparsity", "sparsity"),
    ("silent_fraction", "silent"),
    ("within_7_fraction", "|c|<=7"),
    ("window3_sparsity", "win-3 sparsity*"),
)


def recipe_note(recipe: str) -> str:
    """One line saying which inputs a recipe spikes (for the CLI summaries)."""
    if recipe == "release":
        return (
            "spike-driven: every projection input but mlp.down_proj (float, unspiked) and "
            "the window-attention q (per head); window-attention k, v INT8 (not spikes)"
        )
    return "spike-driven: the input of every selected linear projection (lm_head excluded)"


def _parse_error_rows(value: str) -> int | None:
    if value.strip().lower() == "all":
        return None
    try:
        rows = int(value)
    except ValueError:
        rows = 0
    if rows < 1:
        raise SpikecodeError(f"--error-rows takes a positive integer or 'all', got {value!r}")
    return rows


def _parse_schemes(values: Sequence[str]) -> tuple[str, ...]:
    names = [part for value in values for part in re.split(r"[,\s]+", value.strip()) if part]
    for name in names:
        if name not in SCHEMES:
            raise SpikecodeError(f"unknown scheme {name!r}; choose from {', '.join(SCHEMES)}")
    return tuple(dict.fromkeys(names)) or (DEFAULT_SCHEME,)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[format_value(v) if not isinstance(v, str) else v for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    click.echo("  " + "  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
    for row in cells:
        click.echo("  " + "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))


def _model_options(samples: str) -> Callable[..., Any]:
    """Options shared by calibrate and evaluate (data, batching, selection, device).

    ``samples`` is the help text of ``--samples`` (its default differs).
    """

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(_options(samples)):
            func = option(func)
        return func

    return decorate


def _options(samples_help: str) -> list[Any]:
    return [
        click.argument(
            "checkpoint_dir",
            type=click.Path(path_type=Path, file_okay=False),
            metavar="CHECKPOINT_DIR",
        ),
        click.option(
            "--data",
            type=click.Path(path_type=Path, dir_okay=False),
            default=None,
            help="Text file (one sample per line) or JSONL with 'text' or 'input_ids' "
            "[default: the bundled corpus].",
        ),
        click.option("--samples", type=int, default=None, help=samples_help),
        click.option("--batch-size", type=int, default=16, show_default=True),
        click.option(
            "--max-length",
            type=int,
            default=None,
            help="Longest sample in tokens [default: the model's max_position_embeddings].",
        ),
        click.option("--truncate", is_flag=True, help="Cut longer samples instead of refusing."),
        click.option(
            "--include",
            multiple=True,
            help="Projections to measure or spike (fnmatch pattern on module names, repeatable) "
            "[default: all].",
        ),
        click.option(
            "--exclude",
            multiple=True,
            help="Layers to leave alone (repeatable), added to the default lm_head.",
        ),
        click.option("--device", default=None, help="Where the model runs (cpu, cuda, cuda:1)."),
        click.option(
            "--dtype",
            type=click.Choice(["float32", "float64", "float16", "bfloat16"]),
            default=None,
            help="Parameter dtype [default: as stored].",
        ),
        click.option(
            "--trust-remote-code",
            is_flag=True,
            help="Allow Python code shipped in a Hugging Face folder to run.",
        ),
        click.option(
            "--format",
            "fmt",
            type=click.Choice(["table", "json"]),
            default="table",
            show_default=True,
        ),
        click.option(
            "--recipe",
            type=click.Choice(RECIPES),
            default=DEFAULT_RECIPE,
            show_default=True,
            help="What is spiked: every projection (all-linear), or the shipped W8ASpike "
            "model as the release computes it (release: down_proj float, window-attention q "
            "spiked, k/v INT8).",
        ),
    ]


def _load(checkpoint_dir: Path, device: str | None, dtype: str | None, trust: bool) -> Any:
    from spikecode.models.checkpoint import load_checkpoint

    return load_checkpoint(checkpoint_dir, device=device, dtype=dtype, trust_remote_code=trust)


def _selection(include: Sequence[str], exclude: Sequence[str]) -> dict[str, tuple[str, ...]]:
    from spikecode._select import DEFAULT_EXCLUDE, DEFAULT_INCLUDE

    return {
        "include": tuple(include) or DEFAULT_INCLUDE,
        "exclude": (*DEFAULT_EXCLUDE, *exclude),
    }


def _data(data: Path | None, samples: int) -> Any:
    from spikecode.calibration import load_calibration_data

    loaded = load_calibration_data(data, samples)
    if len(loaded) < samples:
        click.echo(
            f"note: {loaded.source} holds {plural(len(loaded), 'sample')}; using all of them",
            err=True,
        )
    return loaded


def _check_out(out: Path | None, suffix: str) -> None:
    if out is None:
        return
    if out.suffix.lower() != suffix:
        raise SpikecodeError(f"--out must name a {suffix} file", file=str(out))
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise SpikecodeError("the folder of --out does not exist", file=str(out))


@click.command("calibrate")
@_model_options(f"Samples used [default: {_DEFAULT_SAMPLES}].")
@k_values_option(default=_DEFAULT_K, help="Threshold divisors.")
@click.option(
    "-s",
    "--scheme",
    "schemes",
    multiple=True,
    default=(DEFAULT_SCHEME,),
    show_default=True,
    help="Code(s) whose statistics are recorded (repeatable); the summary uses the first.",
)
@click.option(
    "--error-rows",
    default="64",
    show_default=True,
    help="Most rows per batch and layer for the output error, or 'all'.",
)
@click.option(
    "--error-stride",
    type=int,
    default=128,
    show_default=True,
    help="The output error uses one row in this many per batch and layer (at least one).",
)
@out_option(help="Write the stats file (.json) and a CSV beside it.")
@click.option(
    "--generate",
    type=int,
    default=None,
    help="Measure decoding instead of the prompts: generate N tokens per sample (greedy) "
    "and count only the decode steps' inputs, one token per step.",
)
def calibrate_command(
    checkpoint_dir: Path,
    data: Path | None,
    samples: int | None,
    batch_size: int,
    max_length: int | None,
    truncate: bool,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    device: str | None,
    dtype: str | None,
    trust_remote_code: bool,
    fmt: str,
    recipe: str,
    k_values: tuple[str, ...],
    schemes: tuple[str, ...],
    error_rows: str,
    error_stride: int,
    out: Path | None,
    generate: int | None,
) -> None:
    """Measure the spike statistics of every linear projection's input on a text set.

    CHECKPOINT_DIR is a SpikingBrain (GLA-SWA) checkpoint or a Hugging Face model
    folder. The texts run once through the model; every k and code is measured in that
    one pass. The summary gives, per k, the totals over all projections (weighted by
    element count) for the first --scheme, and the W8ASpike output error. --recipe
    chooses which inputs are spike-driven; --generate N measures N decode steps per
    sample instead of the prompts.
    """
    from spikecode.calibration import calibrate, save_stats
    from spikecode.calibration.distributed import init_from_env

    ks = parse_k(k_values)
    rows_cap = _parse_error_rows(error_rows)
    scheme_names = _parse_schemes(schemes)
    _check_out(out, ".json")
    texts = _data(data, _DEFAULT_SAMPLES if samples is None else samples)
    # Under torchrun: join the process group; rank 0 reports and writes the file.
    group, device = init_from_env(device)
    rank0 = group is None or group[0] == 0
    share = len(texts) if group is None else -(-len(texts) // group[1])  # this rank's
    try:
        with progress("calibrate", share, "sample", shown=rank0) as shown:
            shown.stage(f"loading {checkpoint_dir}")
            loaded = _load(checkpoint_dir, device, dtype, trust_remote_code)
            shown.stage(f"running {plural(share, 'sample')}, k {' '.join(map(str, ks))}")
            stats = calibrate(
                loaded,
                texts,
                k=ks,
                schemes=scheme_names,
                batch_size=batch_size,
                max_length=max_length,
                truncate=truncate,
                error_rows=rows_cap,
                error_stride=error_stride,
                recipe=recipe,
                generate=generate,
                progress=shown.update if rank0 else None,
                **_selection(include, exclude),
            )
            if rank0 and out is not None:
                shown.stage(f"writing {out}")
    finally:
        if group is not None:
            import torch.distributed as dist

            dist.destroy_process_group()
    if not rank0:
        return
    written = None if out is None else save_stats(out, stats)
    _report_calibration(checkpoint_dir, stats, scheme_names[0], fmt, written, group)


def _report_calibration(
    checkpoint_dir: Path,
    stats: Any,
    scheme: str,
    fmt: str,
    written: tuple[Path, Path] | None,
    group: tuple[int, int] | None,
) -> None:
    """Print the per-k summary (table or JSON) of a calibration."""
    totals = {key: dict(stats.totals[key][scheme]) for key in stats.totals}
    steps = stats.recipe.generate
    # With --generate the statistics count the generated tokens (one per decode step and
    # sample), never the prompts' tokens: both counts are reported, apart.
    generated = None if steps is None else stats.data.samples * steps
    if fmt == "json":
        echo_json(
            {
                "checkpoint": str(checkpoint_dir),
                "recipe": stats.recipe.name,
                "generate": stats.recipe.generate,
                "layers": len(stats.layers),
                "tokens": stats.data.tokens if generated is None else generated,
                "prompt_tokens": stats.data.tokens,
                "generated_tokens": generated,
                "samples": stats.data.samples,
                "scheme": scheme,
                "schemes": list(stats.schemes),
                "error_rows": stats.error_rows,
                "error_stride": stats.error_stride,
                "k": totals,
                "processes": 1 if group is None else group[1],
                **({"out": str(written[0]), "csv": str(written[1])} if written else {}),
            }
        )
        return
    click.echo(
        f"spikecode calibrate  {checkpoint_dir}  ({stats.checkpoint.kind}, "
        f"{stats.checkpoint.dtype})"
    )
    what = (
        plural(stats.data.tokens, "prompt token")
        if generated is None
        else f"{plural(generated, 'generated token')} measured ({plural(steps, 'decode step')} "
        f"per sample) after {plural(stats.data.tokens, 'prompt token')} (not measured)"
    )
    click.echo(
        f"  recipe {stats.recipe.name}: {plural(len(stats.layers), 'spike-driven input')}, "
        f"{plural(stats.data.samples, 'sample')}, {what} from {stats.data.source}; code {scheme}"
        + ("" if group is None else f"; {group[1]} processes (torch.distributed)")
    )
    click.echo(f"  {recipe_note(stats.recipe.name)}")
    header = ["k", *(label for _, label in _TOTALS), "output error"]
    rows = [
        [key, *(values[name] for name, _ in _TOTALS), values["output_rel_error"]]
        for key, values in totals.items()
    ]
    _table(header, rows)
    click.echo(f"  {_WINDOW_NOTE}")
    rows_note = (
        "every row"
        if stats.error_rows is None
        else f"1 row in {stats.error_stride} per batch (at most {stats.error_rows})"
    )
    click.echo(
        "  output error: ||y_spike - y_float|| / ||y_float|| of each W8ASpike layer against "
        f"the float layer, on {rows_note}, element-weighted over layers"
    )
    if written:
        click.echo(f"  written: {written[0]} and {written[1]}")


@click.command("evaluate")
@_model_options(f"Samples used [default: {_QUICK_SAMPLES}; {_DEFAULT_SAMPLES} with --full].")
@k_values_option(
    default=None,
    help=f"Global k values, one row each [default: {_QUICK_K}; {_DEFAULT_K} with --full; "
    "none with --k-map].",
)
@click.option(
    "--full",
    is_flag=True,
    help=f"The report's setting: {_DEFAULT_SAMPLES} samples and k {_DEFAULT_K} (minutes, "
    f"not seconds) [default: a quick look, {_QUICK_SAMPLES} samples and k {_QUICK_K}].",
)
@click.option(
    "--k-map",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Per-layer k (spikecode advise --out file, or a JSON object {layer: k}).",
)
@scheme_option(help="Code of the spike statistics in the table.")
def evaluate_command(
    checkpoint_dir: Path,
    data: Path | None,
    samples: int | None,
    batch_size: int,
    max_length: int | None,
    truncate: bool,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    device: str | None,
    dtype: str | None,
    trust_remote_code: bool,
    fmt: str,
    recipe: str,
    k_values: tuple[str, ...],
    full: bool,
    k_map: Path | None,
    scheme: str,
) -> None:
    """Compare the float model with its W8ASpike fake-quant twin, one row per k.

    Every selected projection gets INT8 weights (SPEC §4) and adaptive-threshold spike
    inputs (SPEC §2). Causal language models report perplexity, encoders the cosine
    similarity of their mean-pooled embeddings to the float model's. The model is
    restored afterwards. --recipe release spikes what the shipped W8ASpike model spikes.

    Without --full it is a quick first look (16 samples, k 2 3 4); --full runs the
    report's setting (128 samples, k 2 2.5 3 3.5 4). --samples and --k override either.
    """
    from spikecode.calibration.advisor import load_k_map
    from spikecode.calibration.evaluate import TASKS, evaluate

    default_k, default_samples = (
        (_DEFAULT_K, _DEFAULT_SAMPLES) if full else (_QUICK_K, _QUICK_SAMPLES)
    )
    ks = parse_k(k_values) if k_values else (None if k_map else parse_k((default_k,)))
    mapping = None if k_map is None else load_k_map(k_map)
    texts = _data(data, default_samples if samples is None else samples)
    passes = 1 + len(ks or ()) + (mapping is not None)
    with progress("evaluate", len(texts) * passes, "sample") as shown:
        shown.stage(f"loading {checkpoint_dir}")
        loaded = _load(checkpoint_dir, device, dtype, trust_remote_code)
        shown.stage(f"running {plural(passes, 'pass')} over {plural(len(texts), 'sample')}")
        report = evaluate(
            loaded,
            texts,
            k=ks,
            k_map=mapping,
            batch_size=batch_size,
            max_length=max_length,
            truncate=truncate,
            scheme=scheme,
            progress=shown.update,
            recipe=recipe,
            **_selection(include, exclude),
        )
    predicted = None if k_map is None else _advised_totals(k_map)
    if fmt == "json":
        extra = {} if predicted is None else {"advice_predicted": predicted}
        echo_json({"checkpoint": str(checkpoint_dir), **report.to_dict(), **extra})
        return
    metric = "perplexity" if report.task == "perplexity" else "cosine"
    click.echo(f"spikecode evaluate  {checkpoint_dir}  — {TASKS[report.task]}")
    click.echo(
        f"  recipe {report.recipe}: {plural(report.layers, 'spike-driven input')}, "
        f"{plural(report.samples, 'sample')}, {plural(report.tokens, 'token')} "
        f"from {report.source}; code {scheme}"
    )
    click.echo(f"  {recipe_note(report.recipe)}")
    header = [
        "k",
        f"{metric} float",
        f"{metric} spiked",
        "delta",
        "spikes/elem",
        "sparsity",
        "win-3 sparsity*",
        "|c|<=7",
    ]
    rows = [
        [
            row.label,
            report.float_metric,
            row.metric,
            row.delta,
            row.stats["spikes_per_element"],
            row.stats["sparsity"],
            row.stats[f"window{report.window}_sparsity"],
            row.stats["within_7_fraction"],
        ]
        for row in report.rows
    ]
    _table(header, rows)
    click.echo("  sparsity = 1 - firing rate (spikes / (elements x T)), on the spiked model")
    click.echo(f"  {_WINDOW_NOTE}")
    if predicted is not None:
        click.echo(
            f"  k-map: spikecode advise predicted sparsity {format_value(predicted['sparsity'])}"
            f" ({predicted['scheme']}) from the stats file, i.e. the float model's "
            f"activations on the calibration set; this row measures the spiked model on "
            f"{plural(report.samples, 'sample')}: every spiked layer changes the inputs of "
            "the layers after it, and the samples differ, so the two need not agree"
        )
    if not full:
        click.echo(
            f"  a quick look; --full runs the report's setting ({_DEFAULT_SAMPLES} samples, "
            f"k {_DEFAULT_K})"
        )


@click.command("advise")
@click.argument("stats_file", type=click.Path(path_type=Path, dir_okay=False), metavar="STATS")
@click.option(
    "--target-sparsity",
    type=float,
    default=None,
    help="Reach at least this global sparsity (1 - spikes / (elements x T) over all "
    "layers), with the least error.",
)
@click.option(
    "--max-error",
    type=float,
    default=None,
    help="Keep every layer's output error at or below this, with the most sparsity.",
)
@scheme_option(
    default=None,
    help="Code whose sparsity counts [default: the file's first, which is calibrate's "
    f"first --scheme, {DEFAULT_SCHEME} unless given].",
)
@out_option(help="Write the advice (.json) for evaluate --k-map.")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
def advise_command(
    stats_file: Path,
    target_sparsity: float | None,
    max_error: float | None,
    scheme: str | None,
    out: Path | None,
    fmt: str,
) -> None:
    """Choose k per layer from a stats file for a sparsity or an error target.

    STATS is the file ``spikecode calibrate --out`` wrote; its k values are the choices.
    """
    from spikecode.calibration import k_key, load_stats
    from spikecode.calibration.advisor import advise, save_advice

    if (target_sparsity is None) == (max_error is None):
        raise SpikecodeError("give exactly one of --target-sparsity and --max-error")
    _check_out(out, ".json")
    stats = load_stats(stats_file)
    advice = advise(stats, target_sparsity=target_sparsity, max_error=max_error, scheme=scheme)
    if out is not None:
        save_advice(out, advice)
    if fmt == "json":
        echo_json({**advice.to_dict(), **({"out": str(out)} if out else {})})
        return
    goal = (
        f"global sparsity >= {advice.value:g}"
        if advice.target == "sparsity"
        else f"per-layer output error <= {advice.value:g}"
    )
    click.echo(f"spikecode advise  {stats_file}  — {goal} ({advice.scheme})")
    _table(
        ["layer", "k", "sparsity", "output error", "spikes/elem"],
        [
            [c.name, k_key(c.k), c.sparsity, c.output_rel_error, c.spikes_per_element]
            for c in advice.layers
        ],
    )
    t = advice.totals
    click.echo(
        f"  total: sparsity {format_value(t['sparsity'])}, output error "
        f"{format_value(t['output_rel_error'])} (element-weighted; largest layer "
        f"{format_value(advice.max_layer_error)}), spikes/elem "
        f"{format_value(t['spikes_per_element'])}"
    )
    click.echo(
        "  from the calibration (the float model's activations); evaluate --k-map measures "
        "the spiked model, whose later layers see the spiked earlier ones, so its sparsity "
        "differs by a little"
    )
    if out is not None:
        click.echo(f"  written: {out} (use: spikecode evaluate CHECKPOINT --k-map {out})")


def _advised_totals(path: Path) -> dict[str, Any] | None:
    """The totals an advice file predicted (None for a plain {layer: k} map)."""
    from spikecode.calibration.advisor import ADVICE_FORMAT
    from spikecode.io import read_json

    raw = read_json(path, "the k map file")
    if not isinstance(raw, dict) or raw.get("format") != ADVICE_FORMAT:
        return None
    totals = raw.get("totals")
    if not isinstance(totals, dict) or not isinstance(totals.get("sparsity"), int | float):
        return None
    return {**totals, "scheme": raw.get("scheme")}
