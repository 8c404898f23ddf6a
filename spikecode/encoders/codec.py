"""Step 2 of SPEC §3: integer counts -> spike trains, and back.

:func:`encode` expands counts into a :class:`SpikeTrain` — sparse events or packed
bit-planes, never a dense float train; :func:`decode` restores the counts exactly;
:func:`encode_dense` writes the int8 dense train directly from counts. All of them (and
:func:`spikecode.encode_activations`) resolve the number of steps, the zero point and
saturation the same way, in :func:`resolve_range`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spikecode._validate import is_torch
from spikecode.encoders import _arrays, _kernels, _plane_kernels
from spikecode.encoders.limits import DEFAULT_MAX_SPIKES, check_plan_size, total_spikes
from spikecode.encoders.plan import EncodingPlan, plan_encoding, resolve_range
from spikecode.encoders.schemes import check_bit_order, get_scheme
from spikecode.encoders.train import SpikeTrain, check_layout, feature_dtype
from spikecode.errors import SpikecodeError

__all__ = [
    "EncodingPlan",
    "decode",
    "encode",
    "encode_dense",
    "finish_train",
    "min_steps",
    "plan_encoding",
    "resolve_range",
]


def min_steps(counts: Any, scheme: str, *, zero_point: int | str | None = "auto") -> int:
    """Minimal T that carries ``counts`` losslessly under ``scheme`` (SPEC §3 table)."""
    return plan_encoding(counts, scheme, None, zero_point=zero_point).T


def encode(
    counts: Any,
    scheme: str = "ternary",
    T: int | None = None,
    *,
    saturate: bool = False,
    bit_order: str = "msb",
    zero_point: int | str | None = "auto",
    layout: str = "auto",
    max_spikes: int | None = DEFAULT_MAX_SPIKES,
) -> SpikeTrain:
    """Expand integer counts into a spike train, as events or packed bit-planes (SPEC §3).

    Parameters
    ----------
    counts
        Integer counts, features last (int32 range). NumPy, array-like, or a torch tensor
        (on any device: its planes are built there, with PyTorch, and copied to the host).
    scheme
        ``binary``, ``ternary``, ``bitwise``, ``bitwise-bidirectional`` or
        ``bitwise-twos-complement``.
    T
        Number of steps; ``None`` (default) for the minimal lossless T.
    saturate
        Clip counts a fixed T cannot carry (reported as ``train.clipped``) instead of
        raising.
    bit_order
        ``"msb"`` (default; step 0 carries the highest bit) or ``"lsb"``.
    zero_point
        For the unsigned codes: ``"auto"`` shifts signed counts by their minimum.
    layout
        ``"events"``, ``"planes"`` or ``"auto"`` (default): the smaller of the two for
        these counts. Events take ``8 (rows·T + 1) + b · spikes`` bytes (``b`` = 2, or 4
        beyond 65,536 features, +1 for the signed codes), planes
        ``(T [+1 for the signed codes]) · rows · ceil(F/8)``; ``auto`` picks planes when
        they take no more bytes. In practice: planes for the bitwise codes at ordinary
        firing rates, events for very sparse trains such as binary/ternary with a long T
        set by a few outliers.
    max_spikes
        Refuse, before allocating, a train of more spikes or step offsets than this
        (with ``layout="planes"``: more plane bytes)
        (default :data:`~spikecode.encoders.DEFAULT_MAX_SPIKES`, 2**28); None
        for no bound.

    Returns
    -------
    SpikeTrain
        ``decode(train)`` equals ``counts`` when nothing was clipped.

    Examples
    --------
    >>> import numpy as np
    >>> encode(np.array([5]), "bitwise").to_dense()[:, 0].tolist()
    [1, 0, 1]
    >>> encode(np.array([-5]), "bitwise-twos-complement", T=4).to_dense()[:, 0].tolist()
    [1, 0, 1, 1]
    """
    bit_order = check_bit_order(bit_order)
    layout = check_layout(layout, auto=True)
    msb = bit_order == "msb"
    if is_torch(counts) and layout != "events":
        from spikecode.encoders import _torch

        plan, planes, sign_plane, n_spikes = _torch.encode_planes(
            counts,
            get_scheme(scheme),
            T,
            saturate=saturate,
            zero_point=zero_point,
            msb=msb,
            max_spikes=max_spikes,
        )
        return finish_train(plan, bit_order, layout, planes, sign_plane, n_spikes)
    plan = plan_encoding(counts, scheme, T, saturate=saturate, zero_point=zero_point)
    rows, features = plan.rows.shape
    width = _arrays.plane_width(features)
    n = None
    if layout == "planes":
        _arrays.check_planes_size(plan, width, max_spikes)
    else:
        n = check_plan_size(plan, max_spikes)
    if layout == "auto":  # decided before building, so neither form is built in vain
        if n is None:
            n = total_spikes(plan.rows, plan.scheme, plan.T, plan.zero_point)
        layout = _arrays.choose_layout(rows, features, plan.T, n, plan.scheme.signed)
    if layout == "events":
        return _encode_events(plan, bit_order)
    planes = np.zeros((plan.T, plan.rows.shape[0], width), dtype=np.uint8)
    signed = plan.scheme.signed
    sign_plane = np.zeros((plan.rows.shape[0] if signed else 0, width), dtype=np.uint8)
    spikes = _plane_kernels.counts_planes(
        plan.rows, plan.scheme.code, plan.T, plan.zero_point, msb, planes, sign_plane
    )
    return finish_train(plan, bit_order, layout, planes, sign_plane, int(spikes.sum()))


def finish_train(
    plan: EncodingPlan,
    bit_order: str,
    layout: str,
    planes: np.ndarray,
    sign_plane: np.ndarray,
    n_spikes: int,
) -> SpikeTrain:
    """The train of freshly encoded planes in ``layout`` (``auto``: the smaller one).

    ``plan.rows`` is not read (the fused path has no counts); ``n_spikes``, counted by
    the encoding kernel, gives the size of either layout without another pass.
    """
    rows, features = planes.shape[1], plan.shape[-1]
    signed = plan.scheme.signed
    if layout == "auto":
        layout = _arrays.choose_layout(rows, features, plan.T, n_spikes, signed)
    sign = sign_plane if signed else None
    meta = {"bit_order": bit_order, "zero_point": plan.zero_point, "clipped": plan.clipped}
    if layout == "events":
        events = _arrays.events_from_planes(planes, sign, features)
        return SpikeTrain(plan.shape, plan.T, plan.scheme.name, *events, **meta)
    return SpikeTrain(
        plan.shape,
        plan.T,
        plan.scheme.name,
        planes=planes,
        sign_plane=sign,
        n_spikes=n_spikes,
        **meta,
    )


def _encode_events(plan: EncodingPlan, bit_order: str) -> SpikeTrain:
    """Counts -> events: per-(row, step) spike counts, offsets, then one fill pass."""
    code, msb = plan.scheme.code, bit_order == "msb"
    per_step = _kernels.step_spike_counts(plan.rows, code, plan.T, plan.zero_point, msb)
    step_ptr = np.zeros(per_step.size + 1, dtype=np.int64)
    np.cumsum(per_step, out=step_ptr[1:])
    n = int(step_ptr[-1])
    feature = np.empty(n, dtype=feature_dtype(plan.rows.shape[1]))
    signs = np.empty(n if plan.scheme.signed else 0, dtype=np.int8)
    fill = _kernels.fill_events_bitwise if plan.scheme.bitwise else _kernels.fill_events_unary
    fill(plan.rows, code, plan.T, plan.zero_point, msb, step_ptr, feature, signs)
    return SpikeTrain(
        shape=plan.shape,
        T=plan.T,
        scheme=plan.scheme.name,
        step_ptr=step_ptr,
        feature=feature,
        signs=signs,
        bit_order=bit_order,
        zero_point=plan.zero_point,
        clipped=plan.clipped,
    )


def encode_dense(
    counts: Any,
    scheme: str = "ternary",
    T: int | None = None,
    *,
    saturate: bool = False,
    bit_order: str = "msb",
    zero_point: int | str | None = "auto",
    max_spikes: int | None = DEFAULT_MAX_SPIKES,
) -> np.ndarray:
    """Counts straight to the dense int8 train ``[T, *shape]`` (same rules as :func:`encode`).

    ``max_spikes`` bounds the dense array's ``T x elements`` entries (None: no bound).
    """
    bit_order = check_bit_order(bit_order)
    plan = plan_encoding(counts, scheme, T, saturate=saturate, zero_point=zero_point)
    check_plan_size(plan, max_spikes, dense=True)
    dense = np.zeros((plan.T, *plan.rows.shape), dtype=np.int8)
    _kernels.fill_dense(
        plan.rows, plan.scheme.code, plan.T, plan.zero_point, bit_order == "msb", dense
    )
    return dense.reshape((plan.T, *plan.shape))


def decode(train: SpikeTrain) -> np.ndarray:
    """Restore the integer counts of a train: ``zero_point + Σ_t w_t s_t`` (int32, ``shape``).

    Lossless, in either layout: ``decode(encode(c, ...))`` equals ``c`` whenever nothing
    was clipped.
    """
    if not isinstance(train, SpikeTrain):
        raise SpikecodeError(f"decode expects a SpikeTrain, not {type(train).__name__}")
    return train.decode()
