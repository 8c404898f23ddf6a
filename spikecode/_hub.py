"""What to say when a checkpoint path is a Hugging Face Hub id (nothing downloads).

Users coming from ``transformers`` pass ``org/name`` where spikecode wants a folder.
spikecode never downloads (SPEC: no network at run time), so the refusal says how to get
a local snapshot, and names one already in the Hugging Face cache when there is one.
Only the file system is looked at.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["hub_id_note"]

#: ``org/name`` as the Hub spells repository ids (one slash, no leading dot or slash).
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")


def _hub_cache() -> Path:
    """The Hugging Face hub cache folder, as huggingface_hub resolves it."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface"
    )
    return Path(home).expanduser() / "hub"


def cached_snapshots(repo_id: str) -> list[Path]:
    """Snapshot folders of ``repo_id`` already in the local Hugging Face cache, newest first."""
    org, name = repo_id.split("/")
    folder = _hub_cache() / f"models--{org}--{name}" / "snapshots"
    try:
        found = [p for p in folder.iterdir() if (p / "config.json").is_file()]
    except OSError:
        return []
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def hub_id_note(path: str | os.PathLike[str]) -> str | None:
    """A sentence for a missing checkpoint ``path`` that looks like a Hub id, else None.

    The sentence says that nothing downloads and how to point at a local copy: a
    snapshot in the Hugging Face cache if one is there, else the ``huggingface-cli
    download`` command to run (with network access, anywhere) first.
    """
    text = os.fspath(path)
    if not _HUB_ID.fullmatch(text) or os.path.exists(text):
        return None
    snapshots = cached_snapshots(text)
    if snapshots:
        where = f"a copy is in your Hugging Face cache: pass {snapshots[0]}"
    else:
        local = text.split("/")[1]
        where = (
            f"download it first (where there is network access), e.g. huggingface-cli "
            f"download {text} --local-dir {local}, then pass the folder ({local})"
        )
    return f"{text!r} looks like a Hugging Face Hub id; spikecode never downloads, {where}"
