"""Training through the torch twin: the loss is the twin's trajectory against coarse-grained truth
windows from `roteq generate --window-steps`, and a gradient step on it improves it."""

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest_models import tiny_dataset
from roteq_param import fluxform, models
from roteq_param.atomic import OutputLocked, exclusive_output
from solver_coupling.torchqg.online_training import OnlineOptions, load_windows, train_online, window_loss

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.filterwarnings("ignore:PYTHONHASHSEED is not set")]


@pytest.fixture(scope="module")
def windows_file(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp("win") / "tiny.nc", window_steps=4)


def _net(seed=0):
    torch.manual_seed(seed)
    net = models.build_model(group="C4", channels=(8,), kernel_sizes=(3,))
    net.set_normalization({"vel_1": 3e-3, "vel_2": 1e-3, "b": 30.0, "beta": 1.5e-11, "U_1": 0.025, "U_2": 1.0},
                          {f.name: 1e-6 if f.name.startswith("tau") else 1e-2 for f in net.schema.outputs})
    return net.train()


def test_windows_are_the_coarse_truth_at_every_step(windows_file):
    w = load_windows(windows_file)
    assert w.q.shape[2] == 5 and w.steps == 4 and w.twin_kwargs["nx"] == 16 and w.twin_kwargs["dt"] == 3600.0
    assert torch.isfinite(w.q).all() and float(w.q.abs().max()) > 0
    # consecutive steps differ by one time step's evolution, not by a snapshot interval
    step = float((w.q[:, :, 1] - w.q[:, :, 0]).abs().max() / w.q.abs().max())
    assert 0 < step < 0.2


def test_a_gradient_step_through_the_twin_lowers_the_trajectory_loss(windows_file):
    w = load_windows(windows_file)
    net = _net()
    runs, starts = torch.tensor([0, 1]), torch.tensor([0, 0])
    loss = window_loss(net, w, runs, starts, 3)
    params = [p for p in net.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params)
    assert all(torch.isfinite(g).all() for g in grads) and any(float(g.abs().max()) > 0 for g in grads)
    norm2 = sum(float((g ** 2).sum()) for g in grads)
    step = 1e-3 * float(loss) / norm2  # a small steepest-descent step: first order predicts -1e-3 loss
    with torch.no_grad():
        for p, g in zip(params, grads):
            p.sub_(step * g)
    after = window_loss(net, w, runs, starts, 3)
    assert float(after) < float(loss), (float(after), float(loss))


def test_training_for_a_cadence_holds_the_forcing_and_its_gradient_reaches_the_network(windows_file):
    """call_interval k: the twin holds the network's forcing for k steps, so the unroll differs from k = 1
    after the first step and equals it on the first; the gradient still reaches every evaluation."""
    w = load_windows(windows_file)
    net = _net()
    runs, starts = torch.tensor([0, 1]), torch.tensor([0, 0])
    one = window_loss(net, w, runs, starts, 1, call_interval=1)
    assert float(window_loss(net, w, runs, starts, 1, call_interval=3)) == pytest.approx(float(one), rel=1e-12)
    held, fresh = window_loss(net, w, runs, starts, 4, call_interval=3), window_loss(net, w, runs, starts, 4)
    assert abs(float(held) - float(fresh)) > 1e-9 * float(fresh)
    grads = torch.autograd.grad(held, [p for p in net.parameters() if p.requires_grad])
    assert all(torch.isfinite(g).all() for g in grads) and any(float(g.abs().max()) > 0 for g in grads)


def test_train_online_writes_a_model_with_its_history(windows_file, tmp_path):
    start = models.save_model(_net().eval(), tmp_path / "start", inference_cost={})
    summary = train_online(OnlineOptions(data=windows_file, init=str(start), out=str(tmp_path / "run"),
                                         name=str(tmp_path / "tuned"), unroll=(2, 3), iterations=2, batch=2,
                                         lr=1e-3, progress=False))
    card = models.load_card(summary["model_dir"])
    assert [h["unroll"] for h in card["training"]["online"]["history"]] == [2, 3]
    # the tuned model's own held-out offline scores (last run held out), not the starting model's
    assert card["metrics"]["val_runs"] == [2] and set(card["metrics"]["val"]) >= {"S_1", "S_2", "flux_mean"}
    assert np.isfinite([h["val_loss"] for h in summary["history"]]).all()
    tuned = models.load_model(summary["model_dir"])
    assert any(not torch.equal(a, b) for a, b in zip(tuned.state_dict().values(),
                                                      models.load_model(start).state_dict().values()))


def test_a_model_trained_for_a_cadence_runs_at_it_by_default(windows_file, tmp_path):
    from solver_coupling.pyqg.plugin import RotEqParameterization

    start = models.save_model(_net().eval(), tmp_path / "start", inference_cost={})
    summary = train_online(OnlineOptions(data=windows_file, init=str(start), out=str(tmp_path / "run"),
                                         name=str(tmp_path / "k2"), unroll=(3,), iterations=1, batch=2,
                                         lr=1e-3, progress=False, call_interval=2))
    assert models.load_card(summary["model_dir"])["training"]["online"]["call_interval"] == 2
    assert RotEqParameterization(summary["model_dir"]).call_interval == 2
    assert RotEqParameterization(summary["model_dir"], call_interval=1).call_interval == 1
    assert RotEqParameterization(str(start)).call_interval == 1


def test_offline_regulariser_adds_the_offline_loss_of_the_same_dataset(windows_file, tmp_path):
    """With offline_weight, every iteration adds the offline (flux + S) loss on snapshots of the training
    runs: a huge weight makes the fine-tuning follow the offline gradient, so the offline loss falls."""
    from roteq_param.train import load_dataset, offline_losses, s_scales

    start = models.save_model(_net().eval(), tmp_path / "start", inference_cost={})
    data = load_dataset(windows_file)
    x, y, s = data.samples([0, 1])

    def offline(model_dir):
        net = models.load_model(model_dir).eval()
        with torch.no_grad():
            f, sl = offline_losses(net, data, x, y, s, s_scales(s))
        return float(f + sl)

    summary = train_online(OnlineOptions(data=windows_file, init=str(start), out=str(tmp_path / "run"),
                                         name=str(tmp_path / "tuned"), unroll=(2,), iterations=8, batch=1,
                                         lr=3e-3, progress=False, offline_weight=1e3, offline_batch=8))
    assert offline(summary["model_dir"]) < 0.9 * offline(start)
    assert models.load_card(summary["model_dir"])["training"]["online"]["offline_weight"] == 1e3


def test_window_loss_on_all_scales_is_the_grid_space_error_and_resolved_drops_the_filtered_band(windows_file):
    """Parseval: ``scales="all"`` is the per-layer grid-space normalised error of the same unroll; the
    default keeps only the wavenumbers pyqg's filter leaves alone, so it is the same sum without them."""
    from solver_coupling.torchqg import TorchQGModel
    from solver_coupling.torchqg.closures import FluxNetClosure

    w = load_windows(windows_file)
    net = _net().converted(torch.float64)  # not .double(): escnn shares bases between nets (FluxNet.converted)
    runs, starts, n = torch.tensor([0, 1]), torch.tensor([0, 0]), 3
    with torch.no_grad():
        all_scales = float(window_loss(net, w, runs, starts, n, scales="all"))
        resolved = float(window_loss(net, w, runs, starts, n))
        truth = w.q[runs, starts, : n + 1].double()
        twin = TorchQGModel(2, dtype=torch.float64, **w.twin_kwargs,
                            parameterization=FluxNetClosure(net, dtype=torch.float64, differentiable=True))
        twin.q = truth[:, 0]
        traj, target = twin.unroll(n, save_every=1), truth[:, 1:].transpose(0, 1)
        grid = float(((traj - target).pow(2).mean(dim=(-2, -1)) / target.pow(2).mean(dim=(-2, -1))).mean())
        # the filter's pass band from pyqg's definition (wvx = |k| dx <= 0.65 pi), built independently
        nx = target.shape[-1]
        idx = np.fft.fftfreq(nx, 1.0 / nx)
        wvx = 2 * np.pi / nx * np.hypot(idx[:, None], np.abs(idx)[None, :])
        e, t = np.fft.fft2((traj - target).numpy()), np.fft.fft2(target.numpy())
        keep = wvx <= 0.65 * np.pi
        masked = float(((np.abs(e) ** 2 * keep).sum(axis=(-2, -1)) / (np.abs(t) ** 2 * keep).sum(axis=(-2, -1))).mean())
    assert abs(all_scales - grid) <= 1e-12 * grid
    assert 0 < keep.mean() < 1 and abs(resolved - masked) <= 1e-10 * masked
    with pytest.raises(ValueError, match="scales must be one of"):
        window_loss(net, w, runs, starts, n, scales="low")


def test_a_second_train_online_on_the_same_folder_is_refused_at_once(windows_file, tmp_path):
    start = models.save_model(_net().eval(), tmp_path / "start", inference_cost={})
    opts = OnlineOptions(data=windows_file, init=str(start), out=str(tmp_path / "run"), unroll=(2,),
                         iterations=1, batch=1, progress=False)
    with exclusive_output(tmp_path / "run"):  # another writer holds the folder (flock: per open file)
        with pytest.raises(OutputLocked, match="being written by another process"):
            train_online(opts)
        assert not (tmp_path / "run" / "model").exists()
    assert (Path(train_online(opts)["model_dir"]) / "model.pt").is_file()  # free again once released


def test_shell_power_is_the_isotropic_spectrum_of_the_field_and_blind_to_where_eddies_sit():
    """Each shell's power equals a brute-force sum of |f^|^2 over the full fft2 plane with
    round(|k|) in that shell (an independent path: complex fft2, no half-plane weights); summed
    over every shell it is Parseval's total less the mean; a shifted field has the same powers."""
    from solver_coupling.torchqg.online_training import shell_power

    n = 16
    rng = np.random.default_rng(3)
    f = rng.standard_normal((2, n, n)) + 5.0
    fh = torch.fft.rfft2(torch.from_numpy(f))
    shells = torch.from_numpy(fluxform.shell_index(n, 1.0))
    weight = torch.from_numpy(fluxform.half_plane_weights(n, n // 2 + 1))
    n_shells = int(shells.max())
    got = shell_power(fh, weight, shells, n_shells).numpy()
    full = np.abs(np.fft.fft2(f)) ** 2
    k = np.fft.fftfreq(n, 1.0 / n)
    radius = np.rint(np.hypot(k[:, None], k[None, :]))
    for s in range(1, n_shells + 1):
        np.testing.assert_allclose(got[:, s - 1], full[:, radius == s].sum(axis=-1), rtol=1e-12)
    anomaly = f - f.mean(axis=(-2, -1), keepdims=True)
    np.testing.assert_allclose(got.sum(-1), n * n * (anomaly ** 2).sum(axis=(-2, -1)), rtol=1e-12)
    shifted = torch.fft.rfft2(torch.from_numpy(np.roll(f, (5, -3), axis=(-2, -1))))
    np.testing.assert_allclose(shell_power(shifted, weight, shells, n_shells).numpy(), got, rtol=1e-12)
    # a dropped shell (past n_shells) does not leak into the last kept one
    np.testing.assert_allclose(shell_power(fh, weight, shells, 3).numpy(), got[:, :3], rtol=1e-12)


def test_spectral_term_adds_to_the_trajectory_loss_and_its_gradient_step_lowers_the_loss(windows_file):
    """The shell-power term of a real unroll is positive and enters the loss with its weight; a
    steepest-descent step on the weighted loss lowers it; a negative weight is refused by name."""
    from solver_coupling.torchqg.online_training import window_terms

    w = load_windows(windows_file)
    net = _net()
    runs, starts = torch.tensor([0, 1]), torch.tensor([0, 0])
    traj_loss, spec = window_terms(net, w, runs, starts, 3)
    assert float(spec) > 0 and float(traj_loss) > 0
    assert window_terms(net, w, runs, starts, 3, spectral=False)[1] is None
    weighted = window_loss(net, w, runs, starts, 3, spectral_weight=10.0)
    assert abs(float(weighted) - float(traj_loss + 10.0 * spec)) <= 1e-6 * float(weighted)
    params = [p for p in net.parameters() if p.requires_grad]
    grads = torch.autograd.grad(weighted, params)
    norm2 = sum(float((g ** 2).sum()) for g in grads)
    assert norm2 > 0
    step = 1e-3 * float(weighted) / norm2
    with torch.no_grad():
        for p, g in zip(params, grads):
            p.sub_(step * g)
    assert float(window_loss(net, w, runs, starts, 3, spectral_weight=10.0)) < float(weighted)
    with pytest.raises(ValueError, match="spectral_weight must be >= 0"):
        window_loss(net, w, runs, starts, 3, spectral_weight=-1.0)


def test_train_online_with_the_spectral_term_records_both_held_out_terms(windows_file, tmp_path):
    start = models.save_model(_net().eval(), tmp_path / "start", inference_cost={})
    summary = train_online(OnlineOptions(data=windows_file, init=str(start), out=str(tmp_path / "run"),
                                         name=str(tmp_path / "tuned"), unroll=(2,), iterations=2, batch=2,
                                         lr=1e-3, progress=False, spectral_weight=0.1))
    (stage,) = summary["history"]
    assert np.isfinite([stage["val_loss"], stage["val_spectral"], stage["val_spectral_before"]]).all()
    assert models.load_card(summary["model_dir"])["training"]["online"]["spectral_weight"] == 0.1
