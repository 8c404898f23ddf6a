"""The one exception type of spikecode.

Every user-facing error (bad input, unreadable file, a count a code cannot carry) is
raised as :class:`SpikecodeError`. It carries the context that explains it — shape,
scheme, file, tensor name — so that a message can name the problem without a traceback;
the CLI prints ``str(error)`` and exits non-zero.
"""

from __future__ import annotations

from typing import Any


class SpikecodeError(ValueError):
    """A problem with what the user passed to spikecode.

    Parameters
    ----------
    message
        What is wrong, in one sentence.
    **context
        Named facts that locate the problem (for example ``shape=(4, 3)``,
        ``scheme="bitwise"``, ``file="acts.npz"``). They are appended to the message
        and kept in :attr:`context`.

    Examples
    --------
    >>> str(SpikecodeError("negative counts", scheme="bitwise", shape=(2, 3)))
    'negative counts [scheme=bitwise, shape=(2, 3)]'
    """

    def __init__(self, message: str, **context: Any) -> None:
        self.message = message
        self.context = {key: value for key, value in context.items() if value is not None}
        super().__init__(message)

    def __str__(self) -> str:
        if not self.context:
            return self.message
        details = ", ".join(f"{key}={_cut(value)}" for key, value in self.context.items())
        return f"{self.message} [{details}]"


def _cut(value: Any, limit: int = 200) -> str:
    # Context often echoes user input (a key, a path): keep the message one short line.
    text = str(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."
