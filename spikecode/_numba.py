"""The one decorator behind which every Numba kernel of spikecode is compiled.

Kernels are private (``_kernels`` modules), compiled eagerly for the explicit signatures
they declare, cached on disk (``cache=True``), and parallel over rows with ``prange``.
They assume valid, C-contiguous input of exactly the declared dtypes: validation and
conversion happen once, in the public function that calls them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba

__all__ = ["kernel", "prange"]

prange = numba.prange


def kernel(*signatures: str, parallel: bool = True) -> Callable[[Callable[..., Any]], Any]:
    """Compile a function as a spikecode kernel for the given explicit signatures.

    Parameters
    ----------
    *signatures
        Numba signature strings; the kernel exists only for these dtypes.
    parallel
        Whether ``prange`` loops run on several threads.

    Returns
    -------
    callable
        A decorator returning the compiled dispatcher.
    """
    return numba.njit(list(signatures), cache=True, parallel=parallel, nogil=True, fastmath=False)


def inline_helper(func: Callable[..., Any]) -> Any:
    """Compile a scalar helper that kernels call (inlined, cached, lazily typed)."""
    return numba.njit(cache=True, inline="always")(func)
