"""How energy figures are printed: one place, so every output shows the same digits.

SPEC §6 fixes the printed form of the report's eq. 24 comparison: 97.7 % and 85.3 %
below FP16 and INT8, 44.2× and 6.78× cheaper.
"""

from __future__ import annotations

import math

__all__ = ["energy_unit", "format_energy", "format_ratio", "format_reduction"]

#: Units of energy above pJ, largest first, with their size in pJ.
_UNITS = ((1e9, "mJ"), (1e6, "µJ"), (1e3, "nJ"))


def energy_unit(pj: float) -> tuple[float, str]:
    """The unit that prints an energy of ``pj`` picojoules with a leading digit.

    Returns
    -------
    (scale, unit)
        Divide by ``scale`` to express in ``unit``: ``(1e3, "nJ")`` for 1,300 pJ; pJ
        below 1 nJ (and for 0, NaN or inf).

    Examples
    --------
    >>> energy_unit(1300.0), energy_unit(2.5e7), energy_unit(0.03)
    ((1000.0, 'nJ'), (1000000.0, 'µJ'), (1.0, 'pJ'))
    """
    magnitude = abs(pj) if math.isfinite(pj) else 0.0
    for scale, unit in _UNITS:
        if magnitude >= scale:
            return scale, unit
    return 1.0, "pJ"


def format_energy(pj: float | None) -> str:
    """Print an energy given in pJ with 4 significant digits in its :func:`energy_unit`.

    Examples
    --------
    >>> format_energy(1300.0), format_energy(0.0339), format_energy(None)
    ('1.3 nJ', '0.0339 pJ', 'n/a')
    """
    if pj is None or not math.isfinite(pj):
        return "n/a"
    scale, unit = energy_unit(pj)
    return f"{pj / scale:.4g} {unit}"


def format_ratio(value: float | None) -> str:
    """Print a ratio ``dense / spike`` with three significant digits and ``×``.

    Parameters
    ----------
    value
        The ratio, or None when undefined (spike energy 0).

    Returns
    -------
    str
        ``"44.2×"``, ``"6.78×"``, ``"1234×"`` (no exponent notation above 1); ``"n/a"``
        for None.

    Examples
    --------
    >>> format_ratio(1.5 / 0.0339), format_ratio(0.23 / 0.0339)
    ('44.2×', '6.78×')
    """
    if value is None or not math.isfinite(value):
        return "n/a"
    # Three significant digits (at least: 1234.4 prints whole, as 1234×); rounding first
    # makes 99.96 print as 100×, not 100.0×.
    rounded = float(f"{value:.3g}")
    magnitude = abs(rounded)
    if magnitude >= 100:
        return f"{value:.0f}×"
    if magnitude >= 10:
        return f"{rounded:.1f}×"
    if magnitude >= 1:
        return f"{rounded:.2f}×"
    return f"{rounded:.3g}×"


def format_reduction(value: float | None) -> str:
    """Print a fractional reduction as a percentage with one decimal.

    Parameters
    ----------
    value
        Fraction ``1 − spike/dense`` (0.977 → ``"97.7 %"``), or None when undefined.

    Returns
    -------
    str
        ``"97.7 %"``; ``"n/a"`` for None.

    Examples
    --------
    >>> format_reduction(1 - 0.0339 / 0.23)
    '85.3 %'
    """
    if value is None or not math.isfinite(value):
        return "n/a"
    percent = 100 * value
    if abs(percent) >= 1e6:  # an absurd what-if: keep the line readable
        return f"{percent:.3g} %"
    return f"{percent:.1f} %"
