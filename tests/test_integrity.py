"""Integrity: corrupted files are refused with a clear error, never silently read; constructors
refuse bad devices, dtypes and model paths at once; no file handle is leaked.

Real files throughout: datasets from ``roteq generate`` (``tiny_dataset``), models saved by
``save_model``, netCDF read back by the netCDF library, and the byte-flip campaign of
``tests/fault_harness.py`` on real ``roteq`` processes.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import torch
import xarray as xr

from conftest_models import tiny_dataset
from fault_harness import ROOT, flip_campaign, flip_kinds, flip_table
from roteq_param import atomic
from roteq_param.integrity import (CorruptFileError, UnverifiedFileWarning, manifest_path, read_manifest,
                                   verify_file)
from roteq_param.models import ModelFileError, Predictor, build_model, load_model, save_model
from roteq_param.train import load_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return Path(tiny_dataset(tmp_path_factory.mktemp("data") / "tiny.nc"))


def _flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x5A
    path.write_bytes(bytes(raw))


def _data_offset(path: Path, variable: str) -> int:
    """A byte inside the stored data of ``variable`` (the first chunk), from HDF5's own layout."""
    with netCDF4.Dataset(path) as ds:
        values = np.asarray(ds[variable][...]).tobytes()
    raw = path.read_bytes()
    # uncompressed chunks hold the values' bytes as they are; take 64 of them found nowhere else
    # (S_flux and S_direct, equal to round-off, can be equal in float32)
    for start in range(0, len(values) - 64, 64):
        window = values[start: start + 64]
        if raw.count(window) == 1:
            return raw.find(window) + 8
    raise AssertionError(f"no stretch of {variable}'s bytes is stored once in {path}")


# ----------------------------------------------------------------------------- writing


def test_every_netcdf_output_has_fletcher32_and_a_sha256sum_manifest(dataset):
    with netCDF4.Dataset(dataset) as ds:
        numeric = [v for v in ds.variables.values() if v.ndim and v.dtype != str]
        assert numeric and all(v.filters()["fletcher32"] for v in numeric), [v.name for v in numeric
                                                                              if not v.filters()["fletcher32"]]
    digest = hashlib.sha256(dataset.read_bytes()).hexdigest()
    assert manifest_path(dataset).read_text() == f"{digest}  {dataset.name}\n"
    if shutil.which("sha256sum"):  # the manifest is sha256sum's own format
        done = subprocess.run(["sha256sum", "-c", manifest_path(dataset).name], cwd=dataset.parent,
                              capture_output=True, text=True)
        assert done.returncode == 0 and "OK" in done.stdout, done.stdout + done.stderr


def test_a_write_interrupted_between_its_renames_leaves_a_verifiable_pair(tmp_path, monkeypatch):
    """The manifest accepts the old and the new digest while the file is renamed: a kill between
    the renames (simulated: the file's rename fails) leaves the old file, and it still verifies."""
    path = tmp_path / "x.nc"
    old = xr.Dataset({"a": ("x", np.arange(8.0))})
    atomic.atomic_to_netcdf(old, path)
    old_digest = read_manifest(path)
    real_replace = os.replace

    def killed_at_the_file(src, dst):
        if Path(dst) == path:
            raise KeyboardInterrupt  # stands for the kill: nothing after this point runs
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", killed_at_the_file)
    with pytest.raises(KeyboardInterrupt):
        atomic.atomic_to_netcdf(xr.Dataset({"a": ("x", np.arange(8.0) + 1)}), path)
    monkeypatch.setattr(atomic.os, "replace", real_replace)
    accepted = read_manifest(path)
    assert len(accepted) == 2 and accepted[1:] == old_digest  # new and old: the old file is still verified
    verify_file(path, "test file", "re-make it")
    with xr.open_dataset(path) as ds:
        assert (ds["a"].values == np.arange(8.0)).all()
    atomic.atomic_to_netcdf(xr.Dataset({"a": ("x", np.arange(8.0) + 2)}), path)
    assert len(read_manifest(path)) == 1  # narrowed again once the write is through
    assert not list(tmp_path.glob("*.tmp.*"))


# ----------------------------------------------------------------------------- reading


def test_a_flipped_data_byte_is_refused_naming_file_and_variable(dataset, tmp_path):
    bad = tmp_path / "tiny.nc"
    shutil.copy(dataset, bad)
    shutil.copy(manifest_path(dataset), manifest_path(bad))
    _flip(bad, _data_offset(bad, "q"))
    with pytest.raises(CorruptFileError) as info:
        load_dataset(bad, min_runs=1)
    text = str(info.value)
    assert str(bad) in text and "variable 'q' is damaged" in text and "Fletcher-32" in text
    assert "re-run the `roteq generate`" in text and "re-copy it" in text
    # the torch twin's reader refuses it too (train-online)
    from solver_coupling.torchqg.online_training import load_windows

    with pytest.raises(CorruptFileError, match="variable 'q'"):
        load_windows(bad)


def test_damage_outside_the_data_is_refused_too(dataset, tmp_path):
    """A flip in an attribute (the solver settings, as text) passes every Fletcher-32 check; the
    whole-file sha256 still refuses it, and says the damage is in the metadata."""
    bad = tmp_path / "tiny.nc"
    shutil.copy(dataset, bad)
    shutil.copy(manifest_path(dataset), manifest_path(bad))
    raw = bad.read_bytes()
    at = raw.find(b'"beta"')
    assert at > 0
    _flip(bad, at + 1)
    with pytest.raises(CorruptFileError, match="metadata or attributes"):
        load_dataset(bad, min_runs=1)


def test_a_file_without_a_manifest_is_read_with_a_warning(dataset, tmp_path):
    legacy = tmp_path / "legacy.nc"
    shutil.copy(dataset, legacy)
    with pytest.warns(UnverifiedFileWarning, match="legacy.nc carries no checksum"):
        data = load_dataset(legacy, min_runs=1)
    assert data.sha256 == hashlib.sha256(dataset.read_bytes()).hexdigest()
    # and without its manifest a damaged chunk is still caught, by Fletcher-32, read in a child process
    _flip(legacy, _data_offset(legacy, "b"))
    with pytest.warns(UnverifiedFileWarning), pytest.raises(CorruptFileError, match="variable 'b' is damaged"):
        load_dataset(legacy, min_runs=1)


def test_a_damaged_manifest_refuses_its_file(dataset, tmp_path):
    bad = tmp_path / "tiny.nc"
    shutil.copy(dataset, bad)
    manifest_path(bad).write_text("not a checksum line\n")
    with pytest.raises(CorruptFileError, match="checksum file .* is damaged"):
        load_dataset(bad, min_runs=1)


def test_model_files_are_verified(tmp_path):
    d = save_model(build_model(channels=(4,), kernel_sizes=(3,)), tmp_path / "m", inference_cost={})
    assert {p.name for p in d.iterdir()} >= {"model.pt.sha256", "card.json.sha256", "CARD.md.sha256"}
    load_model(d)
    raw = (d / "card.json").read_bytes()
    at = raw.find(b'"n_parameters": ') + len(b'"n_parameters": ')
    (d / "card.json").write_bytes(raw[:at] + b"9" + raw[at + 1:])  # still valid JSON, another number
    with pytest.raises(ModelFileError, match="card.json is truncated or corrupt"):
        load_model(d)


# ----------------------------------------------------------------------------- the campaign


def test_byte_flip_campaign_every_kind_detected(tmp_path):
    """Two random single-byte flips per file kind through the real readers: none silently used,
    none hangs, each refused with a clear error naming the file."""
    flips = flip_campaign(flip_kinds(tmp_path), tmp_path, flips=2, seed=1, timeout_s=120)
    table = flip_table(flips)
    assert len(flips) == 12
    assert all(f.outcome in ("detected", "could not matter") for f in flips), table + "\n" + "\n".join(
        f"{f.kind} @{f.offset}: {f.outcome} {f.message}" for f in flips)
    assert sum(f.outcome == "detected" for f in flips) >= 10, table


# ----------------------------------------------------------------------------- constructors


def _bad_devices():
    yield "gpu", "not a device torch knows; use 'cpu', 'cuda'"
    yield "meta", "runs on 'cpu' or 'cuda'"
    if torch.cuda.is_available():
        yield f"cuda:{torch.cuda.device_count()}", "'cuda:0' to"
    else:
        yield "cuda", "sees no CUDA GPU on this machine; use device='cpu'"


@pytest.mark.parametrize("device, message", list(_bad_devices()))
def test_bad_device_is_refused_at_construction(device, message):
    from solver_coupling.cgrid import NetworkClosure
    from solver_coupling.pyqg.plugin import RotEqParameterization
    from solver_coupling.torchqg import TorchQGModel

    net = build_model(channels=(4,), kernel_sizes=(3,))
    builders = {
        "Predictor": lambda: Predictor(net, device=device),
        # refused before the (here absent) model is looked for: the first error is the device
        "plugin": lambda: RotEqParameterization("no-such-model", device=device),
        "twin": lambda: TorchQGModel(nx=16, device=device),
        "C-grid closure": lambda: NetworkClosure(net, (0.0, 1.5e-11), ((0.025, 0.0), (0.0, 0.0)), device=device),
    }
    for name, build in builders.items():
        with pytest.raises(ValueError, match=message):
            build()


def test_bad_dtype_is_refused_at_construction():
    from solver_coupling.cgrid import NetworkClosure
    from solver_coupling.pyqg.plugin import RotEqParameterization
    from solver_coupling.torchqg import TorchQGModel

    net = build_model(channels=(4,), kernel_sizes=(3,))
    for build in (lambda d: Predictor(net, dtype=d), lambda d: RotEqParameterization("no-such-model", dtype=d),
                  lambda d: TorchQGModel(nx=16, dtype=d),
                  lambda d: NetworkClosure(net, (0.0, 1.5e-11), ((0.025, 0.0), (0.0, 0.0)), dtype=d)):
        for bad in (torch.float16, torch.bfloat16, np.float32, "float32"):
            with pytest.raises(ValueError, match=r"dtype must be one of torch.float(32|64), torch.float(32|64)"):
                build(bad)


def test_model_path_that_is_a_file_or_an_empty_folder_says_so(tmp_path):
    from solver_coupling.pyqg.plugin import RotEqParameterization

    d = save_model(build_model(channels=(4,), kernel_sizes=(3,)), tmp_path / "m", inference_cost={})
    with pytest.raises(ModelFileError, match=rf"model path {d / 'card.json'} is a file, not a model folder.*probably {d}"):
        load_model(d / "card.json")
    with pytest.raises(ModelFileError, match="is a file, not a model folder"):
        RotEqParameterization(d / "model.pt")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=f"folder {empty} holds no trained model"):
        load_model(empty)


# ----------------------------------------------------------------------------- resource leaks


def test_no_resource_warning_from_plugin_short_run_and_rollout(tmp_path):
    """In a fresh process (escnn's leak happened once per process), with every warning shown:
    building the plugin, a short parameterized pyqg run and a rollout leave no unclosed file."""
    script = textwrap.dedent(f"""
        import gc, warnings
        warnings.simplefilter("error", ResourceWarning)
        import torch
        from roteq_param import models
        from solver_coupling.pyqg.config import get_config, solver_config_of
        from solver_coupling.pyqg.plugin import RotEqParameterization
        from solver_coupling.pyqg.rollout import RolloutRequest, rollout
        torch.manual_seed(0)
        net = models.build_model(channels=(4,), kernel_sizes=(3,))
        net.set_normalization({{k: 1.0 for k in ("vel_1", "vel_2", "b", "beta", "U_1", "U_2")}},
                              {{f.name: 1e-7 for f in net.schema.outputs}})
        config = get_config("eddy", {{"nx": 16}}, coarse_nx=16)
        solver = solver_config_of(config.make_model(log_level=0))
        d = models.save_model(net, {str(tmp_path / 'model')!r}, training={{"solver": solver}}, inference_cost={{}})
        P = RotEqParameterization(d)
        m = config.make_model(log_level=0, q_parameterization=P, tmax=10 * config.dt)
        m.run()
        rollout(RolloutRequest(config=config, model=str(d), members=1, years=0.005, snapshot_days=1,
                               checkpoint_years=0.002, diag_start_years=0.001), {str(tmp_path / 'out')!r},
                progress=False)
        gc.collect()
        print("done")
    """)
    done = subprocess.run([sys.executable, "-X", "dev", "-W", "error::ResourceWarning", "-c", script], cwd=ROOT,
                          capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHONPATH=str(ROOT), PYTHONHASHSEED="0"))
    assert done.returncode == 0 and "done" in done.stdout, done.stderr[-3000:]
    assert "ResourceWarning" not in done.stderr and "unclosed" not in done.stderr, done.stderr[-3000:]
