"""``spikecode export nir|lava|onnx|events``: graphs and spike streams for other tools.

SOURCE, as fits each format:

* nothing — the bundled sample: real all-MiniLM-L6-v2 activations plus the INT8 weights
  of the six query projections they feed (``spikecode.data``), a complete
  spike-driven layer;
* a checkpoint directory — every spiked projection of the model (SPEC §1: all linear
  layers but ``lm_head``; ``--include``/``--exclude`` narrow it);
* a calibration stats file — the checkpoint it was calibrated on; for bitwise NIR
  exports without ``--T`` the largest T the calibration saw at ``--k`` under
  ``--scheme`` (every calibrated token then fits);
* an activation file (events only: a graph needs weights).

NIR and ONNX hold the projections with INT8 weights (released ``weight_quantizer.scales``
are honoured); events hold the input spike trains of the projections. For bitwise codes
NIR needs a fixed number of steps: from the data for the bundled sample and activation
files (the minimal lossless T), from ``--T`` for checkpoints.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from spikecode._constants import NIR_INTEGRATORS as INTEGRATORS
from spikecode._constants import NIR_WEIGHTS as WEIGHTS
from spikecode.cli._common import (
    MAX_SPIKES_OPTION,
    T_OPTION,
    ZERO_POINT,
    echo_json,
    echo_table,
    k_option,
    out_option,
    scheme_option,
    stages,
    warn_saturation,
)
from spikecode.errors import SpikecodeError

if TYPE_CHECKING:
    import numpy as np

_SOURCE = click.argument(
    "source", metavar="[SOURCE]", required=False, type=click.Path(path_type=Path)
)
_OUT = out_option(required=True, help="Output file.")
_K = k_option(default=3.0, help="Threshold divisor k.")
_FORMAT = click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
_INCLUDE = click.option(
    "--include", multiple=True, help="Layer-name pattern to export (repeatable; default all)."
)
_EXCLUDE = click.option(
    "--exclude", multiple=True, help="Layer-name pattern to leave out (default: lm_head)."
)


_T = T_OPTION
_BIT_ORDER = click.option(
    "--bit-order", type=click.Choice(["msb", "lsb"]), default="msb", show_default=True
)


def _spike_options(command: Any) -> Any:
    """SOURCE, --out and the coding options shared by the nir and events exports."""
    for option in reversed((_SOURCE, _OUT, scheme_option(), _K, _T, _BIT_ORDER)):
        command = option(command)
    return command


class _FormatGroup(click.Group):
    """A group whose unknown-command error lists the supported formats."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else None
        if name is not None and not name.startswith("-") and name not in self.commands:
            raise click.UsageError(
                f"unknown export format {name!r}; supported formats: "
                f"{', '.join(sorted(self.commands))}",
                ctx,
            )
        return super().resolve_command(ctx, args)


@click.group("export", cls=_FormatGroup)
def export_group() -> None:
    """Export spike-driven graphs (NIR, Lava, ONNX) or spike events."""


# -- sources -----------------------------------------------------------------------------


def _sample_layers(
    k: float, include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()
) -> list[tuple[str, np.ndarray, np.ndarray, dict[str, np.ndarray]]]:
    """The bundled sample as (name, counts, vth, weights) per selected projection.

    ``--include``/``--exclude`` select as for checkpoints (a pattern matching nothing is
    refused with the names).
    """
    from spikecode._select import DEFAULT_EXCLUDE, DEFAULT_INCLUDE, select_names
    from spikecode.data import load_sample, load_sample_weights
    from spikecode.threshold import adaptive_counts

    acts, weights = load_sample(), load_sample_weights()
    names = [str(n) for n in weights["layers"]]
    chosen = set(select_names(names, include or DEFAULT_INCLUDE, exclude or DEFAULT_EXCLUDE))
    layers = []
    for i, name in enumerate(names):
        if name not in chosen:
            continue
        counts, vth = adaptive_counts(acts[i], k=k)
        layer = {key: weights[key][i] for key in ("weight_q", "scales", "bias")}
        layers.append((name, counts, vth, layer))
    return layers


def _checkpoint_projections(
    source: Path, k: float, include: tuple[str, ...], exclude: tuple[str, ...]
) -> tuple[Any, dict[str, Any]]:
    """Load a checkpoint (float32, CPU) and swap its projections for W8ASpike layers."""
    from spikecode.models.capture import DEFAULT_EXCLUDE, DEFAULT_INCLUDE, list_linear_layers
    from spikecode.models.checkpoint import load_checkpoint
    from spikecode.nn import W8ASpikeLinear, swap_linears

    loaded = load_checkpoint(source, dtype="float32")
    model = loaded.model.eval()
    include, exclude = include or DEFAULT_INCLUDE, exclude or DEFAULT_EXCLUDE
    selected = {name for name, _, _ in list_linear_layers(model, include, exclude)}
    scales = {n: s for n, s in loaded.quant_scales.items() if n in selected}
    names = swap_linears(model, k, include, exclude, scales=scales)
    modules = dict(model.named_modules())
    projections = {name: modules[name] for name in names}
    if not all(isinstance(m, W8ASpikeLinear) for m in projections.values()):
        raise SpikecodeError("internal: swapped layers are not W8ASpikeLinear")
    return loaded, projections


def _checkpoint_activations(
    source: Path,
    data: Path | None,
    samples: int,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
) -> list[tuple[str, np.ndarray]]:
    """Inputs of a checkpoint's spiked projections for the first texts of ``data``."""
    from spikecode.calibration import collect_checkpoint_inputs
    from spikecode.models.checkpoint import load_checkpoint

    loaded = load_checkpoint(source, dtype="float32")
    captured = collect_checkpoint_inputs(
        loaded, data, samples, include=include or None, exclude=exclude or None
    )
    return list(captured.items())


def _names(names: Any, shown: int = 8) -> str:
    """The first ``shown`` names, and how many more (a 7B model has hundreds)."""
    names = list(names)
    more = f", ... ({len(names) - shown} more)" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _is_checkpoint(source: Path | None) -> bool:
    from spikecode.io import path_kind

    if source is None:
        return False
    kind = path_kind(source)
    if kind is None:
        from spikecode._hub import hub_id_note

        note = hub_id_note(source)
        raise SpikecodeError(
            "no such file or directory" + (f": {note}" if note else ""), file=str(source)
        )
    return kind == "dir"


def _is_stats(source: Path | None) -> bool:
    from spikecode.io import path_kind

    return source is not None and path_kind(source) == "file" and source.suffix.lower() == ".json"


def _stats_checkpoint(source: Path) -> tuple[Path, Any]:
    """The checkpoint a stats file was calibrated on, and the stats."""
    from spikecode.calibration import load_stats

    stats = load_stats(source)
    path = stats.checkpoint.path
    if path is None or not Path(path).is_dir():
        raise SpikecodeError(
            f"the checkpoint this stats file was calibrated on is not available: {path}",
            file=str(source),
        )
    return Path(path), stats


def _calibrated_T(stats: Any, k: float, scheme: str, source: Path) -> int:
    """Largest T any layer needed at ``k`` under ``scheme`` during calibration."""
    from spikecode.calibration import k_key

    key = k_key(k)
    if key not in stats.layers[0].by_k or scheme not in stats.schemes:
        raise SpikecodeError(
            f"the stats file has no {scheme} statistics at k={k} "
            f"(k: {', '.join(k_key(v) for v in stats.k)}; codes: {', '.join(stats.schemes)}); "
            "pass --T",
            file=str(source),
        )
    return max(layer.by_k[key].schemes[scheme].T for layer in stats.layers)


def _stats_source(
    source: Path | None, T: int | None, k: float, scheme: str
) -> tuple[Path | None, int | None]:
    """A stats file's checkpoint and, without ``--T``, its calibrated T; else as given.

    The one rule by which `export nir`, `export lava` and `export events` read a stats
    file, so the three agree on the T a stats file gives.
    """
    if not _is_stats(source):
        return source, T
    checkpoint, stats = _stats_checkpoint(source)
    return checkpoint, _calibrated_T(stats, k, scheme, source) if T is None else T


def _shared_T(counts: list[np.ndarray], scheme: str, zero_point: int | str = "auto") -> int:
    """The one T every layer of an export uses: the largest minimal T of the layers."""
    from spikecode.encoders import min_steps

    return max(min_steps(c, scheme, zero_point=zero_point) for c in counts)


def _weighted_projections(
    source: Path | None,
    k: float,
    T: int | None,
    scheme: str,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    what: str,
) -> tuple[dict[str, Any], int]:
    """The projections (INT8 weights, scales, bias) of a source that has weights, and T.

    A checkpoint folder (``--T`` required), a stats file (its checkpoint; T from the
    calibration unless ``--T``) or the bundled sample (its shared T unless ``--T``).
    """
    source, T = _stats_source(source, T, k, scheme)
    if _is_checkpoint(source):
        if T is None:
            raise SpikecodeError(
                f"--T is required to export {scheme} from a checkpoint (the bundled "
                "sample and stats files supply their own T)"
            )
        _, projections = _checkpoint_projections(source, k, include, exclude)
        return projections, T
    if source is None:
        layers = _sample_layers(k, include, exclude)
        projections = {name: (w["weight_q"], w["scales"], w["bias"]) for name, _, _, w in layers}
        if T is None:
            T = _shared_T([counts for _, counts, _, _ in layers], scheme)
        return projections, T
    raise SpikecodeError(
        f"{what} needs weights: export from a checkpoint directory or from the bundled "
        "sample (no SOURCE)",
        file=str(source),
    )


def _summary_out(out: Path, fmt: str, rows: dict[str, Any], title: str) -> None:
    size = sum(p.stat().st_size for p in out.iterdir()) if out.is_dir() else out.stat().st_size
    rows = {**rows, "written": str(out), "bytes": size}
    if fmt == "json":
        echo_json(rows)
    else:
        echo_table(rows, title=title)


# -- nir ---------------------------------------------------------------------------------


@export_group.command("nir")
@_SOURCE
@out_option(
    required=True,
    dir_okay=True,
    help="Output folder (one .nir per projection plus index.json), or FILE.nir for one.",
)
@scheme_option()
@_K
@_T
@_BIT_ORDER
@click.option(
    "--integrator",
    # "I" is accepted here only to be refused with the reason (nir_graphs says why)
    type=click.Choice([*INTEGRATORS, "I"]),
    metavar="[" + "|".join(INTEGRATORS) + "]",
    default=INTEGRATORS[0],
    show_default=True,
    help="IF: never fires, read its membrane (snnTorch, Norse, Sinabs, Spyx). "
    "LI: infinite-tau leaky integrator, Rockpool's form.",
)
@click.option(
    "--weights",
    type=click.Choice(list(WEIGHTS)),
    default=WEIGHTS[0],
    show_default=True,
    help="int: INT8 weights, an integrator per scale group. float: scales folded in.",
)
@click.option("--graded", is_flag=True, help="One input port, payload = the step's weight.")
@click.option("--on-off", is_flag=True, help="Signed codes: ON and OFF inputs, 0/1 spikes only.")
@_INCLUDE
@_EXCLUDE
@_FORMAT
def export_nir_command(
    source: Path | None,
    out: Path,
    scheme: str,
    k: float,
    T: int | None,
    bit_order: str,
    integrator: str,
    weights: str,
    graded: bool,
    on_off: bool,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    fmt: str,
) -> None:
    """Write the spike-driven projections as NIR graphs the consumers load unmodified.

    One graph per projection (input -> synapse Affine -> integrator IF -> output; LI,
    Rockpool's form, with --integrator LI), in a folder with index.json. A graph whose
    accumulators can pass 2^24 is written with a warning naming the consumers that would
    round them. The per-token Vth, the scales, zero point and bias are
    applied on the host (graph metadata). T: --T, else the shared T of the data (the
    bundled sample: the largest minimal T of its layers, as `export events` uses).
    """
    from spikecode.exporters.nir import Float32Warning, export_nir, load_nir

    with stages(["load", "export", "done"], desc="export nir") as advance:
        advance("load")
        projections, T = _weighted_projections(
            source, k, T, scheme, include, exclude, "a NIR graph"
        )
        advance("export")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Float32Warning)
            export_nir(
                projections,
                out,
                scheme=scheme,
                T=T,
                bit_order=bit_order,
                integrator=integrator,
                weights=weights,
                graded=graded,
                on_off=on_off,
            )
        advance("done")
    for warning in caught:
        if issubclass(warning.category, Float32Warning):
            click.echo(f"WARNING: {warning.message}", err=True)
        else:  # not ours: pass it on as it came
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    index = load_nir(out).index
    _summary_out(
        out,
        fmt,
        {
            "format": "nir",
            "scheme": scheme,
            "T": T,
            "k": k,
            "projections": len(index["projections"]),
            "integrator": integrator,
            "weights": weights,
            "graded": graded,
            "on_off": on_off,
            "accumulator_bits": max(p["accumulator_bits"] for p in index["projections"]),
            "float32_exact": all(p["float32_exact"] for p in index["projections"]),
        },
        "spikecode export nir",
    )


# -- lava --------------------------------------------------------------------------------


@export_group.command("lava")
@_SOURCE
@out_option(
    required=True,
    dir_okay=True,
    help="Output folder (one .npz per projection, index.json, the runner), or FILE.npz for one.",
)
@scheme_option()
@_K
@_T
@_BIT_ORDER
@click.option(
    "--a-out-bits",
    type=click.IntRange(2, 24),
    default=24,
    show_default=True,
    help="Width a per-step dendritic sum of one Dense must fit (Lava declares 16).",
)
@click.option("--split", is_flag=True, help="Split the fan-in over Dense processes to fit.")
@_INCLUDE
@_EXCLUDE
@_FORMAT
def export_lava_command(
    source: Path | None,
    out: Path,
    scheme: str,
    k: float,
    T: int | None,
    bit_order: str,
    a_out_bits: int,
    split: bool,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    fmt: str,
) -> None:
    """Write the projections as Lava networks for Loihi 2 (Lava's fixed-point model).

    Per projection: graded spikes -> Dense (2*W_q, weight_exp -1) -> Sigma, checked
    against Loihi 2's widths; run with the folder's spikecode_lava.py under a Python 3.10
    with lava-nc 0.10 (docs/export.rst). T: --T, else the bundled sample's shared T or a
    stats file's calibrated T, as `export nir`.
    """
    from spikecode.exporters.lava import export_lava, load_lava

    with stages(["load", "export", "done"], desc="export lava") as advance:
        advance("load")
        projections, T = _weighted_projections(
            source, k, T, scheme, include, exclude, "a Lava network"
        )
        advance("export")
        export_lava(
            projections,
            out,
            scheme=scheme,
            T=T,
            bit_order=bit_order,
            a_out_bits=a_out_bits,
            split=split,
        )
        advance("done")
    metas = [p["meta"] for p in load_lava(out).projections.values()]
    _summary_out(
        out,
        fmt,
        {
            "format": "lava",
            "scheme": scheme,
            "T": T,
            "k": k,
            "projections": len(metas),
            "dense_processes": sum(m["blocks"] for m in metas),
            "dendritic_bits": max(m["dendritic_bits"] for m in metas),
            "a_out_bits": a_out_bits,
            "accumulator_bits": max(m["accumulator_bits"] for m in metas),
            "state_bits": metas[0]["state_bits"],
        },
        "spikecode export lava",
    )


# -- onnx --------------------------------------------------------------------------------


@export_group.command("onnx")
@_SOURCE
@_OUT
@_K
@click.option(
    "--layer",
    default=None,
    help="Export this one projection (its module name) as a layer graph, input x "
    "[batch, sequence, in] [default: the bundled sample's first; a checkpoint's whole model].",
)
@click.option("--opset", type=int, default=None, help="ONNX opset (default: spikecode's).")
@_INCLUDE
@_EXCLUDE
@_FORMAT
def export_onnx_command(
    source: Path | None,
    out: Path,
    k: float,
    layer: str | None,
    opset: int | None,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    fmt: str,
) -> None:
    """Write the W8ASpike computation as ONNX (threshold -> counts -> INT8 matmul -> rescale).

    From a checkpoint: the whole model with every spiked projection swapped, inputs
    ``input_ids`` and ``attention_mask`` with dynamic batch and sequence axes; with
    ``--layer NAME`` only that projection. From the bundled sample: one projection
    (``--layer``, default the first). A layer graph has input ``x`` [batch, sequence, in].
    """
    import onnx
    import torch

    from spikecode.exporters import onnx as onnx_export
    from spikecode.nn import W8ASpikeLinear

    kwargs = {} if opset is None else {"opset": opset}
    with stages(["load", "export", "done"], desc="export onnx") as advance:
        advance("load")
        if _is_stats(source):
            source, _ = _stats_checkpoint(source)
        if _is_checkpoint(source):
            loaded, projections = _checkpoint_projections(source, k, include, exclude)
            advance("export")
            if layer is not None:
                if layer not in projections:
                    raise SpikecodeError(
                        f"no spiked projection {layer!r} in the checkpoint; choose one of: "
                        + _names(projections),
                        file=str(source),
                    )
                onnx_export.export_onnx_layer(projections[layer], out, **kwargs)
                what = f"layer {layer}"
            else:
                vocab = int(getattr(loaded.config, "vocab_size", 2))
                generator = torch.Generator().manual_seed(0)
                example = {
                    "input_ids": torch.randint(0, vocab, (1, 8), generator=generator),
                    "attention_mask": torch.ones(1, 8, dtype=torch.int64),
                }
                # Tracing warns about Python-level shape logic in the model code; the
                # tests check the exported graphs at other batch and sequence sizes.
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", torch.jit.TracerWarning)
                    onnx_export.export_onnx_model(loaded.model, out, example, **kwargs)
                what = f"model ({len(projections)} spiked projections)"
        elif source is None:
            layers = {name: w for name, _, _, w in _sample_layers(k, include, exclude)}
            name = layer or next(iter(layers))
            if name not in layers:
                raise SpikecodeError(
                    f"no projection {name!r} in the sample; choose one of: {_names(layers)}"
                )
            w = layers[name]
            module = W8ASpikeLinear(
                torch.from_numpy(w["weight_q"]),
                torch.from_numpy(w["scales"]),
                torch.from_numpy(w["bias"]),
                k=k,
            )
            advance("export")
            onnx_export.export_onnx_layer(module, out, **kwargs)
            what = f"layer {name}"
        else:
            raise SpikecodeError(
                "an ONNX graph needs weights: export from a checkpoint directory or from the "
                "bundled sample (no SOURCE)",
                file=str(source),
            )
        advance("done")
    model = onnx.load(str(out))
    operators = sorted({node.op_type for node in model.graph.node})
    _summary_out(
        out,
        fmt,
        {
            "format": "onnx",
            "exported": what,
            "k": k,
            "opset": max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
            "nodes": len(model.graph.node),
            "operators": ", ".join(operators),
            "inputs": ", ".join(i.name for i in model.graph.input),
        },
        "spikecode export onnx",
    )


# -- events ------------------------------------------------------------------------------


@export_group.command("events")
@_spike_options
@MAX_SPIKES_OPTION
@ZERO_POINT
@click.option("--saturate", is_flag=True, help="Clip counts a fixed --T cannot carry.")
@click.option("--key", default=None, help="Array to use when an activation file holds several.")
@click.option(
    "--data",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Checkpoint: text file (one sample per line) or JSONL with 'text' or "
    "'input_ids', as for calibrate [default: the bundled corpus].",
)
@click.option(
    "--samples",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Checkpoint: the first this many samples of --data to run.",
)
@_INCLUDE
@_EXCLUDE
@_FORMAT
def export_events_command(
    source: Path | None,
    out: Path,
    scheme: str,
    k: float,
    T: int | None,
    bit_order: str,
    max_spikes: int,
    zero_point: int | str,
    saturate: bool,
    key: str | None,
    data: Path | None,
    samples: int,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    fmt: str,
) -> None:
    """Write spike trains as tonic-ready address events (t, x, y, p, token, layer).

    Every layer uses one T: --T, else the largest minimal T of the layers (the T
    `export nir` gives the same source); p is tonic's polarity channel (1: +1 spike,
    0: -1 spike), t the step.

    From the bundled sample: one layer per query projection. From an activation file:
    one layer named after the array. From a checkpoint: the input of every spiked
    projection for the first --samples texts of --data (default: the bundled corpus;
    non-padding tokens, longest samples first).
    Loading the file back reproduces the trains exactly
    (``spikecode.exporters.events.load_events``).
    """
    import numpy as np

    from spikecode.encoders import encode
    from spikecode.exporters.events import save_events
    from spikecode.io import load_activations
    from spikecode.threshold import adaptive_counts

    if saturate and T is None:
        raise SpikecodeError("--saturate needs a fixed --T")
    if data is not None and not (_is_checkpoint(source) or _is_stats(source)):
        raise SpikecodeError(
            "--data is the text run through a checkpoint; give a checkpoint folder or a "
            "stats file as SOURCE"
        )
    with stages(["load", "encode", "write", "done"], desc="export events") as advance:
        advance("load")
        source, T = _stats_source(source, T, k, scheme)
        if source is None:
            layers = [
                (name, counts, vth) for name, counts, vth, _ in _sample_layers(k, include, exclude)
            ]
        elif _is_checkpoint(source):
            layers = [
                (name, *adaptive_counts(rows, k=k))
                for name, rows in _checkpoint_activations(source, data, samples, include, exclude)
            ]
        else:
            counts, vth = adaptive_counts(load_activations(source, key=key), k=k)
            layers = [(key or source.stem, counts, vth)]
        advance("encode")
        if T is None:  # one T for every layer, the rule `export nir` follows
            T = _shared_T([counts for _, counts, _ in layers], scheme, zero_point)
        trains = {
            name: encode(
                counts,
                scheme,
                T,
                saturate=saturate,
                bit_order=bit_order,
                zero_point=zero_point,
                max_spikes=max_spikes,
            )
            for name, counts, _ in layers
        }
        for name, train in trains.items():
            warn_saturation(train.clipped, int(np.prod(train.shape)), name)
        advance("write")
        save_events(out, trains, vth={name: vth for name, _, vth in layers}, k=k)
        advance("done")
    _summary_out(
        out,
        fmt,
        {
            "format": "events",
            "scheme": scheme,
            "k": k,
            "layers": len(trains),
            "T": T,
            "events": sum(t.n_spikes for t in trains.values()),
        },
        "spikecode export events",
    )
