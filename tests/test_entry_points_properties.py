"""Property-based checks of public entry points: whatever arrays or bytes come in, the answer is a
result or a clear, typed error (SchemaError / ValueError / ModelFileError), never a deep numpy or
torch traceback."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roteq_param import models
from roteq_param.fields import SchemaError
from solver_coupling.cgrid import CGridAdapter, GradientModel

FIELDS = ("vel_1", "vel_2", "b", "beta", "U_1", "U_2")
SHAPES = {"vel_1": (2, 8, 8), "vel_2": (2, 8, 8), "b": (8, 8), "beta": (2,), "U_1": (2,), "U_2": (2,)}


@pytest.fixture(scope="module")
def predictor():
    return models.Predictor("eddy-c4")


def _mutated(field, kind):
    arrays = {f: np.zeros(SHAPES[f]) for f in FIELDS}
    if kind == "missing":
        del arrays[field]
    elif kind == "extra dim":
        arrays[field] = np.zeros((3,) + SHAPES[field])
    elif kind == "wrong last dim":
        arrays[field] = np.zeros(SHAPES[field][:-1] + (SHAPES[field][-1] + 1,))
    elif kind == "integer":
        arrays[field] = np.zeros(SHAPES[field], dtype=int)
    elif kind == "complex":
        arrays[field] = np.zeros(SHAPES[field], dtype=complex)
    elif kind in ("nan", "inf"):
        arrays[field] = np.full(SHAPES[field], np.nan if kind == "nan" else np.inf)
    elif kind == "scalar":
        arrays[field] = 1.0
    elif kind == "unknown key":
        arrays["colour"] = np.zeros(2)
    return arrays


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(FIELDS),
       kind=st.sampled_from(["missing", "extra dim", "wrong last dim", "integer", "complex", "nan", "inf", "scalar",
                             "unknown key"]))
def test_predictor_names_the_problem(predictor, field, kind):
    arrays = _mutated(field, kind)
    try:
        out = predictor(arrays)
    except SchemaError as e:
        assert ("colour" if kind == "unknown key" else field) in str(e)
    else:  # an extra leading dimension on every field would be a batch; on one field it must not pass
        pytest.fail(f"{kind} on {field} was accepted: {sorted(out)}")


@settings(max_examples=40, deadline=None)
@given(data=st.binary(min_size=0, max_size=400))
def test_model_file_of_any_bytes_is_a_model_file_error(tmp_path_factory, data):
    d = tmp_path_factory.mktemp("m")
    models.save_model(models.build_model(channels=(4,), kernel_sizes=(1,)), d, inference_cost={})
    (d / "model.pt").write_bytes(data)
    with pytest.raises(models.ModelFileError, match="cannot read model weights|not a roteq"):
        models.load_model(d)


@settings(max_examples=60, deadline=None)
@given(nz=st.integers(1, 2), ny=st.integers(2, 9), nx=st.integers(2, 9), bad=st.sampled_from(
    ["ok", "v shape", "b shape", "nan", "1d", "string"]))
def test_cgrid_adapter_answers_or_says_what_is_wrong(nz, ny, nx, bad):
    adapter = CGridAdapter(GradientModel(1e4, 1e4, 2e4), 1e4, 1e4)
    u, v, b = np.zeros((nz, ny, nx)), np.zeros((nz, ny, nx)), np.zeros((ny, nx))
    if bad == "v shape":
        v = np.zeros((nz, ny + 1, nx))
    elif bad == "b shape":
        b = np.zeros((ny, nx + 1))
    elif bad == "nan":
        u[0, 0, 0] = np.nan
    elif bad == "1d":
        u = np.zeros(nx)
    elif bad == "string":
        u = np.array([["a"] * nx] * ny)
    if bad == "ok":
        du, dv, db = adapter(u, v, b)
        assert du.shape == (nz, ny, nx) and np.isfinite(du).all()
    else:
        with pytest.raises(ValueError):
            adapter(u, v, b)
