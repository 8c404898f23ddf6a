"""End-to-end W8ASpike fake-quant evaluation: the float model against its spiking twin.

:func:`evaluate` swaps every selected linear projection for a
:class:`~spikecode.nn.W8ASpikeLinear` (INT8 weights per SPEC §4 — groups of 128 input
columns when ``in_features`` is a multiple of 128, else one scale per row; the
checkpoint's released ``weight_quantizer.scales`` when it has them — fed adaptive-threshold
spike counts, SPEC §2) and compares the model's output with the float model's on the
same texts, one row per k (the shape of the report's table 11):

- causal language models: perplexity of the next token over every real token after the
  first of each sample (padding never enters);
- encoders: cosine similarity between the float and the spiked sentence embedding (the
  last hidden state mean-pooled over real tokens), averaged over samples. The float
  model's own value is 1.

Each row also gives the spike statistics of the spiked model's projection inputs during
that evaluation (SPEC §5: spikes per element, sparsity ``1 - firing rate``, the windowed
w = 3 sparsity, the ``|c| ≤ 7`` share) for one code, element-weighted over layers as in the
stats file. They are measured on the spiked model's own activations, which differ from
the float model's once errors propagate.

The model is changed in place during the evaluation and restored afterwards (also on
error): the original ``nn.Linear`` modules are put back, so the float model stays intact
and nothing is copied.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from spikecode.calibration.data import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_SAMPLES,
    CalibrationData,
    as_data,
    as_loaded,
    model_device,
    pad_id,
    padded_batches,
    tokenize_data,
)
from spikecode.calibration.records import k_key, summarize
from spikecode.calibration.run import DEFAULT_K, StatsAccumulator, check_ks, escape_names
from spikecode.encoders.schemes import get_scheme
from spikecode.errors import SpikecodeError
from spikecode.models.capture import (
    DEFAULT_EXCLUDE,
    DEFAULT_INCLUDE,
    LinearInputHooks,
    list_linear_layers,
)
from spikecode.models.checkpoint import LoadedModel
from spikecode.models.gla_swa import GLASwaForCausalLM
from spikecode.nn import W8ASpikeLinear, replace_submodules, set_k, swap_linears
from spikecode.nn.functional import check_k

__all__ = ["TASKS", "EvaluationReport", "EvaluationRow", "evaluate", "model_task"]

#: What :func:`evaluate` measures, by kind of model.
TASKS = {
    "perplexity": "perplexity (next token, real tokens only)",
    "embedding_cosine": "cosine similarity of mean-pooled sentence embeddings to the float model's",
}


@dataclass(frozen=True)
class EvaluationRow:
    """One row of the table: the spiked model at one k (or one per-layer k map).

    Attributes
    ----------
    label
        The k as the stats file spells it (``"3"``), or ``"k-map"``.
    k
        The global k, or None for a per-layer map.
    metric, delta
        The spiked model's metric and its difference to the float model's
        (``metric - float``).
    stats
        Spike totals over the spiked layers' inputs: ``spikes_per_element, firing_rate,
        sparsity, silent_fraction, within_7_fraction, window<w>_sparsity``.
    layers
        Number of spiked projections.
    """

    label: str
    k: float | None
    metric: float
    delta: float
    stats: Mapping[str, float]
    layers: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "k": self.label,
            "metric": self.metric,
            "delta": self.delta,
            "layers": self.layers,
            **{key: value for key, value in self.stats.items() if key != "output_rel_error"},
        }


@dataclass(frozen=True)
class EvaluationReport:
    """The float model against its W8ASpike twin, one row per k.

    Attributes
    ----------
    task
        ``"perplexity"`` or ``"embedding_cosine"`` (:data:`TASKS`).
    float_metric
        The float model's value (1 for the embedding cosine).
    rows
        One :class:`EvaluationRow` per k, in the order asked.
    scheme, window
        The code and window of the spike statistics.
    samples, tokens
        Evaluation samples and their real tokens.
    layers
        Number of spiked projections of the first row (the selection for global k, the
        map's layers for a ``"k-map"`` row).
    source
        Where the texts came from.
    k_map
        The per-layer k of a ``"k-map"`` row, if any.
    """

    task: str
    float_metric: float
    rows: tuple[EvaluationRow, ...]
    scheme: str
    window: int
    samples: int
    tokens: int
    layers: int
    source: str
    k_map: Mapping[str, float] | None = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (what ``spikecode evaluate --format json`` prints)."""
        return {
            "task": self.task,
            "metric": TASKS[self.task],
            "float": self.float_metric,
            "scheme": self.scheme,
            "window": self.window,
            "samples": self.samples,
            "tokens": self.tokens,
            "layers": self.layers,
            "source": self.source,
            "rows": [row.to_dict() for row in self.rows],
        }


def model_task(loaded: LoadedModel) -> str:
    """``"perplexity"`` for causal language models, ``"embedding_cosine"`` for HF encoders."""
    model = loaded.model
    if isinstance(model, GLASwaForCausalLM) or type(model).__name__.endswith(
        ("ForCausalLM", "LMHeadModel")
    ):
        return "perplexity"
    if loaded.kind == "hf":
        return "embedding_cosine"
    raise SpikecodeError(
        "evaluate needs a causal language model or a Hugging Face encoder",
        model=type(model).__name__,
    )


def _logits(output: Any) -> torch.Tensor:
    logits = output if isinstance(output, torch.Tensor) else getattr(output, "logits", None)
    if not isinstance(logits, torch.Tensor):
        raise SpikecodeError("the model's output holds no logits")
    return logits


def _nll(output: Any, ids: torch.Tensor, mask: torch.Tensor) -> tuple[float, int]:
    """Summed next-token negative log-likelihood and the number of predicted tokens."""
    logits = _logits(output)[:, :-1]
    targets = ids[:, 1:]
    valid = (mask[:, 1:] != 0) & (mask[:, :-1] != 0)
    if not bool(valid.any()):
        return 0.0, 0
    chosen = logits[valid].to(torch.float32)
    loss = torch.nn.functional.cross_entropy(chosen, targets[valid], reduction="sum")
    return float(loss), int(valid.sum())


def _embedding(output: Any, mask: torch.Tensor) -> torch.Tensor:
    hidden = getattr(output, "last_hidden_state", None)
    if not isinstance(hidden, torch.Tensor):
        raise SpikecodeError("the encoder's output holds no last_hidden_state")
    weights = (mask != 0).to(torch.float32).unsqueeze(-1)
    return (hidden.to(torch.float32) * weights).sum(dim=1) / weights.sum(dim=1)


class _Runner:
    """Runs the evaluation texts through the model and reduces the output to the metric."""

    def __init__(
        self,
        loaded: LoadedModel,
        batches: list[tuple[torch.Tensor, torch.Tensor]],
        task: str,
        progress: Callable[[int], None] | None,
    ) -> None:
        self.model = loaded.model
        self.batches = batches
        self.task = task
        self.progress = progress
        self.reference: list[torch.Tensor] = []

    def run(
        self,
        hooks: LinearInputHooks | None = None,
        before_batch: Callable[[], None] | None = None,
    ) -> float:
        total, count = 0.0, 0
        embeddings = []
        with torch.no_grad():
            for ids, mask in self.batches:
                if hooks is not None:
                    hooks.set_mask(mask)
                if before_batch is not None:
                    before_batch()
                output = self.model(input_ids=ids, attention_mask=mask)
                if self.task == "perplexity":
                    loss, n = _nll(output, ids, mask)
                    total += loss
                    count += n
                else:
                    embeddings.append(_embedding(output, mask))
                if self.progress is not None:
                    self.progress(ids.shape[0])
        if self.task == "perplexity":
            if count == 0:
                raise SpikecodeError(
                    "perplexity needs samples of at least two tokens; every sample has one"
                )
            return math.exp(total / count)
        if not self.reference:
            self.reference = embeddings
            return 1.0
        cosines = [
            torch.nn.functional.cosine_similarity(a, b, dim=-1)
            for a, b in zip(embeddings, self.reference, strict=True)
        ]
        return float(torch.cat(cosines).to(torch.float64).mean())


def _swap(
    loaded: LoadedModel, names: Sequence[str], k: float | Mapping[str, float]
) -> dict[str, nn.Module]:
    """Swap the named layers for W8ASpike layers; return the original modules by name."""
    model = loaded.model
    originals = {name: model.get_submodule(name) for name in names}
    scales = {n: loaded.quant_scales[n] for n in names if n in loaded.quant_scales}
    try:
        swap_linears(
            model,
            k if not isinstance(k, Mapping) else {n: k[n] for n in names},
            include=escape_names(names),
            exclude=(),
            group_size="auto",
            scales=scales or None,
        )
    except BaseException:
        _restore(model, originals)
        raise
    return originals


def _restore(model: nn.Module, originals: Mapping[str, nn.Module]) -> None:
    replacements = {}
    for name, original in originals.items():
        current = model.get_submodule(name)
        if current is not original:
            replacements[current] = original
    replace_submodules(model, replacements)


def _spiked_run(
    runner: _Runner,
    model: nn.Module,
    names: Sequence[str],
    per_layer: Mapping[str, float],
    scheme: str,
    window: int,
) -> tuple[float, dict[str, float]]:
    """Run the spiked model once; its metric and the spike totals of its layers' inputs."""
    selection = {"include": escape_names(names), "exclude": (), "module_types": (W8ASpikeLinear,)}
    accumulator = StatsAccumulator(
        model,
        list_linear_layers(model, **selection),
        {name: [per_layer[name]] for name in names},
        with_error=False,
        schemes=(scheme,),
        window=window,
    )
    with LinearInputHooks(model, accumulator, **selection) as hooks:
        metric = runner.run(hooks, accumulator.begin_batch)
    layers = accumulator.results()
    totals = summarize([(layer, next(iter(layer.by_k))) for layer in layers], scheme)
    totals.pop("output_rel_error", None)
    return metric, totals


def _check_k_map(k_map: Mapping[str, float], available: Sequence[str]) -> dict[str, float]:
    if not isinstance(k_map, Mapping) or not k_map:
        raise SpikecodeError("a k map must be a non-empty mapping from layer name to k")
    unknown = [name for name in k_map if name not in available]
    if unknown:
        raise SpikecodeError(
            f"the k map names {len(unknown)} layer(s) the model has no linear layer for: "
            + ", ".join(unknown[:5])
        )
    return {name: check_k(value) for name, value in k_map.items()}


def evaluate(
    checkpoint: LoadedModel | nn.Module,
    data: CalibrationData | Sequence[str] | str | os.PathLike[str] | None = None,
    *,
    k: Sequence[float] | None = DEFAULT_K,
    k_map: Mapping[str, float] | None = None,
    samples: int | None = DEFAULT_SAMPLES,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_length: int | None = None,
    truncate: bool = False,
    include: str | Iterable[str] = DEFAULT_INCLUDE,
    exclude: str | Iterable[str] = DEFAULT_EXCLUDE,
    scheme: str = "bitwise-bidirectional",
    window: int = 3,
    progress: Callable[[int], None] | None = None,
) -> EvaluationReport:
    """Compare the float model with its W8ASpike fake-quant twin, one row per k.

    Parameters
    ----------
    checkpoint
        A :func:`~spikecode.models.checkpoint.load_checkpoint` result (or a module; see
        :func:`spikecode.calibration.calibrate`). It is restored after the evaluation.
    data, samples, batch_size, max_length, truncate
        The evaluation texts, as for :func:`spikecode.calibration.calibrate`.
    k
        Global k values, one row each (default the report's 2 … 4); None with ``k_map``.
    k_map
        Per-layer k (``layer name → k``, e.g. the k advisor's choice): one more row,
        labelled ``"k-map"``, which spikes exactly the map's layers.
    include, exclude
        Layers spiked in the global-k rows (``lm_head`` excluded by default).
    scheme, window
        Code and window of the spike statistics in the rows.
    progress
        Called with the number of samples of each batch run (the texts run once for the
        float model and once per row).

    Returns
    -------
    EvaluationReport

    Raises
    ------
    SpikecodeError
        Bad data or k, a k map naming unknown layers, a model that is neither a causal
        LM nor an encoder, and everything :func:`spikecode.calibration.tokenize_data`
        refuses.
    """
    loaded = as_loaded(checkpoint)
    task = model_task(loaded)
    scheme = get_scheme(scheme).name
    ks = () if k is None else check_ks(k)
    model = loaded.model
    selected = [name for name, _, _ in list_linear_layers(model, include, exclude)]
    if k_map is not None:
        available = [name for name, _, _ in list_linear_layers(model, "*", ())]
        k_map = _check_k_map(k_map, available)
    if not ks and k_map is None:
        raise SpikecodeError("give at least one k or a k map")
    texts = as_data(data, samples)
    tokenized = tokenize_data(texts, loaded, max_length=max_length, truncate=truncate)
    batches = list(padded_batches(tokenized, batch_size, model_device(model), pad_id(loaded)))
    runner = _Runner(loaded, batches, task, progress)
    float_metric = runner.run()

    # Global rows spike the selected layers; the k-map row exactly the map's layers.
    passes: list[tuple[list[str], list[tuple[str, float | None, Mapping[str, float]]]]] = []
    if ks:
        passes.append((selected, [(k_key(v), v, dict.fromkeys(selected, v)) for v in ks]))
    if k_map is not None:
        passes.append((list(k_map), [("k-map", None, k_map)]))
    rows = []
    for names, settings in passes:
        originals = _swap(loaded, names, settings[0][2])
        try:
            for label, value, per_layer in settings:
                set_k(model, dict(per_layer))
                metric, totals = _spiked_run(runner, model, names, per_layer, scheme, window)
                rows.append(
                    EvaluationRow(label, value, metric, metric - float_metric, totals, len(names))
                )
        finally:
            _restore(model, originals)
    return EvaluationReport(
        task=task,
        float_metric=float_metric,
        rows=tuple(rows),
        scheme=scheme,
        window=window,
        samples=len(tokenized.input_ids),
        tokens=tokenized.tokens,
        layers=rows[0].layers,
        source=texts.source,
        k_map=None if k_map is None else dict(k_map),
    )
