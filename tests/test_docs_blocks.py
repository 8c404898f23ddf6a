"""Every shell and Python block of README.md and docs/*.rst runs as written (issue 20).

Blocks run in page order, the blocks of one page sharing one working folder and, for
Python, one namespace, as a reader follows a page. Shell blocks run with
``bash -euo pipefail`` and the installed ``spikecode`` script; Python blocks run in this
process (``>>>`` blocks as doctests, their output compared). A block that cannot run
here says why in a marker right above it (``tests/docblocks.py``); every other block must
pass. ``.. plot::`` blocks are run by the documentation build (``tests/test_docs.py``).
"""

import importlib.util

import pytest
from docblocks import (
    PYTHON,
    ROOT,
    SHELL,
    Block,
    MarkerError,
    collect,
    console_commands,
    literal_looks_like_code,
    markdown_blocks,
    rst_blocks,
    run_python,
    run_shell,
    shell_env,
)

BLOCKS = collect()
RUN = [b for b in BLOCKS if b.runs]


class Page:
    """The working folder and namespace of one page; blocks run in order, each once."""

    def __init__(self, folder, env):
        self.folder, self.env = folder, env
        self.namespace: dict = {"__name__": "__docs__"}
        self.done: dict[int, BaseException | None] = {}

    def run(self, block: Block, monkeypatch) -> None:
        # A block selected alone (pytest -k) still sees what the page wrote before it.
        for earlier in [b for b in RUN if b.file == block.file and b.line < block.line]:
            if earlier.line not in self.done and not earlier.skip and _importable(earlier):
                try:
                    self._run(earlier, monkeypatch)
                except Exception as error:  # reported by that block's own test
                    self.done[earlier.line] = error
        self._run(block, monkeypatch)

    def _run(self, block: Block, monkeypatch) -> None:
        if block.line in self.done:
            if self.done[block.line] is not None:
                raise self.done[block.line]
            return
        self.done[block.line] = None
        try:
            if block.language in SHELL:
                run_shell(block, self.folder, self.env)
            else:
                with monkeypatch.context() as m:
                    m.chdir(self.folder)
                    m.setenv("MPLBACKEND", "Agg")
                    run_python(block, self.namespace)
        except BaseException as error:
            self.done[block.line] = error
            raise


def _importable(block: Block) -> bool:
    return not block.needs_module or importlib.util.find_spec(block.needs_module) is not None


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    env = shell_env(tmp_path_factory.mktemp("bin"))
    made: dict[str, Page] = {}

    def page(file: str) -> Page:
        if file not in made:
            made[file] = Page(tmp_path_factory.mktemp(file.replace("/", "-")), env)
        return made[file]

    return page


@pytest.mark.parametrize("block", RUN, ids=[b.id for b in RUN])
def test_block_runs(block, pages, monkeypatch):
    if block.skip:
        pytest.skip(block.skip)
    if not _importable(block):
        pytest.skip(f"needs {block.needs_module}, which is not installed")
    pages(block.file).run(block, monkeypatch)


# --- the collector ----------------------------------------------------------------------------


def test_collector_finds_every_block():
    files = {b.file for b in BLOCKS}
    assert "README.md" in files and "docs/quickstart.rst" in files
    assert len(BLOCKS) == 66
    assert len(RUN) == 50
    assert sum(1 for b in RUN if b.skip) == 28
    assert [b.needs_module for b in RUN if b.needs_module] == ["norse"]
    assert {b.language for b in RUN} == {"bash", "python", "console", "pycon"}
    # Every shell or Python block is a code-block with its language: a "::" literal
    # block is never run, so it must not read as a command or as Python.
    assert not [b.id for b in BLOCKS if literal_looks_like_code(b)]
    assert {b.language for b in BLOCKS} - SHELL - PYTHON == {"text"}
    # Every ">>>" example of the pages is in a block that runs (as a doctest).
    for page in ["README.md", *(p.relative_to(ROOT).as_posix() for p in ROOT.glob("docs/*.rst"))]:
        text = (ROOT / page).read_text(encoding="utf-8")
        shown = sum(line.lstrip().startswith(">>> ") for line in text.splitlines())
        run = sum(b.text.count(">>> ") for b in RUN if b.file == page and not b.skip)
        assert run == shown, page


def test_collector_reads_blocks_and_markers():
    rst = """Title
=====

.. code-block:: bash

   spikecode encode

.. skip-test: needs a GPU
   (CUDA)

.. code-block:: python
   :caption: x

   import torch

   torch.ones(1, device="cuda")

.. needs-module: norse

.. code-block:: python

   import norse

A formula::

    y = x

.. plot::

   print(1)
"""
    blocks = rst_blocks(rst, "page.rst")
    assert [(b.line, b.language, b.skip, b.needs_module, b.literal) for b in blocks] == [
        (4, "bash", None, None, False),
        (11, "python", "needs a GPU (CUDA)", None, False),
        (20, "python", None, "norse", False),
        (24, "text", None, None, True),
    ]
    assert blocks[1].text == 'import torch\n\ntorch.ones(1, device="cuda")\n'
    assert [b.runs for b in blocks] == [True, True, True, False]
    md = (
        "x\n\n<!-- skip-test: installs packages -->\n```bash\npip install x\n```\n\n"
        "- item\n\n  ```python\n  print(1)\n  ```\n"
    )
    blocks = markdown_blocks(md, "README.md")
    assert [(b.line, b.language, b.skip, b.text) for b in blocks] == [
        (4, "bash", "installs packages", "pip install x\n"),
        (10, "python", None, "print(1)\n"),
    ]
    assert console_commands("$ a\nout 1\n$ b\n") == [("a", ["out 1"]), ("b", [])]


@pytest.mark.parametrize(
    "text",
    [
        ".. skip-test:\n\n.. code-block:: bash\n\n   ls\n",  # no reason
        ".. skiptest: needs a GPU\n\n.. code-block:: bash\n\n   ls\n",
        ".. skip_test: needs a GPU\n\n.. code-block:: bash\n\n   ls\n",
        ".. skip-test needs a GPU\n\n.. code-block:: bash\n\n   ls\n",
        ".. skip-test: needs a GPU\n\nA paragraph, no block.\n",  # before no block
    ],
)
def test_collector_refuses_unknown_rst_markers(text):
    with pytest.raises(MarkerError):
        rst_blocks(text, "page.rst")


@pytest.mark.parametrize(
    "text",
    [
        "<!-- skip: needs a GPU -->\n```bash\nls\n```\n",
        "<!-- skip-test -->\n```bash\nls\n```\n",
        "<!-- skip-test: needs a GPU -->\n\ntext\n",
        "```\nls\n```\n",  # a fence without a language
    ],
)
def test_collector_refuses_unknown_markdown_markers(text):
    with pytest.raises(MarkerError):
        markdown_blocks(text, "README.md")


def test_a_literal_block_of_code_is_recognised():
    block = rst_blocks("Run::\n\n   spikecode encode\n", "page.rst")[0]
    assert block.literal and literal_looks_like_code(block)
    block = rst_blocks("On node 0::\n\n   # comment\n   torchrun x\n", "page.rst")[0]
    assert literal_looks_like_code(block)


def test_shown_output_is_compared(tmp_path):
    env = shell_env(tmp_path)
    console = Block("page.rst", 1, "console", "$ echo hi  there\nhi there\n$ true\n")
    run_shell(console, tmp_path, env)
    with pytest.raises(AssertionError, match="the page shows"):
        run_shell(Block("page.rst", 1, "console", "$ echo hi\nho\n"), tmp_path, env)
    with pytest.raises(AssertionError, match="exit status 1"):
        run_shell(Block("page.rst", 1, "bash", "false | cat\necho never\n"), tmp_path, env)
    namespace: dict = {}
    run_python(Block("page.rst", 1, "pycon", ">>> x = 2\n>>> x + 1\n3\n"), namespace)
    assert namespace["x"] == 2
    with pytest.raises(AssertionError, match="Expected"):
        run_python(Block("page.rst", 1, "pycon", ">>> 1 + 1\n3\n"), {})
