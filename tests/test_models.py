"""Tests of roteq_param.models: equivariance, export, save/load, predictor (all real, no mocks)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest_models import named_inputs, random_inputs
from roteq_param.fields import SchemaError, qg_schema
from roteq_param.integrity import UnverifiedFileWarning
from roteq_param.models import (ExportedFluxNet, FluxNet, ModelConfig, ModelFileError, Predictor, build_model,
                                load_card, load_model, save_model)
from roteq_param.symmetry import Group

SCHEMA = qg_schema(2)


def equivariance_error(f, x: torch.Tensor, group: str) -> float:
    """max |f(g x) - g f(x)| / max |f(x)| over the exact elements of ``group``."""
    with torch.no_grad():
        y = f(x)
        err = 0.0
        for g in Group.parse(group).exact_elements():
            lhs = f(SCHEMA.transform_stacked(g, x, "inputs"))
            rhs = SCHEMA.transform_stacked(g, y, "outputs")
            err = max(err, float((lhs - rhs).abs().max() / y.abs().max()))
    return err


def _with_random_scales(model: FluxNet, seed: int = 3) -> FluxNet:
    rng = np.random.default_rng(seed)
    model.set_normalization({f.name: float(rng.uniform(0.2, 5.0)) for f in SCHEMA.inputs},
                            {f.name: float(rng.uniform(0.2, 5.0)) for f in SCHEMA.outputs})
    return model


@pytest.fixture(scope="module", params=["C4", "C8", "D4"])
def escnn_model(request) -> FluxNet:
    torch.manual_seed(0)
    # non-trivial per-field normalisation: it must commute with the group too
    return _with_random_scales(build_model(group=request.param)).eval()


def test_escnn_and_exported_are_equivariant(escnn_model):
    x = random_inputs(SCHEMA, batch=2, n=16)
    group = escnn_model.config.group
    assert equivariance_error(escnn_model, x, group) <= 1e-5
    assert equivariance_error(escnn_model.export(), x, group) <= 1e-5


def test_exported_matches_escnn_including_borders(escnn_model):
    x = random_inputs(SCHEMA, batch=2, n=16, seed=5)
    exported = escnn_model.export()
    assert isinstance(exported, ExportedFluxNet)
    assert not any("escnn" in type(m).__module__ for m in exported.modules())
    with torch.no_grad():
        ref, out = escnn_model(x), exported(x)
    scale = ref.abs().max()
    assert float((out - ref).abs().max() / scale) <= 1e-5
    border = torch.zeros_like(ref, dtype=torch.bool)
    border[..., 0, :] = border[..., -1, :] = border[..., :, 0] = border[..., :, -1] = True
    assert float(((out - ref).abs() * border).max() / scale) <= 1e-5
    # the check has teeth: zero padding (escnn's own export) differs at the borders
    zero_padded = escnn_model.net.export()
    with torch.no_grad():
        z = zero_padded(x / escnn_model.in_scale[:, None, None]) * escnn_model.out_scale[:, None, None]
    assert float(((z - ref).abs() * border).max() / scale) > 1e-3


def test_elu_activation_is_equivariant():
    torch.manual_seed(0)
    model = _with_random_scales(build_model(channels=(8, 8), kernel_sizes=(3, 1), activation="elu")).eval()
    x = random_inputs(SCHEMA, batch=1, n=16)
    exported = model.export()
    assert equivariance_error(model, x, "C4") <= 1e-5
    assert equivariance_error(exported, x, "C4") <= 1e-5
    with torch.no_grad():
        ref = model(x)
        assert float((exported(x) - ref).abs().max() / ref.abs().max()) <= 1e-5


def test_baseline_cnn_is_not_equivariant_and_exports_exactly():
    torch.manual_seed(0)
    cnn = _with_random_scales(build_model(arch="cnn", channels=(16, 16))).eval()
    x = random_inputs(SCHEMA, batch=2, n=16)
    assert equivariance_error(cnn, x, "C4") > 1e-2
    with torch.no_grad():
        ref = cnn(x)
        assert float((cnn.export()(x) - ref).abs().max() / ref.abs().max()) <= 1e-5
    # same exported cost: same channel counts as the default escnn net
    assert [w.shape for w in cnn.export().weights] == [w.shape for w in build_model().export().weights]


def test_config_errors():
    with pytest.raises(ValueError, match="unknown model config key"):
        ModelConfig.from_dict({"group": "C4", "widths": [8]})
    with pytest.raises(ValueError, match="multiples"):
        ModelConfig(group="C8", channels=(12,), kernel_sizes=(3,))
    with pytest.raises(ValueError, match="odd"):
        ModelConfig(kernel_sizes=(2, 1))
    with pytest.raises(ValueError, match="unknown group"):
        ModelConfig(group="Q4")


def test_save_load_round_trip_and_card(tmp_path):
    torch.manual_seed(1)
    model = _with_random_scales(build_model(channels=(8,), kernel_sizes=(3,))).eval()
    d = save_model(model, tmp_path / "m1", training={"dataset_sha256": "abc"}, metrics={"val": {"S_1": 0.5}},
                   inference_cost={"ms": 0.1})
    # .lock: one saver at a time; .sha256: each file's checksum (roteq_param.integrity)
    assert sorted(p.name for p in d.iterdir()) == [".lock", "CARD.md", "CARD.md.sha256", "card.json", "card.json.sha256",
                                                   "model.pt", "model.pt.sha256"]
    card = load_card(d)
    assert card["schema"] == SCHEMA.to_dict() and card["group"] == "C4"
    assert card["training"]["dataset_sha256"] == "abc" and card["n_parameters"] == model.n_parameters()
    assert "S_1" in (d / "CARD.md").read_text()
    loaded = load_model(d)
    assert isinstance(loaded, FluxNet) and not loaded.training
    x = random_inputs(SCHEMA, batch=1, n=16)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
        assert torch.equal(loaded.export()(x), model.export()(x))
    assert load_model(d, schema=qg_schema(2)).config == model.config


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.pt"):
        load_model(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="known models"):
        load_model("no_such_model_name")
    torch.manual_seed(1)
    model = build_model(channels=(4,), kernel_sizes=(3,))
    d = save_model(model, tmp_path / "m", inference_cost={})
    with pytest.raises(ModelFileError, match="schema"):
        load_model(d, schema=qg_schema(3))

    raw = (d / "model.pt").read_bytes()
    (d / "model.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ModelFileError, match="truncated or corrupt"):
        load_model(d)
    (d / "model.pt").write_bytes(raw)

    # weights (and their checksum file) from another save beside this card (a copy)
    other = save_model(build_model(channels=(4,), kernel_sizes=(3,)), tmp_path / "other", inference_cost={})
    manifest = (d / "model.pt.sha256").read_bytes()
    for name in ("model.pt", "model.pt.sha256"):
        (d / name).write_bytes((other / name).read_bytes())
    with pytest.raises(ModelFileError, match="describes other weights .* different saves"):
        load_model(d)
    (d / "model.pt").write_bytes(raw)
    (d / "model.pt.sha256").write_bytes(manifest)

    # a card edited by hand: refused by its checksum; once that is removed, checked for what it says
    card = json.loads((d / "card.json").read_text())
    card["schema"] = qg_schema(3).to_dict()
    (d / "card.json").write_text(json.dumps(card))
    with pytest.raises(ModelFileError, match="card.json is truncated or corrupt.*delete card.json.sha256"):
        load_model(d)
    (d / "card.json.sha256").unlink()
    with pytest.warns(UnverifiedFileWarning, match="card.json carries no checksum"), \
            pytest.raises(ModelFileError, match="different schema"):
        load_model(d)
    (d / "card.json").write_text("{not json")
    with pytest.warns(UnverifiedFileWarning), pytest.raises(ModelFileError, match="not valid JSON"):
        load_model(d)


def test_predictor_named_arrays_and_errors(tmp_path):
    torch.manual_seed(2)
    model = _with_random_scales(build_model(channels=(8,), kernel_sizes=(3,))).eval()
    pred = Predictor(model)
    arrays = named_inputs(SCHEMA, n=12)  # not the traced example's 16^2: the trace is shape-generic
    out = pred(arrays)
    assert set(out) == {"tau_1", "tau_2", "Fb_1", "Fb_2"}
    assert out["tau_1"].shape == (3, 12, 12) and out["Fb_2"].shape == (2, 12, 12)
    assert out["tau_1"].dtype == np.float64
    x = SCHEMA.stack({k: torch.as_tensor(v, dtype=torch.float32) for k, v in arrays.items()})[None]
    with torch.no_grad():
        ref = SCHEMA.unstack(model(x)[0], "outputs")
    for k in out:
        np.testing.assert_allclose(out[k], ref[k].numpy(), rtol=1e-5, atol=1e-5 * float(ref[k].abs().max()))
    # torch in -> torch out, batch dims kept
    batched = pred({k: torch.as_tensor(np.stack([v, v])) for k, v in arrays.items()})
    assert isinstance(batched["Fb_1"], torch.Tensor) and batched["Fb_1"].shape == (2, 2, 12, 12)
    np.testing.assert_allclose(batched["tau_2"][1].numpy(), out["tau_2"], rtol=1e-5, atol=1e-6)

    # a model loaded by name/path works the same
    assert Predictor(save_model(model, tmp_path / "p", inference_cost={}))(arrays)["Fb_1"].shape == (2, 12, 12)

    bad = dict(arrays, vel_2=arrays["vel_2"][:, :, :8])
    with pytest.raises(SchemaError, match="vel_2"):
        pred(bad)
    nan = dict(arrays, b=arrays["b"].copy())
    nan["b"][3, 4] = math.nan
    with pytest.raises(SchemaError, match="'b'.*NaN"):
        pred(nan)
    with pytest.raises(SchemaError, match="U_1"):
        pred({k: v for k, v in arrays.items() if k != "U_1"})


class ArbitraryObject(dict):
    """Not an allowed global for weights-only loading: torch refuses it and suggests unsafe loading."""


def test_unsafe_weights_file_error_never_advises_unsafe_loading(tmp_path):
    """A model.pt holding arbitrary Python objects is refused, and neither the message nor the
    chained traceback passes on torch's advice to load with weights_only=False."""
    import traceback

    model = build_model(channels=(4,), kernel_sizes=(3,))
    d = save_model(model, tmp_path / "m", inference_cost={})
    torch.save(ArbitraryObject(format="roteq-fluxnet/1"), d / "model.pt")
    (d / "model.pt.sha256").unlink()  # as if written without one: the loader itself must refuse it
    with pytest.warns(UnverifiedFileWarning), pytest.raises(ModelFileError) as info:
        load_model(d)
    text = "".join(traceback.format_exception(info.value))
    assert "cannot read model weights" in text
    assert "weights_only" not in text


def test_converted_copy_leaves_other_networks_alone():
    """escnn shares sampled bases between equal layers of different networks: a float64 copy made with
    FluxNet.converted must not turn the bases of other (or later) networks into float64."""
    a = build_model(channels=(4,), kernel_sizes=(3,))
    b = a.converted(torch.float64)
    c = build_model(channels=(4,), kernel_sizes=(3,))
    x = random_inputs(a.schema, batch=1, n=8)
    assert a(x).dtype == c(x).dtype == torch.float32
    assert b(x.double()).dtype == torch.float64
    torch.testing.assert_close(b(x.double()).float(), a(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("group", ["C4", "D4"])
def test_dilated_stencils_are_exactly_equivariant(group):
    """Layers with dilations 1, 2, 4 see 15 cells across with three 3x3 stencils; the exported net is
    equivariant to round-off (float64) for every exact element and computes the escnn net's function
    (escnn's dilated bases are sampled less exactly than plain ones: 6e-5 measured)."""
    order = Group.parse(group).order
    net = build_model(group=group, channels=(2 * order,) * 3, kernel_sizes=(3, 3, 3), dilations=(1, 2, 4)).eval()
    assert net.config.receptive_field == 15
    x = random_inputs(net.schema, batch=2, n=32).double()
    exported = net.export(torch.float64)
    with torch.no_grad():
        y = exported(x)
        assert float((net(x.float()).double() - y).abs().max() / y.abs().max()) < 1e-3
        for g in Group.parse(group).exact_elements():
            moved = exported(net.schema.transform_stacked(g, x))
            err = float((moved - net.schema.transform_stacked(g, y, "outputs")).abs().max() / y.abs().max())
            assert err < 1e-12, (str(g), err)
    with pytest.raises(ValueError, match="dilations"):
        ModelConfig(channels=(8, 8), kernel_sizes=(3, 3), dilations=(1,))


def test_predictor_runs_stencils_wider_than_its_trace_example():
    """A stack that sees 41 cells (halo 20) runs through the predictor on a 32^2 grid exactly as the
    escnn net does (the trace example is sized to the halo; 16^2 used to fail inside torch), and a grid
    narrower than the halo is refused with a message naming the stencil and the grid."""
    torch.manual_seed(5)
    net = _with_random_scales(build_model(channels=(8,) * 4, kernel_sizes=(5, 3, 3, 3), dilations=(4, 4, 4, 4))).eval()
    assert net.config.receptive_field == 41
    pred = Predictor(net)
    arrays = named_inputs(SCHEMA, n=32)
    x = SCHEMA.stack({k: torch.as_tensor(v, dtype=torch.float32) for k, v in arrays.items()})[None]
    with torch.no_grad():
        ref = SCHEMA.unstack(net(x)[0], "outputs")
    out = pred(arrays)
    for k in out:  # escnn's dilation-4 bases are equivariant to ~1e-4 only, the export exactly (above)
        np.testing.assert_allclose(out[k], ref[k].numpy(), rtol=0, atol=1e-3 * float(ref[k].abs().max()))
    with pytest.raises(ValueError, match=r"41 cells across .* 16x16 grid"):
        pred(named_inputs(SCHEMA, n=16))


@pytest.mark.parametrize("kernel, dilation, ok", [(3, 4, True), (3, 5, False), (5, 6, True), (5, 7, False)])
def test_dilations_whose_escnn_basis_is_not_equivariant_are_refused(kernel, dilation, ok):
    """escnn's sampled basis of a widely dilated stencil breaks the 90-degree symmetry (measured: 0.1 at
    3x3 / dilation 5): the trained net and its exact export would differ by tens of per cent, so such a
    layer is refused with a message naming it; the accepted ones export to within 1e-3 of the escnn net."""
    torch.manual_seed(0)
    if not ok:
        with pytest.raises(ValueError, match=rf"{kernel}x{kernel} stencil with dilation {dilation}"):
            build_model(channels=(8,), kernel_sizes=(kernel,), dilations=(dilation,))
        return
    net = build_model(channels=(8,), kernel_sizes=(kernel,), dilations=(dilation,)).eval()
    x = random_inputs(net.schema, batch=1, n=64)
    with torch.no_grad():
        y = net(x)
        assert float((net.export()(x) - y).abs().max() / y.abs().max()) < 1e-3
