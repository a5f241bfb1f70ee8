"""Atomic file writes: a killed job leaves either the old file or the new one, never half of one.

Each writer puts the data in a unique temporary file in the target's folder (same
file system, so the final ``os.replace`` is atomic) and renames it into place.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Any, Iterator

__all__ = ["temporary_path", "atomic_write_bytes", "atomic_to_netcdf", "atomic_savefig", "OutputLocked",
           "exclusive_output"]


def temporary_path(path: str | os.PathLike) -> Path:
    """A unique sibling of ``path`` for staging a write (``<name>.tmp.<pid>.<random>``)."""
    path = Path(path)
    return path.with_name(f"{path.name}.tmp.{os.getpid()}.{uuid.uuid4().hex[:8]}")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (fsync'ed before the rename)."""
    path = Path(path)
    tmp = temporary_path(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_to_netcdf(ds: Any, path: str | os.PathLike) -> None:
    """Write an xarray Dataset to netCDF4 at ``path`` atomically."""
    path = Path(path)
    tmp = temporary_path(path)
    try:
        ds.to_netcdf(tmp, engine="netcdf4", format="NETCDF4")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_savefig(fig: Any, path: str | os.PathLike, **kwargs: Any) -> None:
    """Save a matplotlib figure to ``path`` atomically (format from the suffix; ``kwargs`` to ``savefig``)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png", **kwargs)
    atomic_write_bytes(path, buf.getvalue())


class OutputLocked(RuntimeError):
    """Another process is writing to the same output folder."""


@contextlib.contextmanager
def exclusive_output(folder: str | os.PathLike) -> Iterator[None]:
    """Hold ``folder/.lock`` (an advisory ``flock``) while writing into ``folder``.

    A second process that asks for the same folder is refused at once with :class:`OutputLocked`
    instead of interleaving its files with the first one's. The lock dies with its process, so a
    killed job leaves nothing to clean up.
    """
    import fcntl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fh = open(folder / ".lock", "a+")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputLocked(f"{folder} is being written by another process (lock {folder / '.lock'}); wait for it "
                               "to finish or choose another output") from None
        yield
    finally:
        fh.close()
