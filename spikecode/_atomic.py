"""Atomic writers: a file, a set of files or a folder appears whole or not at all.

Everything is written under a temporary name in the target folder and renamed into place
only once complete, so a failure (an error, a full disk, Ctrl-C or SIGTERM) leaves the old
output as it was and no temporary behind. Public through :mod:`spikecode.io`.

Signals. While a writer is active, SIGTERM (when it would otherwise kill the process
outright) raises :class:`Terminated`, a :class:`KeyboardInterrupt`, so that the cleanup
runs as for Ctrl-C; once the writers are unwound the process still ends by SIGTERM. The
few steps that must not be cut in two (creating a temporary, the renames of a commit and
their undoing) run with SIGINT and SIGTERM held: a signal arriving there is delivered
right after them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import signal
import stat
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path

from spikecode.errors import SpikecodeError

__all__ = [
    "Terminated",
    "atomic_files",
    "atomic_folder",
    "atomic_write",
    "held_signals",
    "name_max",
    "os_cause",
    "terminate_as_interrupt",
]

#: The signals that interrupt a write: Ctrl-C and the polite kill.
_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: How many unknown names a refusal lists before "and N more".
_NAMES_SHOWN = 5


def os_cause(err: OSError) -> str:
    """The cause of an operating-system error in plain words ("No space left on device")."""
    return err.strerror or str(err) or type(err).__name__


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that cleanup code runs."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def _in_main_thread() -> bool:
    # Python runs signal handlers in the main thread only, and only there may set them.
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While active, SIGTERM raises :class:`Terminated` instead of killing the process.

    Only where SIGTERM has its default action (kill) and only in the main thread: a
    handler the program set itself is left alone, and so are nested uses. When
    :class:`Terminated` leaves the block (every ``finally`` and context manager inside
    has run), the default action is restored and the signal raised again, so the process
    ends by SIGTERM as it would have, only cleanly.
    """
    if not _in_main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    except Terminated:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.raise_signal(signal.SIGTERM)
        raise  # only reached where SIGTERM does not end the process
    finally:
        if signal.getsignal(signal.SIGTERM) is _raise_terminated:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def held_signals() -> Iterator[None]:
    """Hold SIGINT and SIGTERM for a few steps that must not be cut in two.

    A signal arriving inside is recorded and raised again on leaving, through the handler
    that was in place before (KeyboardInterrupt for Ctrl-C). Outside the main thread
    (where Python runs no handlers) this does nothing.
    """
    if not _in_main_thread():
        yield
        return
    caught: list[int] = []

    def hold(signum: int, frame: object) -> None:
        caught.append(signum)

    previous = {}
    for number in _SIGNALS:
        handler = signal.getsignal(number)
        if handler is None or handler is signal.SIG_IGN:  # set outside Python, or ignored
            continue
        previous[number] = signal.signal(number, hold)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        for number in dict.fromkeys(caught):
            signal.raise_signal(number)


# --------------------------------------------------------------------------- files


def name_max(folder: Path) -> int:
    """The longest file name, in bytes, that ``folder``'s file system allows (255 if unknown)."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def _new_file_mode(target: Path) -> int:
    """The permission bits ``open(target, "w")`` would leave: kept when it exists."""
    try:
        existing = target.stat()
    except OSError:
        return -1
    return stat.S_IMODE(existing.st_mode) if stat.S_ISREG(existing.st_mode) else -1


def _temporary_name(folder: Path, name: str, suffix: str) -> Path:
    # The name is cut so that a target name at the system's length limit still leaves
    # room for the temporary one.
    return folder / f".{name[:64]}.{secrets.token_hex(6)}{suffix}"


def _create_temporary(folder: Path, name: str) -> Path:
    # Created with os.open(..., 0o666) so that the umask applies exactly as for a plain
    # open(); mkstemp would make every file 0600.
    for _ in range(100):
        tmp = _temporary_name(folder, name, ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(errno.EEXIST, "cannot create a temporary file", str(folder))


def _link_aside(target: Path) -> Path | None:
    """A second name for the file at ``target`` (to put it back), or None if none is there."""
    if not os.path.lexists(target):
        return None
    folder = target.parent
    for _ in range(100):
        aside = _temporary_name(folder, target.name, ".old.tmp")
        try:
            os.link(target, aside, follow_symlinks=False)
        except FileExistsError:
            continue
        except OSError as err:
            if err.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            # A file system without hard links: a copy does as well (stats files are small).
            shutil.copy2(target, aside, follow_symlinks=False)
        return aside
    raise FileExistsError(errno.EEXIST, "cannot create a temporary file", str(folder))


def _commit(pairs: Sequence[tuple[Path, Path]]) -> None:
    """Rename each temporary onto its target; if one rename fails, undo the earlier ones."""
    several = len(pairs) > 1
    done: list[tuple[Path, Path | None]] = []
    try:
        for tmp, target in pairs:
            aside = _link_aside(target) if several else None
            try:
                os.replace(tmp, target)
            except BaseException:
                if aside is not None:
                    aside.unlink(missing_ok=True)
                raise
            done.append((target, aside))
    except BaseException:  # an OSError, or an interrupt the held signals did not catch
        for target, aside in reversed(done):
            with contextlib.suppress(OSError):
                if aside is None:
                    target.unlink()  # nothing was there before
                else:
                    os.replace(aside, target)
        raise
    for _, aside in done:
        if aside is not None:
            aside.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_files(
    paths: Sequence[str | os.PathLike[str]], *, what: str | None = None
) -> Iterator[list[Path]]:
    """Yield one temporary path per target; rename them all into place if the block succeeds.

    The targets change together: the renames run with signals held, and if one fails the
    ones before it are undone, so the targets are all old or all new (only a crash of the
    machine or SIGKILL between two renames can part them). On any exception (Ctrl-C and
    SIGTERM included) the temporary files are removed and the targets left untouched.
    Each written file gets the permissions a plain ``open(path, "w")`` gives: those of
    the file it replaces, or ``0666`` less the umask for a new file.

    Parameters
    ----------
    paths
        The files to write, in the order they are renamed into place.
    what
        How error messages name the output (default: the path of the file concerned).

    Raises
    ------
    SpikecodeError
        A target folder that does not exist or is not writable, a name that is too long,
        a failed write (a full disk: the message names the file and the cause), or a
        failed rename (for example a directory of that name is in the way).
    """
    from spikecode._validate import as_path  # numpy: loaded only when writing

    targets = [as_path(path) for path in paths]
    temporaries: list[Path] = []
    current = targets[0] if targets else Path(".")

    def failure(err: OSError) -> SpikecodeError:
        # The file concerned: the target, or the target of the temporary that failed.
        names = {str(t): t for t in targets}
        names.update((str(tmp), t) for tmp, t in zip(temporaries, targets, strict=False))
        name = names.get(str(err.filename)) or names.get(str(err.filename2)) or current
        return SpikecodeError(f"cannot write {what or name}: {os_cause(err)}", file=str(name))

    with terminate_as_interrupt():
        try:
            with held_signals():
                for current in targets:
                    folder = current.parent if str(current.parent) else Path(".")
                    if len(os.fsencode(current.name)) > name_max(folder):
                        raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG))
                    keep_mode = _new_file_mode(current)
                    temporaries.append(_create_temporary(folder, current.name))
                    if keep_mode >= 0:
                        os.chmod(temporaries[-1], keep_mode)
            current = targets[0] if targets else current
            yield list(temporaries)
            with held_signals():
                _commit(list(zip(temporaries, targets, strict=True)))
                temporaries.clear()
        except OSError as err:
            raise failure(err) from None
        finally:
            if temporaries:
                with held_signals():
                    for tmp in temporaries:
                        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], *, what: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds.

    On any exception (Ctrl-C and SIGTERM included) the temporary file is removed and
    ``path`` is left untouched. The written file gets the permissions a plain
    ``open(path, "w")`` gives: those of the file it replaces, or ``0666`` less the umask
    for a new file. :func:`atomic_files` does the same for several files at once.

    Parameters
    ----------
    path
        The file to write.
    what
        How error messages name the file (default: the path itself).

    Raises
    ------
    SpikecodeError
        The target folder does not exist or is not writable, the name is too long, the
        write itself fails (a full disk: the message names the file and the cause), or
        the final rename fails (for example a directory of that name is in the way).
    """
    with atomic_files([path], what=what) as (tmp,):
        yield tmp


# --------------------------------------------------------------------------- folders


def _names(names: Collection[str]) -> str:
    shown = sorted(names)[:_NAMES_SHOWN]
    more = len(names) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more else "")


Listing = Callable[[Path], Collection[str] | None]


def _entries_to_remove(folder: Path, listing: Listing | None, shown: Path) -> list[str]:
    """The entries of ``folder``, all written by an earlier output; refuse any other.

    An entry counts as written by the earlier output only when that output's own listing
    names it and it is a regular file (not a link, not a folder).
    """
    entries = os.listdir(folder)
    if not entries:
        return []
    known = listing(folder) if listing is not None else None
    modes = {name: os.lstat(folder / name).st_mode for name in entries}
    ours = [name for name in entries if name in (known or ()) and stat.S_ISREG(modes[name])]
    unknown = [name for name in entries if name not in ours]
    if unknown:
        whose = "the earlier output there" if known is not None else "spikecode"
        raise SpikecodeError(
            f"cannot write {shown}: it holds files {whose} did not write "
            f"({_names([f'{n}/' if stat.S_ISDIR(modes[n]) else n for n in unknown])}); "
            "they are in the way: move them, or choose a new or empty folder",
            file=str(shown),
        )
    return ours


def _check_in_the_way(
    target: Path, listing: Listing | None, shown: Path | None = None
) -> list[str] | None:
    """None when nothing is at ``target``, else the names to remove; refuse anything else.

    ``shown`` is how messages name the folder (``target`` itself by default).
    """
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        return None
    folder, target = target, shown or target
    if stat.S_ISLNK(mode):
        raise SpikecodeError(
            f"cannot write {target}: a symbolic link is in the way (a folder output "
            "replaces only a folder spikecode wrote)",
            file=str(target),
        )
    if not stat.S_ISDIR(mode):
        raise SpikecodeError(
            f"cannot write {target}: a file is in the way (a folder output needs a folder name)",
            file=str(target),
        )
    return _entries_to_remove(folder, listing, target)


def _make_temporary_folder(folder: Path, name: str) -> Path:
    # os.mkdir(..., 0o777): the umask applies as for a plain mkdir; mkdtemp gives 0700.
    for _ in range(100):
        tmp = _temporary_name(folder, name, ".tmp")
        try:
            os.mkdir(tmp, 0o777)
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(errno.EEXIST, "cannot create a temporary folder", str(folder))


def _swap_in(tmp: Path, target: Path, listing: Listing | None) -> Path | None:
    """Move the earlier output aside, check it once more, move ``tmp`` in, remove the old.

    Returns the folder set aside when it could not be removed (None normally).
    """
    if _check_in_the_way(target, listing) is None:
        os.rename(tmp, target)
        return None
    aside = _temporary_name(target.parent, target.name, ".old.tmp")
    os.rename(target, aside)
    try:
        # Checked again where no other program writes by name: nothing added since the
        # first check is ever removed.
        ours = _check_in_the_way(aside, listing, shown=target)
        os.rename(tmp, target)
    except BaseException:
        os.rename(aside, target)
        raise
    for name in ours or ():
        (aside / name).unlink(missing_ok=True)
    try:
        os.rmdir(aside)
    except OSError:
        return aside
    return None


@contextlib.contextmanager
def atomic_folder(
    path: str | os.PathLike[str],
    *,
    listing: Listing | None = None,
) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; move it to ``path`` if the block succeeds.

    On any exception (Ctrl-C and SIGTERM included) the temporary folder is removed and
    ``path`` is left untouched. Nothing spikecode did not write is ever removed: an
    existing ``path`` is replaced only when it is an empty folder or an earlier output
    of the same writer holding nothing but the regular files its own listing names
    (``listing(path)``: the names it wrote, or None when it is not such an output).
    Anything else in the way (other files, links, subfolders, a file or a symbolic link
    at ``path``) is refused, naming what is there. The new folder gets the permissions
    ``mkdir`` gives (``0777`` less the umask) or those of the folder it replaces.

    Raises
    ------
    SpikecodeError
        The parent folder does not exist or is not writable, or something that may not
        be replaced is in the way.
    """
    from spikecode._validate import as_path

    target = as_path(path)
    folder = target.parent if str(target.parent) else Path(".")
    tmp = None
    with terminate_as_interrupt():
        try:
            _check_in_the_way(target, listing)
            with held_signals():
                tmp = _make_temporary_folder(folder, target.name)
                with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                    os.chmod(tmp, stat.S_IMODE(os.stat(target).st_mode))
            yield tmp
            with held_signals():
                kept = _swap_in(tmp, target, listing)
                tmp = None
            if kept is not None:
                raise SpikecodeError(
                    f"wrote {target}, but files appeared in the earlier output while it "
                    f"was replaced; they are kept in {kept}",
                    file=str(target),
                )
        except OSError as err:
            raise SpikecodeError(
                f"cannot write {target}: {os_cause(err)}", file=str(target)
            ) from None
        finally:
            if tmp is not None:
                with held_signals():
                    shutil.rmtree(tmp, ignore_errors=True)
