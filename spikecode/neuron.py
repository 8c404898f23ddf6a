"""The multi-step integrate-and-fire neuron whose collapsed form is Step 1 (SPEC §2).

SPEC §2 (report eq. 20): a neuron without leak and with soft reset,
``v[t+1] = v[t] - Vth·s[t] + x[t+1]``, emits ``round(x / Vth)`` spikes. Written with a
threshold of ``Vth`` such a neuron counts ``floor``; the rounding comes from a membrane
that starts half a threshold up. This module states the neuron in the equivalent
symmetric form, with the membrane offset folded into the thresholds::

    v[t]   = v[t-1] - Vth·s[t-1] + x[t]          v[-1] = 0, s[-1] = 0
    s[t]   = +1  if v[t] >=  Vth/2
             -1  if v[t] <  -Vth/2 and the neuron is ternary
              0  otherwise

(``v' = v + Vth/2`` reaches ``Vth`` exactly when ``v`` reaches ``Vth/2``.) Fed ``x`` it
emits spikes summing to ``floor(x/Vth + 1/2)`` and ends with ``v`` in
``[-Vth/2, Vth/2)``: that is ``round(x / Vth)`` except at exact ties ``x/Vth = n + 1/2``,
which the neuron rounds up (towards +inf) where round-half-to-even picks the even
neighbour (2.5 -> 3 instead of 2; -2.5 -> -2 as round does). One inequality is strict
so that a tie never fires back and forth.

Two input schedules:

* ``drive="first"``: the whole activation arrives at step 0. The neuron then fires in
  its first ``|c|`` steps and stays silent — exactly the binary/ternary train of SPEC §3.
* ``drive="spread"``: ``x / T`` arrives at every step ("fed the activation spread over
  T steps"). It fires at most once per step, keeps up as long as ``T >= |c|``, and ends
  with the same count at different times.

This is a slow, explicit simulation (one NumPy step at a time) used to check the
single-step formula, not a hot path.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from spikecode._validate import array_bytes, check_bytes, float_rows, positive_finite, to_numpy
from spikecode.errors import SpikecodeError

__all__ = ["integrate_and_fire"]


def integrate_and_fire(
    x: Any,
    vth: Any,
    T: int,
    *,
    ternary: bool = True,
    drive: Literal["first", "spread"] = "first",
) -> np.ndarray:
    """Simulate the soft-reset IF neuron of SPEC §2 for ``T`` steps.

    Parameters
    ----------
    x
        Activations, features last (float), any leading shape.
    vth
        Threshold: a scalar or one per row (shape ``x.shape[:-1]``), as returned by
        :func:`spikecode.adaptive_counts`.
    T
        Number of time steps.
    ternary
        Whether the neuron also fires -1 (at ``v < -Vth/2``); a binary neuron never does.
    drive
        ``"first"`` (all input at step 0) or ``"spread"`` (``x / T`` at every step).

    Returns
    -------
    numpy.ndarray
        int8 spikes ``[T, *x.shape]``, time first.
    """
    rows, shape = float_rows(x)
    if not np.all(np.isfinite(rows)):
        raise SpikecodeError("activations contain NaN or Inf", shape=shape)
    if isinstance(T, bool) or not isinstance(T, int | np.integer) or T < 1:
        raise SpikecodeError(f"T must be a positive integer, not {T!r}")
    if drive not in ("first", "spread"):
        raise SpikecodeError(f"drive must be 'first' or 'spread', not {drive!r}")
    threshold = to_numpy(vth, "vth").astype(rows.dtype)
    if threshold.ndim == 0:
        positive_finite(threshold, "vth")
        threshold = np.full(rows.shape[0], threshold, dtype=rows.dtype)
    elif threshold.shape != shape[:-1]:
        raise SpikecodeError(
            "vth must be a scalar or have shape x.shape[:-1]",
            shape=threshold.shape,
            expected=shape[:-1],
        )
    threshold = threshold.reshape(-1, 1)
    if not np.all(np.isfinite(threshold)) or np.any(threshold <= 0):
        raise SpikecodeError("vth must be finite and > 0")
    half = threshold / 2
    per_step = rows / rows.dtype.type(T) if drive == "spread" else rows
    v = np.zeros_like(rows)
    s = np.zeros(rows.shape, dtype=np.int8)
    check_bytes(array_bytes((T, *rows.shape), np.int8), f"the spikes of {T:,} steps", T=T)
    out = np.zeros((T, *rows.shape), dtype=np.int8)
    for t in range(T):
        v = v - threshold * s
        if drive == "spread" or t == 0:
            v = v + per_step
        s = (v >= half).astype(np.int8)
        if ternary:
            s -= (v < -half).astype(np.int8)
        out[t] = s
    return out.reshape((T, *shape))
