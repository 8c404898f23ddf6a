"""The code blocks of README.md and docs/*.rst: found with their file, line, language and
skip marker, and run as a reader would run them (tests/test_docs_blocks.py,
tests/test_walkthrough.py).

A block runs unless the line before it is a marker that says why not:

- reStructuredText: ``.. skip-test: <reason>`` (a comment; the reason may continue on
  lines indented below it), or ``.. needs-module: <module>`` (runs where the module
  imports, skips naming it elsewhere);
- Markdown: ``<!-- skip-test: <reason> -->`` or ``<!-- needs-module: <module> -->``.

Any other comment before a block that speaks of skipping or testing is refused, so a
misspelt marker cannot silently run or skip a block.
"""

from __future__ import annotations

import doctest
import io
import os
import re
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Languages that are run; every other language (text, json, ...) is shown, never run.
SHELL = {"bash", "sh", "shell", "console"}
PYTHON = {"python", "pycon"}
RUN_LANGUAGES = SHELL | PYTHON
MARKER_KINDS = ("skip-test", "needs-module")
# Only these are markers; anything else near a block mentioning them is a typo.
_MARKER = re.compile(rf"({'|'.join(MARKER_KINDS)}): (\S.*)")
_LOOKS_LIKE_MARKER = re.compile(r"skip|test|needs", re.IGNORECASE)
# A literal "::" block that reads as a command or Python would never be run: refuse it.
_CODE_START = re.compile(r"(\$ |>>> |spikecode |python|pip |torchrun |import |from \S+ import )")


class MarkerError(ValueError):
    """A comment next to a block that is not one of the marker forms."""


@dataclass(frozen=True)
class Block:
    """One code block of a documentation file."""

    file: str  # relative to the repository root, "README.md" or "docs/<page>.rst"
    line: int  # 1-based line of the fence or directive
    language: str  # "bash", "python", "console", "pycon", "text", ...
    text: str  # the block's content, dedented, ending with a newline
    skip: str | None = None  # the reason of a skip-test marker
    needs_module: str | None = None  # the module of a needs-module marker
    literal: bool = False  # an rst "::" literal block (never run)

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def runs(self) -> bool:
        return self.language in RUN_LANGUAGES and not self.literal


def _marker(comment: str, where: str) -> tuple[str, str]:
    """Parse a comment's text into (kind, value), or refuse a marker-like comment."""
    comment = " ".join(comment.split())
    m = _MARKER.fullmatch(comment)
    if m:
        return m.group(1), m.group(2)
    raise MarkerError(
        f"{where}: {comment!r} before a code block is not a marker; write "
        "'skip-test: <reason>' or 'needs-module: <module>'"
    )


def _dedent(lines: list[str]) -> str:
    while lines and not lines[-1].strip():
        lines.pop()
    while lines and not lines[0].strip():
        lines.pop(0)
    width = min(len(x) - len(x.lstrip()) for x in lines if x.strip())
    return "\n".join(x[width:] for x in lines) + "\n"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def markdown_blocks(text: str, file: str) -> list[Block]:
    """Fenced blocks of a Markdown file; a fence without a language is refused."""
    lines = text.splitlines()
    blocks, i = [], 0
    used: set[int] = set()  # the lines of the markers that stand before a fence
    while i < len(lines):
        m = re.fullmatch(r"(\s*)```(\S*)\s*", lines[i])
        if not m:
            i += 1
            continue
        indent, language = m.group(1), m.group(2)
        if not language:
            raise MarkerError(f"{file}:{i + 1}: a fence without a language (```text, ```bash)")
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        kind = value = None
        previous = lines[i - 1].strip() if i else ""
        c = re.fullmatch(r"<!--(.*)-->", previous)
        if c and _LOOKS_LIKE_MARKER.search(c.group(1)):
            kind, value = _marker(c.group(1), f"{file}:{i}")
            used.add(i - 1)
        body = [x[len(indent) :] if x.startswith(indent) else x for x in lines[i + 1 : end]]
        blocks.append(
            Block(
                file,
                i + 1,
                language,
                _dedent(body) if any(x.strip() for x in body) else "\n",
                skip=value if kind == "skip-test" else None,
                needs_module=value if kind == "needs-module" else None,
            )
        )
        i = end + 1
    for i, line in enumerate(lines):
        if re.match(r"\s*<!--\s*(skip|needs)", line) and i not in used:
            raise MarkerError(f"{file}:{i + 1}: a marker that stands before no code block")
    return blocks


def rst_blocks(text: str, file: str) -> list[Block]:
    """``.. code-block::`` directives and ``::`` literal blocks of a reStructuredText file."""
    lines = text.splitlines()
    blocks = []
    used: set[int] = set()  # the lines of the markers that stand before a block

    def body_after(i: int, base: int) -> tuple[list[str], int]:
        """The lines indented deeper than ``base`` after line i (options skipped)."""
        j = i + 1
        while j < len(lines) and lines[j].strip().startswith(":") and _indent(lines[j]) > base:
            j += 1  # directive options
        start = j
        while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > base):
            j += 1
        return [x for x in lines[start:j]], j

    def marker_before(i: int, base: int) -> tuple[str | None, str | None]:
        """The marker comment ending right above line i (blank lines allowed between)."""
        j = i - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        # A comment may continue on deeper-indented lines: walk up to its first line.
        k = j
        while k > 0 and _indent(lines[k]) > base and lines[k].strip():
            k -= 1
        head = lines[k] if k >= 0 else ""
        m = re.fullmatch(r"(\s*)\.\. (?!_|\||\[)(.*)", head)
        if not m or "::" in head or _indent(head) != base:
            return None, None
        comment = " ".join([m.group(2), *(x.strip() for x in lines[k + 1 : j + 1])])
        if not _LOOKS_LIKE_MARKER.search(comment):
            return None, None
        used.add(k)
        return _marker(comment, f"{file}:{k + 1}")

    for i, line in enumerate(lines):
        # A list item's text (and a literal block ending it) is indented past its bullet.
        item = re.match(r"\s*(?:[-*]|\d+\.)\s+", line)
        base = len(item.group(0)) if item else _indent(line)
        d = re.fullmatch(r"\s*\.\. code-block::\s*(\S+)\s*", line)
        literal = not d and line.rstrip().endswith("::") and not re.match(r"\s*\.\. ", line)
        if not d and not literal:
            continue
        body, _ = body_after(i, base)
        if not any(x.strip() for x in body):
            continue  # "::" closing a sentence with no block, or an empty directive
        kind, value = marker_before(i, base) if d else (None, None)
        blocks.append(
            Block(
                file,
                i + 1,
                d.group(1) if d else "text",
                _dedent(body),
                skip=value if kind == "skip-test" else None,
                needs_module=value if kind == "needs-module" else None,
                literal=bool(literal),
            )
        )
    # A marker must stand before a block: one anywhere else is refused.
    for i, line in enumerate(lines):
        if re.match(r"\s*\.\. (skip|needs)", line) and i not in used:
            raise MarkerError(f"{file}:{i + 1}: a marker that stands before no code block")
    return blocks


def literal_looks_like_code(block: Block) -> bool:
    """True for a ``::`` literal block whose first line reads as a command or Python."""
    lines = [x for x in block.text.splitlines() if x.strip() and not x.startswith("#")]
    return block.literal and bool(lines) and bool(_CODE_START.match(lines[0]))


def collect(root: Path = ROOT) -> list[Block]:
    """Every code block of README.md, docs/*.rst and docs/api/*.rst, in file order."""
    blocks = markdown_blocks((root / "README.md").read_text(encoding="utf-8"), "README.md")
    pages = sorted((root / "docs").glob("*.rst")) + sorted((root / "docs" / "api").glob("*.rst"))
    for page in pages:
        text = page.read_text(encoding="utf-8")
        blocks.extend(rst_blocks(text, page.relative_to(root).as_posix()))
    return blocks


# --- running ------------------------------------------------------------------------------


def shell_env(bin_dir: Path) -> dict[str, str]:
    """The environment a reader's shell has after the set-up: this checkout, offline.

    ``bin_dir`` receives a ``spikecode`` script running ``python -m spikecode`` when the
    installed entry point is missing.
    """
    paths = [os.path.dirname(sys.executable)]
    if not shutil.which("spikecode", path=os.pathsep.join([*paths, os.environ["PATH"]])):
        script = bin_dir / "spikecode"
        script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m spikecode "$@"\n')
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
        paths.insert(0, str(bin_dir))
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),  # this checkout, whatever copy of spikecode is installed
        "PATH": os.pathsep.join([*paths, os.environ["PATH"]]),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "MPLBACKEND": "Agg",
        "SPIKECODE_PROGRESS_DELAY": "inf",
    }


def console_commands(text: str) -> list[tuple[str, list[str]]]:
    """``$ command`` lines of a console block, each with the output lines shown after it."""
    steps: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif steps:
            steps[-1][1].append(line)
        elif line.strip():
            raise ValueError(f"console output before any command: {line!r}")
    return steps


def run_shell(block: Block, cwd: Path, env: dict[str, str]) -> None:
    """Run a shell block in ``cwd`` with ``bash -euo pipefail``; raise on any failure.

    A console block runs its ``$`` lines one by one and compares the output it shows.
    """
    steps = console_commands(block.text) if block.language == "console" else [(block.text, [])]
    for script, shown in steps:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-xc", script],
            cwd=cwd,
            env={**env, "PS4": "+ line $LINENO: "},
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0 or "Traceback" in done.stderr:
            raise AssertionError(
                f"{block.id}: exit status {done.returncode}\n{done.stderr[-3000:]}"
            )
        expected = [x for x in shown if x.strip()]
        if expected and done.stdout.split() != "\n".join(expected).split():
            raise AssertionError(f"{block.id}: printed\n{done.stdout}\nthe page shows\n{shown}")


def run_python(block: Block, namespace: dict) -> None:
    """Run a Python block in ``namespace`` (shared by the blocks of one page, in order).

    A block of ``>>>`` lines is a doctest: its output is compared with what it shows.
    """
    if block.text.lstrip().startswith(">>>"):
        test = doctest.DocTestParser().get_doctest(
            block.text, namespace, block.id, block.file, block.line
        )
        report = io.StringIO()
        runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE, verbose=False)
        runner.run(test, out=report.write, clear_globs=False)
        namespace.update(test.globs)  # the test ran on a copy; later blocks see its names
        if runner.failures:
            raise AssertionError(report.getvalue())
        return
    exec(compile(block.text, block.id, "exec"), namespace)  # the docs' own code
