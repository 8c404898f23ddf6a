"""The documentation: it builds without a warning, covers the public surface, and the
repository's links and "SPEC §N" citations stay inside the repository."""

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

import spikecode
from spikecode.cli import main as cli_main

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SPEC = DOCS / "spec.rst"
PAGES = [
    "index",
    "walkthrough",
    "quickstart",
    "codes",
    "calibration",
    "distributed",
    "energy",
    "export",
    "deployment",
    "cli",
    "api",
    "spec",
    "statsfile",
    "developing",
]
# The public surface the API reference is generated from (docs/api.rst).
PUBLIC_MODULES = [
    "spikecode",
    "spikecode.encoders",
    "spikecode.nn",
    "spikecode.models",
    "spikecode.energy",
    "spikecode.exporters",
    "spikecode.plan",
]
SCANNED_SUFFIXES = {".md", ".rst", ".py", ".toml", ".ipynb"}


# --- the build --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Build the HTML site the way CI does: warnings are errors, every one reported."""
    out = tmp_path_factory.mktemp("docs")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            "-d",
            str(out / "doctrees"),
            str(DOCS),
            str(out / "html"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    return proc, out / "html"


@pytest.mark.slow
def test_docs_build_without_warnings(built):
    proc, html = built
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    assert "WARNING" not in log and "ERROR" not in log, log
    for page in PAGES:
        assert (html / f"{page}.html").is_file(), page


@pytest.mark.slow
def test_api_reference_documents_every_public_name(built):
    _, html = built
    # One page per package (docs/api/*.rst), none of them the whole surface.
    pages = sorted((html / "api").glob("*.html"))
    assert len(pages) >= 8
    assert all(page.stat().st_size < 600_000 for page in pages)
    api = "".join(page.read_text(encoding="utf-8") for page in pages)
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if isinstance(obj, type(spikecode)):  # a submodule: its own names are listed
                continue
            # A re-exported object is documented once, under one of its public names.
            anchors = [
                f'id="{m}.{name}"'
                for m in PUBLIC_MODULES
                if getattr(importlib.import_module(m), name, None) is obj
            ]
            assert any(a in api for a in anchors), (module_name, name)


@pytest.mark.slow
def test_cli_reference_lists_every_command_and_option(built):
    _, html = built
    page = (html / "cli.html").read_text(encoding="utf-8")

    def walk(command, path):
        yield path, command
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                yield from walk(sub, [*path, name])

    commands = list(walk(cli_main, ["spikecode"]))
    assert len(commands) > 10
    for path, command in commands:
        program = "-".join(path)
        assert f'<section id="{program}">' in page, program
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                flag = max(param.opts, key=len).lstrip("-")
                assert f'id="cmdoption-{program}-{flag}"' in page, (program, flag)


@pytest.mark.slow
def test_rendered_flags_keep_their_ascii_dashes(built):
    # docutils' smart quotes would render "--k-map" as "–k-map" (an en dash).
    _, html = built
    for page in ["cli.html", "quickstart.html", "export.html", "developing.html"]:
        text = (html / page).read_text(encoding="utf-8")
        assert "\u2013k-map" not in text and "\u2013scheme" not in text, page
        assert "–-" not in text and "—-" not in text, page
    assert "--k-map" in (html / "cli.html").read_text(encoding="utf-8")


@pytest.mark.slow
def test_figures_are_drawn_at_build_time(built):
    _, html = built
    images = sorted(p.name for p in (html / "_images").glob("*.png"))
    assert "codes-1.png" in images  # the raster plot
    assert (html / "_images" / "codes-1.png").stat().st_size > 10_000
    codes = (html / "codes.html").read_text(encoding="utf-8")
    assert "codes-1.png" in codes and "plot_raster" in codes


# --- the stats file layout -----------------------------------------------------------------


def test_statsfile_page_documents_every_field(tmp_path):
    # Every key save_stats writes, and every CSV column, is described on its page.
    import torch
    from torch import nn

    from spikecode.calibration import (
        CalibrationStats,
        CheckpointInfo,
        DataInfo,
        LayerAccumulator,
        save_stats,
    )

    acc = LayerAccumulator(
        "model.layers.0.mlp.up_proj",
        32,
        8,
        (2.0, 3.0),
        schemes=("bitwise-bidirectional", "ternary"),
        layer=nn.Linear(32, 8),
    )
    acc.update(torch.randn(20, 32, generator=torch.Generator().manual_seed(0)))
    stats = CalibrationStats.create(
        checkpoint=CheckpointInfo(None, "module", None, None),
        data=DataInfo("bundled corpus", 2, 20, None),
        k=(2.0, 3.0),
        schemes=("bitwise-bidirectional", "ternary"),
        window=3,
        block_sizes=(16, 64),
        layers=[acc.result()],
        error_rows=64,
        error_stride=128,
    )
    json_path, csv_path = save_stats(tmp_path / "stats.json", stats)
    page = (DOCS / "statsfile.rst").read_text(encoding="utf-8")

    # Mappings whose keys are data (k values, code names, block sizes), not field names:
    # how many levels of keys below each such field are data.
    keyed_by_value = {"by_k": 1, "totals": 2, "schemes": 1, "block_fetched_channels": 1}

    def fields(value, data_levels=0):
        if isinstance(value, dict):
            for key, item in value.items():
                if data_levels:
                    yield from fields(item, data_levels - 1)
                else:
                    yield key
                    yield from fields(item, keyed_by_value.get(key, 0))
        elif isinstance(value, list):
            for item in value:
                yield from fields(item)

    names = set(fields(json.loads(json_path.read_text(encoding="utf-8"))))
    assert {"format", "layers", "count_histogram", "window_steps"} <= names
    header = csv_path.read_text(encoding="utf-8").splitlines()[0].split(",")
    columns = {re.sub(r"_\d+$", "_B", c) for c in header}
    undocumented = sorted(n for n in names | columns if f"``{n}``" not in page)
    assert not undocumented, undocumented


# --- the specification: sections and citations -------------------------------------------


def spec_sections():
    """Section number -> title, for every ``.. _spec-N:`` label of docs/spec.rst."""
    lines = SPEC.read_text(encoding="utf-8").splitlines()
    sections = {}
    for i, line in enumerate(lines):
        m = re.fullmatch(r"\.\. _spec-(\d+):", line)
        if m:
            title = next(t for t in lines[i + 1 :] if t.strip())
            sections[int(m.group(1))] = title
    return sections


# "SPEC §2", "SPEC section 2", and lists "SPEC §2 and §4", "SPEC §3, §5" (a further number
# needs its own §: "SPEC §1, 128 samples" cites §1 only).
CITATION = re.compile(r"SPEC\s*(?:§\s*|section\s+)(\d+)((?:\s*(?:,|and|or|–|-)\s*§\s*\d+)*)")


def cited_sections(text):
    """Every section number a text cites as "SPEC §N" (also "SPEC §2 and §4", "§3, §5")."""
    found = []
    for m in CITATION.finditer(text):
        found.append(int(m.group(1)))
        found.extend(int(n) for n in re.findall(r"\d+", m.group(2)))
    return found


def test_spec_has_the_eight_sections_in_order():
    sections = spec_sections()
    assert sorted(sections) == list(range(1, 9))
    for n, title in sections.items():
        # Titled so that "SPEC §N" is found at a glance.
        assert title.startswith(f"§{n} "), title
    text = SPEC.read_text(encoding="utf-8")
    assert list(sections) == sorted(sections)
    # The numbers the report gives, with their definitions, are part of the contract.
    for figure in ["1.13", "94.1 %", "69.15 %", "0.0339 pJ", "44.2×", "6.78×", "18.4 %"]:
        assert figure in text, figure
    for row in ["0.989 / 0.976 / 0.951 / 0.916 / 0.877", "0.730 / 0.709 / 0.692 / 0.677 / 0.664"]:
        assert row in text


def test_citation_pattern():
    assert cited_sections("see SPEC §2 and §4; SPEC §3, §5. SPEC section 6") == [2, 4, 3, 5, 6]
    assert cited_sections("SPEC §7's layout; SPEC §1, 128 samples") == [7, 1]
    assert cited_sections("no citation: §8 alone, SPECIAL 9") == []


def repository_files():
    """Tracked files of the kinds that can hold links (all files if git is unavailable)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60
        ).stdout.decode()
        paths = [ROOT / p for p in listed.split("\0") if p]
    except (OSError, subprocess.CalledProcessError):
        paths = [p for p in ROOT.rglob("*") if ".git" not in p.parts and "_build" not in p.parts]
    paths.extend(DOCS.glob("*.rst"))  # pages not committed yet are checked too
    return sorted({p for p in paths if p.suffix in SCANNED_SUFFIXES and p.is_file()})


def test_every_spec_citation_resolves():
    sections = spec_sections()
    missing = []
    for path in repository_files():
        text = path.read_text(encoding="utf-8")
        for n in cited_sections(text):
            if n not in sections:
                missing.append(f"{path.relative_to(ROOT)}: SPEC §{n}")
    assert not missing, missing


def test_readme_says_where_spec_sections_are():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "SPEC §N refers to section N of docs/spec.rst" in readme
    assert "](docs/spec.rst)" in readme


# --- links stay inside the repository ----------------------------------------------------

LINK_TARGETS = [
    re.compile(r"\]\(\s*<?([^)\s>]+)"),  # Markdown [text](target)
    re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", re.MULTILINE),  # Markdown reference definition
    re.compile(r"`[^`<]*<([^>`]+)>`__?"),  # reStructuredText `text <target>`_
    re.compile(r"^\s*\.\. _[^:]+:\s*(\S+)", re.MULTILINE),  # rst hyperlink target
    re.compile(
        r"\.\. (?:image|figure|include|literalinclude|csv-table)::\s*(\S+)"
    ),  # rst directives that read a file
    re.compile(r":(?:download|doc|file):`[^`<]*<?([^>`]+)>?`"),  # rst roles naming a file
    re.compile(r"""(?:href|src)\s*=\s*\\?["']([^"'\\]+)"""),  # HTML, also inside notebook JSON
]
# Files the project's sources used to live next to, outside the repository.
OUTSIDE_NAMES = re.compile(r"SPEC\.md|ECOSYSTEM-NOTES")


def leaves_repository(target):
    """True for a link target that points outside the repository."""
    target = target.strip().strip("'\"")
    if target.startswith(("http://", "https://", "mailto:", "#")):
        return False  # web addresses are not files of a checkout
    if target.startswith(("file:", "/", "~")) or re.match(r"[A-Za-z]:[\\/]", target):
        return True  # absolute paths name some machine's files
    parts = re.split(r"[\\/]", target)
    return ".." in parts or "shared" in parts


def outside_links(text):
    found = [t for pattern in LINK_TARGETS for t in pattern.findall(text) if leaves_repository(t)]
    found += OUTSIDE_NAMES.findall(text)
    return found


def test_link_scanner_recognises_links_that_leave():
    up = ".." + "/"
    leaving = [
        f"The contract is [SPEC]({up}shared/SPEC" + ".md).",
        f"See `the spec <{up}spec.rst>`_.",
        f".. image:: {up}figures/raster.png",
        f'<a href="{up}index.html">up</a>',
        '{"source": ["[spec](/work/' + 'shared/x.md)"]}',
        "[notes](shared/notes.md)",
        "[x]: " + up + "x.md",
    ]
    for text in leaving:
        assert outside_links(text), text
    staying = [
        "[the spec](docs/spec.rst), [sample](spikecode/data/SAMPLE.md)",
        "`arXiv <https://arxiv.org/abs/2509.05276>`_, :doc:`spec`, :ref:`SPEC §2 <spec-2>`",
        "[section](#set-up)",
        # Not a link: a test that a checkpoint index may not name files above its folder.
        '{"weight_map": {"model.norm.weight": "' + up + 'elsewhere.safetensors"}}',
    ]
    for text in staying:
        assert not outside_links(text), text


def test_no_link_leaves_the_repository():
    bad = {}
    for path in repository_files():
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".ipynb":
            # Markdown cells and outputs hold the links; the JSON escaping is undone first.
            cells = json.loads(text).get("cells", [])
            text = "\n".join("".join(cell.get("source", [])) for cell in cells)
        found = outside_links(text)
        if found and path != Path(__file__).resolve():
            bad[str(path.relative_to(ROOT))] = found
    assert not bad, bad


def test_every_named_docs_page_exists():
    # Code and README name pages as ``docs/<page>.rst``; each must be in the repository.
    missing = []
    for path in repository_files():
        for page in re.findall(r"\bdocs/([\w.-]+\.rst)\b", path.read_text(encoding="utf-8")):
            if not (DOCS / page).is_file():
                missing.append(f"{path.relative_to(ROOT)}: docs/{page}")
    assert not missing, missing
