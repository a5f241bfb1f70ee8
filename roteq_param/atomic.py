"""Atomic file writes: a killed job leaves either the old file or the new one, never half of one.

Each writer puts the data in a unique temporary file in the target's folder (same
file system, so the final ``os.replace`` is atomic) and renames it into place. With ``checksum``
(always for netCDF) a sha256 manifest ``<name>.sha256`` goes beside the file
(:mod:`roteq_param.integrity`), so its readers refuse a file corrupted after the write.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import re
import uuid
from pathlib import Path
from typing import Any, Iterator

from roteq_param.integrity import manifest_bytes, manifest_path, netcdf_checksum_encoding, read_manifest, sha256_file

__all__ = ["temporary_path", "atomic_write_bytes", "atomic_write_files", "atomic_to_netcdf", "atomic_savefig",
           "write_manifest", "remove_staging_files", "OutputLocked", "exclusive_output"]


# what temporary_path names: <name>.tmp.<pid>.<8 hex digits>
_STAGING = re.compile(r".+\.tmp\.\d+\.[0-9a-f]{8}")


def temporary_path(path: str | os.PathLike) -> Path:
    """A unique sibling of ``path`` for staging a write (``<name>.tmp.<pid>.<random>``)."""
    path = Path(path)
    return path.with_name(f"{path.name}.tmp.{os.getpid()}.{uuid.uuid4().hex[:8]}")


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, checksum: bool = False) -> None:
    """Write ``data`` to ``path`` atomically (fsync'ed before the rename); with ``checksum``, and its
    sha256 manifest ``<path>.sha256`` (for a file the project reads back)."""
    atomic_write_files({Path(path): data}, checksum=checksum)


def atomic_write_files(files: dict[Path, bytes], *, checksum: bool = False) -> None:
    """Write several files that belong together (a model's weights and card): all are staged and
    fsync'ed first, then renamed into place one after the other, so a failure while staging (a
    kill, a full disk) leaves every old file untouched; only a kill within the renames (a few
    microseconds) can mix old and new, which readers detect by the checksum the files share.
    ``checksum``: each file gets its sha256 manifest (see :func:`_commit`)."""
    staged: list[tuple[Path, Path]] = []
    try:
        for path, data in files.items():
            tmp = temporary_path(path)
            staged.append((tmp, Path(path)))
            _write_synced(tmp, data, path)
        _commit(staged, [hashlib.sha256(data).hexdigest() for data in files.values()] if checksum else None)
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise


def _write_synced(tmp: Path, data: bytes, target: str | os.PathLike) -> None:
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as e:  # a bare write error (a full disk) does not say which file
        raise OSError(e.errno, e.strerror, str(target)) from None


def _commit(staged: list[tuple[Path, Path]], digests: list[str] | None) -> None:
    """Rename the staged files into place; with ``digests``, keep each file's manifest true throughout.

    Order: each manifest is first rewritten to accept the new digest *and* the previous file's, then
    the files are renamed, then the manifests are narrowed to the new digest. A kill at any point
    leaves every file matching its manifest (the old file or the new one), so a reader never
    mistakes an interrupted write for corruption, and never accepts a byte that was not written.
    """
    if digests is None:
        for tmp, path in staged:
            os.replace(tmp, path)
        return
    previous = [_accepted_now(path) for _, path in staged]
    for (_, path), new, old in zip(staged, digests, previous):
        if old:
            _replace_manifest(path, [new, *old])
    for tmp, path in staged:
        os.replace(tmp, path)
    for (_, path), new in zip(staged, digests):
        _replace_manifest(path, [new])


def _accepted_now(path: Path) -> list[str]:
    """The digests that verify the file now at ``path`` (its manifest's, else its own; none if absent)."""
    listed = read_manifest(path)
    if listed:
        return listed
    return [sha256_file(path)] if path.is_file() else []


def _replace_manifest(path: Path, digests: list[str]) -> None:
    target = manifest_path(path)
    tmp = temporary_path(target)
    try:
        _write_synced(tmp, manifest_bytes(path, digests), target)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_manifest(path: str | os.PathLike) -> None:
    """Write (atomically) the sha256 manifest of the file now at ``path``: for a file written before
    checksums existed, once it has been read back and found sound (``scripts/write_checksums.py``)."""
    _replace_manifest(Path(path), [sha256_file(path)])


def atomic_to_netcdf(ds: Any, path: str | os.PathLike) -> None:
    """Write an xarray Dataset to netCDF4 at ``path`` atomically, with its sha256 manifest.

    Every numeric variable is stored in chunks with HDF5's Fletcher-32 checksum, so a damaged
    copy names the damaged variable even without its manifest. The netCDF library reports a full
    disk as a bare "NetCDF: HDF error"; such a failure is raised as an ``OSError`` with
    ``ENOSPC``/``EFBIG`` when the storage is what ran out.
    """
    path = Path(path)
    tmp = temporary_path(path)
    ds = ds.copy(deep=False)  # the caller's variables keep their encodings
    for variable in ds.variables.values():
        variable.encoding = netcdf_checksum_encoding(variable)
    try:
        try:
            ds.to_netcdf(tmp, engine="netcdf4", format="NETCDF4")
        except RuntimeError as e:
            code = _storage_exhausted(tmp)
            if code is None:
                raise
            raise OSError(code, f"{os.strerror(code)} (netCDF: {e})", str(path)) from None
        _commit([(tmp, path)], [sha256_file(tmp)])
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _storage_exhausted(partial: Path) -> int | None:
    """``EFBIG`` if ``partial`` reached the process's file-size limit, ``ENOSPC`` if its file system
    is (nearly) full, else ``None``: the cause of a failed write that gave no errno."""
    import errno
    import resource

    size = partial.stat().st_size if partial.exists() else 0
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft != resource.RLIM_INFINITY and size + (1 << 16) >= soft:
        return errno.EFBIG
    st = os.statvfs(partial.parent)
    if st.f_bavail * st.f_frsize < (1 << 20):
        return errno.ENOSPC
    return None


def atomic_savefig(fig: Any, path: str | os.PathLike, **kwargs: Any) -> None:
    """Save a matplotlib figure to ``path`` atomically (format from the suffix; ``kwargs`` to ``savefig``)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png", **kwargs)
    atomic_write_bytes(path, buf.getvalue())


def remove_staging_files(folder: str | os.PathLike, prefix: str = "") -> None:
    """Remove the staging files (``temporary_path`` names) in ``folder`` of files named ``prefix...``.

    Call it only under a lock that covers those files: it assumes their writers are dead.
    """
    for stale in Path(folder).glob(glob.escape(prefix) + "*.tmp.*"):
        if _STAGING.fullmatch(stale.name):
            stale.unlink(missing_ok=True)


class OutputLocked(RuntimeError):
    """Another process is writing to the same output folder."""


@contextlib.contextmanager
def exclusive_output(folder: str | os.PathLike) -> Iterator[None]:
    """Hold ``folder/.lock`` (an advisory ``flock``) while writing into ``folder``.

    A second process that asks for the same folder is refused at once with :class:`OutputLocked`
    instead of interleaving its files with the first one's. The lock dies with its process. Once
    it is held, every staging file in ``folder`` belongs to a writer that was killed mid-write (a
    live one would hold the lock), so those are removed.
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
        remove_staging_files(folder)
        yield
    finally:
        fh.close()
