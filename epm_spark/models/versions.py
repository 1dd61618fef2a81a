"""Versioned model folders, ``<root>/<name>-v<N>``, as every trainer of the suite writes them.

A folder is finished once its card is written (the card's file name differs by model family,
hence the ``finished`` test each caller passes); a folder without one is a run that was killed
and whose checkpoints the same command resumes.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from pathlib import Path

__all__ = ["latest_model", "next_version", "unfinished_or_next", "versions"]

log = logging.getLogger(__name__)


def _pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(name)}-v(\d+)$")


def versions(root: str | os.PathLike[str], name: str) -> list[tuple[int, Path]]:
    """The ``<name>-v<N>`` folders under ``root``, finished or not, by N."""
    pattern = _pattern(name)
    return sorted((int(m.group(1)), p) for p in Path(root).glob(f"{name}-v*") if (m := pattern.match(p.name)))


def next_version(root: str | os.PathLike[str], name: str) -> Path:
    """``root/<name>-v<N+1>``, N the highest version of that name already there; created empty."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    pattern = _pattern(name)
    n = max((int(m.group(1)) for p in root.iterdir() if (m := pattern.match(p.name))), default=0)
    while True:
        n += 1
        folder = root / f"{name}-v{n}"
        try:
            folder.mkdir()  # fails if a concurrent run took this version: try the next
            return folder
        except FileExistsError:
            continue


def latest_model(root: str | os.PathLike[str], name: str, finished: Callable[[Path], bool]) -> Path | None:
    """The finished ``<name>-v<N>`` folder with the highest N under ``root``, if any."""
    found = [p for _, p in versions(root, name) if finished(p)]
    return found[-1] if found else None


def unfinished_or_next(root: str | os.PathLike[str], name: str, finished: Callable[[Path], bool]) -> Path:
    """The newest ``<name>-v<N>`` folder a killed run left without its card, else a new version."""
    found = versions(root, name)
    if found and not finished(found[-1][1]):
        log.info("continuing the unfinished %s", found[-1][1])
        return found[-1][1]
    return next_version(root, name)
