"""``spikecode encode``: activations -> counts -> spike train, with a SPEC §5 summary."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

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

#: Leading bytes that tell the format of activations read from standard input: a ``.npy``
#: file starts with NumPy's magic string, an ``.npz`` with a zip record (local file header,
#: or the end-of-directory record of an empty archive).
_STDIN_MAGIC = {b"\x93NUMPY": ".npy", b"PK\x03\x04": ".npz", b"PK\x05\x06": ".npz"}


def _load_stdin(key: str | None) -> np.ndarray:
    """Activations piped in on standard input (``INPUT`` = ``-``), .npy or .npz bytes.

    The format is sniffed from the magic bytes (the stream has no name); the bytes go to
    a private temporary file read by :func:`spikecode.io.load_activations`, so every
    check of a named file applies (no pickles, floats only, ``--key`` for several arrays).
    """
    from spikecode._validate import read_bounded
    from spikecode.io import load_activations

    # A closed standard input (``<&-``) is None, a replaced one may lack a byte buffer.
    stream = getattr(sys.stdin, "buffer", sys.stdin)
    if stream is None:
        raise SpikecodeError("standard input is closed; pipe .npy or .npz bytes into '-'")
    try:
        data = read_bounded(stream, "standard input")
    except (OSError, ValueError) as err:  # e.g. a stream closed by the program
        raise SpikecodeError(f"cannot read standard input: {err}") from None
    except TypeError:  # a text stream's str chunks do not join as bytes
        raise SpikecodeError(
            "standard input gives text; pipe .npy or .npz bytes into '-'"
        ) from None
    if not data:
        raise SpikecodeError("standard input is empty; pipe .npy or .npz bytes into '-'")
    suffix = next((s for magic, s in _STDIN_MAGIC.items() if data.startswith(magic)), None)
    if suffix is None:
        raise SpikecodeError(
            "standard input holds neither .npy nor .npz data (other formats need a file "
            f"name); it starts with {data[:8]!r}"
        )
    with tempfile.TemporaryDirectory(prefix="spikecode-stdin-") as folder:
        path = Path(folder) / f"stdin{suffix}"
        path.write_bytes(data)
        try:
            return load_activations(path, key=key)
        except SpikecodeError as err:
            if "file" in err.context:  # the temporary path means nothing to the user
                err.context["file"] = "<stdin>"
            raise


def encode_summary(
    x: np.ndarray,
    *,
    scheme: str,
    k: float,
    T: int | None = None,
    saturate: bool = False,
    bit_order: str = "msb",
    zero_point: int | str = "auto",
) -> tuple[dict[str, Any], tuple[np.ndarray, np.ndarray]]:
    """Count activations and summarise their spikes; the work behind ``spikecode encode``.

    No train is built: every statistic follows from the counts (:func:`spike_stats`),
    so an absurd encoding costs no more than a plain one here.

    Returns
    -------
    (summary, (counts, vth))
        ``summary`` holds the keys the CLI prints (``shape, k, scheme, T, vth_mean,
        spikes_per_element, firing_rate, sparsity, silent_fraction, within_7_fraction,
        window3_sparsity`` plus details).
    """
    import numpy as np

    from spikecode.encoders import plan_encoding
    from spikecode.stats import spike_stats
    from spikecode.threshold import adaptive_counts

    counts, vth = adaptive_counts(x, k=k)
    plan = plan_encoding(counts, scheme, T, saturate=saturate, zero_point=zero_point)
    stats = spike_stats(
        counts, scheme, plan.T, window=3, zero_point=plan.zero_point, saturate=saturate
    )
    vth64 = np.asarray(vth, dtype=np.float64)
    summary = {
        "shape": list(x.shape),
        "k": k,
        "scheme": scheme,
        "T": plan.T,
        "vth_mean": float(vth64.mean()),
        "spikes_per_element": stats.spikes_per_element,
        "firing_rate": stats.firing_rate,
        "sparsity": stats.sparsity,
        "silent_fraction": stats.silent_fraction,
        "within_7_fraction": stats.within_7_fraction,
        "window3_sparsity": stats.window_sparsity,
        "vth_min": float(vth64.min()),
        "vth_median": float(np.median(vth64)),
        "vth_max": float(vth64.max()),
        "elements": stats.elements,
        "spikes": stats.spikes,
        "max_abs_count": int(np.abs(counts.astype(np.int64)).max()),
        "zero_point": plan.zero_point,
        "bit_order": bit_order,
        "clipped": plan.clipped,
    }
    return summary, (counts, vth)


@click.command("encode")
@click.argument("input_path", metavar="[INPUT]", required=False, type=click.Path(path_type=Path))
@scheme_option(help="Spike code (SPEC §3); the default is every command's.")
@k_option(default=3.0)
@T_OPTION
@click.option("--saturate", is_flag=True, help="Clip counts a fixed --T cannot carry.")
@click.option("--bit-order", type=click.Choice(["msb", "lsb"]), default="msb", show_default=True)
@ZERO_POINT
@click.option("--key", default=None, help="Array to use when INPUT holds several.")
@MAX_SPIKES_OPTION
@out_option(help="Write counts, Vth and events to this .npz.")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
def encode_command(
    input_path: Path | None,
    scheme: str,
    k: float,
    T: int | None,
    saturate: bool,
    bit_order: str,
    zero_point: int | str,
    key: str | None,
    max_spikes: int,
    out: Path | None,
    fmt: str,
) -> None:
    """Encode activations into spikes and summarise sparsity.

    INPUT is a .npy, .npz, .safetensors or .pt file of float activations with features
    on the last axis, or - for .npy/.npz bytes on standard input (the format is told
    from the leading bytes). Without INPUT, a bundled sample of real all-MiniLM-L6-v2
    activations is used.
    """
    from spikecode.encoders import encode
    from spikecode.io import load_activations, save_encoded

    if out is not None and out.suffix.lower() != ".npz":
        raise SpikecodeError("--out must name an .npz file", file=str(out))
    if saturate and T is None:
        raise SpikecodeError("--saturate needs a fixed --T")
    with stages(["load", "count", "encode", "write"], desc="encode") as advance:
        advance("load")
        if input_path is None:
            from spikecode.data import sample_path

            input_path = sample_path()
        if str(input_path) == "-":
            x, input_path = _load_stdin(key), Path("<stdin>")
        else:
            x = load_activations(input_path, key=key)
        advance("count+encode")
        summary, (counts, vth) = encode_summary(
            x,
            scheme=scheme,
            k=k,
            T=T,
            saturate=saturate,
            bit_order=bit_order,
            zero_point=zero_point,
        )
        summary = {"source": str(input_path), **summary}
        advance("write")
        if out is not None:
            # Only the file needs the train itself; build it with the same T.
            train = encode(
                counts,
                scheme,
                summary["T"],
                saturate=saturate,
                bit_order=bit_order,
                zero_point=zero_point,
                max_spikes=max_spikes,
            )
            save_encoded(out, counts, vth, train, k=k, meta={"source": str(input_path)})
            summary["out"] = str(out)
        advance("done")
    warn_saturation(summary["clipped"], summary["elements"])
    if fmt == "json":
        echo_json(summary)
    else:
        echo_table(
            {
                "source": summary["source"],
                "shape": summary["shape"],
                "scheme": scheme,
                "k": k,
                "T (steps)": summary["T"],
                "Vth mean / median": f"{summary['vth_mean']:.4g} / {summary['vth_median']:.4g}",
                "Vth min / max": f"{summary['vth_min']:.4g} / {summary['vth_max']:.4g}",
                "max |count|": summary["max_abs_count"],
                "spikes per element": summary["spikes_per_element"],
                "firing rate": summary["firing_rate"],
                "sparsity": summary["sparsity"],
                "silent fraction": summary["silent_fraction"],
                "|c| <= 7 fraction": summary["within_7_fraction"],
                "window-3 sparsity*": summary["window3_sparsity"],
                "zero point": summary["zero_point"],
                "clipped": summary["clipped"],
                **({"written": summary["out"]} if out is not None else {}),
            },
            title="spikecode encode",
        )
        click.echo(
            "  * each element occupies ceil(len(c)/3)*3 steps, len = its own minimal "
            "length under the code, len(0) = 1 (SPEC §5)"
        )
