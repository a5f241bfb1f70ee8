"""A full disk, simulated with a file-size limit on real processes: a clear error, exit 3, and the
previous complete outputs untouched (no staging file left either). Truncated and corrupted inputs
and checkpoints: a clear error naming the file, exit 2, nothing overwritten."""

import dataclasses
import resource
import subprocess
from pathlib import Path

import pytest

from fault_harness import ROOT, STAGING, small_jobs


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    return {job.name: job for job in small_jobs(tmp_path_factory.mktemp("inputs"))}


def _limited(n_bytes):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (n_bytes, n_bytes))


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
            and p.name != ".lock"}


@pytest.mark.parametrize("name, again", [
    ("rollout (pyqg engine)", ["--overwrite"]),
    ("train", ["--overwrite"]),
    ("generate", ["--overwrite", "--members", "4"]),
])
def test_full_disk_is_a_clear_error_and_keeps_the_previous_output(jobs, name, again, tmp_path):
    job = jobs[name]
    done = subprocess.run(job.command(tmp_path), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    before = _snapshot(tmp_path)
    # the same job again over its output, with room for a few kilobytes per file only
    full = subprocess.run(job.command(tmp_path) + again, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          preexec_fn=_limited(4096))
    assert full.returncode == 3, full.stderr
    assert f"error: out of storage writing {tmp_path}" in full.stderr and "previous complete outputs are intact" in full.stderr
    assert "Traceback" not in full.stderr
    after = _snapshot(tmp_path)
    assert not [p for p in after if STAGING.fullmatch(p.name)]
    assert {p: b for p, b in after.items() if p in before} == before  # nothing the user had was touched



@pytest.mark.parametrize("damage", ["truncated", "one byte flipped"])
@pytest.mark.parametrize("name, damaged, again", [
    ("train", "run/checkpoint.pt", ["--resume"]),
    ("rollout (pyqg engine)", "out/checkpoint.npz", ["--resume"]),
    ("train", "inputs:tiny.nc", ["--overwrite"]),
    ("rollout (pyqg engine)", "inputs:model16/model.pt", ["--overwrite"]),
])
def test_damaged_files_are_named_and_nothing_is_overwritten(jobs, name, damaged, again, damage, tmp_path):
    job = jobs[name]
    done = subprocess.run(job.command(tmp_path), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    # the job's own checkpoint, or one of its inputs (copied, so other tests keep theirs)
    if damaged.startswith("inputs:"):
        job = _with_copied_input(job, damaged.split(":", 1)[1], tmp_path / "inputs")
        path = tmp_path / "inputs" / damaged.split(":", 1)[1]
    else:
        path = tmp_path / damaged
    raw = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    else:  # silent corruption: same size, one byte in the middle changed (tests/test_integrity.py has more)
        middle = len(raw) // 2
        path.write_bytes(raw[:middle] + bytes([raw[middle] ^ 0x10]) + raw[middle + 1:])
    before = _snapshot(tmp_path)
    bad = subprocess.run(job.command(tmp_path) + again, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2, bad.stderr
    assert str(path) in bad.stderr and ("truncated or corrupt" in bad.stderr or "unreadable" in bad.stderr)
    assert "Traceback" not in bad.stderr and "weights_only" not in bad.stderr
    assert _snapshot(tmp_path) == before


def _with_copied_input(job, relative: str, into: Path):
    import shutil

    source = next(Path(a) for a in job.command(Path("/nonexistent")) if a.endswith(relative.split("/")[0]))
    target = into / relative.split("/")[0]
    into.mkdir(exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target)
    else:  # the file and its checksum
        for f in (source, Path(str(source) + ".sha256")):
            shutil.copy(f, into / f.name)
    return dataclasses.replace(job, command=lambda f, c=job.command: [str(target) if a == str(source) else a
                                                                       for a in c(f)])
