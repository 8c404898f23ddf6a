"""Spike-driven projections as Lava process networks for Loihi 2 (lava-nc 0.10).

Lava has no NIR importer, so this exporter writes what a Lava network is built from, and
a small runner (:data:`RUNNER`, copied into every export folder as ``spikecode_lava.py``)
that builds and runs it in Lava's Loihi-2 fixed-point model
(``Loihi2SimCfg(select_tag="fixed_pt")``). The runner imports only numpy and lava:
lava-nc 0.10 needs Python 3.10 and numpy < 2, where spikecode does not install.

**The network of one projection** (SPEC §4, ``y = Vth · Σ_g σ_g · Σ_t w_t · W_q,g s_t + b``)::

    RingBuffer  --graded spikes-->  Dense  --a_out-->  Sigma
    w_t · s_t   (24-bit payloads)   2·W_q, weight_exp = -1      sigma += a_in (24-bit)

* **Graded spikes**: every code sends one payload per input and step, ``w_t · s_t``
  (``Dense(num_message_bits=24)``); -1 spikes and bit weights travel in the payload.
* **Weights**: Loihi's mixed-sign synaptic weights are 8-bit and even (the least
  significant bit goes to the sign), so ``Dense`` holds ``2·W_q`` (even, in
  [-256, 254] for every int8) with ``weight_exp = -1``: its sum is shifted right by one
  bit, exactly ``W_q · payload``. Each scale group ``g`` (the release's 128 input
  columns per scale) has its own ``Dense`` over its columns and its own ``Sigma``, so
  each integrator holds one group's accumulator (neuron ``o·G + g`` in the runner's
  output, as in the NIR export's integer form) and no zero weights are stored.
* **Integrator**: ``lava.proc.sdn.Sigma`` (``sigma += a_in``, 24-bit state) holds the
  exact integer accumulator ``W_q,g c`` of :func:`spikecode.spike_linear` after a token.
  (Lava's CUBA LIF is not exact: in fixed point its input is shifted left 6 bits into a
  24-bit state.)
* **Timing**: ``Dense`` sends the sum of step ``t`` at step ``t + 1``, so a token runs
  ``T + 1`` steps (its frames, then a silent step); the runner reads ``sigma`` and sets
  it back to 0 between tokens. The scale groups share no process, so the runner runs
  each group's network in turn.
* **Host readout** (:func:`lava_readout`): ``y[o] = Vth · Σ_g σ[o, g] · (sigma[o·G + g] +
  z · gain[o, g]) + b[o]`` with the token's threshold and the train's zero point.

**Widths checked at export** (refused in one message naming the largest ``T`` that fits,
or ``split``):

* a step weight must fit the 24-bit graded message (bitwise codes: ``T ≤ 23``);
* the accumulator bound ``Σ_t |w_t| · max_{o,g} Σ_{i∈g} |W[o, i]|`` must fit Sigma's
  24-bit state;
* a per-step dendritic sum ``max |w_t| · Σ_{i∈block} |W[o, i]|`` must fit one ``Dense``'s
  ``a_out`` (``a_out_bits``, default 24, the width Sigma's input declares; Lava's Dense
  declares 16 bits, which its Python model does not enforce). Sigma's 24-bit input holds
  the sum of all blocks whenever the state does (``max |w_t| ≤ Σ_t |w_t|``). With
  ``split=True`` a group's fan-in is cut into contiguous blocks, one ``RingBuffer`` and
  ``Dense`` each, whose sums fit, all feeding the group's ``Sigma`` (an InPort sums its
  connections).

**Files**: one ``<name>.npz`` per projection (``numpy.load(..., allow_pickle=False)``;
metadata as a JSON string), plus ``index.json`` and the runner in a folder; a path ending
in ``.npz`` writes a single projection as one file.
"""

from spikecode.exporters.lava.export import (
    A_OUT_BITS,
    INDEX_FILE,
    LAVA_FORMAT,
    LAVA_FORMAT_VERSION,
    MESSAGE_BITS,
    RUNNER,
    RUNNER_FILE,
    STATE_BITS,
    WEIGHT_BITS,
    WEIGHT_EXP,
    LavaExport,
    export_lava,
    lava_projections,
    load_lava,
)
from spikecode.exporters.lava.host import (
    lava_frames,
    lava_readout,
    run_lava,
    save_frames,
    simulate_lava,
)

__all__ = [
    "A_OUT_BITS",
    "INDEX_FILE",
    "LAVA_FORMAT",
    "LAVA_FORMAT_VERSION",
    "MESSAGE_BITS",
    "RUNNER",
    "RUNNER_FILE",
    "STATE_BITS",
    "WEIGHT_BITS",
    "WEIGHT_EXP",
    "LavaExport",
    "export_lava",
    "lava_frames",
    "lava_projections",
    "lava_readout",
    "load_lava",
    "run_lava",
    "save_frames",
    "simulate_lava",
]
