"""Give files written before checksums existed their sha256 manifests, after reading each one back.

Usage (the shipped models and truth references were given theirs with the second line)::

    PYTHONHASHSEED=0 .venv/bin/python scripts/write_checksums.py PATH...
    PYTHONHASHSEED=0 .venv/bin/python scripts/write_checksums.py trained_models/* references/*.nc

A PATH is a model folder (its ``model.pt``, ``card.json`` and ``CARD.md`` get manifests once
``load_model`` reads the pair back: the weights' format, the card's JSON and the weights' sha256
recorded in the card; its truth reference ``reference.nc`` as a netCDF file) or a netCDF file (read
through variable by variable first). A file whose
manifest exists and disagrees is left alone and reported: it is damaged, or changed on purpose, and
only a person can say which (delete the ``.sha256`` to have it rewritten). Exit status 1 if any
path was refused.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from roteq_param.atomic import write_manifest  # noqa: E402
from roteq_param.integrity import CorruptFileError, UnverifiedFileWarning, read_manifest, verify_file  # noqa: E402


def _certify(files: list[Path], check) -> str:
    """Write the manifests of ``files`` after ``check()`` passes; returns what was done."""
    listed = [f for f in files if read_manifest(f) is not None]
    for f in listed:
        verify_file(f, "file", "look into it")  # a manifest that disagrees is a finding, not overwritten
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnverifiedFileWarning)  # the point of this script
        check()
    new = [f for f in files if f not in listed]
    for f in new:
        write_manifest(f)
    return f"{len(new)} manifest(s) written, {len(listed)} verified"


def main(paths: list[str]) -> int:
    from roteq_param.models import load_model

    failed = 0
    for arg in paths:
        p = Path(arg)
        try:
            if p.is_dir():
                done = _certify([p / "model.pt", p / "card.json", p / "CARD.md"], lambda: load_model(p))
                if (p / "reference.nc").is_file():  # the model's truth reference
                    done += "; reference.nc: " + _certify([p / "reference.nc"], lambda: verify_file(
                        p / "reference.nc", "truth reference", "look into it"))
            elif p.suffix == ".nc":
                done = _certify([p], lambda: verify_file(p, "netCDF file", "look into it"))
            else:
                raise ValueError("not a model folder or a .nc file")
        except (CorruptFileError, ValueError, FileNotFoundError) as e:
            failed += 1
            print(f"{p}: refused: {e}", file=sys.stderr)
            continue
        print(f"{p}: {done}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
