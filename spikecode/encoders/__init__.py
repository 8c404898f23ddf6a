"""Step 2: counts (or floats, fused) -> spike trains under the five codes of SPEC §3."""

from typing import TYPE_CHECKING

from spikecode._lazy import lazy_exports

# Imported on first use: the codec loads the Numba kernels, which `spikecode --help` and
# modules needing only the scheme table (spikecode.encoders.schemes) must not pay for.
_EXPORTS = {
    **dict.fromkeys(
        ["EncodingPlan", "decode", "encode", "encode_dense", "min_steps"],
        "spikecode.encoders.codec",
    ),
    "encode_activations": "spikecode.encoders.fused",
    "DEFAULT_MAX_SPIKES": "spikecode.encoders.limits",
    "plan_encoding": "spikecode.encoders.plan",
    **dict.fromkeys(["SCHEMES", "Scheme", "get_scheme"], "spikecode.encoders.schemes"),
    **dict.fromkeys(["LAYOUTS", "SpikeTrain"], "spikecode.encoders.train"),
}
__getattr__, __dir__ = lazy_exports(
    __name__, _EXPORTS, ("codec", "fused", "limits", "plan", "schemes", "train")
)

if TYPE_CHECKING:
    from spikecode.encoders.codec import EncodingPlan, decode, encode, encode_dense, min_steps
    from spikecode.encoders.fused import encode_activations
    from spikecode.encoders.limits import DEFAULT_MAX_SPIKES
    from spikecode.encoders.plan import plan_encoding
    from spikecode.encoders.schemes import SCHEMES, Scheme, get_scheme
    from spikecode.encoders.train import LAYOUTS, SpikeTrain

__all__ = [
    "DEFAULT_MAX_SPIKES",
    "LAYOUTS",
    "SCHEMES",
    "EncodingPlan",
    "Scheme",
    "SpikeTrain",
    "decode",
    "encode",
    "encode_activations",
    "encode_dense",
    "get_scheme",
    "min_steps",
    "plan_encoding",
]
