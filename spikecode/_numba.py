"""The one decorator behind which every Numba kernel of spikecode is compiled.

Kernels are private (``_kernels`` modules), compiled eagerly for the explicit signatures
they declare, cached on disk (``cache=True``), and parallel over rows with ``prange``.
They assume valid, C-contiguous input of exactly the declared dtypes: validation and
conversion happen once, in the public function that calls them.

Compiling every kernel takes 20-50 s on a small machine; later runs load them from the
cache in well under a second each. So that a first run does not look hung, the first
kernel that misses the cache prints one line on stderr; warm runs stay silent.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numba
import numpy as np

__all__ = ["COMPILING_NOTE", "kernel", "prange"]

prange = numba.prange

#: The one line printed on stderr when kernels are compiled rather than loaded.
COMPILING_NOTE = (
    "spikecode: compiling Numba kernels (first run only, cached afterwards; this can take "
    "up to a minute)..."
)
_announced = False


def _announce_if_compiled(dispatcher: Any) -> None:
    """Print :data:`COMPILING_NOTE` once per process if ``dispatcher`` missed the cache."""
    global _announced
    stats = getattr(dispatcher, "stats", None)  # absent under NUMBA_DISABLE_JIT
    if _announced or stats is None or not stats.cache_misses:
        return
    _announced = True
    print(COMPILING_NOTE, file=sys.stderr, flush=True)


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
    jit = numba.njit(list(signatures), cache=True, parallel=parallel, nogil=True, fastmath=False)

    def decorate(func: Callable[..., Any]) -> Any:
        dispatcher = jit(func)
        _announce_if_compiled(dispatcher)
        return _Kernel(dispatcher)

    return decorate


class _Kernel:
    """A compiled kernel that also takes read-only arrays.

    Numba types a read-only array (``np.load(mmap_mode="r")``, a NumPy view of an
    immutable buffer, ``a.setflags(write=False)``) apart from a writeable one, so the
    explicit signatures would refuse it. Such input is legitimate: it is copied into a
    writeable array first (the kernels never write their inputs, but the copy keeps
    that a property of the code rather than of the caller's buffer).
    """

    def __init__(self, dispatcher: Any) -> None:
        self.dispatcher = dispatcher
        self.__wrapped__ = dispatcher.py_func
        self.__doc__ = dispatcher.py_func.__doc__
        self.__name__ = dispatcher.py_func.__name__

    def __call__(self, *args: Any) -> Any:
        if any(isinstance(a, np.ndarray) and not a.flags.writeable for a in args):
            args = tuple(
                np.array(a) if isinstance(a, np.ndarray) and not a.flags.writeable else a
                for a in args
            )
        return self.dispatcher(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.dispatcher, name)


def inline_helper(func: Callable[..., Any]) -> Any:
    """Compile a scalar helper that kernels call (inlined, cached, lazily typed)."""
    return numba.njit(cache=True, inline="always")(func)
