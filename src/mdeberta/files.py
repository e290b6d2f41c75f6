"""Atomic file writes: a temporary file beside the target, renamed into place, so a crash never leaves half a
file where a complete one was; a full disk or a permission problem is a :class:`WriteError` naming the path.
A leaf module: everything that writes files uses it, it uses nothing of the package but errors and outputs."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mdeberta.errors import MdebertaError
from mdeberta.outputs import user_file_mode


class WriteError(MdebertaError, OSError):
    """Writing a file failed (disk full, permissions); the message names the path."""


def _write_failure(error: BaseException, path: Path) -> WriteError | None:
    """A clear error for a failed write, or None when ``error`` is not about the disk. torch.save reports a full disk
    as ``RuntimeError: ... inline_container.cc ... unexpected pos`` / ``file write failed``: told apart by the free
    space left on the device."""
    import errno
    import shutil

    code = getattr(error, "errno", None)
    if code == errno.ENOSPC or code == errno.EDQUOT:
        return WriteError(code, f"no space left on the device of {path} while writing it ({error})")
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return WriteError(code, f"permission denied writing {path} ({error})")
    if isinstance(error, RuntimeError) and any(s in str(error) for s in ("unexpected pos", "write failed")):
        try:
            free = shutil.disk_usage(path.parent).free
        except OSError:
            free = 0
        if free < 64 * 2**20:
            return WriteError(errno.ENOSPC, f"no space left on the device of {path} while writing it "
                                            f"({free / 2**20:.1f} MiB free)")
    return None


def atomic_save(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Run ``write(temp_path)`` for a temp file beside ``path``, then rename it into place atomically.

    The file gets the mode ``open`` would give it under the user's umask (``mkstemp`` creates 0600, which others on
    a shared machine could not read); a full disk or a permission problem is a :class:`WriteError` naming ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise (_write_failure(e, path) or e) from e
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, user_file_mode())  # after the write: some writers (safetensors) create the file anew
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        clear = _write_failure(e, path)
        if clear is not None:
            raise clear from e
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    atomic_save(path, write)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    import torch

    atomic_save(path, lambda tmp: torch.save(obj, tmp))


__all__ = ["WriteError", "atomic_save", "atomic_torch_save", "atomic_write_bytes", "atomic_write_text"]
