"""Tests of roteq_param.train on a real tiny pyqg dataset (3 runs, 32^2 -> 16^2)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest
import torch

from conftest_models import random_inputs, tiny_dataset
from roteq_param.fields import qg_schema
from roteq_param.models import ModelConfig, build_model, load_card, load_model
from roteq_param.symmetry import Group
from roteq_param.train import (CHECKPOINT, METRICS_CSV, TrainOptions, evaluate, field_scales, load_dataset,
                               pv_forcing, train)
from solver_coupling.cli import build_parser

# in-process runs are reproducible without it; the cross-process test sets it
pytestmark = pytest.mark.filterwarnings("ignore:PYTHONHASHSEED is not set")

SCHEMA = qg_schema(2)
SMALL = dict(model=ModelConfig(channels=(8, 8), kernel_sizes=(3, 1)), batch_size=4, patience=50, progress=False,
             threads=1)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    return tiny_dataset(tmp_path_factory.mktemp("data") / "tiny.nc")


def test_dataset_stacking_and_pv_forcing(dataset):
    data = load_dataset(dataset)
    assert data.x.shape == (3, 5, SCHEMA.n_channels("inputs"), 16, 16)
    assert data.y.shape == (3, 5, SCHEMA.n_channels("outputs"), 16, 16)
    # the torch PV forcing of the true fluxes reproduces the dataset's S (float32 round-off)
    S = pv_forcing(SCHEMA, data.y.flatten(0, 1).double(), data.strat, data.L)
    ref = data.S.flatten(0, 1).double()
    assert float((S - ref).abs().max() / ref.abs().max()) < 1e-5


def test_normalisation_commutes_with_the_group():
    x = random_inputs(SCHEMA, batch=3, n=8, seed=4)
    scales = field_scales(SCHEMA, "inputs", x)
    for g in Group.parse("D4").exact_elements():
        rotated = field_scales(SCHEMA, "inputs", SCHEMA.transform_stacked(g, x, "inputs"))
        assert rotated == pytest.approx(scales, rel=1e-6)
    # one scale per field, applied to all its components, so x / s commutes with g
    model = build_model(channels=(8,), kernel_sizes=(3,))
    model.set_normalization(scales, {f.name: 1.0 for f in SCHEMA.outputs})
    g = Group.parse("D4").elements()[5]
    xs = x / model.in_scale[:, None, None]
    assert torch.allclose(SCHEMA.transform_stacked(g, xs), SCHEMA.transform_stacked(g, x) / model.in_scale[:, None, None])


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_cli_training_resume_and_seed(dataset, tmp_path):
    parser = build_parser()
    common = ["--data", dataset, "--channels", "8,8", "--batch-size", "4", "--epochs", "3", "--threads", "1",
              "--no-progress", "--seed", "7"]
    args = parser.parse_args(["train", "--out", str(tmp_path / "a"), "--name", str(tmp_path / "model_a"), *common])
    assert args.func(args) == 0

    rows_a = _rows(tmp_path / "a" / METRICS_CSV)
    assert len(rows_a) == 3
    assert float(rows_a[-1]["train_loss"]) < float(rows_a[0]["train_loss"])
    assert (tmp_path / "a" / CHECKPOINT).is_file()
    card = load_card(tmp_path / "model_a")
    assert card["training"]["dataset_sha256"] == load_dataset(dataset).sha256
    assert set(card["metrics"]["rotated_mean_r2"]) == {"rot0", "rot90", "rot180", "rot270"}
    assert "S_2" in card["metrics"]["val"] and "tau_1_xy" in card["metrics"]["val"]

    # same seed, interrupted after 2 epochs, then resumed: the same numbers as the straight run
    opts = TrainOptions(data=dataset, out=str(tmp_path / "b"), name=str(tmp_path / "model_b"), epochs=3, seed=7,
                        stop_after=2, **SMALL)
    summary = train(opts)
    assert not summary["finished"] and len(_rows(tmp_path / "b" / METRICS_CSV)) == 2
    opts.stop_after, opts.resume = None, True
    summary = train(opts)
    assert summary["finished"]
    rows_b = _rows(tmp_path / "b" / METRICS_CSV)
    for ra, rb in zip(rows_a, rows_b, strict=True):
        for key in ("train_loss", "val_loss", "lr"):
            assert float(ra[key]) == float(rb[key]), key
    ma, mb = load_model(tmp_path / "model_a"), load_model(tmp_path / "model_b")
    for (ka, va), (kb, vb) in zip(ma.canonical_state_dict().items(), mb.canonical_state_dict().items()):
        assert ka == kb and torch.equal(va, vb)

    # resuming with a different architecture is refused
    opts.model = ModelConfig(channels=(16, 16), kernel_sizes=(3, 1))
    with pytest.raises(ValueError, match="differ"):
        train(opts)


def test_same_seed_same_result_across_processes(dataset, tmp_path):
    # escnn's kernel bases depend on string hashing, so reproducibility needs PYTHONHASHSEED fixed
    script = ("import sys; from roteq_param.models import ModelConfig; from roteq_param.train import TrainOptions, train; "
              "train(TrainOptions(data=sys.argv[1], out=sys.argv[2], name=sys.argv[2] + '/m', epochs=1, "
              "model=ModelConfig(channels=(8,), kernel_sizes=(3,)), batch_size=4, progress=False, threads=1, seed=3))")
    env = dict(os.environ, PYTHONHASHSEED="0")
    for run in ("p", "q"):
        subprocess.run([sys.executable, "-c", script, dataset, str(tmp_path / run)], env=env, check=True,
                       capture_output=True, timeout=120)
    rows_p, rows_q = _rows(tmp_path / "p" / METRICS_CSV), _rows(tmp_path / "q" / METRICS_CSV)
    assert [r["train_loss"] for r in rows_p] == [r["train_loss"] for r in rows_q]
    assert (tmp_path / "p" / "m" / "model.pt").read_bytes() == (tmp_path / "q" / "m" / "model.pt").read_bytes()


def test_rotated_evaluation_of_equivariant_model(dataset):
    data = load_dataset(dataset)
    torch.manual_seed(0)
    model = build_model(channels=(8,), kernel_sizes=(3,))
    model.set_normalization(field_scales(SCHEMA, "inputs", data.x), field_scales(SCHEMA, "outputs", data.y))
    scores = evaluate(model, data, [2], "C4")
    assert set(scores) == {"rot0", "rot90", "rot180", "rot270"}
    base = scores["rot0"]
    for s in scores.values():
        assert s["flux_mean"] == pytest.approx(base["flux_mean"], rel=1e-4, abs=1e-4)
        assert s["S_1"] == pytest.approx(base["S_1"], rel=1e-4, abs=1e-4)
    # tau_xx and tau_yy swap roles under a quarter turn
    assert scores["rot90"]["tau_1_xx"] == pytest.approx(base["tau_1_yy"], rel=1e-4, abs=1e-4)


def test_usage_errors(dataset, tmp_path):
    with pytest.raises(ValueError, match="holdout"):
        train(TrainOptions(data=dataset, out=str(tmp_path / "c"), val_runs=3, epochs=1, **SMALL))
    # killed before its first checkpoint: --resume starts over (and says so) ...
    with pytest.warns(UserWarning, match="no checkpoint .* starting from epoch 0"):
        assert train(TrainOptions(data=dataset, out=str(tmp_path / "d"), resume=True, epochs=1, **SMALL))["finished"]
    # ... but a fresh run never replaces the checkpoint and tables of an earlier one
    before = (tmp_path / "d" / CHECKPOINT).read_bytes()
    with pytest.raises(FileExistsError, match="already holds a training run.*--resume.*--overwrite"):
        train(TrainOptions(data=dataset, out=str(tmp_path / "d"), epochs=1, **SMALL))
    assert (tmp_path / "d" / CHECKPOINT).read_bytes() == before
    with pytest.raises(FileNotFoundError, match="roteq generate"):
        load_dataset(tmp_path / "missing.nc")


def test_train_runs_must_be_training_runs(dataset, tmp_path):
    with pytest.raises(ValueError, match=r"--train-runs \[2\] are not training runs"):
        train(TrainOptions(data=dataset, out=str(tmp_path / "o"), val_runs=1, train_runs=(2,), epochs=1, **SMALL))
    summary = train(TrainOptions(data=dataset, out=str(tmp_path / "p"), val_runs=1, train_runs=(1,), epochs=1, **SMALL))
    card = load_card(summary["model_dir"])
    assert card["training"]["train_runs"] == [1] and card["training"]["val_runs"] == [2]
    assert card["training"]["solver"]["nx"] == 16 and card["training"]["solver"]["beta"] == 1.5e-11


def test_snapshot_every_trains_on_every_kth_snapshot_and_is_recorded(dataset, tmp_path):
    full = load_dataset(dataset)
    every2 = load_dataset(dataset, snapshot_every=2)
    T = full.x.shape[1]
    assert every2.x.shape[1] == (T + 1) // 2
    torch.testing.assert_close(every2.x, full.x[:, ::2])
    torch.testing.assert_close(every2.S, full.S[:, ::2])
    summary = train(TrainOptions(data=dataset, out=str(tmp_path / "o"), snapshot_every=2, epochs=1, **SMALL))
    card = load_card(summary["model_dir"])
    assert card["training"]["n_train_samples"] == 2 * ((T + 1) // 2)  # runs 0-1 (run 2 held out)
    assert card["training"]["options"]["snapshot_every"] == 2
    # the default keeps the recipe older checkpoints recorded
    assert "snapshot_every" not in TrainOptions(data=dataset, out="x").recipe()
    with pytest.raises(ValueError, match="snapshot_every must be an integer >= 1; got 0"):
        load_dataset(dataset, snapshot_every=0)
