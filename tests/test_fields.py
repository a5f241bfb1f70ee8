"""The field schema: escnn field types agree with roteq_param.symmetry; validation errors name the field."""

import numpy as np
import pytest
import torch

from roteq_param import symmetry
from roteq_param.fields import (Field, Schema, SchemaError, escnn_element, escnn_field_type, escnn_gspace,
                                qg_schema)
from roteq_param.symmetry import Element, Group, Kind

ALL_GROUPS = ["C1", "C2", "C4", "C8", "D1", "D2", "D4", "D8"]


def _random_inputs(schema, batch=(2,), n=8, seed=0, lib="numpy"):
    rng = np.random.default_rng(seed)
    out = {}
    for f in schema.inputs:
        shape = (*batch, f.n_components) if f.kind.is_constant else (
            (*batch, f.n_components, n, n) if f.n_components > 1 else (*batch, n, n))
        out[f.name] = rng.normal(size=shape)
    if lib == "torch":
        out = {k: torch.as_tensor(v) for k, v in out.items()}
    return out


@pytest.mark.parametrize("group", ALL_GROUPS)
@pytest.mark.parametrize("which", ["inputs", "outputs"])
def test_escnn_transform_equals_symmetry_action(group, which):
    """This pins escnn's element indexing and axis convention to ours, for every exact element."""
    from escnn import nn

    schema = qg_schema(2)
    G = Group.parse(group)
    ftype = escnn_field_type(schema, which, G)
    assert ftype.size == schema.n_channels(which)
    if which == "inputs":
        x = schema.stack(_random_inputs(schema, lib="torch"), "inputs")
    else:
        x = torch.randn(2, schema.n_channels("outputs"), 8, 8, dtype=torch.float64)
    gt = nn.GeometricTensor(x, ftype)
    for g in G.exact_elements():
        theirs = gt.transform(escnn_element(g, ftype.gspace)).tensor
        ours = schema.transform_stacked(g, x, which)
        assert torch.allclose(theirs, ours, atol=1e-12), f"{group} {which} element {g}"


def test_naive_escnn_conventions_disagree_with_ours():
    """escnn's own frame swaps x and y: using its raw irrep(1) and element index for (u, v) is wrong."""
    from escnn import gspaces, nn

    gs = gspaces.rot2dOnR2(4)
    naive = nn.FieldType(gs, [gs.irrep(1)])
    v = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    g = Element(4, 1)
    theirs = nn.GeometricTensor(v, naive).transform(gs.fibergroup.element(1)).tensor
    ours = symmetry.act(g, v, Kind.VECTOR)
    assert not torch.allclose(theirs, ours, atol=1e-6)
    gd = gspaces.flipRot2dOnR2(4)
    naive_d = nn.FieldType(gd, [gd.irrep(1, 1)])
    flip = Element(4, 0, 1)
    theirs = nn.GeometricTensor(v, naive_d).transform(gd.fibergroup.element((1, 0))).tensor
    assert not torch.allclose(theirs, symmetry.act(flip, v, Kind.VECTOR), atol=1e-6)


@pytest.mark.parametrize("group", ["C4", "C8", "D4"])
def test_tensor_decomposes_into_trace_plus_deviatoric(group):
    ftype = escnn_field_type(Schema((Field("a", Kind.VECTOR),), (Field("t", Kind.TENSOR),)), "outputs", group)
    rep = ftype.representations[0]
    irreps = rep.irreps
    trivial = ftype.gspace.fibergroup.trivial_representation.id
    assert irreps.count(trivial) == 1  # the trace
    assert sum(ftype.gspace.fibergroup.irrep(*i).size for i in irreps) == 3


def test_stack_unstack_round_trip_and_layout():
    schema = qg_schema(2)
    arrays = _random_inputs(schema, batch=(3,), n=5)
    stacked = schema.stack(arrays)
    assert stacked.shape == (3, schema.n_channels("inputs"), 5, 5)
    back = schema.unstack(stacked, "inputs")
    for name, a in arrays.items():
        np.testing.assert_array_equal(back[name], a)
    sl = schema.channel_slices("inputs")
    np.testing.assert_array_equal(stacked[:, sl["vel_1"]], arrays["vel_1"])
    np.testing.assert_array_equal(stacked[:, sl["beta"], 2, 3], arrays["beta"])  # broadcast constant


def test_schema_transform_agrees_with_stacked_transform():
    schema = qg_schema(2)
    arrays = _random_inputs(schema, batch=(2,), n=6, seed=5)
    for g in Group(4, True).elements():
        per_field = schema.stack(schema.transform(g, arrays))
        np.testing.assert_allclose(schema.transform_stacked(g, schema.stack(arrays)), per_field, atol=1e-14)


def test_schema_json_round_trip():
    schema = qg_schema(2)
    again = Schema.from_dict(__import__("json").loads(schema.to_json()))
    assert again == schema
    with pytest.raises(ValueError, match="unknown keys"):
        Schema.from_dict({"inputs": [], "outputs": [], "colour": "red"})
    with pytest.raises(ValueError, match="unknown field kind"):
        Field.from_dict({"name": "w", "kind": "spinor"})


@pytest.mark.parametrize("mutate,match", [
    (lambda a: a.pop("b"), r"missing inputs field\(s\) \['b'\]"),
    (lambda a: a.__setitem__("vel_1", a["vel_1"][:, :1]), r"'vel_1' \(vector\): expected shape \[\.\.\., 2, y, x\]"),
    (lambda a: a.__setitem__("beta", np.zeros((2, 3))), r"'beta' \(constant_pseudovector\)"),
    (lambda a: a["b"].__setitem__((0, 1, 1), np.nan), r"'b' contains NaN"),
    (lambda a: a.__setitem__("vel_2", np.zeros((2, 2, 6, 6))), r"'vel_2' \(vector\): expected shape \[\.\.\., 2, y, x\] with grid \(ny, nx\) = \(8, 8\) \(set by 'vel_1'\), got \(2, 2, 6, 6\)"),
    (lambda a: a.__setitem__("U_1", np.zeros((5, 2))), r"'U_1': leading \(batch\) shape \(5,\)"),
    (lambda a: a.__setitem__("b", np.zeros((2, 8, 8), dtype=int)), r"'b': expected a floating-point array"),
    (lambda a: a.__setitem__("zeta", np.zeros((2, 8, 8))), r"unexpected inputs field\(s\) \['zeta'\]"),
])
def test_validation_errors_name_the_field(mutate, match):
    schema = qg_schema(2)
    arrays = _random_inputs(schema, batch=(2,), n=8)
    mutate(arrays)
    with pytest.raises(SchemaError, match=match):
        schema.validate(arrays)


def test_validation_against_an_expected_grid_and_torch_nan():
    schema = qg_schema(2)
    arrays = _random_inputs(schema, batch=(1,), n=8, lib="torch")
    assert schema.validate(arrays, grid_shape=(8, 8)) == ((1,), (8, 8))
    with pytest.raises(SchemaError, match=r"with grid \(ny, nx\) = \(16, 16\)"):
        schema.validate(arrays, grid_shape=(16, 16))
    arrays["vel_2"][0, 1, 0, 0] = float("inf")
    with pytest.raises(SchemaError, match="'vel_2' contains NaN or infinite"):
        schema.validate(arrays)


def test_unstack_rejects_wrong_channel_count():
    with pytest.raises(SchemaError, match=r"expected a channel tensor \[\.\.\., 10, y, x\]"):
        qg_schema(2).unstack(np.zeros((1, 9, 4, 4)), "outputs")


def test_schema_construction_errors():
    with pytest.raises(ValueError, match="duplicate field names"):
        Schema((Field("a", Kind.SCALAR), Field("a", Kind.VECTOR)), (Field("o", Kind.SCALAR),))
    with pytest.raises(ValueError, match="outputs must be gridded"):
        Schema((Field("a", Kind.SCALAR),), (Field("c", Kind.CONSTANT_VECTOR),))
    with pytest.raises(KeyError, match="no field named 'nope'"):
        qg_schema().field("nope")


def test_gspace_kinds():
    assert escnn_gspace("C4").fibergroup.order() == 4
    assert escnn_gspace("D4").fibergroup.order() == 8
    assert escnn_gspace("D1").fibergroup.order() == 2
    with pytest.raises(ValueError, match="reflection"):
        escnn_element(Element(4, 0, 1), escnn_gspace("C4"))
