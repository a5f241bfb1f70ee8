"""Checksums: a corrupted file is refused with a clear error, never silently read.

Every file the project writes and reads back (datasets and their run parts, rollouts, truth
references, rollout and training checkpoints, model weights and cards) has a sha256 manifest
beside it, ``<name>.sha256``, in ``sha256sum``'s format (``sha256sum -c rollout.nc.sha256`` checks
it by hand). :mod:`roteq_param.atomic` writes the manifests with the files; the readers call
:func:`verify_file` (or :func:`open_netcdf`) before they use a byte.

Why a whole-file hash, checked first: it covers every byte (data, attributes, the file's own
metadata), it costs one sequential read (hashlib runs at disk speed), and it runs before the netCDF
library touches the file: a flipped byte in HDF5's metadata can make that library loop for many
minutes (seen here: over 12), and no Python-level timeout interrupts a C call. netCDF variables are
also written with HDF5's Fletcher-32 filter, so a damaged file names the damaged variable, and a
copy that lost its manifest still has its data checked as it is read.

Files without a manifest (written before checksums existed, or copied without it) are read with an
:class:`UnverifiedFileWarning`; a netCDF one is first read through in a child process under a time
limit, so a damaged one still ends in an error within seconds instead of a hang.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any, Iterable

__all__ = ["CorruptFileError", "UnverifiedFileWarning", "MANIFEST_SUFFIX", "sha256_file", "manifest_path",
           "read_manifest", "manifest_bytes", "verify_file", "open_netcdf", "netcdf_checksum_encoding"]

MANIFEST_SUFFIX = ".sha256"
_HEX = frozenset("0123456789abcdef")


class CorruptFileError(ValueError):
    """A file does not hold what was written: its checksum differs, or it cannot be read through.

    A ``ValueError``, so every entry point that reports bad input reports this too (one line, the
    file named, exit status 2 from the ``roteq`` command)."""


class UnverifiedFileWarning(UserWarning):
    """A file is read without a checksum to check it against (no ``<name>.sha256`` beside it)."""


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def manifest_path(path: str | os.PathLike) -> Path:
    """Where the manifest of ``path`` lives: ``<path>.sha256``."""
    path = Path(path)
    return path.with_name(path.name + MANIFEST_SUFFIX)


def manifest_bytes(path: str | os.PathLike, digests: Iterable[str]) -> bytes:
    """A manifest of ``path`` accepting each of ``digests`` (``sha256sum`` lines: ``<hex>  <name>``).

    More than one digest is listed only while a write is being renamed into place (the new file's
    digest and the previous file's), so a kill between the renames of the manifest and of the file
    leaves a pair that verifies whichever of the two the file is."""
    name = Path(path).name
    return "".join(f"{d}  {name}\n" for d in dict.fromkeys(digests)).encode()


def read_manifest(path: str | os.PathLike) -> list[str] | None:
    """The digests the manifest of ``path`` accepts; ``None`` if there is no manifest.

    A manifest that is not in the format :func:`manifest_bytes` writes (itself damaged) accepts
    nothing, so the file is refused rather than trusted."""
    try:
        text = manifest_path(path).read_bytes().decode("ascii", errors="replace")
    except FileNotFoundError:
        return None
    digests = []
    for line in text.splitlines():
        digest, sep, name = line.partition("  ")
        if not sep or name != Path(path).name or len(digest) != 64 or not set(digest) <= _HEX:
            return []
        digests.append(digest)
    return digests


def verify_file(path: str | os.PathLike, what: str, remedy: str) -> str:
    """Check ``path`` against its manifest before it is read; returns its sha256.

    ``what`` names the file's role in messages (``"training dataset"``), ``remedy`` what to do about
    a damaged one (``"re-run the `roteq generate` command that made it"``). A file whose digest the
    manifest does not list raises :class:`CorruptFileError`, naming the file and, for netCDF, the
    damaged variable. Without a manifest: an :class:`UnverifiedFileWarning`, and a netCDF file is
    read through in a child process under a time limit first (Fletcher-32 checks its variables, if
    written with them), so that a damaged one is an error within seconds, never a hang.
    """
    path = Path(path)
    accepted = read_manifest(path)
    digest = sha256_file(path)
    if accepted is None:
        warnings.warn(f"{what} {path} carries no checksum (no {manifest_path(path).name} beside it: written before "
                      "roteq-param wrote checksums, or copied without it), so it is read unverified; re-write it with "
                      "this version (or copy its .sha256 file with it) to have it checked", UnverifiedFileWarning,
                      stacklevel=2)
        if _is_netcdf(path):
            problem = _probe_netcdf(path)
            if problem:
                raise CorruptFileError(f"{what} {path} is truncated or corrupt: {problem}; {remedy}, or re-copy it")
        return digest
    if digest in accepted:
        return digest
    if not accepted:
        raise CorruptFileError(f"{what} {path}: its checksum file {manifest_path(path)} is damaged (not "
                               f"'<sha256>  {path.name}' lines); re-copy both files, or {remedy}")
    where = ""
    if _is_netcdf(path):
        where = "; " + (_probe_netcdf(path) or "its variables' data pass their Fletcher-32 checks, so the damage is in "
                                               "the file's metadata or attributes")
    elif path.suffix in (".npz", ".pt"):
        where = "; " + _probe_zip(path)
    raise CorruptFileError(f"{what} {path} is truncated or corrupt: its sha256 {digest[:16]}... is not the "
                           f"{accepted[0][:16]}... recorded in {manifest_path(path).name} when it was written{where}. "
                           f"Do not use it: {remedy}, or re-copy it from an intact copy. (If you changed the file "
                           f"on purpose, delete {manifest_path(path).name} and it is read unverified.)")


def open_netcdf(path: str | os.PathLike, what: str, remedy: str) -> Any:
    """:func:`verify_file`, then ``xarray.open_dataset`` (netCDF4 engine); returns the open dataset.

    An error of the netCDF library while opening (its bare ``NetCDF: HDF error``) becomes a
    :class:`CorruptFileError` naming the file and ``remedy``. The file's sha256 is left in the
    dataset's ``encoding["sha256"]`` (hashed once, for records such as a model card's)."""
    import xarray as xr

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path} does not exist")
    digest = verify_file(path, what, remedy)
    try:
        ds = xr.open_dataset(path, engine="netcdf4")
    except (OSError, RuntimeError, ValueError) as e:
        raise CorruptFileError(f"cannot read {what} {path} as netCDF ({type(e).__name__}: {e}): it is truncated or "
                               f"corrupt, or not netCDF; {remedy}") from None
    ds.encoding["sha256"] = digest
    return ds


def netcdf_checksum_encoding(variable: Any) -> dict[str, Any]:
    """``variable``'s xarray encoding with HDF5's Fletcher-32 filter on its chunks (numeric arrays
    only: HDF5 filters need chunked storage, which scalars and variable-length strings do not have)."""
    encoding = dict(variable.encoding)
    if variable.ndim >= 1 and variable.dtype.kind in "biuf" and variable.size > 0:
        encoding.update(fletcher32=True, contiguous=False)
    return encoding


def _is_netcdf(path: Path) -> bool:
    return path.suffix in (".nc", ".nc4")


# Read every variable of a netCDF file through (Fletcher-32 verifies each chunk as it is read) and
# print the first failure as JSON. Run in a child process: the netCDF library can loop on damaged
# metadata, and a C call cannot be interrupted from Python.
_PROBE = """
import json, sys
import netCDF4
def walk(g):
    yield from g.variables.values()
    for sub in g.groups.values():
        yield from walk(sub)
name = None
try:
    with netCDF4.Dataset(sys.argv[1]) as ds:
        for v in walk(ds):
            name = v.name
            v.set_auto_maskandscale(False)
            v[...]
            v.ncattrs()
except Exception as e:
    print(json.dumps({"variable": name, "error": f"{type(e).__name__}: {e}"}))
"""


def _probe_netcdf(path: Path) -> str:
    """What reading ``path`` through finds wrong ("" if nothing), bounded in time."""
    # generous for a sound file (a few seconds per GB), short for a hang
    limit = 20.0 + path.stat().st_size / 50e6
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE, str(path)], capture_output=True, text=True,
                              timeout=limit)
    except subprocess.TimeoutExpired:
        return f"reading it through did not finish in {limit:.0f} s (the netCDF library loops on its damaged metadata)"
    if done.returncode != 0:
        return f"reading it through crashed the netCDF library (exit status {done.returncode})"
    if not done.stdout.strip():
        return ""
    found = json.loads(done.stdout.strip().splitlines()[-1])
    if found["variable"] is None:
        return f"the netCDF library cannot open it ({found['error']})"
    check = " its Fletcher-32 check" if "HDF error" in found["error"] else ""
    return f"variable {found['variable']!r} is damaged (reading it fails{check}: {found['error']})"


def _probe_zip(path: Path) -> str:
    """Which member of a zip archive (``.npz`` arrays, torch's ``.pt``) fails its CRC-32."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except Exception as e:  # noqa: BLE001 - any failure to read the archive is the finding
        return f"its archive structure is damaged ({type(e).__name__}: {e})"
    if bad is None:
        return "every member passes its CRC-32, so the damage is in the archive's headers"
    name = bad[: -len(".npy")] if path.suffix == ".npz" and bad.endswith(".npy") else bad  # np.savez's array names
    return f"member {name!r} fails its CRC-32"
