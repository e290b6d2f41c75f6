"""Output paths checked before any work starts, so that nothing already written is lost without ``--overwrite``.

* an output equal to, inside or containing one of the command's sources is refused (exporting a model into its own
  folder would delete the model);
* a file where a folder is expected (or the reverse) is refused;
* an existing non-empty folder is refused unless ``--overwrite``; with it the old folder is set aside under a
  hidden name and deleted only once the new one is complete (:func:`replace_folder`, :class:`SetAside`), never
  deleted first;
* the folder must be writable (checked by creating and removing a probe file).

Every refusal is an :class:`OutputPathError` naming the path and the flag.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path

from mdeberta.errors import MdebertaError

logger = logging.getLogger("mdeberta")


class OutputPathError(MdebertaError, ValueError):
    """An output path that would lose data or cannot be written; the message names it and the way out."""


def _resolved(path: str | os.PathLike) -> Path:
    return Path(path).expanduser().resolve()


def _related(out: Path, source: Path) -> str | None:
    if out == source:
        return "is"
    if source in out.parents:
        return "is inside"
    if out in source.parents:
        return "contains"
    return None


def check_sources(output: str | os.PathLike, sources: Iterable[str | os.PathLike | None], flag: str,
                  same_only: bool = False) -> None:
    """Refuse an output that is, is inside, or contains a local source (hub ids and missing paths are skipped);
    ``same_only``: only one that is the source (a file written into a source folder deletes nothing)."""
    out = _resolved(output)
    for source in sources:
        if source is None or not Path(source).exists():
            continue
        src = _resolved(source)
        relation = _related(out, src)
        if relation and (relation == "is" or not same_only):
            raise OutputPathError(f"{flag} {output} {relation} the source {source}: writing there would overwrite "
                                  "or delete it; choose another output path")


def _writable(folder: Path, flag: str, output: str | os.PathLike) -> None:
    """Create the folder's parents as needed and prove it is writable."""
    base = folder if folder.exists() else folder.parent
    try:
        base.mkdir(parents=True, exist_ok=True)
        probe = base / f".mdeberta-write-test-{uuid.uuid4().hex}"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise OutputPathError(f"{flag} {output}: cannot write to {base} ({e.strerror or e})") from None


def check_output_folder(output: str | os.PathLike, sources: Iterable[str | os.PathLike | None] = (), *,
                        overwrite: bool = False, flag: str = "--output", allow_existing: bool = False,
                        would_write: Iterable[str] | None = None) -> Path:
    """Check a folder the command will create; returns it as a Path.

    ``allow_existing``: an existing folder is expected (``--resume``). ``would_write``: the names the command writes
    inside; an existing folder is refused only when one of them is already there (report folders, which may hold
    other files). Without it, any existing non-empty folder is refused unless ``overwrite``.
    """
    path = Path(output)
    check_sources(path, sources, flag)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{flag} {output} is a file, not a folder; remove it or choose another path")
    if path.is_dir() and not allow_existing and not overwrite:
        if would_write is None:
            taken = sorted(p.name for p in path.iterdir())[:5]
        else:
            taken = [name for name in would_write if (path / name).exists()]
        if taken:
            raise OutputPathError(f"{flag} {output} already exists and holds {', '.join(taken)}: pass --overwrite to "
                                  "replace it" + ("" if would_write else " (or --resume to continue a run there)"))
    _writable(path, flag, output)
    return path


def check_output_file(output: str | os.PathLike, sources: Iterable[str | os.PathLike | None] = (), *,
                      overwrite: bool = False, flag: str = "--output") -> Path:
    """Check a single file the command will write (atomically): never one of the inputs."""
    path = Path(output)
    check_sources(path, sources, flag, same_only=True)
    if path.is_dir():
        raise OutputPathError(f"{flag} {output} is a folder, not a file")
    if path.exists() and not overwrite:
        raise OutputPathError(f"{flag} {output} already exists: pass --overwrite to replace it")
    _writable(path.parent, flag, output)
    return path


def replace_folder(tmp: Path, dst: Path) -> None:
    """Move the finished folder ``tmp`` to ``dst``; an old ``dst`` is renamed aside first and deleted last."""
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{uuid.uuid4().hex[:8]}")
        dst.rename(old)
        try:
            tmp.rename(dst)
        except BaseException:
            old.rename(dst)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(dst)


class SetAside:
    """``--overwrite`` of a run folder: the old folder is renamed to a hidden sibling now and deleted by
    :meth:`discard` once the new run has finished; until then it can be moved back by hand."""

    def __init__(self, folder: str | os.PathLike) -> None:
        folder = Path(folder)
        self.path: Path | None = None
        if folder.is_dir() and any(folder.iterdir()):
            self.path = folder.with_name(f".{folder.name}.replaced-{uuid.uuid4().hex[:8]}")
            folder.rename(self.path)
            logger.warning("--overwrite: the previous contents of %s are set aside in %s until this run finishes",
                           folder, self.path)

    def discard(self) -> None:
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None


def user_file_mode(directory: bool = False) -> int:
    """The mode a new file (0o666) or folder (0o777) gets under the process umask, as ``open`` / ``mkdir`` do."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask
