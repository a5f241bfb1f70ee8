"""Architecture of a flux network (:class:`ModelConfig`): what a model card's ``architecture`` records."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields as dc_fields
from typing import Any, Mapping

from roteq_param.fields import Schema, qg_schema
from roteq_param.symmetry import Group

__all__ = ["ModelConfig", "ARCHS", "ACTIVATIONS"]

ACTIVATIONS = ("relu", "elu")
ARCHS = ("escnn", "cnn")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a flux network.

    Attributes
    ----------
    arch:
        ``"escnn"`` (equivariant) or ``"cnn"`` (plain baseline with the same channel counts).
    group:
        Symmetry group, ``"C4"``, ``"C8"``, ``"D4"``, ... (:meth:`Group.parse`). For ``"cnn"`` it
        is recorded only (the rotation-robustness table uses its exact elements).
    channels:
        Channels of each hidden layer. For ``"escnn"`` each must be a multiple of the group
        order: ``channels / |G|`` regular fields.
    kernel_sizes:
        Odd kernel size of each hidden layer (same length as ``channels``).
    out_kernel_size:
        Odd kernel size of the output layer.
    dilations:
        Dilation of each hidden layer (default 1 each): a k x k stencil with taps d cells apart, so
        layers with dilations 1, 2, 4 see 15 cells across with three 3 x 3 stencils. Exactly
        equivariant for 90-degree elements (the dilated stencil maps onto itself).
    activation:
        ``"relu"`` or ``"elu"``; pointwise, hence equivariant on regular fields (the group only
        permutes their channels).
    schema:
        ``Schema.to_dict()`` of the input/output fields; ``None`` means ``qg_schema(2)``.
    grid_damping:
        Grid-scale damping rate [1/s] of a fixed biharmonic viscosity on relative vorticity that the
        forcing adds to the network's (:func:`roteq_param.fluxform.biharmonic_damping_multiplier`):
        ``S += -nu4 lap^2 zeta`` with ``nu4 = grid_damping (dx/pi)^4`` [m^4/s], so a vorticity mode at
        the grid's Nyquist wavenumber pi/dx decays at this rate on any grid. It is the momentum flux
        ``tau = +nu4 lap(grad u + grad u^T)`` (``du/dt = -div tau = -nu4 lap^2 u``): flux form,
        isotropic (exactly equivariant for every element), energy-draining. 0 (default) = the network
        alone. Not trained: set with ``roteq derive`` and judged online (measured so far: every rate
        tried made the shipped models worse, README "Fixed closure terms").
    energy_backscatter:
        Multiple (>= 0) of the energy the network's forcing drains that an energy-consistent
        backscatter term returns (:meth:`roteq_param.forcing.PVForcing._closure_terms`): ``S +=
        -a lap zeta`` per member, ``a >= 0`` set every call from the domain sums so that its energy
        input is this multiple of the network's net drain ``sum_i H_i/H <psi_i S_i>``. 1 makes the
        network energy-neutral; above 1 it is a net source (pyqg's ``BackscatterBiharmonic`` with
        Ross et al.'s tuning returns 120 % of its Smagorinsky dissipation). Isotropic and
        built from domain sums, hence exactly equivariant; 0 (default) = off. ``roteq derive
        --energy-backscatter auto`` sets the value that matches the truth's offline energy transfer.
    multiscale:
        ``False`` (default): the hidden layers are a stack at full resolution. ``True``: a U-Net
        (:mod:`roteq_param.models.multiscale`): hidden layer ``l`` runs on the grid coarsened
        ``2^l`` times (2 x 2 means); on the way back up each finer level convolves its skip stacked
        on the upsampled coarser result, so three 3 x 3 levels see 30 cells across. Exactly
        equivariant for 90-degree elements; the grid side must be divisible by ``2^(levels-1)``;
        dilations must be 1.
    backscatter_order:
        Shape of the backscatter term: ``2`` (default) ``-a lap zeta`` (``-a K^4 psi^``: Jansen & Held's
        anti-diffusion, energy returned where ``K^2`` times the enstrophy spectrum peaks, near the grid
        scale); ``1`` ``+a zeta`` (``-a K^2 psi^``: an anti-drag on relative vorticity, energy returned
        where the kinetic-energy spectrum peaks, i.e. the energy-containing scales).
    similarity:
        ``False`` (default): fixed per-field scales, so the network is tied to the grid spacing it was
        trained on. ``True``: resolution-aware similarity scaling (:mod:`roteq_param.models.similarity`):
        every input and output is also measured in units of the grid spacing and the sample's
        velocity-gradient scale, so one network can run on other grids; calls then need the grid
        spacing ``dx`` (m). Exactly equivariant.
    view_spacing:
        ``None`` (default): the stencils act on the grid they are given. A spacing [m]: the network runs
        on a grid of about this spacing covering the same domain, its inputs resampled spectrally onto it
        and its fluxes back (:mod:`roteq_param.models.view`), so its stencils cover the same kilometres
        on every grid. Needs ``similarity`` (which scales by the native grid spacing); not with
        ``multiscale``. Equivariant to round-off.
    """

    arch: str = "escnn"
    group: str = "C4"
    channels: tuple[int, ...] = (16, 16)
    kernel_sizes: tuple[int, ...] = (3, 1)
    out_kernel_size: int = 1
    activation: str = "relu"
    schema: dict | None = None
    dilations: tuple[int, ...] | None = None
    grid_damping: float = 0.0
    energy_backscatter: float = 0.0
    backscatter_order: int = 2
    multiscale: bool = False
    similarity: bool = False
    view_spacing: float | None = None

    def __post_init__(self) -> None:
        if self.backscatter_order not in (1, 2):
            raise ValueError(f"backscatter_order must be 1 (a zeta) or 2 (-a lap zeta), got {self.backscatter_order!r}")
        object.__setattr__(self, "grid_damping", float(self.grid_damping))
        if not (self.grid_damping >= 0.0 and self.grid_damping < float("inf")):
            raise ValueError(f"grid_damping must be a finite rate >= 0 [1/s], got {self.grid_damping!r}")
        object.__setattr__(self, "energy_backscatter", float(self.energy_backscatter))
        if not 0.0 <= self.energy_backscatter < float("inf"):
            raise ValueError(f"energy_backscatter must be a finite multiple >= 0 of the network's energy drain, "
                             f"got {self.energy_backscatter!r}")
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "kernel_sizes", tuple(int(k) for k in self.kernel_sizes))
        dilations = (1,) * len(self.channels) if self.dilations is None else tuple(int(d) for d in self.dilations)
        object.__setattr__(self, "dilations", dilations)
        if len(dilations) != len(self.channels) or any(d < 1 for d in dilations):
            raise ValueError(f"dilations {list(dilations)} must be positive, one per hidden layer "
                             f"(channels {list(self.channels)})")
        if not isinstance(self.multiscale, bool):
            raise ValueError(f"multiscale must be true or false, got {self.multiscale!r}")
        if not isinstance(self.similarity, bool):
            raise ValueError(f"similarity must be true or false, got {self.similarity!r}")
        if self.multiscale and (len(self.channels) < 2 or any(d != 1 for d in dilations)):
            raise ValueError(f"a multiscale network needs at least two levels (channels {list(self.channels)}) "
                             f"and dilations of 1 (got {list(dilations)})")
        if self.view_spacing is not None:
            object.__setattr__(self, "view_spacing", float(self.view_spacing))
            if not (0.0 < self.view_spacing < float("inf")):
                raise ValueError(f"view_spacing must be a finite grid spacing > 0 [m], got {self.view_spacing!r}")
            if not self.similarity or self.multiscale:
                raise ValueError("view_spacing needs similarity scaling (the fluxes' size follows the native grid "
                                 "spacing) and a network without multiscale levels")
        object.__setattr__(self, "group", Group.parse(self.group).name)
        if self.arch not in ARCHS:
            raise ValueError(f"unknown arch {self.arch!r}; expected one of {ARCHS}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; expected one of {ACTIVATIONS}")
        if not self.channels:
            raise ValueError("channels must list at least one hidden layer")
        if len(self.kernel_sizes) != len(self.channels):
            raise ValueError(f"kernel_sizes {self.kernel_sizes} must have one entry per hidden layer "
                             f"(channels {self.channels})")
        for k in self.kernel_sizes + (self.out_kernel_size,):
            if k < 1 or k % 2 == 0:
                raise ValueError(f"kernel sizes must be odd and positive, got {k}")
        order = Group.parse(self.group).order
        if self.arch == "escnn":
            bad = [c for c in self.channels if c <= 0 or c % order]
            if bad:
                raise ValueError(f"escnn hidden channels must be positive multiples of |{self.group}| = {order}; "
                                 f"got {list(self.channels)}")
        elif any(c <= 0 for c in self.channels):
            raise ValueError(f"hidden channels must be positive, got {list(self.channels)}")
        # store the schema explicitly (None -> qg_schema(2)) so that equal configs compare equal
        schema = qg_schema(2) if self.schema is None else Schema.from_dict(self.schema)
        object.__setattr__(self, "schema", schema.to_dict())

    @property
    def receptive_field(self) -> int:
        """Grid cells across that one output value depends on."""
        if self.multiscale:
            from roteq_param.models.multiscale import receptive_field

            return receptive_field(self.kernel_sizes, self.out_kernel_size)
        return 1 + sum(d * (k - 1) for k, d in zip(self.kernel_sizes, self.dilations)) + (self.out_kernel_size - 1)

    @property
    def closure(self) -> dict[str, float]:
        """The fixed closure terms the forcing adds to the network (see the attributes above)."""
        return {"grid_damping": self.grid_damping, "energy_backscatter": self.energy_backscatter,
                "backscatter_order": self.backscatter_order}

    def get_schema(self) -> Schema:
        return Schema.from_dict(self.schema)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"] = list(self.channels)
        d["kernel_sizes"] = list(self.kernel_sizes)
        d["dilations"] = list(self.dilations)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelConfig":
        known = {f.name for f in dc_fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown model config key(s) {unknown}; known keys: {sorted(known)}")
        return cls(**dict(d))

