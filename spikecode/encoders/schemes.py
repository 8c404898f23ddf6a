"""The five spike codes of SPEC §3: names, value ranges, minimal T and step weights.

A code expands an integer spike count ``c`` into a train of ``T`` steps ``s_t``. Every
code decodes as a weighted sum ``c = zero_point + Σ_t w_t · s_t``:

=======================  ==========  ==============================  =========================
scheme                   spikes      step weight w_t (MSB first)     minimal T, ``M = max |c|``
=======================  ==========  ==============================  =========================
binary                   {0, 1}      1                               max(1, M)
ternary                  {-1, 0, 1}  1                               max(1, M)
bitwise                  {0, 1}      2^(T-1-t)                       max(1, ⌈log2(M+1)⌉)
bitwise-bidirectional    {-1, 0, 1}  2^(T-1-t)                       max(1, ⌈log2(M+1)⌉)
bitwise-twos-complement  {0, 1}      -2^(T-1) at t=0, else as above  max(2, ⌈log2(M+1)⌉ + 1)
=======================  ==========  ==============================  =========================

Conventions this module fixes where SPEC §3 leaves room (listed with SPEC §3 in
``docs/spec.rst``):

* Binary and ternary use ``max(1, M)`` steps rather than ``M``: an all-zero tensor is one
  silent step, so a train always has a time axis and its firing rate is defined.
* The unsigned codes (``binary``, ``bitwise``) carry ``c - zero_point``. The default
  zero point is ``min(0, min(c))`` over the whole tensor — zero for non-negative counts,
  the shift SPEC §3 asks for otherwise; an explicit ``zero_point=0`` refuses negative
  counts instead.
* ``M`` for the unsigned codes is the largest *shifted* value ``max(c - zero_point)``;
  two's complement uses SPEC's symmetric bound (``-8`` gets 5 steps by default), while a
  fixed ``T`` accepts the full two's-complement range ``[-2^(T-1), 2^(T-1) - 1]``.
* Bit order: most-significant bit first by default (the released Int2Spike order);
  ``bit_order="lsb"`` puts bit ``b`` at step ``b`` instead, and the two's-complement sign
  bit at the last step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from spikecode.errors import SpikecodeError

__all__ = [
    "BIT_ORDERS",
    "SCHEMES",
    "Scheme",
    "get_scheme",
]

BitOrder = Literal["msb", "lsb"]
BIT_ORDERS: tuple[str, ...] = ("msb", "lsb")

#: The largest T a bitwise code accepts: step weights are int64.
MAX_BITWISE_T = 62
#: The largest T binary/ternary accept: no int32 count needs more steps than |-2**31|.
MAX_UNARY_T = 1 << 31


@dataclass(frozen=True)
class Scheme:
    """One spike code.

    Attributes
    ----------
    name
        The name users pass (``"ternary"``, ...).
    code
        Small integer identifying the code inside the Numba kernels.
    signed
        Whether spikes take the value -1 (ternary, bitwise-bidirectional).
    unsigned_counts
        Whether the code carries only non-negative values, so that signed counts need a
        zero point (binary, bitwise).
    bitwise
        Whether step weights are powers of two.
    """

    name: str
    code: int
    signed: bool
    unsigned_counts: bool
    bitwise: bool

    @property
    def twos_complement(self) -> bool:
        """Whether the first (MSB-first) step carries the negative sign weight."""
        return self.code == TWOS

    def min_steps(self, max_abs: int) -> int:
        """Minimal T that carries every value of magnitude at most ``max_abs`` (SPEC §3)."""
        m = int(max_abs)
        if not self.bitwise:
            return max(1, m)
        if self.twos_complement:
            return max(2, m.bit_length() + 1)
        return max(1, m.bit_length())

    def value_range(self, T: int) -> tuple[int, int]:
        """Smallest and largest value (after the zero point) a T-step train can carry."""
        if not self.bitwise:
            return (0 if self.unsigned_counts else -T, T)
        if self.twos_complement:
            return (-(1 << (T - 1)), (1 << (T - 1)) - 1)
        top = (1 << T) - 1
        return (0 if self.unsigned_counts else -top, top)

    def step_weights(self, T: int, bit_order: str = "msb") -> np.ndarray:
        """Weight ``w_t`` of each step, so that a train decodes as ``Σ_t w_t s_t`` (int64 [T])."""
        if not self.bitwise:
            return np.ones(T, dtype=np.int64)
        bits = np.arange(T, dtype=np.int64)
        weights = np.left_shift(np.int64(1), bits)  # weight of bit b is 2^b
        if self.twos_complement:
            weights[T - 1] = -weights[T - 1]
        return weights[::-1].copy() if bit_order == "msb" else weights

    def check_T(self, T: int) -> int:
        """Validate a user-given number of steps and return it as ``int``."""
        if isinstance(T, bool) or not isinstance(T, int | np.integer):
            raise SpikecodeError("T must be a positive integer", T=T, scheme=self.name)
        T = int(T)
        lowest = 2 if self.twos_complement else 1
        if lowest > T:
            raise SpikecodeError(f"T must be at least {lowest}", T=T, scheme=self.name)
        if self.bitwise and T > MAX_BITWISE_T:
            raise SpikecodeError(
                f"bitwise codes support at most T={MAX_BITWISE_T} steps", T=T, scheme=self.name
            )
        if T > MAX_UNARY_T:
            raise SpikecodeError(
                f"T must be at most {MAX_UNARY_T} (no int32 count needs more steps)",
                T=T,
                scheme=self.name,
            )
        return T


# Codes as the kernels know them.
BINARY, TERNARY, BITWISE, BIDIRECTIONAL, TWOS = range(5)

#: The five codes by name, in the order of SPEC §3's table.
SCHEMES: dict[str, Scheme] = {
    s.name: s
    for s in (
        Scheme("binary", BINARY, signed=False, unsigned_counts=True, bitwise=False),
        Scheme("ternary", TERNARY, signed=True, unsigned_counts=False, bitwise=False),
        Scheme("bitwise", BITWISE, signed=False, unsigned_counts=True, bitwise=True),
        Scheme(
            "bitwise-bidirectional", BIDIRECTIONAL, signed=True, unsigned_counts=False, bitwise=True
        ),
        Scheme("bitwise-twos-complement", TWOS, signed=False, unsigned_counts=False, bitwise=True),
    )
}


def get_scheme(name: str | Scheme) -> Scheme:
    """Look a scheme up by name, refusing unknown names with the list of known ones."""
    if isinstance(name, Scheme):
        return name
    try:
        return SCHEMES[name]
    except (KeyError, TypeError):
        raise SpikecodeError(
            f"unknown scheme {name!r}; choose one of: {', '.join(SCHEMES)}"
        ) from None


def check_bit_order(bit_order: str) -> str:
    """Validate ``bit_order`` ("msb" or "lsb")."""
    if bit_order not in BIT_ORDERS:
        raise SpikecodeError(f"bit_order must be 'msb' or 'lsb', not {bit_order!r}")
    return bit_order
