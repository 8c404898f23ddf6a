"""The one exception type of spikecode.

Every user-facing error (bad input, unreadable file, a count a code cannot carry) is
raised as :class:`SpikecodeError`. It carries the context that explains it — shape,
scheme, file, tensor name — so that a message can name the problem without a traceback;
the CLI prints ``str(error)`` and exits non-zero.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["LARGER", "Remedy", "SpikecodeError"]


class _Larger:
    """Marker value of a ``Remedy`` that asks for a larger value than the one given."""

    def __repr__(self) -> str:
        return "LARGER"


LARGER: Any = _Larger()


@dataclass(frozen=True)
class Remedy:
    """One way out of an error: pass argument ``argument`` with value ``value``.

    Remedies are kept apart from the message so that each interface can name its own
    spelling of the argument: Python shows ``T=None`` or ``saturate=True``, the command
    line ``leaving out --T`` or ``--saturate`` (the CLI renders them).

    Attributes
    ----------
    argument
        The Python parameter name (``"T"``, ``"saturate"``, ``"trust_remote_code"``).
    value
        What to pass: a value, ``None`` (leave the argument out, its default), or
        ``LARGER`` (a larger value than the one given).
    """

    argument: str
    value: Any = True

    def python(self) -> str:
        """The remedy as a Python keyword argument (``T=None``, ``a larger T``)."""
        if self.value is LARGER:
            return f"a larger {self.argument}"
        return f"{self.argument}={self.value!r}"


def _join(parts: Sequence[str]) -> str:
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + f"{',' if len(parts) > 2 else ''} or {parts[-1]}"


class SpikecodeError(ValueError):
    """A problem with what the user passed to spikecode.

    Parameters
    ----------
    message
        What is wrong, in one sentence.
    remedies
        Ways out (``Remedy``), rendered after the message as "pass X, Y, or Z" in
        Python terms by ``str()``, and in command-line terms by the CLI
        (:meth:`render`).
    **context
        Named facts that locate the problem (for example ``shape=(4, 3)``,
        ``scheme="bitwise"``, ``file="acts.npz"``). They are appended to the message
        and kept in :attr:`context`.

    Examples
    --------
    >>> str(SpikecodeError("negative counts", scheme="bitwise", shape=(2, 3)))
    'negative counts [scheme=bitwise, shape=(2, 3)]'
    """

    def __init__(self, message: str, *, remedies: Sequence[Remedy] = (), **context: Any) -> None:
        self.message = message
        self.remedies = tuple(remedies)
        self.context = {key: value for key, value in context.items() if value is not None}
        super().__init__(message)

    def render(
        self, remedy: Callable[[Remedy], str | None] | None = None, lead: str = "pass"
    ) -> str:
        """The message with its remedies spelled by ``remedy`` and its context.

        ``remedy`` maps a ``Remedy`` to text, or to None where the interface has no
        such argument (default ``Remedy.python``); ``lead`` is the verb before the
        list of remedies.
        """
        text = self.message
        spell = remedy or Remedy.python
        parts = [part for part in (spell(r) for r in self.remedies) if part]
        if parts:
            text += f"; {lead} {_join(parts)}"
        if not self.context:
            return text
        details = ", ".join(f"{key}={_cut(value)}" for key, value in self.context.items())
        return f"{text} [{details}]"

    def __str__(self) -> str:
        return self.render()


def _cut(value: Any, limit: int = 200) -> str:
    # Context often echoes user input (a key, a path): keep the message one short line.
    text = str(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."
