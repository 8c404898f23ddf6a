"""Step 2: integer counts -> spike trains under the five codes of SPEC §3."""

from spikecode.encoders.codec import (
    EncodingPlan,
    decode,
    encode,
    encode_dense,
    min_steps,
    plan_encoding,
)
from spikecode.encoders.schemes import SCHEMES, Scheme, get_scheme
from spikecode.encoders.train import SpikeTrain

__all__ = [
    "SCHEMES",
    "EncodingPlan",
    "Scheme",
    "SpikeTrain",
    "decode",
    "encode",
    "encode_dense",
    "get_scheme",
    "min_steps",
    "plan_encoding",
]
