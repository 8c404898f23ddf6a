"""Hostile files (issue 9): deep JSON, odd paths, full disks, file modes.

Every reader answers a hostile file with one SpikecodeError naming the file, and every
writer leaves the old file intact and the permissions a plain ``open()`` would give.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import numpy as np
import pytest

import spikecode
from spikecode.calibration import load_k_map, load_stats
from spikecode.calibration.data import load_calibration_data
from spikecode.energy import load_table
from spikecode.errors import SpikecodeError
from spikecode.exporters.events import load_events
from spikecode.io import atomic_write
from spikecode.models import GLASwaConfig
from spikecode.models.checkpoint import INDEX_FILE, load_checkpoint
from spikecode.testing import write_tiny_gla_swa_checkpoint

DEEP = "[" * 100_000 + "]" * 100_000
MODERATE = '{"a": ' * 500 + "1" + "}" * 500  # parses in Python, still absurd


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text
    assert err.value.__cause__ is None or not isinstance(err.value.__cause__, RecursionError)
    return text


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_tiny_gla_swa_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", shards=2)


def _readers(tmp_path: Path, checkpoint: Path):
    """(name, write the hostile text somewhere, call the reader) for every JSON reader."""

    def in_file(name):
        def write(text):
            path = tmp_path / name
            path.write_text(text, encoding="utf-8")
            return path

        return write

    def in_checkpoint(name):
        def write(text):
            folder = tmp_path / "ckpt"
            if not folder.exists():
                folder.mkdir()
                for item in checkpoint.iterdir():
                    (folder / item.name).write_bytes(item.read_bytes())
            (folder / name).write_text(text, encoding="utf-8")
            return folder

        return write

    return [
        ("stats file", in_file("stats.json"), load_stats),
        ("k map", in_file("k.json"), load_k_map),
        ("config.json", in_file("config.json"), GLASwaConfig.from_json),
        ("checkpoint config.json", in_checkpoint("config.json"), load_checkpoint),
        ("shard index", in_checkpoint(INDEX_FILE), load_checkpoint),
        ("energy table", in_file("table.json"), load_table),
        ("calibration jsonl", in_file("data.jsonl"), load_calibration_data),
    ]


@pytest.mark.parametrize("text", [DEEP, MODERATE], ids=["100k-levels", "500-levels"])
@pytest.mark.parametrize(
    "reader",
    [
        "stats file",
        "k map",
        "config.json",
        "checkpoint config.json",
        "shard index",
        "energy table",
        "calibration jsonl",
    ],
)
def test_every_json_reader_refuses_deep_nesting(tmp_path, checkpoint, reader, text):
    _, write, read = next(r for r in _readers(tmp_path, checkpoint) if r[0] == reader)
    target = write(text)
    with pytest.raises(SpikecodeError, match="nested more than 100 levels") as err:
        read(target)
    _one_line(err)


def test_no_other_json_loads_in_the_package():
    # Every JSON document spikecode reads goes through spikecode.io.parse_json.
    root = Path(spikecode.__file__).parent
    offenders = [
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if path.name != "io.py"
        and "json.loads(" in path.read_text(encoding="utf-8")
        # reports/tables.py round-trips its own data through json to deep-copy it
        and path.name != "tables.py"
        # the Lava runner runs under Python 3.10 without spikecode (numpy and lava only);
        # spikecode's load_lava checks the export before the runner sees it
        and path.relative_to(root).as_posix() != "exporters/lava/runner.py"
    ]
    assert offenders == []


def test_parse_json_limits():
    from spikecode.io import MAX_JSON_DEPTH, parse_json

    assert parse_json('{"a": [1, {"b": 2}]}', "x") == {"a": [1, {"b": 2}]}
    nested = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert parse_json(nested, "x") is not None  # exactly at the limit
    with pytest.raises(SpikecodeError, match="nested"):
        parse_json("[" + nested + "]", "x")
    with pytest.raises(SpikecodeError, match="cannot read x: .*digit"):
        parse_json("1" * 5000, "x")
    with pytest.raises(SpikecodeError, match=r"not valid JSON: .* line 1, column 2"):
        parse_json("{", "x")


# -- paths: too long, directories, loops -------------------------------------------------


def _too_long(tmp_path: Path, suffix: str) -> Path:
    return tmp_path / ("n" * 300 + suffix)


@pytest.mark.parametrize(
    ("suffix", "read"),
    [
        (".npy", spikecode.load_activations),
        (".npz", spikecode.load_encoded),
        (".json", load_stats),
        (".json", load_table),
        (".npz", load_events),
    ],
)
def test_readers_name_a_too_long_file(tmp_path, suffix, read):
    with pytest.raises(SpikecodeError, match="too long") as err:
        read(_too_long(tmp_path, suffix))
    _one_line(err)


def test_writers_name_a_too_long_file(tmp_path):
    counts = np.arange(-3, 3, dtype=np.int32).reshape(2, 3)
    train = spikecode.encode(counts, "ternary")
    with pytest.raises(SpikecodeError, match="cannot write .*too long") as err:
        spikecode.save_encoded(
            _too_long(tmp_path, ".npz"), counts, np.ones(2, np.float32), train, k=3.0
        )
    _one_line(err)
    assert list(tmp_path.iterdir()) == []


def test_a_name_at_the_limit_is_written(tmp_path):
    # The temporary file's name must not push a legal name over the limit.
    target = tmp_path / ("m" * (os.pathconf(tmp_path, "PC_NAME_MAX") - 4) + ".txt")
    with atomic_write(target) as tmp:
        tmp.write_text("ok")
    assert target.read_text() == "ok"


@pytest.mark.parametrize(
    "read",
    [spikecode.load_activations, spikecode.load_encoded, load_stats, load_table, load_events],
)
def test_directories_and_link_loops_are_named(tmp_path, read):
    folder = tmp_path / ("x.npz" if read is load_events else "x.npy")
    folder.mkdir()
    with pytest.raises(SpikecodeError, match="is a directory") as err:
        read(folder)
    _one_line(err)
    loop = tmp_path / "loop.npz"
    os.symlink(loop, loop)
    with pytest.raises(SpikecodeError, match="symbolic links") as err:
        read(loop)
    _one_line(err)


def test_missing_file_is_still_missing(tmp_path):
    with pytest.raises(SpikecodeError, match="no such file"):
        spikecode.load_activations(tmp_path / "absent.npy")


# -- a full disk ----------------------------------------------------------------------------


def _full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_keeps_the_old_file_and_says_why(tmp_path, monkeypatch):
    counts = np.arange(-3, 3, dtype=np.int32).reshape(2, 3)
    train = spikecode.encode(counts, "ternary")
    out = tmp_path / "enc.npz"
    spikecode.save_encoded(out, counts, np.ones(2, np.float32), train, k=3.0)
    before = out.read_bytes()
    monkeypatch.setattr(np, "savez_compressed", _full_disk)
    with pytest.raises(SpikecodeError, match="No space left on device") as err:
        spikecode.save_encoded(out, counts, np.ones(2, np.float32), train, k=3.0)
    text = _one_line(err)
    assert "cannot write" in text and str(out) in text
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["enc.npz"]


def test_full_disk_in_any_atomic_write(tmp_path):
    target = tmp_path / "report.txt"
    target.write_text("old")
    with (
        pytest.raises(SpikecodeError, match=r"cannot write the report: No space left") as err,
        atomic_write(target, what="the report") as tmp,
    ):
        tmp.write_text("partial")
        _full_disk()
    _one_line(err)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.txt"]


# -- permissions ------------------------------------------------------------------------------


@pytest.fixture
def umask():
    old = os.umask(0o022)
    os.umask(old)

    def set_umask(value):
        os.umask(value)

    yield set_umask
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077, 0o027])
def test_new_files_get_the_umask_mode(tmp_path, umask, mask):
    umask(mask)
    plain = tmp_path / "plain.txt"
    with open(plain, "w") as handle:
        handle.write("x")
    written = tmp_path / "written.txt"
    with atomic_write(written) as tmp:
        tmp.write_text("x")
    assert _mode(written) == _mode(plain) == 0o666 & ~mask
    counts = np.zeros((2, 3), dtype=np.int32)
    out = spikecode.save_encoded(
        tmp_path / "e.npz", counts, np.ones(2), spikecode.encode(counts), k=1.0
    )
    assert _mode(out) == 0o666 & ~mask


@pytest.mark.parametrize("existing", [0o644, 0o600, 0o664])
def test_overwriting_keeps_the_mode(tmp_path, umask, existing):
    umask(0o022)
    target = tmp_path / "kept.txt"
    target.write_text("old")
    target.chmod(existing)
    with atomic_write(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert _mode(target) == existing


def test_a_pickle_is_refused_in_spikecode_words(tmp_path):
    import torch

    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    path = tmp_path / "evil.pt"
    torch.save({"x": Payload()}, path)
    with pytest.raises(SpikecodeError, match="never runs code from a file") as err:
        spikecode.load_activations(path)
    text = _one_line(err)
    assert "weights_only" not in text


def test_long_keys_are_echoed_cut(tmp_path):
    path = tmp_path / "a.npz"
    np.savez(path, x=np.ones((2, 3), np.float32), y=np.ones((2, 3), np.float32))
    with pytest.raises(SpikecodeError, match="no array") as err:
        spikecode.load_activations(path, key="k" * 100_000)
    assert len(str(err.value)) < 500


def test_npy_header_claiming_more_than_the_file_is_refused_before_allocating(tmp_path):
    # A tiny .npy whose header announces 2**40 float64s: NumPy would allocate 8 TiB.
    path = tmp_path / "huge.npy"
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(
            handle, {"descr": "<f8", "fortran_order": False, "shape": (1 << 40,)}
        )
        handle.write(b"\0" * 64)
    with pytest.raises(SpikecodeError, match="announces more data") as err:
        spikecode.load_activations(path)
    _one_line(err)
