"""Calibration: stream a text set through a model and measure every projection's spike input.

SpikingBrain calibrates its spike coding on a small text set (128 samples, SPEC §1). This
module runs such a set through a model in batches, with a forward pre-hook on the input
of every selected linear projection (:class:`spikecode.models.capture.LinearInputHooks`;
``lm_head`` is excluded by default), and accumulates in **one streaming pass**, for
several k and several codes at once:

- the exact histogram of the counts ``c = round(x / Vth)`` (SPEC §2), from which the
  SPEC §5 totals of every code follow exactly (:func:`spikecode.spike_stats` on the
  distinct values, weighted by their multiplicity; T = the minimal T of all counts seen);
- the Vth distribution (running mean, std, min, max and a fixed log-spaced histogram);
- the channel activity of the SPEC §6 memory model (active channels, and weight columns
  fetched under block skipping, exactly as :func:`spikecode.energy.channel_activity`);
- the output error of the W8ASpike layer (INT8 weights per SPEC §4 — groups of 128 input
  columns when ``in_features`` is a multiple of 128, else one scale per row; the
  checkpoint's released ``weight_quantizer.scales`` when it has them — fed
  ``Vth · round(x / Vth)``) against the float layer on the same rows.

Design decisions
----------------
- **Memory** stays bounded by one layer's activation plus small per-layer state: the
  histograms (``2·511 + 3`` bins per k), a few numbers per k, and the rows held back for
  the output error (at most :data:`ERROR_FLUSH_ROWS` rows or :data:`ERROR_FLUSH_BYTES`
  per layer before they are consumed). No activation outlives its hook call.
- **Padding** never enters a statistic: the batch's attention mask is set on the hooks,
  which hand over only the rows of real tokens.
- **Shared inputs** (attention q/k/v, MLP gate/up read one tensor) are counted once:
  :meth:`StatsAccumulator.begin_batch` links a layer to the one called just before it
  when their inputs are equal in the first batch, and checks the equality on every later
  call; a layer whose input ever differs continues on its own copy of the statistics as
  they stood before that batch, so the result is always that of counting each layer
  alone. The output error is always each layer's own.
- **The output error** is measured on a bounded subset of rows: per batch and layer,
  one row in ``error_stride`` (128) of the batch's real tokens, at least one and at most
  ``error_rows`` (64), evenly spaced and centred so that no position is systematically
  favoured. Its matmuls (one per k plus the float one) would otherwise cost several
  times the model's own forward pass; this way they cost about (number of k + 1) / 128
  of the model's linear layers. The stats file records both settings (``error_rows``,
  ``error_stride``) and the rows used per layer (``error_tokens``).
  Both outputs are computed in the compute dtype (float32, float64 for float64 models)
  from the layer's weights, so a bfloat16 model's own output rounding is not counted as
  error. ``error_rows=None`` uses every row.
- **Devices**: on CPU the counting runs in one fused Numba kernel (threshold, counts,
  histogram, Vth histogram and block activity per row, for all k); on any other device
  the same quantities are computed with torch operations on the device, and only small
  results (histogram bins, sums) ever move to the host. Both paths follow SPEC §2's
  numerics (mean|x| accumulated in float64; Vth in float64, then cast; counts in the
  compute dtype, round half to even) and give identical counts.
- **Samples** are batched longest first (less padding); the result does not depend on
  the order. A sample longer than the model's maximum (``max_position_embeddings``, or
  ``max_length``) is refused unless ``truncate=True`` asks to cut it.
- **Tokenization** uses the checkpoint's tokenizer (with its special tokens). A
  checkpoint without a tokenizer needs token ids: a JSONL file whose records carry
  ``"input_ids"``.
- **Recipe** (:mod:`spikecode.nn.recipes`): the hooked inputs are the recipe's
  spike-driven ones. ``"all-linear"``: every selected projection. ``"release"``: every
  selected projection but ``mlp.down_proj`` (float in the release), plus the
  window-attention queries (``…attn.q_act``, one row per token and head, ``head_dim``
  wide; their "output error" is the reconstruction ``Vth·c`` against the query, since no
  weight follows). The statistics are always those of the float model's activations (under
  ``"release"`` in the release's dtype flow, :func:`~spikecode.nn.recipes.release_numerics`),
  and the output error uses spikecode's exact INT8 rounding of SPEC §4. The stats file
  records the recipe (``recipe.name``).
- **Decoding** (``generate=N``): what an event-driven chip sees token by token. Each
  batch is left-padded and run through the model's own ``generate()`` (greedy, exactly N
  new tokens plus the one the prompt yields: end-of-sequence is suppressed); the hooks
  ignore the prompt's forward pass and count only the N decode steps, whose inputs are
  one newly generated token per sample. Per-token figures (a report's energy per token)
  are then per generated token. The stats file records N (``recipe.generate``). N is
  bounded by the model's context: the longest prompt plus the N + 1 generated tokens must
  fit ``max_position_embeddings`` (a model that states none: at most
  65,536 steps), checked before anything runs.
"""

from __future__ import annotations

import contextlib
import glob
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from spikecode._validate import positive_finite
from spikecode.calibration import counting
from spikecode.calibration import distributed as parallel
from spikecode.calibration.accumulator import (
    DEFAULT_ERROR_ROWS,
    DEFAULT_ERROR_STRIDE,
    DEFAULT_SCHEMES,
    LayerAccumulator,
    _Scratch,
)
from spikecode.calibration.data import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_SAMPLES,
    CalibrationData,
    TokenizedData,
    as_data,
    as_loaded,
    model_device,
    model_max_length,
    pad_id,
    padded_batches,
    tokenize_data,
)
from spikecode.calibration.records import (
    CalibrationStats,
    CheckpointInfo,
    DataInfo,
    LayerStats,
    RecipeInfo,
    RoutingStats,
    k_key,
)
from spikecode.encoders.schemes import get_scheme
from spikecode.energy import DEFAULT_BLOCK_SIZES
from spikecode.errors import SpikecodeError
from spikecode.models.capture import DEFAULT_EXCLUDE, DEFAULT_INCLUDE, LinearInputHooks
from spikecode.models.checkpoint import LoadedModel
from spikecode.models.inputs import left_align
from spikecode.models.moe import RoutingCounter
from spikecode.models.sites import ActivationSite
from spikecode.nn.recipes import DEFAULT_RECIPE, check_recipe, recipe_targets, release_numerics

__all__ = [
    "DEFAULT_K",
    "DEFAULT_SCHEMES",
    "StatsAccumulator",
    "calibrate",
    "check_ks",
    "checkpoint_info",
    "escape_names",
]

#: The report's k sweep (table 11).
DEFAULT_K: tuple[float, ...] = (2.0, 2.5, 3.0, 3.5, 4.0)
#: Most decode steps for a model that states no context length (max_position_embeddings).
MAX_GENERATE_UNSTATED = 2**16


def _check_generate(generate: int, tokenized: TokenizedData, loaded: LoadedModel) -> None:
    """Refuse more decode steps than the model's context holds after the longest prompt."""
    context = model_max_length(loaded)
    longest = max(len(ids) for ids in tokenized.input_ids)
    if context is None:
        if generate > MAX_GENERATE_UNSTATED:
            raise SpikecodeError(
                f"generate {generate} is more decode steps than spikecode runs for a model "
                f"that states no context length (max_position_embeddings): at most "
                f"{MAX_GENERATE_UNSTATED:,}"
            )
        return
    room = context - longest - 1  # the prompt, then N + 1 generated tokens
    if generate > room:
        bound = f"at most {room:,} here" if room >= 1 else "shorten the prompts"
        raise SpikecodeError(
            f"generate {generate} does not fit the model's context: the longest prompt "
            f"({longest:,} tokens) plus {generate + 1:,} generated tokens exceed "
            f"{context:,} positions (max_position_embeddings); {bound}"
        )


def _trunk(model: nn.Module, names: Sequence[str]) -> nn.Module:
    """The part of the model that holds every selected layer: skip ``lm_head`` if unused.

    Calibration needs only the projections' inputs; running the vocabulary projection
    (the largest matmul of an LLM) for nothing would only cost time.
    """
    prefix = getattr(model, "base_model_prefix", None) or ""
    if (
        not prefix
        and hasattr(model, "hidden_states")
        and isinstance(getattr(model, "model", None), nn.Module)
    ):
        prefix = "model"  # GLASwaForCausalLM
    sub = getattr(model, prefix, None) if prefix else None
    if (
        isinstance(sub, nn.Module)
        and sub is not model
        and all(n.startswith(prefix + ".") for n in names)
    ):
        return sub
    return model


def _forward(module: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> Any:
    return module(input_ids=ids, attention_mask=mask)


def _decode(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    steps: int,
    hooks: LinearInputHooks,
    begin: Callable[[], None],
    counting: list[bool],
    pad: int,
    progress: Callable[[int], None] | None,
) -> None:
    """Generate ``steps + 1`` tokens per sample; count only the ``steps`` decode steps."""
    if (
        not callable(getattr(model, "generate", None))
        or not getattr(model, "can_generate", lambda: False)()
    ):
        raise SpikecodeError(
            "calibration over generated tokens needs a model that generates "
            "(a causal language model)",
            model=type(model).__name__,
        )
    calls = [0]

    def before_forward(module: nn.Module, args: Any, kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        first = calls[0] == 0
        calls[0] += 1
        counting[0] = not first
        if not first:
            if not isinstance(ids, torch.Tensor) or ids.shape[-1] != 1:
                raise SpikecodeError(
                    "the model's generate() fed more than one token per decode step; "
                    "it must use a cache",
                    model=type(model).__name__,
                )
            hooks.set_mask(None)  # every sample's new token is real
            begin()

    handle = model.register_forward_pre_hook(before_forward, with_kwargs=True)
    try:
        for ids, mask in batches:
            # Left padding: the new tokens follow each row's last; generate() derives
            # the rotary positions from the mask, so a row measures what it does alone.
            ids, mask = left_align(ids, mask)
            calls[0] = 0
            counting[0] = False
            model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=steps + 1,
                min_new_tokens=steps + 1,
                do_sample=False,
                num_beams=1,
                pad_token_id=pad,
            )
            if calls[0] != steps + 1:
                raise SpikecodeError(
                    f"generate() ran {calls[0]} forward passes, not the {steps + 1} asked",
                    model=type(model).__name__,
                )
            if progress is not None:
                progress(ids.shape[0])
    finally:
        handle.remove()
        counting[0] = True


# --------------------------------------------------------------------------- accumulator


def _version(rows: torch.Tensor) -> int | None:
    """The version counter of ``rows`` (bumped by every in-place write), None if untracked.

    Tensors made under ``torch.inference_mode`` track no version: they are never shared.
    """
    return None if rows.is_inference() else rows._version


def _same_settings(a: LayerAccumulator, b: LayerAccumulator) -> bool:
    return (a.ks, a.schemes, a.window, a.block_sizes, b._source) == (
        b.ks,
        b.schemes,
        b.window,
        b.block_sizes,
        None,
    )


def _offload_owner(model: nn.Module, name: str) -> nn.Module | None:
    """The nearest module (the layer or an ancestor) with an accelerate hook, if any.

    Offloaded layers get their weights from that hook (``_hf_hook``), per layer or per
    block (accelerate's ``preload_module_classes``).
    """
    parts = name.split(".")
    for end in range(len(parts), -1, -1):
        module = model.get_submodule(".".join(parts[:end]))
        if getattr(getattr(module, "_hf_hook", None), "offload", False):
            return module
    return None


class StatsAccumulator:
    """One :class:`LayerAccumulator` per hooked layer; the callback of the capture hooks.

    Parameters
    ----------
    model
        The model whose layers are named in ``layers``.
    layers
        ``(name, in_features, out_features)`` (:attr:`LinearInputHooks.layers`).
    ks
        The k values for every layer, or a mapping ``name → k values``.
    with_error
        Measure each layer's W8ASpike output error (its module must have a ``weight``).
    scales
        Released W8ASpike scales per layer name (``LoadedModel.quant_scales``).
    **options
        ``schemes``, ``window``, ``block_sizes``, ``error_rows``, ``error_stride``,
        ``backend`` for every
        :class:`LayerAccumulator`.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[tuple[str, int, int]],
        ks: Sequence[float] | Mapping[str, Sequence[float]],
        *,
        with_error: bool = True,
        scales: Mapping[str, torch.Tensor] | None = None,
        **options: Any,
    ) -> None:
        scales = scales or {}
        self.accumulators: dict[str, LayerAccumulator] = {}
        for name, n_in, n_out in layers:
            layer_ks = ks[name] if isinstance(ks, Mapping) else ks
            self.accumulators[name] = LayerAccumulator(
                name,
                n_in,
                n_out,
                layer_ks,
                layer=model.get_submodule(name) if with_error else None,
                scales=scales.get(name) if with_error else None,
                offload_owner=_offload_owner(model, name) if with_error else None,
                **options,
            )

        # One buffer for the quantized weights of every layer's output error.
        scratch = _Scratch()
        for acc in self.accumulators.values():
            acc._scratch = scratch
        # Sharing of identical inputs (q/k/v read one tensor): only between batches
        # announced with begin_batch, and only as long as the input really is the same.
        self._batches = 0
        # The layer whose stream the last call fed, its rows and their version counter.
        self._last: tuple[LayerAccumulator, torch.Tensor, int | None] | None = None

    def begin_batch(self) -> None:
        """Announce a new forward pass.

        Layers whose input equals, row for row, the input of the layer called just before
        them in the first batch (attention q/k/v, MLP gate/up) then share one stream of
        statistics instead of counting the same values again. Every later call is
        checked against its source's input with :func:`torch.equal`; a layer whose input
        ever differs continues on its own copy of the shared statistics as they stood
        before that batch, so the results are always those of counting each layer alone.
        Without this call nothing is shared.
        """
        self._batches += 1
        self._last = None
        sources = {acc._source for acc in self.accumulators.values()} - {None}
        for source in sources:
            source.snapshot()

    def __call__(self, name: str, rows: torch.Tensor) -> None:
        """Feed one hooked input (the :class:`LinearInputHooks` callback)."""
        acc = self.accumulators[name]
        last = self._last
        # Rows may be a view of the model's activation (no padding to drop): written in
        # place since that call, it has a new version and is not compared.
        same = (
            last is not None
            and last[0] is not acc
            and last[2] is not None
            and last[2] == _version(last[1])
            and last[1].shape == rows.shape
            and last[1].dtype == rows.dtype
            and last[1].device == rows.device
        )
        if self._batches == 1 and acc.tokens == 0 and acc._source is None:
            if same and _same_settings(acc, last[0]) and torch.equal(last[1], rows):
                acc.link(last[0])
        elif acc._source is not None and not (
            same and last[0] is acc._source and torch.equal(last[1], rows)
        ):
            acc.unlink()
        acc.update(rows)
        root = acc._source or acc
        self._last = (root, rows, _version(rows)) if self._batches else None

    def results(self) -> list[LayerStats]:
        """Per-layer statistics, in layer order."""
        accumulators = list(self.accumulators.values())
        histograms = [acc.histograms() for acc in accumulators]
        flat = [h for per_layer in histograms for h in per_layer]
        schemes = dict.fromkeys(s for acc in accumulators for s in acc.schemes)
        computed = {
            scheme: iter(counting.stats_from_histograms(flat, scheme, window=w))
            for scheme, w in ((scheme, accumulators[0].window) for scheme in schemes)
        }
        results = []
        for acc, per_layer in zip(accumulators, histograms, strict=True):
            stats = {scheme: [next(computed[scheme]) for _ in per_layer] for scheme in schemes}
            results.append(acc._assemble(per_layer, {s: stats[s] for s in acc.schemes}))
        return results


# --------------------------------------------------------------------------- driver


def check_ks(ks: Sequence[float]) -> tuple[float, ...]:
    """The k values as floats: positive, finite, at least one, no two with the same key."""
    if isinstance(ks, int | float):
        ks = [ks]
    values = tuple(positive_finite(k, "k") for k in ks)
    if not values:
        raise SpikecodeError("give at least one k")
    keys = [k_key(v) for v in values]
    if len(set(keys)) != len(keys):
        raise SpikecodeError(f"k values repeat: {', '.join(keys)}")
    return values


def checkpoint_info(loaded: LoadedModel) -> CheckpointInfo:
    """Provenance of a model for the stats file (folder, kind, model_type, dtype)."""
    model_type = getattr(loaded.config, "model_type", None)
    if model_type is None and loaded.kind == "gla_swa":
        model_type = "gla_swa"
    dtype = None
    for tensor in loaded.model.parameters():
        dtype = str(tensor.dtype).removeprefix("torch.")
        break
    return CheckpointInfo(
        path=None if loaded.path is None else str(loaded.path),
        kind=loaded.kind,
        model_type=model_type if isinstance(model_type, str) else None,
        dtype=dtype,
    )


def escape_names(names: Iterable[str]) -> tuple[str, ...]:
    """Patterns (fnmatch syntax) that match exactly these module names."""
    return tuple(glob.escape(name) for name in names)


def calibrate(
    checkpoint: LoadedModel | nn.Module,
    data: CalibrationData | Sequence[str] | str | os.PathLike[str] | None = None,
    *,
    k: Sequence[float] = DEFAULT_K,
    schemes: Sequence[str] = DEFAULT_SCHEMES,
    samples: int | None = DEFAULT_SAMPLES,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_length: int | None = None,
    truncate: bool = False,
    include: str | Iterable[str] = DEFAULT_INCLUDE,
    exclude: str | Iterable[str] = DEFAULT_EXCLUDE,
    error_rows: int | None = DEFAULT_ERROR_ROWS,
    error_stride: int = DEFAULT_ERROR_STRIDE,
    window: int = 3,
    block_sizes: Sequence[int] = DEFAULT_BLOCK_SIZES,
    progress: Callable[[int], None] | None = None,
    backend: str | None = None,
    distributed: bool | None = None,
    recipe: str = DEFAULT_RECIPE,
    generate: int | None = None,
) -> CalibrationStats:
    """Calibrate spike coding on a text set: per-layer statistics for several k and codes.

    Parameters
    ----------
    checkpoint
        A :func:`~spikecode.models.checkpoint.load_checkpoint` result (its tokenizer, config,
        W8ASpike scales and folder are used) or a bare module (then ``data`` must hold
        token ids). The model stays where it is; inputs go to its first parameter's
        device.
    data
        :class:`CalibrationData`, a list of texts, a file (see
        :func:`load_calibration_data`), or None for the bundled corpus.
    k
        The k values (SPEC §2); default the report's sweep 2, 2.5, 3, 3.5, 4.
    schemes
        Codes whose SPEC §5 totals are recorded (default bitwise-bidirectional).
    samples
        Use the first ``samples`` samples of a file or of the bundled corpus (128 as in
        the report); None: all.
    batch_size
        Samples per forward pass.
    max_length, truncate
        Length limit (default the model's ``max_position_embeddings``) and whether longer
        samples are cut rather than refused.
    include, exclude
        Layer selection (:func:`spikecode.models.capture.list_linear_layers`); ``lm_head`` is
        excluded by default (SPEC §1).
    error_rows, error_stride
        The output error is measured per batch and layer on one row in ``error_stride``
        (at least one), at most ``error_rows`` (None: on every row).
    window, block_sizes
        Window of the windowed sparsity; block sizes of the channel-activity model.
    progress
        Called with the number of samples of each batch once it has run.
    backend
        Force the counting backend (``"numba"`` or ``"torch"``); None chooses by device.
    distributed
        Data-parallel calibration over the ``torch.distributed`` process group
        (:mod:`spikecode.calibration.distributed`): each rank runs every
        world-size-th batch of the single-process order and the ranks' statistics are
        merged exactly. None (default): when a group with more than one rank is
        initialized; True: require one; False: never. Every rank must call this with
        the same arguments; every rank returns the same merged result.
    recipe
        Which inputs are spike-driven and measured: ``"all-linear"`` (default) or
        ``"release"`` (see the module docstring).
    generate
        None: measure the prompts. N >= 1: generate per sample and measure only the N
        decode steps (see the module docstring); the longest prompt plus N + 1 tokens
        must fit the model's context.

    Returns
    -------
    CalibrationStats
        Ready for :func:`spikecode.calibration.save_stats`. Data-parallel: integer fields
        identical to one process over the same samples, float fields within
        ``spikecode.calibration.VTH_RTOL`` (Vth moments) and
        ``spikecode.calibration.ERROR_RTOL`` (output error).

    Raises
    ------
    SpikecodeError
        Bad data, samples over the length limit, ids outside the vocabulary, texts
        without a tokenizer, patterns selecting nothing, a selected layer the model
        never calls, NaN or Inf activations.
    """
    loaded = as_loaded(checkpoint)
    group = parallel.active(distributed)
    recipe = check_recipe(recipe)
    if generate is not None and (
        isinstance(generate, bool) or not isinstance(generate, int) or generate < 1
    ):
        raise SpikecodeError(f"generate must be a positive number of tokens, not {generate!r}")
    ks = check_ks(k)
    scheme_names = tuple(dict.fromkeys(get_scheme(s).name for s in schemes))
    if not scheme_names:
        raise SpikecodeError("give at least one code (scheme)")
    calibration = as_data(data, samples)
    tokenized = tokenize_data(calibration, loaded, max_length=max_length, truncate=truncate)
    if generate is not None:
        _check_generate(generate, tokenized, loaded)
    model = loaded.model
    accumulator: StatsAccumulator | None = None

    counting = [True]

    def feed(name: str, rows: torch.Tensor) -> None:
        assert accumulator is not None
        if counting[0]:
            accumulator(name, rows)

    spiked = [t.name for t in recipe_targets(model, recipe, include, exclude) if t.role == "spike"]
    hooks = LinearInputHooks(model, feed, escape_names(spiked), (), module_types=(ActivationSite,))
    accumulator = StatsAccumulator(
        model,
        hooks.layers,
        ks,
        with_error=True,
        scales=loaded.quant_scales,
        schemes=scheme_names,
        window=window,
        block_sizes=block_sizes,
        error_rows=error_rows,
        error_stride=error_stride,
        backend=backend,
    )
    routing = RoutingCounter(model, mask=lambda: hooks.mask, active=lambda: counting[0])
    trunk = _trunk(model, [name for name, _, _ in hooks.layers])
    device = model_device(model)
    data_info = DataInfo(
        source=calibration.source,
        samples=len(tokenized.input_ids),
        tokens=tokenized.tokens,
        max_length=tokenized.max_length,
        truncated=tokenized.truncated,
    )
    seen = [0, 0]  # this rank's samples and prompt tokens

    def counted(batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> Iterator[Any]:
        for ids, mask in batches:
            seen[0] += ids.shape[0]
            seen[1] += int(mask.sum())
            yield ids, mask

    batches = counted(padded_batches(tokenized, batch_size, device, pad_id(loaded), shard=group))
    stats: CalibrationStats | None = None
    try:
        flow = release_numerics(model) if recipe == "release" else contextlib.nullcontext()
        with torch.no_grad(), hooks, routing, flow:
            if generate is not None:
                _decode(
                    model,
                    batches,
                    generate,
                    hooks,
                    accumulator.begin_batch,
                    counting,
                    pad_id(loaded),
                    progress,
                )
            else:
                for ids, mask in batches:
                    hooks.set_mask(mask)
                    accumulator.begin_batch()
                    _forward(trunk, ids, mask)
                    if progress is not None:
                        progress(ids.shape[0])
        if seen[0]:
            data = data_info
            if group is not None:  # this rank's shard
                data = DataInfo(calibration.source, seen[0], seen[1], tokenized.max_length)
            stats = _assemble(
                loaded,
                accumulator,
                data,
                ks,
                scheme_names,
                window,
                error_rows,
                RecipeInfo(recipe, generate),
                routing,
            )
    except Exception as err:
        if group is None:
            raise
        # Tell the other ranks instead of leaving them waiting in the exchange.
        parallel.exchange(parallel.encode(None, err))
        raise
    if group is None:
        assert stats is not None  # tokenize_data refuses an empty set
        return stats
    return parallel.reduce_stats(parallel.exchange(parallel.encode(stats)), data_info)


def _assemble(
    loaded: LoadedModel,
    accumulator: StatsAccumulator,
    data: DataInfo,
    ks: tuple[float, ...],
    scheme_names: tuple[str, ...],
    window: int,
    error_rows: int | None,
    recipe: RecipeInfo,
    routing: RoutingCounter,
) -> CalibrationStats:
    routing_stats = [
        RoutingStats(
            layer,
            len(counts),
            routing.top_k.get(layer, 1),
            routing.tokens[layer],
            tuple(int(n) for n in counts),
        )
        for layer, counts in routing.counts.items()
    ]
    # A routed expert that no token reached has nothing to report (SPEC §8): its
    # routing entry says 0 tokens. Which layers are routed experts' is what merges read
    # from the file too (RoutingStats.expert_of).
    for name in [
        name
        for name, acc in accumulator.accumulators.items()
        if acc.tokens == 0 and any(moe.expert_of(name) is not None for moe in routing_stats)
    ]:
        del accumulator.accumulators[name]
    layers = accumulator.results()
    first = accumulator.accumulators[layers[0].name]
    return CalibrationStats.create(
        checkpoint=checkpoint_info(loaded),
        data=data,
        k=ks,
        schemes=scheme_names,
        window=window,
        block_sizes=first.block_sizes,
        layers=layers,
        error_rows=error_rows,
        error_stride=None if error_rows is None else first.error_stride,
        recipe=recipe,
        routing=routing_stats,
    )
