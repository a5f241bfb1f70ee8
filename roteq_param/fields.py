"""Declarative schema of a model's input and output fields.

One :class:`Schema` object describes, by name, kind and layer, every field a
parameterization reads and writes. The same object is used

* to build the escnn field types of the network for a chosen group,
* to rotate/reflect a whole batch or dataset (through :mod:`roteq_param.symmetry`),
* to stack named arrays into the channel tensor the network sees and back,
* to validate arrays handed in by a solver, with errors that name the field.

Layouts (see :mod:`roteq_param.symmetry`): a gridded field of kind scalar or
pseudoscalar is ``[..., y, x]``; a vector ``[..., 2, y, x]``; a symmetric tensor
``[..., 3, y, x]`` with components (xx, xy, yy); a constant vector ``[..., 2]``; a
constant scalar ``[..., 1]``. In the stacked channel tensor ``[..., C, y, x]`` fields
appear in schema order with their components contiguous; constants are broadcast over
the grid.

escnn conventions (established by ``tests/test_fields.py``, not assumed):
escnn treats the first spatial axis (our y) as its first coordinate, so its
frame is ours with x and y swapped. That swap is a reflection, so our rotation
by +theta is escnn's rotation by -theta, and our reflection ``(x, y) -> (-x, y)``
is escnn's default D_N flip. Representations are built from our own component
matrices (``symmetry.component_matrix``) conjugated into escnn's frame, and
escnn decomposes them into irreps (a tensor becomes trace + deviatoric).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

from roteq_param.arrays import is_torch, stack
from roteq_param.fluxform import FluxSource, interface_flux_pairs

from . import symmetry
from .symmetry import Element, Group, Kind

__all__ = ["Field", "Schema", "SchemaError", "qg_schema", "qg_inputs", "qg_velocity", "qg_constants", "qg_has_regime",
           "qg_regime_inputs", "qg_grid_sources",
           "qg_fluxes", "qg_flux_sources", "qg_nlayers",
           "DatasetVariable", "QG_DATASET", "QG_DATASET_ATTRS", "qg_dataset_attrs", "qg_dataset_dims",
           "qg_dataset_fields",
           "escnn_gspace", "escnn_element", "escnn_field_type"]


class SchemaError(ValueError):
    """An array does not match the schema (the message names the field)."""


@dataclass(frozen=True)
class Field:
    """One named field: how it transforms, which layer it belongs to, its units."""

    name: str
    kind: Kind
    layer: int | None = None
    units: str = ""
    long_name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", Kind.parse(self.kind))
        if not self.name or not self.name.replace("_", "").isalnum():
            raise ValueError(f"field name {self.name!r} must be a non-empty identifier")

    @property
    def n_components(self) -> int:
        return symmetry.n_components(self.kind)

    @property
    def gridded(self) -> bool:
        return not self.kind.is_constant

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind.value, "layer": self.layer,
                "units": self.units, "long_name": self.long_name}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Field":
        unknown = set(d) - {"name", "kind", "layer", "units", "long_name"}
        if unknown:
            raise ValueError(f"unknown keys in field description: {sorted(unknown)}")
        return cls(**d)


def _as_fields(fields: Iterable[Field | Mapping[str, Any]]) -> tuple[Field, ...]:
    out = tuple(f if isinstance(f, Field) else Field.from_dict(f) for f in fields)
    names = [f.name for f in out]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ValueError(f"duplicate field names in schema: {sorted(dupes)}")
    return out


@dataclass(frozen=True)
class Schema:
    """Inputs and outputs of a parameterization, as named fields."""

    inputs: tuple[Field, ...]
    outputs: tuple[Field, ...]
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", _as_fields(self.inputs))
        object.__setattr__(self, "outputs", _as_fields(self.outputs))
        clash = {f.name for f in self.inputs} & {f.name for f in self.outputs}
        if clash:
            raise ValueError(f"fields cannot be both input and output: {sorted(clash)}")
        if any(not f.gridded for f in self.outputs):
            raise ValueError("outputs must be gridded fields (constants are inputs only)")

    # -- lookup ---------------------------------------------------------------------------------
    def fields(self, which: str) -> tuple[Field, ...]:
        if which == "inputs":
            return self.inputs
        if which == "outputs":
            return self.outputs
        raise ValueError(f"which must be 'inputs' or 'outputs', got {which!r}")

    def field(self, name: str) -> Field:
        for f in self.inputs + self.outputs:
            if f.name == name:
                return f
        known = ", ".join(f.name for f in self.inputs + self.outputs)
        raise KeyError(f"no field named {name!r} in schema; known fields: {known}")

    def n_channels(self, which: str) -> int:
        return sum(f.n_components for f in self.fields(which))

    def channel_slices(self, which: str) -> dict[str, slice]:
        out, start = {}, 0
        for f in self.fields(which):
            out[f.name] = slice(start, start + f.n_components)
            start += f.n_components
        return out

    # -- serialisation --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"inputs": [f.to_dict() for f in self.inputs],
                "outputs": [f.to_dict() for f in self.outputs],
                "description": self.description}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Schema":
        unknown = set(d) - {"inputs", "outputs", "description"}
        if unknown:
            raise ValueError(f"unknown keys in schema description: {sorted(unknown)}")
        return cls(tuple(d["inputs"]), tuple(d["outputs"]), d.get("description", ""))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    # -- validation -----------------------------------------------------------------------------
    def validate(self, arrays: Mapping[str, Any], which: str = "inputs", *,
                 grid_shape: tuple[int, int] | None = None,
                 batch_shape: tuple[int, ...] | None = None,
                 allow_extra: bool = False) -> tuple[tuple[int, ...], tuple[int, int]]:
        """Check a dict of arrays against the schema.

        Checks presence, layout, a common batch shape and grid, a floating dtype
        and finiteness. Raises :class:`SchemaError` naming the offending field and
        saying what was expected. Returns ``(batch_shape, grid_shape)``.
        """
        fields = self.fields(which)
        missing = [f.name for f in fields if f.name not in arrays]
        if missing:
            raise SchemaError(f"missing {which} field(s) {missing}; the schema expects {[f.name for f in fields]}")
        extra = sorted(set(arrays) - {f.name for f in fields})
        if extra and not allow_extra:
            raise SchemaError(f"unexpected {which} field(s) {extra}; the schema expects {[f.name for f in fields]}")
        batch_from = "the caller" if batch_shape is not None else None
        grid_from = "the caller" if grid_shape is not None else None
        for f in fields:
            x = arrays[f.name]
            shape = tuple(getattr(x, "shape", ()))
            if not hasattr(x, "dtype") or not _is_floating(x):
                raise SchemaError(f"field {f.name!r}: expected a floating-point array, got {type(x).__name__} "
                                  f"with dtype {getattr(x, 'dtype', None)}")
            trailing = _trailing_shape(f, grid_shape)
            core = len(trailing)
            if len(shape) < core or any(t is not None and s != t for s, t in zip(shape[len(shape) - core:], trailing)):
                grid = "" if grid_shape is None else f" with grid (ny, nx) = {tuple(grid_shape)} (set by {grid_from})"
                raise SchemaError(f"field {f.name!r} ({f.kind.value}): expected shape {_layout(f)}{grid}, got {shape}")
            lead = shape[: len(shape) - core]
            if f.gridded:
                g = shape[-2:]
                if grid_shape is None:
                    grid_shape, grid_from = (int(g[0]), int(g[1])), repr(f.name)
                elif tuple(g) != tuple(grid_shape):
                    raise SchemaError(f"field {f.name!r}: grid {tuple(g)} differs from {tuple(grid_shape)}, the grid set "
                                      f"by {grid_from}")
            if batch_shape is None:
                batch_shape, batch_from = lead, repr(f.name)
            elif lead != tuple(batch_shape):
                raise SchemaError(f"field {f.name!r}: leading (batch) shape {lead} differs from {tuple(batch_shape)}, "
                                  f"the batch shape set by {batch_from}")
            if not _all_finite(x):
                raise SchemaError(f"field {f.name!r} contains NaN or infinite values")
        if grid_shape is None:
            raise SchemaError(f"no gridded field among the {which}; cannot infer the grid")
        return tuple(batch_shape or ()), tuple(grid_shape)

    # -- stacking -------------------------------------------------------------------------------
    def stack(self, arrays: Mapping[str, Any], which: str = "inputs") -> Any:
        """Named arrays -> channel tensor ``[..., C, y, x]`` (validated first)."""
        batch, (ny, nx) = self.validate(arrays, which, allow_extra=True)
        parts = []
        for f in self.fields(which):
            x = arrays[f.name]
            if f.kind.is_constant:
                d = f.n_components
                x = x[..., :, None, None]
                x = x.expand(*batch, d, ny, nx) if is_torch(x) else np.broadcast_to(x, (*batch, d, ny, nx))
            elif f.n_components == 1:
                x = x[..., None, :, :]
            parts.append(x)
        if is_torch(parts[0]):
            import torch

            dtype = parts[0].dtype
            for p in parts[1:]:
                dtype = torch.promote_types(dtype, p.dtype)
            return torch.cat([p.to(dtype) for p in parts], dim=-3)
        return np.concatenate(parts, axis=-3)

    def unstack(self, tensor: Any, which: str = "outputs") -> dict[str, Any]:
        """Channel tensor ``[..., C, y, x]`` -> named arrays (constants taken at grid point (0, 0))."""
        expected = self.n_channels(which)
        if tensor.shape[-3] != expected if len(tensor.shape) >= 3 else True:
            raise SchemaError(f"expected a channel tensor [..., {expected}, y, x] for the schema's {which}, "
                              f"got shape {tuple(tensor.shape)}")
        out = {}
        for f in self.fields(which):
            s = self.channel_slices(which)[f.name]
            part = tensor[..., s, :, :]
            if f.kind.is_constant:
                part = part[..., 0, 0]
            elif f.n_components == 1:
                part = part[..., 0, :, :]
            out[f.name] = part
        return out

    # -- group action ---------------------------------------------------------------------------
    def transform(self, g: Element, arrays: Mapping[str, Any], *, interpolate: bool = False) -> dict[str, Any]:
        """Apply ``g`` to every field in ``arrays`` that the schema knows (others raise)."""
        out = {}
        for name, x in arrays.items():
            out[name] = symmetry.act(g, x, self.field(name).kind, interpolate=interpolate)
        return out

    def transform_stacked(self, g: Element, tensor: Any, which: str = "inputs", *,
                          interpolate: bool = False) -> Any:
        """Apply ``g`` to a stacked channel tensor ``[..., C, y, x]``."""
        parts = []
        slices = self.channel_slices(which)
        for f in self.fields(which):
            part = tensor[..., slices[f.name], :, :]
            # a broadcast constant rotates its components and stays constant over the grid
            kind = f.kind.broadcast
            if f.n_components == 1:
                parts.append(symmetry.act(g, part[..., 0, :, :], kind, interpolate=interpolate)[..., None, :, :])
            else:
                parts.append(symmetry.act(g, part, kind, interpolate=interpolate))
        if is_torch(tensor):
            import torch

            return torch.cat(parts, dim=-3)
        return np.concatenate(parts, axis=-3)


def _trailing_shape(f: Field, grid_shape: tuple[int, int] | None) -> tuple[int | None, ...]:
    ny, nx = grid_shape if grid_shape is not None else (None, None)
    if f.kind.is_constant:
        return (f.n_components,)
    if f.n_components == 1:
        return (ny, nx)
    return (f.n_components, ny, nx)


def _layout(f: Field) -> str:
    if f.kind.is_constant:
        return f"[..., {f.n_components}]"
    return "[..., y, x]" if f.n_components == 1 else f"[..., {f.n_components}, y, x]"



def _is_floating(x: Any) -> bool:
    if is_torch(x):
        return bool(x.is_floating_point())
    return np.issubdtype(np.asarray(x).dtype, np.floating)


def _all_finite(x: Any) -> bool:
    if is_torch(x):
        import torch

        return bool(torch.isfinite(x).all())
    return bool(np.isfinite(x).all())


# ---------------------------------------------------------------------------------------------
# The QG schema (docs/design.md, "Physics")
# ---------------------------------------------------------------------------------------------

def qg_schema(nlayers: int = 2, regime: bool = False) -> Schema:
    """Schema of the N-layer QG flux parameterization (N >= 2; pyqg's QGModel: 2).

    Inputs: velocity (u, v) per layer [m/s]; the interface variables ``b_j`` = psi_j - psi_{j+1}
    [m^2/s] (proportional to buoyancy f0*b/dz and to interface displacement f0*b/g'; two layers:
    one, named ``b``); the beta vector [1/(m s)] and the background velocity of each layer [m/s]
    as constant vectors (they break the rotational symmetry, so the network must see them to be
    equivariant as a function of all it sees).

    With f0 held fixed, ``b`` is a pseudoscalar and the buoyancy flux and beta
    are pseudovectors under reflections (see :mod:`roteq_param.symmetry`); under
    rotations they are an ordinary scalar and vectors.

    Outputs: momentum flux tensor tau = bar(uu) - bar(u) bar(u) per layer [m^2/s^2] and the
    buoyancy fluxes F_{i,j} = bar(u_i b_j) - bar(u_i) bar(b_j) of each layer i through the
    interfaces j above and below it [m^3/s^2] (:func:`~roteq_param.fluxform.interface_flux_pairs`;
    two layers: one per layer, named ``Fb_i``).

    ``regime=True`` adds the solver settings that a family of configurations varies and that no
    vector input carries, as constant scalars (invariant under every element): each interface's
    stretching couplings to the layers above and below it [m^-2] (two layers: F1, F2; they hold the
    deformation radius and the layer depths) and the bottom drag rate ``rek`` [1/s]. A network trained
    across a family can then tell its members apart (:func:`qg_regime_inputs`).
    """
    if nlayers < 2:
        raise ValueError(f"a layered QG model has nlayers >= 2, got {nlayers}")
    layers = range(1, nlayers + 1)
    inputs = [Field(_VEL.format(i), Kind.VECTOR, i, "m s-1", f"coarse velocity (u, v), layer {i}") for i in layers]
    inputs += [Field(_b_name(j, nlayers), Kind.PSEUDOSCALAR, None, "m2 s-1",
                     f"interface buoyancy variable psi_{j} - psi_{j + 1}") for j in range(1, nlayers)]
    inputs.append(Field(_BETA, Kind.CONSTANT_PSEUDOVECTOR, None, "m-1 s-1", "gradient of the Coriolis parameter"))
    inputs += [Field(_U.format(i), Kind.CONSTANT_VECTOR, i, "m s-1", f"background velocity, layer {i}") for i in layers]
    if regime:
        interfaces = range(1, nlayers)
        inputs += [Field(_G_UPPER.format(j), Kind.CONSTANT_SCALAR, None, "m-2",
                         f"stretching coupling of interface {j} to the layer above it") for j in interfaces]
        inputs += [Field(_G_LOWER.format(j), Kind.CONSTANT_SCALAR, None, "m-2",
                         f"stretching coupling of interface {j} to the layer below it") for j in interfaces]
        inputs.append(Field(_DRAG, Kind.CONSTANT_SCALAR, nlayers, "s-1", "bottom drag rate (pyqg rek)"))
    outputs = [Field(_TAU.format(i), Kind.TENSOR, i, "m2 s-2", f"subgrid momentum flux (xx, xy, yy), layer {i}")
               for i in layers]
    outputs += [Field(_fb_name(i, j, nlayers), Kind.PSEUDOVECTOR, i, "m3 s-2",
                      f"subgrid buoyancy flux (x, y), layer {i}" if nlayers == 2 else
                      f"subgrid buoyancy flux (x, y) of interface {j} by layer {i}")
                for i, j in interface_flux_pairs(nlayers)]
    return Schema(tuple(inputs), tuple(outputs), description=f"{nlayers}-layer QG subgrid fluxes")


# The QG schema's field names are spelled here and nowhere else: couplings, training and the
# dataset reader go through the functions below.
_VEL, _B, _BETA, _U, _TAU, _FB = "vel_{}", "b", "beta", "U_{}", "tau_{}", "Fb_{}"
_G_UPPER, _G_LOWER, _DRAG = "G_upper_{}", "G_lower_{}", "rek"


def _b_name(interface: int, nlayers: int) -> str:
    # two layers keep the names of the first shipped models: one interface, ``b``
    return _B if nlayers == 2 else f"{_B}_{interface}"


def _fb_name(layer: int, interface: int, nlayers: int) -> str:
    return _FB.format(layer) if nlayers == 2 else _FB.format(f"{layer}_{interface}")


def qg_nlayers(schema: Schema) -> int:
    """The layer count of a :func:`qg_schema` (its velocity inputs)."""
    return sum(1 for f in schema.inputs if f.name.startswith(_VEL.format("")))


def qg_inputs(u: Any, v: Any, b: Any, beta: Any, U: Any) -> dict[str, Any]:
    """Named inputs of :func:`qg_schema` from QG state arrays (numpy or torch).

    ``u``, ``v``: ``[..., N, y, x]`` in m/s; ``b``: ``[..., N-1, y, x]`` in m^2/s
    (``b_j = psi_j - psi_{j+1}``; two layers also ``[..., y, x]``, psi_1 - psi_2); ``beta``:
    ``[..., 2]`` in 1/(m s) (pyqg: (0, beta)); ``U``: ``[..., N, 2]`` in m/s (pyqg: (U_i, V_i)
    per layer).
    """
    N = u.shape[-3]
    out = {_VEL.format(i + 1): stack([u[..., i, :, :], v[..., i, :, :]], -3) for i in range(N)}
    if b.ndim == u.ndim - 1 and N == 2:
        b = b[..., None, :, :]
    if b.ndim != u.ndim or b.shape[-3] != N - 1:
        raise SchemaError(f"b must have shape [..., {N - 1}(interfaces), y, x] for {N} layers"
                          f"{' (or [..., y, x])' if N == 2 else ''}; got {tuple(b.shape)}")
    out.update({_b_name(j, N): b[..., j - 1, :, :] for j in range(1, N)})
    out.update(qg_constants(beta, U))
    return out


def qg_has_regime(schema: Schema) -> bool:
    """True for a :func:`qg_schema` with the regime inputs (``regime=True``)."""
    return any(f.name == _DRAG for f in schema.inputs)


def qg_regime_inputs(upper: Any, lower: Any, rek: Any) -> dict[str, Any]:
    """The regime inputs of ``qg_schema(N, regime=True)`` as constant scalars ``[..., 1]``.

    ``upper``, ``lower``: ``[..., N-1]`` stretching couplings of each interface to the layer above and
    below it [m^-2] (:class:`~roteq_param.fluxform.Stratification`'s ``upper``, ``lower``; two layers:
    F1, F2); ``rek``: ``[...]`` bottom drag rate [1/s].
    """
    out = {_G_UPPER.format(j + 1): upper[..., j:j + 1] for j in range(upper.shape[-1])}
    out.update({_G_LOWER.format(j + 1): lower[..., j:j + 1] for j in range(lower.shape[-1])})
    out[_DRAG] = rek[..., None]
    return out


def qg_velocity(inputs: Mapping[str, Any], nlayers: int = 2) -> tuple[Any, Any]:
    """``(u, v)`` ``[..., nz, y, x]`` in m/s from named inputs of :func:`qg_schema` (inverse of
    :func:`qg_inputs` for the velocity)."""
    vel = [inputs[_VEL.format(i + 1)] for i in range(nlayers)]
    return stack([w[..., 0, :, :] for w in vel], -3), stack([w[..., 1, :, :] for w in vel], -3)


def qg_constants(beta: Any, U: Any) -> dict[str, Any]:
    """The constant-vector inputs of :func:`qg_schema`: ``beta`` ``[..., 2]`` in 1/(m s) and ``U``
    ``[..., nz, 2]`` in m/s."""
    return {_BETA: beta, **{_U.format(i + 1): U[..., i, :] for i in range(U.shape[-2])}}


def qg_grid_sources(schema: Schema) -> list[tuple[str, int]]:
    """What each gridded input channel of a :func:`qg_schema` is, in channel order: ``("u", layer)``,
    ``("v", layer)`` or ``("b", interface)`` (from 1); lets a solver build the network's gridded
    input straight from its streamfunction."""
    N = qg_nlayers(schema)
    interfaces = {_b_name(j, N): j for j in range(1, N)}
    out: list[tuple[str, int]] = []
    for f in schema.inputs:
        if f.name in interfaces:
            out.append(("b", interfaces[f.name]))
        elif f.name.startswith(_VEL.format("")):
            out += [("u", f.layer), ("v", f.layer)]
        elif f.gridded:
            raise ValueError(f"field {f.name!r} is not a QG state field")
    return out


def qg_fluxes(outputs: Mapping[str, Any]) -> tuple[Any, Any]:
    """``(tau [..., N, 3, y, x], Fb [..., 2(N-1), 2, y, x])`` from named outputs of :func:`qg_schema`
    (the buoyancy-flux pairs in :func:`~roteq_param.fluxform.interface_flux_pairs` order; two layers:
    one per layer)."""
    N = sum(1 for name in outputs if name.startswith(_TAU.format("")))
    return (stack([outputs[_TAU.format(i)] for i in range(1, N + 1)], -4),
            stack([outputs[_fb_name(i, j, N)] for i, j in interface_flux_pairs(N)], -4))


def qg_flux_sources(schema: Schema) -> list[FluxSource]:
    """What each output channel of a :func:`qg_schema` is, in channel order (``("tau", layer, None,
    component)`` or ``("Fb", layer, interface, component)``): the input of
    :func:`~roteq_param.fluxform.flux_form_multipliers`."""
    N = qg_nlayers(schema)
    fluxes = {_fb_name(i, j, N): (i, j) for i, j in interface_flux_pairs(N)}
    taus = {_TAU.format(i): i for i in range(1, N + 1)}
    out: list[FluxSource] = []
    for f in schema.outputs:
        if f.name in taus:
            out += [("tau", taus[f.name], None, c) for c in range(3)]
        elif f.name in fluxes:
            out += [("Fb", *fluxes[f.name], c) for c in range(2)]
        else:
            raise ValueError(f"output {f.name!r} is not a QG flux of a {N}-layer schema")
    return out


# ---------------------------------------------------------------------------------------------
# The dataset layout (netCDF written by the data pipelines, read by training)
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DatasetVariable:
    """One variable of a coarse training dataset: its dims, CF units and long name."""

    name: str
    dims: tuple[str, ...]
    units: str
    long_name: str


QG_DATASET = {v.name: v for v in (
    DatasetVariable("u", ("run", "time", "lev", "y", "x"), "m s-1",
                    "coarse-grained zonal velocity anomaly u = -d psi/dy"),
    DatasetVariable("v", ("run", "time", "lev", "y", "x"), "m s-1",
                    "coarse-grained meridional velocity anomaly v = d psi/dx"),
    DatasetVariable("b", ("run", "time", "y", "x"), "m2 s-1",
                    "coarse-grained interface buoyancy variable eta = psi_1 - psi_2"),
    DatasetVariable("q", ("run", "time", "lev", "y", "x"), "s-1", "coarse-grained potential vorticity anomaly"),
    DatasetVariable("beta_vec", ("run", "comp"), "m-1 s-1",
                    "planetary vorticity gradient as a constant vector (0, beta)"),
    DatasetVariable("U_vec", ("run", "lev", "comp"), "m s-1",
                    "background velocity of each layer as a constant vector (U_i, 0)"),
    DatasetVariable("rek", ("run",), "s-1", "bottom drag rate of the run's solver (pyqg rek)"),
    DatasetVariable("tau", ("run", "time", "lev", "tcomp", "y", "x"), "m2 s-2",
                    "subgrid momentum flux bar(u u) - bar(u) bar(u) per layer"),
    DatasetVariable("Fb", ("run", "time", "lev", "comp", "y", "x"), "m3 s-2",
                    "subgrid buoyancy flux bar(u eta) - bar(u) bar(eta) per layer"),
    DatasetVariable("S_direct", ("run", "time", "lev", "y", "x"), "s-2",
                    "subgrid PV forcing -div(bar(u q) - bar(u) bar(q)), filtered directly"),
    DatasetVariable("S_flux", ("run", "time", "lev", "y", "x"), "s-2",
                    "subgrid PV forcing implied by tau and Fb in flux form"),
    DatasetVariable("q_traj", ("run", "window", "wstep", "lev", "y", "x"), "s-1",
                    "coarse-grained PV at every time step of a trajectory window"),
)}
"""Variables of a coarse QG dataset. Dims: ``run`` (independent trajectory), ``time`` (s),
``lev`` (1 = upper), ``comp`` (x, y), ``tcomp`` (xx, xy, yy), ``y``, ``x`` (cell centres, m);
``window`` and ``wstep`` index trajectory windows and the time steps inside them. These are the
two-layer dims; with more layers ``b`` and ``Fb`` gain an interface axis (:func:`qg_dataset_dims`)."""

_LAYERED_DIMS = {"b": ("run", "time", "iface", "y", "x"), "Fb": ("run", "time", "pair", "comp", "y", "x")}


def qg_dataset_dims(name: str, nlayers: int) -> tuple[str, ...]:
    """The dims of dataset variable ``name`` for ``nlayers`` layers: :data:`QG_DATASET`'s, except that
    with more than two layers ``b`` has an ``iface`` axis (interface j = 1 ... N-1) and ``Fb`` a
    ``pair`` axis (the (layer, interface) pairs of :func:`~roteq_param.fluxform.interface_flux_pairs`)."""
    return _LAYERED_DIMS[name] if nlayers > 2 and name in _LAYERED_DIMS else QG_DATASET[name].dims

QG_DATASET_ATTRS = {
    "b_definition": "b = eta = psi_1 - psi_2 (m2 s-1) at the interface; proportional to buoyancy f0 eta / dz",
    "sign_convention": "S is added to dq/dt (pyqg q-parameterization sign); du/dt = -div(tau), db/dt = -div(Fb); "
                       "S1 = -curl(div tau1) + F1 div Fb1, S2 = -curl(div tau2) - F2 div Fb2",
}
"""Global attributes every two-layer QG dataset carries (besides ``F1``, ``F2`` in m^-2 and ``L`` in
m); :func:`qg_dataset_attrs` gives them for any layer count."""


def qg_dataset_attrs(strat: Any) -> dict[str, Any]:
    """The convention and stratification attributes of a dataset of ``strat``'s layers (a
    :class:`~roteq_param.fluxform.Stratification`): ``stretching_upper``, ``stretching_lower`` (m^-2,
    per interface; two layers also ``F1``, ``F2``) and the b and sign conventions."""
    out = {"stretching_upper": np.array(strat.upper), "stretching_lower": np.array(strat.lower)}
    if strat.nlayers == 2:
        return {**QG_DATASET_ATTRS, **out, "F1": strat.upper[0], "F2": strat.lower[0]}
    return {**out,
            "b_definition": "b_j = psi_j - psi_(j+1) (m2 s-1) at interface j (dim iface); proportional to buoyancy",
            "sign_convention": "S is added to dq/dt (pyqg q-parameterization sign); du/dt = -div(tau), "
                               "db_j/dt = -div(Fb); S_i = -curl(div tau_i) + G(i,i) div Fb(i,i) - G(i,i-1) div "
                               "Fb(i,i-1), G(j,j) = stretching_upper(j), G(j+1,j) = stretching_lower(j); Fb pairs "
                               "(layer, interface) along dim pair: " + str(interface_flux_pairs(strat.nlayers))}


def qg_dataset_fields(ds: Any, schema: Schema, regime: tuple[Any, Any, Any] | None = None) -> dict[str, np.ndarray]:
    """Every input and output field of ``schema`` (a :func:`qg_schema`) from an xarray dataset in the
    :data:`QG_DATASET` layout, as float32 arrays ``[run, time, ...]`` (constants broadcast over time).

    ``regime``: each run's ``(upper [run, N-1], lower [run, N-1], rek [run])`` (m^-2, m^-2, 1/s), which
    the caller reads from the dataset's attributes and variables; needed when the schema has the
    regime inputs (:func:`qg_has_regime`).
    Raises ``ValueError`` naming a missing variable or a variable with the wrong dims.
    """
    needed = ("u", "v", "b", "beta_vec", "U_vec", "tau", "Fb")
    missing = [v for v in needed if v not in ds]
    if missing:
        raise ValueError(f"dataset lacks variable(s) {missing}; expected the roteq dataset layout "
                         f"({', '.join(QG_DATASET)})")
    nlev = ds.sizes["lev"]
    for name in needed:
        if tuple(ds[name].dims) != qg_dataset_dims(name, nlev):
            raise ValueError(f"dataset variable {name!r} has dims {ds[name].dims}, expected "
                             f"{qg_dataset_dims(name, nlev)} for {nlev} layers")
    expected = qg_schema(nlev, regime=qg_has_regime(schema))
    names = {f.name for f in schema.inputs + schema.outputs}
    if names != {f.name for f in expected.inputs + expected.outputs}:
        raise ValueError(f"the dataset holds the {nlev}-layer QG fields; the model schema has {sorted(names)}")

    def arr(name: str) -> np.ndarray:
        return np.asarray(ds[name].values, dtype=np.float32)

    R, T = ds.sizes["run"], ds.sizes["time"]
    u, v = arr("u"), arr("v")
    beta = np.broadcast_to(arr("beta_vec")[:, None, :], (R, T, 2))
    U = np.broadcast_to(arr("U_vec")[:, None, :, :], (R, T, nlev, 2))
    named = qg_inputs(u, v, arr("b"), beta, U)
    if qg_has_regime(schema):
        if regime is None:
            raise ValueError("the model has regime inputs (stretching couplings and drag); pass each run's values")
        upper, lower, rek = (np.asarray(a, dtype=np.float32) for a in regime)
        named.update(qg_regime_inputs(np.broadcast_to(upper[:, None], (R, T, nlev - 1)),
                                      np.broadcast_to(lower[:, None], (R, T, nlev - 1)),
                                      np.broadcast_to(rek[:, None], (R, T))))
    tau, Fb = arr("tau"), arr("Fb")
    for i in range(nlev):
        named[_TAU.format(i + 1)] = tau[:, :, i]
    for p, (i, j) in enumerate(interface_flux_pairs(nlev)):
        named[_fb_name(i, j, nlev)] = Fb[:, :, p]
    return named


# ---------------------------------------------------------------------------------------------
# escnn bridge
# ---------------------------------------------------------------------------------------------

_SWAP = np.array([[0.0, 1.0], [1.0, 0.0]])


def escnn_gspace(group: Group | str):
    """The escnn gspace for ``group`` (C_N: rot2dOnR2, D_N: flipRot2dOnR2, D_1: flip2dOnR2)."""
    from escnn import gspaces

    group = Group.parse(group)
    if not group.reflections:
        return gspaces.rot2dOnR2(group.N)
    if group.N == 1:
        # escnn's flipRot2dOnR2(1) picks a different mirror axis; this one matches ours (see module doc).
        return gspaces.flip2dOnR2(axis=np.pi / 2)
    return gspaces.flipRot2dOnR2(group.N)


def escnn_element(g: Element, gspace) -> Any:
    """The escnn group element that acts on escnn tensors as ``g`` acts on ours."""
    G = gspace.fibergroup
    k = (-g.k) % g.N  # the x <-> y swap between the frames reverses orientation
    if g.N == 1 and G.order() == 2:  # D_1: escnn's flip-only group is a C_2
        return G.element(g.flip)
    if g.flip and G.order() == g.N:
        raise ValueError(f"element {g} is a reflection but the gspace {gspace} has none")
    if G.order() == 2 * g.N:
        return G.element((g.flip, k))
    return G.element(k)


def _escnn_representation(kind: Kind, group: Group, gspace):
    """Representation of a field kind on its components, in escnn's frame."""
    from escnn.group.representation import build_from_discrete_group_representation

    G = gspace.fibergroup
    if kind.broadcast is Kind.SCALAR or (kind is Kind.PSEUDOSCALAR and not group.reflections):
        return G.trivial_representation
    name = f"roteq_{kind.value}_{group.name}"
    if name in G.representations:
        return G.representations[name]
    if group.order == 1:  # escnn cannot decompose over the trivial group; every field is trivial copies
        from escnn.group import directsum

        return directsum([G.trivial_representation] * symmetry.n_components(kind), name=name)
    # A constant (pseudo)vector is fed to the network broadcast over the grid, where it is a
    # (pseudo)vector field.
    component_kind = kind.broadcast
    # The channels keep our component order, so the matrix of escnn's element phi(g) is our matrix
    # for g; escnn decomposes it into irreps (a tensor into trace + deviatoric parts).
    mats = {escnn_element(g, gspace): symmetry.component_matrix(g, component_kind) for g in group.elements()}
    with _closing_escnn_devnull():
        return build_from_discrete_group_representation(mats, name, G, [])


@contextlib.contextmanager
def _closing_escnn_devnull():
    """Close the file escnn 1.0.11 leaks while it decomposes a representation.

    ``escnn.group._numerical.find_orthogonal_matrix`` silences its optimiser with
    ``sys.stdout = open(os.devnull, 'w')`` and never closes that file: every process that builds a
    network (every plugin) got a ``ResourceWarning: unclosed file ... '/dev/null'``. The module's
    ``open`` is shadowed for the call with one that remembers what it opened, and those files are
    closed afterwards (escnn has put the real stdout back by then).
    """
    from escnn.group import _numerical

    opened = []

    def remembered_open(*args, **kwargs):
        fh = open(*args, **kwargs)
        opened.append(fh)
        return fh

    _numerical.open = remembered_open
    try:
        yield
    finally:
        del _numerical.open
        for fh in opened:
            fh.close()


def escnn_field_type(schema: Schema, which: str, group: Group | str):
    """escnn FieldType for the schema's inputs or outputs (channels in schema order), on ``escnn_gspace(group)``."""
    from escnn import nn

    group = Group.parse(group)
    gspace = escnn_gspace(group)
    return nn.FieldType(gspace, [_escnn_representation(f.kind, group, gspace) for f in schema.fields(which)])
