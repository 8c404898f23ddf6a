"""Spike-driven projections as NIR graphs that the field's own tools load unmodified.

SPEC §4 writes a spike-driven projection as::

    y = Vth · Σ_g σ_g · Σ_t w_t · (W_q,g s_t) + b

NIR (the Neuromorphic Intermediate Representation, package ``nir``) has static
parameters and continuous-time neurons, while ``Vth`` changes with every token and
the step weights ``w_t`` of the bitwise codes change with every step. This package fixes
how a graph represents each part; ``docs/export-consumers.rst`` has the consumer recipes.

**One graph per projection**, four nodes with the names every consumer expects (Spyx
walks the graph from a node literally named ``input``)::

    input  --->  synapse  --->  integrator  --->  output
    Input [C]    Affine [N, C]  IF [N]            Output [N]
                 (bias 0)       (r = 1, never fires)

* **Input channels** ``C``: ``P`` ports × ``H`` halves × ``in`` features; channel
  ``(p·H + h)·in + i`` is feature ``i`` of port ``p``, half ``h``. The bitwise codes have
  one port per step (``P = T``: at step ``t`` the spikes enter port ``t``, the others are
  silent), binary and ternary one port (``P = 1``). ``graded=True`` gives every code one
  port whose payload at step ``t`` is ``w_t · s_t`` (a graded spike: no weight copies).
  ``on_off=True`` (signed codes) splits each port into ``H = 2`` halves, ON (``s = +1``)
  then OFF (``s = -1``), each carrying only 0/1 spikes, with weights ``W`` and ``-W``.
* **Synapse**: ``Affine`` with a zero bias (Sinabs maps no ``Linear``; snnTorch wants a
  bias). ``weights="int"`` (default) keeps the INT8 weights integer — the weight of port
  ``p``, half ``h`` is ``w_p · (±1) · W_q``, stored in the smallest integer dtype that
  holds it — and gives every scale group its own integrator: neuron ``n = o·G + g``
  sees only the columns of group ``g``, so each membrane is the exact integer
  accumulator ``W_q,g c`` of :func:`spikecode.spike_linear`, and the scales ``σ`` stay
  separate, applied on the host. ``weights="float"`` folds ``σ`` in (float64
  ``w_p σ W_q``) and has one integrator per output (``N = out``), ``G`` times smaller
  when there are many scale groups.
* **Integrator**: ``IF`` (default) with ``r = 1``, ``v_reset = 0`` and a threshold, the
  same for every neuron, a power of two above twice the largest membrane a ``T``-step
  train of the code can drive: it never fires, so its membrane is an exact integrator
  of the weighted spikes (snnTorch, Norse, Sinabs, Spyx). ``integrator="LI"`` writes
  Rockpool's form instead: NIR's ``LI`` with ``tau =`` :data:`LI_TAU` ``= 2^31 - 1``,
  ``r = tau/dt``, ``v_leak = 0``, whose decay per step ``exp(-dt/tau)`` is 1 in
  float32. NIR's pure integrator ``I`` is refused: no consumer runs it.
* **Discretisation**: a step lasts ``dt`` (default 1) and holds its input:
  ``v[t] = v[t-1] + dt·r·I[t]``, ``v[-1] = 0``, exact for a leak-free integrator, with
  ``r = 1/dt`` (``LI``: ``r = tau/dt``). One token is one run of ``T`` steps from
  ``v = 0`` (reset between tokens).
* **Host readout** after step ``T-1``, with the token's adaptive threshold ``Vth``
  (SPEC §2) and the train's zero point ``z`` (SPEC §3, unsigned codes)::

      y[o] = Vth · Σ_g σ[o, g] · (v[o·G + g] + z · gain[o, g]) + b[o]     (int)
      y[o] = Vth · (v[o] + z · gain[o]) + b[o]                            (float)

  ``σ``, ``gain = Σ_{i∈g} W_q[o, i]`` and ``b`` are stored in the graph metadata
  (``scales``, ``zero_point_gain``, ``bias``); :func:`nir_readout` applies them and
  :func:`nir_frames` builds the time-major input frames of a train.
* **Accumulator width**: ``accumulator_bound`` is the largest ``|W_q,g c|`` a ``T``-step
  train can drive (``Σ_t |w_t| · max_{o,g} Σ_{i∈g} |W_q[o, i]|``), ``accumulator_bits``
  the signed integer width that holds it, ``float32_exact`` whether a float32 consumer
  keeps it exact (bound ≤ 2^24; a :class:`Float32Warning` names the consumers that
  round it when not).
* **Consumers**: :func:`run_in_consumer` runs graphs in snnTorch, Norse, Sinabs, Spyx
  or Rockpool through their own importers, with each one's recipe and the readout.

**Several projections** are a folder: one ``<name>.nir`` per projection plus
``index.json`` (:data:`INDEX_FILE`, layout in :func:`export_nir`). A path ending in
``.nir`` writes a single projection as one file.
"""

from spikecode.exporters.nir.consumers import CONSUMERS, consumer_membrane, run_in_consumer
from spikecode.exporters.nir.graph import (
    INDEX_FILE,
    INDEX_FORMAT,
    INTEGRATORS,
    LI_TAU,
    NIR_FORMAT,
    NIR_FORMAT_VERSION,
    WEIGHTS,
    Float32Warning,
    NirExport,
    export_nir,
    load_nir,
    nir_graph,
    nir_graphs,
)
from spikecode.exporters.nir.host import nir_frames, nir_readout, simulate_nir

__all__ = [
    "CONSUMERS",
    "INDEX_FILE",
    "INDEX_FORMAT",
    "INTEGRATORS",
    "LI_TAU",
    "NIR_FORMAT",
    "NIR_FORMAT_VERSION",
    "WEIGHTS",
    "Float32Warning",
    "NirExport",
    "consumer_membrane",
    "export_nir",
    "load_nir",
    "nir_frames",
    "nir_graph",
    "nir_graphs",
    "nir_readout",
    "run_in_consumer",
    "simulate_nir",
]
