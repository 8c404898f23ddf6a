"""Step 2: counts (or floats, fused) -> spike trains under the five codes of SPEC §3."""

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
