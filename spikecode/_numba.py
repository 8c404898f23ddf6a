"""The one decorator behind which every Numba kernel of spikecode is compiled.

Kernels are private (``_kernels`` modules), typed by the explicit signatures they declare,
cached on disk (``cache=True``), and parallel over rows with ``prange``. They assume
valid, C-contiguous input of exactly the declared dtypes: validation and conversion
happen once, in the public function that calls them.

Compilation is lazy and per signature: importing a module compiles nothing, and the first
call of a kernel compiles (or loads from the cache) only the declared signature its
arguments match. So ``spikecode encode --scheme ternary`` on float32 input builds the
float32 kernels that call runs, not the float64 twins or the other schemes' kernels.
Compiling a kernel takes seconds on a small machine; loading it from the cache takes
milliseconds. So that a first run does not look hung, the first compilation in a process
(a cache miss, never a cache load) prints one line on stderr; warm runs stay silent.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import numba
import numpy as np
from numba.core import event, sigutils, types

__all__ = ["COMPILING_NOTE", "kernel", "prange"]

prange = numba.prange

#: The one line printed on stderr when kernels are compiled rather than loaded.
COMPILING_NOTE = (
    "spikecode: compiling Numba kernels (first run only, cached afterwards; this can take "
    "up to a minute)..."
)
_announced = False


class _Announce(event.Listener):
    """Print :data:`COMPILING_NOTE` once per process when a compilation starts.

    Numba fires ``numba:compile`` only after a cache miss, so a cache load stays silent.
    """

    def on_start(self, event: Any) -> None:
        global _announced
        if not _announced:
            _announced = True
            print(COMPILING_NOTE, file=sys.stderr, flush=True)

    def on_end(self, event: Any) -> None:
        pass


class _Kernel:
    """A Numba dispatcher that compiles a declared signature on its first matching call.

    The dispatcher never compiles on its own (``disable_compile``): a call whose argument
    types match no compiled signature raises Numba's ``TypeError``, and then the first
    declared signature the arguments fit (arrays exactly: dtype, dimensions, layout;
    scalars by Numba's safe conversions) is compiled, or loaded from the cache, and the
    call is repeated. Arguments that fit no declared signature raise that ``TypeError``,
    as an eagerly compiled kernel would.
    """

    def __init__(self, dispatcher: Any, signatures: tuple[str, ...]) -> None:
        self._dispatcher = dispatcher
        self._pending = [sigutils.normalize_signature(s) for s in signatures]
        # What disable_compile() sets; that method refuses a dispatcher with no overload yet.
        dispatcher._can_compile = False
        functools.update_wrapper(self, dispatcher.py_func)

    @property
    def dispatcher(self) -> Any:
        """The underlying Numba dispatcher."""
        return self._dispatcher

    def __call__(self, *args: Any) -> Any:
        # Numba types a read-only array (np.load(mmap_mode="r"), a view of an immutable
        # buffer) apart from a writeable one, so no declared signature would match it:
        # such inputs are copied to writeable arrays first (the kernels never write
        # their inputs).
        if any(isinstance(a, np.ndarray) and not a.flags.writeable for a in args):
            args = tuple(
                np.array(a) if isinstance(a, np.ndarray) and not a.flags.writeable else a
                for a in args
            )
        try:
            return self._dispatcher(*args)
        except TypeError as err:
            if not self._pending or "No matching definition" not in str(err):
                raise
            signature = self._match(args)
            if signature is None:
                raise
        self._compile(signature)
        return self._dispatcher(*args)

    def _match(self, args: tuple[Any, ...]) -> Any:
        actual = [numba.typeof(a) for a in args]
        context = self._dispatcher.typingctx
        for signature in self._pending:
            declared = signature[0]
            if len(declared) != len(actual):
                continue
            if all(
                have == want
                if isinstance(want, types.Array)
                else context.can_convert(have, want) is not None
                for have, want in zip(actual, declared, strict=True)
            ):
                return signature
        return None

    def _compile(self, signature: Any) -> None:
        args, return_type = signature
        self._dispatcher._can_compile = True
        try:
            with event.install_listener("numba:compile", _Announce()):
                self._dispatcher.compile(return_type(*args) if return_type else tuple(args))
        finally:
            self._dispatcher._can_compile = False
        self._pending.remove(signature)


def kernel(*signatures: str, parallel: bool = True) -> Callable[[Callable[..., Any]], Any]:
    """Declare a function as a spikecode kernel for the given explicit signatures.

    Parameters
    ----------
    *signatures
        Numba signature strings; the kernel exists only for these dtypes, and each is
        compiled on the first call that needs it.
    parallel
        Whether ``prange`` loops run on several threads.

    Returns
    -------
    callable
        A decorator returning the lazily compiling kernel.
    """
    jit = numba.njit(cache=True, parallel=parallel, nogil=True, fastmath=False)

    def decorate(func: Callable[..., Any]) -> Any:
        dispatcher = jit(func)
        if not hasattr(dispatcher, "disable_compile"):  # NUMBA_DISABLE_JIT: plain Python
            return dispatcher
        return _Kernel(dispatcher, signatures)

    return decorate


def inline_helper(func: Callable[..., Any]) -> Any:
    """Compile a scalar helper that kernels call (inlined, cached, lazily typed)."""
    return numba.njit(cache=True, inline="always")(func)
