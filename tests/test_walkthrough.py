"""The walkthrough (README "Walkthrough", docs/walkthrough.rst) runs as written, start to end.

Its blocks carry a skip-test marker for tests/test_docs_blocks.py, which runs every other
block: this test runs them and checks what each line writes."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from docblocks import collect

ROOT = Path(__file__).resolve().parents[1]


def _readme_blocks() -> list[tuple[str, str]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text[: text.index("\n## Walkthrough\n")].count("\n") + 1
    end = start + text.split("\n## Walkthrough\n", 1)[1].split("\n## ", 1)[0].count("\n")
    blocks = [b for b in collect() if b.file == "README.md" and start < b.line < end]
    return [(b.language, b.text) for b in blocks]


def _page_blocks() -> list[tuple[str, str]]:
    return [(b.language, b.text) for b in collect() if b.file == "docs/walkthrough.rst"]


def test_the_docs_page_and_the_readme_walk_the_same_lines():
    readme, page = _readme_blocks(), _page_blocks()
    assert [language for language, _ in readme] == ["bash", "python"]
    assert page == readme


@pytest.mark.slow
def test_the_walkthrough_runs_as_written(tmp_path):
    assert shutil.which("spikecode"), "the spikecode script is not installed (pip install -e .)"
    env = {
        **os.environ,
        # This checkout, whatever copy of spikecode is installed; the script's own python.
        "PYTHONPATH": str(ROOT),
        "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]]),
        "MPLBACKEND": "Agg",
    }
    (_, commands), (_, consumer) = _readme_blocks()
    lines = [line for line in commands.splitlines() if line.strip()]
    assert len(lines) == 12
    for line in lines:
        done = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=900)  # fmt: skip
        assert done.returncode == 0, (line, done.stderr[-2000:])
        assert "Traceback" not in done.stderr, line
    written = ["raster.png", "tradeoff.png", "down-raster.png", "down.onnx", "events.npz",
               "stats.json", "stats.csv", "minilm-nir/index.json",
               "tiny-nir/index.json"]  # fmt: skip
    for name in written:
        assert (tmp_path / name).is_file(), name
    done = subprocess.run([sys.executable, "-c", consumer], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    printed = done.stdout.splitlines()
    assert printed[0] == "['input', 'integrator', 'output', 'synapse']"
    steps, spikes = map(int, printed[1].split())
    assert steps >= 1 and spikes > 0
    assert printed[2] == "(1, 5, 128)"
