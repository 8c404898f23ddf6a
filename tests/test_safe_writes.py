"""Nothing lost, nothing left behind: folder exports, signals, stats pairs, full disks.

Every fault case keeps the old output byte for byte and leaves no temporary; folder
exports never remove a file spikecode did not write.
"""

import contextlib
import errno
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import spikecode
from spikecode._atomic import atomic_files
from spikecode.calibration import (
    CalibrationStats,
    CheckpointInfo,
    DataInfo,
    LayerAccumulator,
    load_stats,
    save_stats,
)
from spikecode.cli import main
from spikecode.errors import SpikecodeError
from spikecode.exporters.events import save_events
from spikecode.exporters.nir import export_nir, load_nir
from spikecode.io import atomic_folder

ROOT = Path(__file__).resolve().parents[1]
LAYER0 = "*layer.0.*"  # one projection of the bundled sample: quick exports


def _env() -> dict[str, str]:
    """The environment of a child process that imports this checkout's spikecode."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _listing(folder: Path) -> dict[str, bytes]:
    """Every entry under ``folder`` (recursively) with its bytes: what must not change."""
    found = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if path.is_symlink():
            found[rel] = b"<link to " + os.fsencode(os.readlink(path)) + b">"
        else:
            found[rel] = b"<dir>" if path.is_dir() else path.read_bytes()
    return found


def _graph(rng: np.random.Generator, out: int = 3, n_in: int = 5):
    w = rng.integers(-127, 128, size=(out, n_in), dtype=np.int8)
    return w, rng.uniform(1e-3, 2e-2, size=out).astype(np.float32)


def _export(rng, path, names=("a", "b")):
    return export_nir({n: _graph(rng) for n in names}, path, scheme="ternary", T=3)


def _one_line_cli(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


# -- 1. folder exports remove only what an earlier export listed ------------------------------


def test_an_earlier_export_with_a_user_file_is_refused_and_kept(tmp_path, rng):
    folder = _export(rng, tmp_path / "graphs")
    (folder / "notes.txt").write_text("mine")
    before = _listing(tmp_path)
    with pytest.raises(SpikecodeError, match=r"did not write \(notes.txt\)") as err:
        _export(rng, folder, names=("c",))
    assert "\n" not in str(err.value)
    assert _listing(tmp_path) == before
    result = CliRunner().invoke(
        main, ["export", "nir", "--include", LAYER0, "--T", "9", "--out", str(folder)]
    )
    assert "notes.txt" in _one_line_cli(result)
    assert _listing(tmp_path) == before


def test_an_earlier_export_alone_is_replaced_exactly(tmp_path, rng):
    folder = _export(rng, tmp_path / "graphs", names=("a", "b"))
    _export(rng, folder, names=("c",))
    assert sorted(os.listdir(folder)) == ["c.nir", "index.json"]
    assert list(load_nir(folder).graphs) == ["c"]
    assert sorted(os.listdir(tmp_path)) == ["graphs"]  # no temporary, nothing set aside
    empty = tmp_path / "empty"
    empty.mkdir()
    _export(rng, empty, names=("d",))
    assert sorted(os.listdir(empty)) == ["d.nir", "index.json"]


@pytest.mark.parametrize(
    ("make", "shown"),
    [
        (lambda f: (f / "a.nir").unlink() or (f / "a.nir").mkdir(), "a.nir/"),  # listed, a folder
        (lambda f: (f / "sub").mkdir(), "sub/"),
        (lambda f: (f / "a.nir").unlink() or (f / "a.nir").symlink_to(f.parent / "x"), "a.nir"),
        (lambda f: (f / "link").symlink_to(f.parent / "x"), "link"),
        (lambda f: (f / ".hidden").write_text("mine"), ".hidden"),
    ],
)
def test_anything_an_export_did_not_write_is_refused(tmp_path, rng, make, shown):
    (tmp_path / "x").write_text("the user's file a link points to")
    folder = _export(rng, tmp_path / "graphs")
    make(folder)
    before = _listing(tmp_path)
    with pytest.raises(SpikecodeError, match="in the way") as err:
        _export(rng, folder)
    assert shown in str(err.value)
    assert _listing(tmp_path) == before


def test_an_index_listing_foreign_names_protects_nothing_of_theirs(tmp_path, rng):
    # A (hand-edited) index that lists the user's files, or paths outside the folder, does
    # not make them spikecode's: only plain .nir names beside it count.
    folder = _export(rng, tmp_path / "graphs", names=("a",))
    index = json.loads((folder / "index.json").read_text())
    index["projections"] += [{"file": "notes.txt"}, {"file": "../x.nir"}]
    (folder / "index.json").write_text(json.dumps(index))
    (folder / "notes.txt").write_text("mine")
    (tmp_path / "x.nir").write_text("outside")
    before = _listing(tmp_path)
    with pytest.raises(SpikecodeError, match="notes.txt"):
        _export(rng, folder)
    assert _listing(tmp_path) == before


def test_a_file_or_a_link_at_the_folder_path_is_refused(tmp_path, rng):
    (tmp_path / "file").write_text("mine")
    target = _export(rng, tmp_path / "real")
    (tmp_path / "link").symlink_to(target)
    before = _listing(tmp_path)
    with pytest.raises(SpikecodeError, match="a file is in the way"):
        _export(rng, tmp_path / "file")
    with pytest.raises(SpikecodeError, match="a symbolic link is in the way"):
        _export(rng, tmp_path / "link")
    assert _listing(tmp_path) == before


def test_files_added_while_writing_are_never_removed(tmp_path):
    # The check is repeated at the swap, on the old folder set aside: a file that appears
    # during the write is refused then, and the old folder goes back as it was.
    target = tmp_path / "out"
    target.mkdir()
    (target / "mine.bin").write_bytes(b"old")
    listing = lambda folder: {"mine.bin"}  # noqa: E731 - an earlier output of one file
    with (
        pytest.raises(SpikecodeError, match=r"did not write \(late.txt\)"),
        atomic_folder(target, listing=listing) as tmp,
    ):
        (tmp / "mine.bin").write_bytes(b"new")
        (target / "late.txt").write_text("written meanwhile")
    assert _listing(tmp_path) == {"out": b"<dir>", "out/late.txt": b"written meanwhile",
                                  "out/mine.bin": b"old"}  # fmt: skip


# -- 5. folder modes ------------------------------------------------------------------------


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o027, 0o002])
def test_export_folders_get_the_mkdir_mode(tmp_path, rng, umask, mask):
    umask(mask)
    plain = tmp_path / "plain"
    plain.mkdir()
    folder = _export(rng, tmp_path / "graphs")
    assert stat.S_IMODE(folder.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~mask
    for name in os.listdir(folder):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o666 & ~mask


def test_a_replaced_folder_keeps_its_mode(tmp_path, rng, umask):
    umask(0o022)
    folder = _export(rng, tmp_path / "graphs")
    folder.chmod(0o710)
    _export(rng, folder, names=("c",))
    assert stat.S_IMODE(folder.stat().st_mode) == 0o710


# -- 3. a stats file is one unit --------------------------------------------------------------


@pytest.fixture(scope="module")
def stats_pair():
    """Two different calibrations of one small layer."""
    made = []
    for seed in (0, 1):
        gen = torch.Generator().manual_seed(seed)
        acc = LayerAccumulator("model.layers.0.attn.q_proj", 16, 4, (3.0,),
                               layer=nn.Linear(16, 4), error_rows=4)  # fmt: skip
        acc.update(torch.randn(10, 16, generator=gen) * 3)
        made.append(
            CalibrationStats.create(
                checkpoint=CheckpointInfo(None, "module", None, None),
                data=DataInfo(f"set {seed}", 2, 10, None),
                k=(3.0,),
                schemes=("bitwise-bidirectional",),
                window=3,
                block_sizes=(16,),
                layers=[acc.result()],
                error_rows=4,
            )
        )
    return made


def _pair(path: Path) -> tuple[bytes, bytes]:
    return path.read_bytes(), path.with_suffix(".csv").read_bytes()


@pytest.mark.parametrize(
    ("fault", "raised"),
    [
        (OSError(errno.EIO, os.strerror(errno.EIO)), SpikecodeError),
        (KeyboardInterrupt(), KeyboardInterrupt),
    ],
)
def test_a_failed_second_rename_undoes_the_first(tmp_path, stats_pair, monkeypatch, fault, raised):
    old, new = stats_pair
    path, _ = save_stats(tmp_path / "s.json", old)
    before = _pair(path)
    real = os.replace
    calls = []

    def second_fails(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise fault
        real(src, dst)

    monkeypatch.setattr(os, "replace", second_fails)
    with pytest.raises(raised):
        save_stats(path, new)
    monkeypatch.undo()
    assert _pair(path) == before
    assert sorted(os.listdir(tmp_path)) == ["s.csv", "s.json"]
    load_stats(path)  # the pair belongs together


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_between_the_renames_waits_for_both(tmp_path, stats_pair, monkeypatch, number):
    old, new = stats_pair
    path, _ = save_stats(tmp_path / "s.json", old)
    real = os.replace

    def signal_after_first(src, dst):
        real(src, dst)
        monkeypatch.setattr(os, "replace", real)
        signal.raise_signal(number)

    monkeypatch.setattr(os, "replace", signal_after_first)
    # In-process, SIGTERM must raise rather than end the test run (as the CLI has it).
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            save_stats(path, new)
    finally:
        signal.signal(signal.SIGTERM, previous)
    reference = tmp_path / "reference"
    reference.mkdir()
    assert _pair(path) == _pair(save_stats(reference / "s.json", new)[0])  # both renamed
    load_stats(path)
    assert sorted(os.listdir(tmp_path)) == ["reference", "s.csv", "s.json"]


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def test_a_mixed_pair_is_refused_and_old_files_still_read(tmp_path, stats_pair):
    old, new = stats_pair
    a, _ = save_stats(tmp_path / "a.json", old)
    b, _ = save_stats(tmp_path / "b.json", new)
    b.with_suffix(".csv").write_bytes(a.with_suffix(".csv").read_bytes())  # a crash's leftover
    with pytest.raises(SpikecodeError, match="b.csv beside the stats file is not the CSV") as err:
        load_stats(b)
    assert "\n" not in str(err.value)
    result = CliRunner().invoke(main, ["report", "energy", str(b)])
    assert "b.csv" in _one_line_cli(result)
    b.with_suffix(".csv").unlink()  # the JSON alone is complete
    assert load_stats(b).data.source == new.data.source
    raw = json.loads(a.read_text())
    assert len(raw.pop("csv_sha256")) == 64
    a.write_text(json.dumps(raw))  # a file of an older spikecode: no hash, still read
    a.with_suffix(".csv").write_text("edited")
    assert load_stats(a).data.source == old.data.source
    raw["csv_sha256"] = 5
    a.write_text(json.dumps(raw))
    with pytest.raises(SpikecodeError, match="csv_sha256"):
        load_stats(a)


def test_atomic_files_replace_all_or_none(tmp_path):
    first, second = tmp_path / "one.txt", tmp_path / "two"
    first.write_text("old")
    second.mkdir()  # the second rename fails: a folder is in the way
    with (
        pytest.raises(SpikecodeError, match="cannot write .*two"),
        atomic_files([first, second]) as (a, b),
    ):
        a.write_text("new")
        b.write_text("new")
    assert first.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["one.txt", "two"]
    fresh = tmp_path / "fresh.txt"
    with pytest.raises(SpikecodeError), atomic_files([fresh, second]) as (a, b):
        a.write_text("new")
    assert not fresh.exists()  # a file that was not there before is not left there


# -- 2. SIGTERM (and SIGINT) in the middle of a write -----------------------------------------

# The child stops inside every atomic writer once the content is written and before the
# commit, says so in a file, and waits: the parent signals it there, no sleep races.
_PAUSING_CHILD = r"""
import contextlib, os, sys, time
from pathlib import Path

import spikecode._atomic as atomic

ready = Path(sys.argv[1])
real_files, real_folder = atomic.atomic_files, atomic.atomic_folder


def pause(temporaries):
    part = ready.with_name("ready.part")
    part.write_text("\n".join(map(str, temporaries)))
    os.replace(part, ready)
    while True:
        time.sleep(0.01)


@contextlib.contextmanager
def files(paths, **options):
    with real_files(paths, **options) as temporaries:
        yield temporaries
        pause(temporaries)


@contextlib.contextmanager
def folder(path, **options):
    with real_folder(path, **options) as temporary:
        yield temporary
        pause([temporary])


def patch():
    for module in list(sys.modules.values()):
        if getattr(module, "atomic_files", None) is real_files:
            module.atomic_files = files
        if getattr(module, "atomic_folder", None) is real_folder:
            module.atomic_folder = folder


patch()
from spikecode.cli import main

patch()
main(sys.argv[2:], prog_name="spikecode")
"""


def _interrupt(tmp_path: Path, args: list[str], number: int) -> tuple[int, str, list[str]]:
    ready = tmp_path / "ready"
    child = subprocess.Popen(
        [sys.executable, "-c", _PAUSING_CHILD, str(ready), *map(str, args)],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 300
    try:
        while not ready.exists():
            if child.poll() is not None:
                pytest.fail(f"the child ended before writing: {child.communicate()}")
            if time.monotonic() > deadline:
                pytest.fail("the child never reached the write")
            time.sleep(0.05)
        temporaries = ready.read_text().splitlines()
        assert temporaries and all(Path(t).exists() for t in temporaries)  # mid-write
        child.send_signal(number)
        _, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    ready.unlink()
    return child.returncode, err.decode(), temporaries


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from spikecode.testing import write_tiny_gla_swa_checkpoint

    return write_tiny_gla_swa_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "tiny", with_tokenizer=True
    )


def _calibrated(checkpoint: Path, tmp_path: Path):
    from spikecode.calibration import CalibrationData, calibrate, load_calibration_data
    from spikecode.models.checkpoint import load_checkpoint

    loaded = load_checkpoint(checkpoint)
    texts = load_calibration_data(None, 4).texts
    parts = [CalibrationData.from_texts(texts[i::2], f"part{i}") for i in (0, 1)]
    files = []
    for i, part in enumerate(parts):
        stats = calibrate(loaded, part, k=(3.0,), batch_size=2)
        files.append(save_stats(tmp_path / f"part{i}.json", stats)[0])
    return files


@pytest.mark.slow
@pytest.mark.parametrize(
    ("command", "number"),
    [
        ("export-nir-folder", signal.SIGTERM),
        ("export-nir-folder", signal.SIGINT),
        ("export-events", signal.SIGTERM),
        ("calibrate", signal.SIGTERM),
        ("merge-stats", signal.SIGTERM),
    ],
)
def test_a_signal_mid_write_keeps_the_old_output(tmp_path, rng, tiny_checkpoint, command, number):
    out = tmp_path / "out"
    out.mkdir()
    if command == "export-nir-folder":
        _export(rng, out / "graphs")
        args = ["export", "nir", "--include", LAYER0, "--T", "9", "--out", out / "graphs"]
    elif command == "export-events":
        counts = rng.integers(-3, 4, size=(2, 5)).astype(np.int32)
        save_events(out / "ev.h5", spikecode.encode(counts, "ternary"), vth=np.ones(2))
        acts = tmp_path / "acts.npy"
        np.save(acts, rng.normal(size=(3, 8)).astype(np.float32))
        args = ["export", "events", acts, "--out", out / "ev.h5"]
    else:
        inputs = _calibrated(tiny_checkpoint, tmp_path)
        if command == "calibrate":
            save_stats(out / "s.json", load_stats(inputs[0]))
            args = ["calibrate", tiny_checkpoint, "--samples", 2, "--k", 3, "--out", out / "s.json"]
        else:
            save_stats(out / "s.json", load_stats(inputs[1]))
            args = ["merge-stats", *inputs, "--out", out / "s.json"]
    before = _listing(out)
    code, err, temporaries = _interrupt(tmp_path, args, number)
    assert code == (-signal.SIGTERM if number == signal.SIGTERM else 1), err
    assert "Traceback" not in err
    assert _listing(out) == before  # the old output as it was, no temporary left
    assert not any(Path(t).exists() for t in temporaries)


# -- 4. HDF5 on a full disk -----------------------------------------------------------------

# Runs CLI commands in one child and reports each one's exit status and output; a crash
# of the interpreter (the old h5py path) shows as the child's own exit status.
_CLI_CHILD = r"""
import json, resource, signal, sys
from pathlib import Path
from click.testing import CliRunner
from spikecode.cli import main

commands = json.loads(sys.argv[1])
limit = int(sys.argv[2])
for args in commands:  # once without a limit: every lazy import and kernel is ready
    out = Path(args[-1])
    CliRunner().invoke(main, [*args[:-1], str(out.with_name(out.stem + ".warm" + out.suffix))])
if limit:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
results = [CliRunner().invoke(main, args) for args in commands]
print(json.dumps([[r.exit_code, r.output] for r in results]))
"""


def _export_commands(folder: Path, acts: Path) -> list[list[str]]:
    return [
        ["export", "nir", "--include", LAYER0, "--T", "9", "--out", str(folder / "one.nir")],
        ["export", "nir", "--include", LAYER0, "--T", "9", "--out", str(folder / "graphs")],
        ["export", "events", str(acts), "--out", str(folder / "ev.h5")],
    ]


def _old_outputs(folder: Path, rng) -> None:
    export_nir(_graph(rng), folder / "one.nir", scheme="ternary", T=3)
    _export(rng, folder / "graphs")
    counts = rng.integers(-3, 4, size=(2, 5)).astype(np.int32)
    save_events(folder / "ev.h5", spikecode.encode(counts, "ternary"), vth=np.ones(2))


def _run_full(commands: list[list[str]], limit: int = 0) -> list[tuple[int, str]]:
    child = subprocess.run(
        [sys.executable, "-c", _CLI_CHILD, json.dumps(commands), str(limit)],
        env=_env(),
        capture_output=True,
        timeout=600,
    )
    assert child.returncode == 0, child.stderr.decode()[-2000:]  # no crash (SIGSEGV: -11)
    return [tuple(r) for r in json.loads(child.stdout)]


def _assert_refused(results, cause: str) -> None:
    for code, output in results:
        assert code == 1, output
        lines = output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: cannot write"), output
        assert cause in lines[0]


@pytest.fixture
def acts(tmp_path):
    path = tmp_path / "acts.npy"
    np.save(path, np.random.default_rng(0).normal(size=(64, 384)).astype(np.float32))
    return path


@pytest.mark.slow
def test_a_write_limit_fails_every_hdf5_export_cleanly(tmp_path, rng, acts):
    # RLIMIT_FSIZE makes the kernel fail write(2) past a size, as a full disk does, without
    # a mount: every HDF5 writer must turn that into one line and keep the old output.
    folder = tmp_path / "out"
    folder.mkdir()
    _old_outputs(folder, rng)
    before = {k: v for k, v in _listing(folder).items()}
    results = _run_full(_export_commands(folder, acts), limit=4096)
    _assert_refused(results, "File too large")
    after = {k: v for k, v in _listing(folder).items() if ".warm" not in k}
    assert after == before


@pytest.fixture
def full_disk(tmp_path):
    """A 2 MiB tmpfs, mounted for the test (root only; skipped where mounts are refused)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def _fill(folder: Path, leave: int) -> None:
    """Fill the file system, then free ``leave`` bytes: a write starts and fails midway."""
    filler = folder / "filler"
    with contextlib.suppress(OSError), open(filler, "wb", buffering=0) as handle:
        while True:  # until the file system says it is full
            handle.write(b"\0" * 4096)
    os.truncate(filler, max(0, filler.stat().st_size - leave))


@pytest.mark.slow
@pytest.mark.parametrize("leave", [0, 64 * 1024])
def test_hdf5_exports_on_a_full_disk(full_disk, rng, acts, leave):
    _old_outputs(full_disk, rng)
    _fill(full_disk, leave)
    before = _listing(full_disk)
    results = _run_full(_export_commands(full_disk, acts))
    _assert_refused(results, "No space left on device")
    after = {k: v for k, v in _listing(full_disk).items() if ".warm" not in k}
    assert after == before


# -- 10. bounded work -----------------------------------------------------------------------


@pytest.mark.parametrize("steps", ["5000", str(2**63), "1" + "0" * 40])
def test_generate_is_bounded_by_the_context(tiny_checkpoint, tmp_path, steps):
    out = tmp_path / "s.json"
    result = CliRunner().invoke(
        main,
        ["calibrate", str(tiny_checkpoint), "--samples", "2", "--generate", steps,
         "--out", str(out)],
    )  # fmt: skip
    line = _one_line_cli(result)
    assert "context" in line and "max_position_embeddings" in line and "4,096" in line
    assert list(tmp_path.iterdir()) == []


def test_generate_bound_is_exact(tiny_checkpoint, monkeypatch):
    from spikecode.calibration import calibrate, load_calibration_data
    from spikecode.calibration import run as runner
    from spikecode.models.checkpoint import load_checkpoint

    loaded = load_checkpoint(tiny_checkpoint)
    texts = load_calibration_data(None, 2)
    longest = max(len(loaded.tokenizer(t)["input_ids"]) for t in texts.texts)
    room = 4096 - longest - 1
    with pytest.raises(SpikecodeError, match=f"at most {room:,} here"):
        calibrate(loaded, texts, k=(3.0,), generate=room + 1)

    # Within the bound the check passes: the run then stops where decoding would start.
    class Decoding(Exception):
        pass

    def decode(*args, **kwargs):
        raise Decoding

    monkeypatch.setattr(runner, "_decode", decode)
    with pytest.raises(Decoding):
        calibrate(loaded, texts, k=(3.0,), generate=room)
    monkeypatch.setattr(runner, "model_max_length", lambda loaded: None)
    with pytest.raises(SpikecodeError, match="states no context length"):
        calibrate(loaded, texts, k=(3.0,), generate=runner.MAX_GENERATE_UNSTATED + 1)


@pytest.mark.slow
def test_encode_with_standard_input_closed(tmp_path):
    child = subprocess.run(
        ["bash", "-c", 'exec "$0" -m spikecode encode - <&-', sys.executable],
        env=_env(),
        capture_output=True,
        timeout=300,
        cwd=tmp_path,
    )
    err = child.stderr.decode()
    assert child.returncode == 1, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        "Error: standard input is closed; pipe .npy or .npz bytes into '-'"
    )
    assert list(tmp_path.iterdir()) == []
