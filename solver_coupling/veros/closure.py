"""The trained closure inside a running Veros model, through the C-grid adapter.

:class:`VerosClosure` is a plugin object that a ``VerosSetup`` calls from its ``set_forcing`` (every
step, before momentum and thermodynamics). Each call

1. reads u, v, temperature and salinity at the current time level ``tau`` (halos stripped, east/north
   faces moved to the adapter's west/south convention, :mod:`solver_coupling.veros.convention`);
2. forms the network's inputs as they were in training (pyqg's two-layer QG model, docs/veros.md):

   * layer velocities: thickness-weighted means over each level group;
   * the background velocity ``U_i``: the wet-area mean of layer i's u, removed from u; the network
     sees ``U = ((U_1 - U_2, 0), (0, 0))``, the same flow in the frame of the lower layer (subgrid
     fluxes do not change under a uniform Galilean shift, and in training ``U_2`` was 0);
   * ``b = psi_1 - psi_2 = (p_1 - p_2) / f0`` [m^2 s^-1] from Veros's hydrostatic pressure, itself
     from temperature and salinity through the linear equation of state (layer means of ``p``);
     the background part ``-(U_1 - U_2) (y - y_mean)`` and the domain mean are removed, as pyqg's
     b holds only the perturbation;
   * ``beta``: the domain-mean gradient of ``coriolis_t``, as a vector;

3. runs the network through :class:`~solver_coupling.cgrid.NetworkClosure` (one
   :class:`~roteq_param.models.Predictor`) inside :class:`~solver_coupling.cgrid.CGridAdapter`;
4. returns ``u_source``, ``v_source`` [m s^-2] and ``temp_source`` [K s^-1] on Veros's points, zero on
   land; the buoyancy tendency ``db_i`` [m^2 s^-2] becomes temperature through
   ``dT_i = db_i f0 / (g beta_T D)``, where ``D`` [m] is the distance between the layers' centres
   (a uniform ``dT`` on both layers changes ``b`` by exactly ``g beta_T D dT / f0``). With
   ``injection="balanced"`` the tendencies are first reduced to their QG-balanced part
   (:mod:`solver_coupling.cgrid.balanced`; see :class:`VerosClosure`).

A NaN or inf in the state or the network's output stops the run with :class:`VerosClosureError`
naming the field and the model time.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from roteq_param.fields import qg_nlayers
from roteq_param.models.store import DEFAULT_MODEL, load_model
from solver_coupling.cgrid.adapter import CGridAdapter, FluxModel, NetworkClosure
from solver_coupling.cgrid.balanced import ChannelBalance
from solver_coupling.veros.convention import (
    LevelGroups,
    adapter_mask,
    centres_to_veros,
    faces_to_left,
    hydrostatic_pressure,
    left_to_faces,
)

__all__ = ["VerosClosure", "VerosClosureError", "VerosSources", "CGridState"]


class VerosClosureError(RuntimeError):
    """The closure met a non-finite value (in Veros's state or the network's output)."""


class VerosSources(NamedTuple):
    """What the closure adds to Veros, each ``(nx + 4, ny + 4, nz)`` with halos, 0 on land.

    u_source, v_source : m s^-2, on Veros's u- and v-points.
    temp_source : K s^-1, at tracer points.
    """

    u_source: np.ndarray
    v_source: np.ndarray
    temp_source: np.ndarray


class CGridState(NamedTuple):
    """The closure's view of a Veros state, in the adapter's convention (``[..., ny + 1, nx]``).

    u, v : (2, ny + 1, nx) perturbation layer velocities on west/south faces [m s^-1], top layer first.
    b : (ny + 1, nx) perturbation interface variable psi_1 - psi_2 at centres [m^2 s^-1].
    U : (2,) wet-mean zonal layer velocities [m s^-1], removed from u.
    """

    u: np.ndarray
    v: np.ndarray
    b: np.ndarray
    U: np.ndarray


def _model_time(vs) -> str:
    t = float(vs.time)
    return f"model time {t:.0f} s (day {t / 86400.0:.2f}, iteration {int(vs.itt)})"


class VerosClosure:
    """The roteq-param closure as a Veros plugin object, called from ``set_forcing``.

    Parameters
    ----------
    model:
        A trained model name or directory (default: the shipped default model) or a loaded model.
        It must be a two-layer QG flux model (one interface).
    interfaces:
        Depths [m, positive down] where the Veros levels are split into network layers; each must be
        a boundary between levels. Two layers need one depth (500 m in the eddy configuration).
    flux_model:
        Instead of a network, any collocated flux model ``(u_c, v_c, b_c) -> (tau, Fb)`` (for example
        :class:`~solver_coupling.cgrid.GradientModel`); then ``model`` is not used.
    terms:
        Which tendencies Veros gets: ``("momentum", "buoyancy")`` (default), or one of them. In the
        channel of docs/veros.md the momentum tendency destabilises Veros within days while the
        buoyancy tendency alone runs stably (measured there); the sources not applied are 0. With
        ``injection="balanced"`` it says which of the network's tendencies enter the PV forcing S.
    injection:
        ``"fluxes"`` (default): Veros gets ``du = -div tau`` and ``db_i = -div Fb_i`` as they are.
        ``"balanced"``: Veros gets only what pyqg would feel, QG-balanced
        (:class:`~solver_coupling.cgrid.balanced.ChannelBalance`): the PV forcing S of those tendencies
        is inverted for a streamfunction tendency ``dpsi_i``, and Veros gets ``du_i = -d_y dpsi_i``,
        ``dv_i = d_x dpsi_i`` and ``db = dpsi_1 - dpsi_2`` as temperature on the level just above the
        interface (``balanced_temp_per_b`` [K per m^2 s^-1], per level). The divergent and isotropic
        parts of ``-div tau``, which training never constrained (pyqg sees only the curl), are dropped.
        Needs a channel without islands; ``F_i = f0^2 / (g' H_i)`` with ``g'`` from the layers' mean
        densities when the closure attaches. In the channel of docs/veros.md it delays the blow-up
        (day 9.35 instead of 4.9) but does not remove it (measured there).
    grid_damping:
        With ``injection="balanced"``: the decay rate [1/s] of the grid-scale vorticity mode under the
        biharmonic vorticity damping ``-nu4 lap^2 zeta`` added to S (pyqg's fixed closure term of the same
        name, :meth:`~solver_coupling.cgrid.balanced.ChannelBalance.vorticity_damping`). ``None``
        (default): the model's own (``closure["grid_damping"]`` of its card, the term it was trained and
        run with in pyqg; 0 for a flux model). It damps Veros's own layer vorticity, whatever
        ``inputs`` shows the network. Not applied with ``injection="fluxes"``.
    inputs:
        ``"veros"`` (default): the network sees Veros's layer velocities. ``"geostrophic"``: it sees the
        thickness-weighted depth-mean velocity plus the thermal wind of b (``u_1 - u_2 = -d_y b``,
        ``v_1 - v_2 = d_x b``), so that its velocities and b are related as in pyqg, without Veros's
        ageostrophic (inertia-gravity) motion. Needs a channel without islands.

    Use::

        closure = VerosClosure()
        ...
        @veros_routine
        def set_forcing(self, state):
            s = closure.tendencies(state)          # attaches to the state on the first call
            vs = state.variables
            vs.u_source, vs.v_source, vs.temp_source = s

    The setup must run on a Cartesian grid (``coord_degree=False``) of square cells, cyclic in x,
    with a flat bottom, the linear equation of state (``eq_of_state_type=1``) and
    ``enable_momentum_sources = enable_tempsalt_sources = True``.
    """

    TERMS = ("momentum", "buoyancy")

    INJECTIONS = ("fluxes", "balanced")
    INPUTS = ("veros", "geostrophic")

    def __init__(self, model=DEFAULT_MODEL, interfaces=(500.0,), *, flux_model: FluxModel | None = None,
                 terms=TERMS, injection: str = "fluxes", inputs: str = "veros", grid_damping: float | None = None):
        if injection not in self.INJECTIONS:
            raise ValueError(f"injection must be one of {self.INJECTIONS}; got {injection!r}")
        if inputs not in self.INPUTS:
            raise ValueError(f"inputs must be one of {self.INPUTS}; got {inputs!r}")
        self.injection, self.inputs = injection, inputs
        self.terms = tuple(terms)
        if not self.terms or set(self.terms) - set(self.TERMS):
            raise ValueError(f"terms must be a non-empty subset of {self.TERMS}; got {terms!r}")
        self.interfaces = tuple(float(z) for z in np.atleast_1d(interfaces))
        self.flux_model = flux_model
        self.model = None
        if flux_model is None:
            self.model = load_model(model) if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__") else model
            n = qg_nlayers(self.model.schema)
            if n != 2:
                raise ValueError(f"the model is a {n}-layer QG model; the Veros coupling runs two-layer models "
                                 "(one interface variable b): pass a two-layer model such as "
                                 f"{DEFAULT_MODEL!r}")
        closure = {} if self.model is None else dict(getattr(self.model, "closure", {}) or {})
        self.grid_damping = float(closure.get("grid_damping", 0.0) if grid_damping is None else grid_damping)
        if injection == "balanced" and float(closure.get("energy_backscatter", 0.0)) > 0.0:
            raise ValueError("the model's closure has an energy backscatter term, which injection='balanced' "
                             "does not apply")
        if len(self.interfaces) + 1 != 2:
            raise ValueError(f"interfaces={list(self.interfaces)} splits the levels into {len(self.interfaces) + 1} "
                             "layers, but the network has 2 layers: give one interface depth [m]")
        self._attached_to = None

    # ------------------------------------------------------------------ set-up
    def attach(self, state) -> None:
        """Check Veros's settings and grid, and build the level groups and the adapter."""
        s, vs = state.settings, state.variables
        problems = []
        if not s.enable_cyclic_x:
            problems.append("enable_cyclic_x must be True (the closure's grid is periodic in x)")
        if s.coord_degree:
            problems.append("coord_degree must be False (a Cartesian grid in metres)")
        if int(s.eq_of_state_type) != 1:
            problems.append(f"eq_of_state_type must be 1 (linear), so buoyancy maps to temperature; got "
                            f"{s.eq_of_state_type}")
        for flag in ("enable_momentum_sources", "enable_tempsalt_sources"):
            if not getattr(s, flag):
                problems.append(f"{flag} must be True, or Veros ignores what the closure writes")
        if problems:
            raise ValueError("VerosClosure cannot run with these Veros settings:\n  " + "\n  ".join(problems))
        self.nx, self.ny, self.nz = int(s.nx), int(s.ny), int(s.nz)
        dxt, dyt = np.asarray(vs.dxt)[2:-2], np.asarray(vs.dyt)[2:-2]
        dx = float(dxt[0])
        if not (np.allclose(dxt, dx, rtol=1e-12) and np.allclose(dyt, dx, rtol=1e-12)):
            raise ValueError("VerosClosure needs a uniform grid of square cells (dxt == dyt everywhere); got dxt in "
                             f"[{dxt.min():g}, {dxt.max():g}] m and dyt in [{dyt.min():g}, {dyt.max():g}] m")
        maskT = np.asarray(vs.maskT)[2:-2, 2:-2].astype(bool)
        if not (maskT == maskT[..., -1:]).all():
            raise ValueError("VerosClosure needs a flat bottom (the same land mask at every level)")
        self.dx = dx
        self.groups = LevelGroups.split(np.asarray(vs.dzt), self.interfaces)
        self.mask = adapter_mask(maskT[..., -1])
        if not self.mask.any():
            raise ValueError("the Veros domain has no wet cell")
        cor = np.asarray(vs.coriolis_t)[2:-2, 2:-2]
        self.f0 = float(cor[maskT[..., -1]].mean())
        if abs(self.f0) < 1e-8:
            raise ValueError(f"the mean Coriolis parameter is {self.f0:g} 1/s: the QG closure needs f0 away from 0")
        # beta as a vector: the domain-mean gradient of f (x is cyclic, so its x-mean gradient is what it is)
        beta_y = float(np.mean(np.diff(cor, axis=1))) / dx
        beta_x = float(np.mean(np.diff(cor, axis=0))) / dx
        self.beta = np.array([beta_x, beta_y])
        self.grav, self.rho_0 = float(s.grav), float(s.rho_0)
        from veros.core.density import linear_eq  # Veros's own constants for eq_of_state_type = 1
        self._eos = linear_eq
        self.distance = float(self.groups.centre_depth[1] - self.groups.centre_depth[0])
        self.temp_per_b = self.f0 / (self.grav * linear_eq.betaT * self.distance)  # K per (m^2 s^-1)
        yt = np.asarray(vs.yt)[2:-2]
        y = np.concatenate([yt, [yt[-1] + dx]])[:, None] * np.ones((1, self.nx))
        self.y_anomaly = y - y[self.mask].mean()
        self.mask_u = self.mask & np.roll(self.mask, 1, axis=1)
        self.masks = tuple(np.asarray(getattr(vs, m)) for m in ("maskU", "maskV", "maskT"))
        if self.flux_model is None:
            self.network = NetworkClosure(self.model, self.beta, np.zeros((2, 2)), dx=dx)
            flux_model = self.network
        else:
            self.network, flux_model = None, self.flux_model
        self.adapter = CGridAdapter(flux_model, dx, dx, mask=self.mask)
        self.balance = None
        if (self.injection == "balanced" or self.inputs == "geostrophic") and not self.mask[: self.ny].all():
            raise ValueError(f"injection={self.injection!r}, inputs={self.inputs!r} need a channel without islands "
                             "(every interior column wet)")
        if self.injection == "balanced":
            self.balance = ChannelBalance(self.nx, self.ny, dx, *self._stretching(state))
            self.balanced_temp_per_b = self._interface_temperature(np.asarray(vs.dzw))
        self._attached_to = id(state)

    def _interface_temperature(self, dzw) -> np.ndarray:
        """Temperature per unit b [K per m^2 s^-1] on each level (nz,) that changes b but keeps both layers uniform.

        Veros's discrete thermal wind ties ``u_k - u_(k-1)`` to the horizontal gradient of
        ``rho_k + rho_(k-1)``; the balanced velocity tendency is one value per layer, so a balanced
        temperature tendency is 0 in the lower layer and sits on the level just above the interface
        (exactly so when the upper layer is one level, as in the channel). A uniform ``dT`` on the
        whole column (``temp_per_b``) would instead ask for a shear inside the lower layer that the
        injected momentum does not have.
        """
        k = int(self.groups.levels[0][-1])  # the lowest level of layer 1
        rho = np.zeros(self.nz)
        rho[k] = float(self._eos.linear_eq_of_state_rho(self._eos.S0, self._eos.theta0 + 1.0))  # 1 K warmer
        p = self.groups.layer_mean(hydrostatic_pressure(rho, dzw, self.grav, self.rho_0))
        db_per_K = float(p[0] - p[1]) / self.f0
        out = np.zeros(self.nz)
        out[k] = 1.0 / db_per_K
        return out

    def _stretching(self, state) -> tuple[float, float]:
        """``F_i = f0^2 / (g' H_i)`` [m^-2], ``g' = g (rho_2 - rho_1) / rho_0`` from the wet-mean layer densities
        now (when the closure attaches: the initial state)."""
        vs = state.variables
        wet = np.asarray(vs.maskT)[..., -1].astype(bool)  # a flat bottom: one mask for every level
        rho = self._eos.linear_eq_of_state_rho(np.asarray(vs.salt[..., vs.tau]), np.asarray(vs.temp[..., vs.tau]))
        rho_l = self.groups.layer_mean(rho)[:, wet].mean(axis=1)
        g_reduced = self.grav * float(rho_l[1] - rho_l[0]) / self.rho_0
        if not g_reduced > 0:
            raise ValueError(f"the layers are not stably stratified (g' = {g_reduced:g} m s^-2): "
                             "there is no QG balance to inject")
        return tuple(self.f0**2 / (g_reduced * H) for H in self.groups.thickness)

    # ------------------------------------------------------------------ each step
    def _check_finite(self, vs, name, a, mask):
        bad = ~np.isfinite(a) & mask
        if bad.any():
            i, j, k = np.argwhere(bad)[0]
            raise VerosClosureError(f"Veros state field {name!r} is not finite (NaN or inf) at {int(bad.sum())} wet "
                                    f"point(s), first at (i, j, k) = ({i}, {j}, {k}), at {_model_time(vs)}")

    def read_state(self, state) -> CGridState:
        """The network-ready C-grid state (perturbations, background removed) of Veros at time level ``tau``."""
        if self._attached_to != id(state):
            self.attach(state)
        vs = state.variables
        tau = vs.tau
        maskU, maskV, maskT = (m.astype(bool) for m in self.masks)
        u, v = np.asarray(vs.u[..., tau]), np.asarray(vs.v[..., tau])
        temp, salt = np.asarray(vs.temp[..., tau]), np.asarray(vs.salt[..., tau])
        for name, a, m in (("u", u, maskU), ("v", v, maskV), ("temp", temp, maskT), ("salt", salt, maskT)):
            self._check_finite(vs, name, a, m)
        # land values are never read: zero them before any arithmetic mixes levels
        u, v, temp, salt = (np.where(m, a, 0.0) for a, m in ((u, maskU), (v, maskV), (temp, maskT), (salt, maskT)))
        rho = np.where(maskT, self._eos.linear_eq_of_state_rho(salt, temp), 0.0)
        p = hydrostatic_pressure(rho, np.asarray(vs.dzw), self.grav, self.rho_0)
        ul, vl = self.groups.layer_mean(u), self.groups.layer_mean(v)
        pl = self.groups.layer_mean(p)
        u_left, v_left = faces_to_left(np.moveaxis(ul, 0, -1), np.moveaxis(vl, 0, -1), self.nx, self.ny)
        b = np.zeros((self.ny + 1, self.nx))
        b[: self.ny] = ((pl[0] - pl[1]) / self.f0)[2:-2, 2:-2].T
        U = np.array([u_left[i][self.mask_u].mean() for i in range(2)])
        u_left = np.where(self.mask_u, u_left - U[:, None, None], 0.0)
        b = b + (U[0] - U[1]) * self.y_anomaly  # remove the background -(U_1 - U_2) (y - y_mean)
        b = np.where(self.mask, b - b[self.mask].mean(), 0.0)
        # Veros's own layer velocities, kept for the grid damping, which must damp Veros's flow
        # whatever the network is shown
        self._veros_velocity = (u_left, v_left)
        if self.inputs == "geostrophic":
            u_left, v_left = self._geostrophic(u_left, v_left, b)
        return CGridState(u_left, v_left, b, U)

    def _geostrophic(self, u, v, b):
        """Depth-mean face velocity plus the thermal wind of ``b`` split by layer thickness (``inputs="geostrophic"``).

        b goes to corners (mean of four centres; on a wall row, of the two wet centres beside it, so the
        wall itself adds no shear), and its differences give the shear on the faces, 0 on wall faces.
        """
        ny = self.ny
        w = self.groups.thickness / self.groups.thickness.sum()
        bb = b + np.roll(b, 1, axis=-1)
        bz = np.empty_like(b)
        bz[1:ny] = 0.25 * (bb[: ny - 1] + bb[1:ny])
        bz[0], bz[ny] = 0.5 * bb[0], 0.5 * bb[ny - 1]
        gy = np.zeros_like(b)  # d_y b on u-points [m s^-1]
        gy[:ny] = (bz[1:] - bz[:ny]) / self.dx
        gx = np.zeros_like(b)  # d_x b on v-points, 0 on the wall faces
        gx[1:ny] = (np.roll(bz, -1, axis=-1)[1:ny] - bz[1:ny]) / self.dx
        u_bt, v_bt = np.tensordot(w, u, axes=1), np.tensordot(w, v, axes=1)
        return (np.where(self.mask_u, np.stack([u_bt - w[1] * gy, u_bt + w[0] * gy]), 0.0),
                np.stack([v_bt + w[1] * gx, v_bt - w[0] * gx]))

    def tendencies(self, state) -> VerosSources:
        """The closure's sources for Veros's current state (see :class:`VerosSources`)."""
        cg = self.read_state(state)
        vs = state.variables
        if self.network is not None:
            self.network.U = np.array([[cg.U[0] - cg.U[1], 0.0], [0.0, 0.0]])
        try:
            du, dv, db = self.adapter(cg.u, cg.v, cg.b)
        except ValueError as err:
            if "non-finite" in str(err):
                raise VerosClosureError(f"the closure's output is not finite: {err}, at {_model_time(vs)}") from err
            raise
        momentum, buoyancy = (float(t in self.terms) for t in self.TERMS)
        maskU, maskV, maskT = self.masks
        nz = self.nz
        if self.balance is not None:
            # the terms choose what enters S; what Veros gets is then balanced, momentum and buoyancy
            S = self.balance.pv_forcing(du * momentum, dv * momentum, db * buoyancy)
            if self.grid_damping > 0.0:  # the model's fixed term, as pyqg adds it to S (roteq_param/forcing.py)
                S = S + self.balance.vorticity_damping(*self._veros_velocity, self.grid_damping)
            du, dv, db = self.balance.tendencies(self.balance.invert(S))
            u_src, v_src = left_to_faces(du, dv, self.nx, self.ny)
            t_src = centres_to_veros(db, self.nx, self.ny)[..., None] * self.balanced_temp_per_b
            return VerosSources(self.groups.spread(np.moveaxis(u_src, -1, 0), nz) * maskU,
                                self.groups.spread(np.moveaxis(v_src, -1, 0), nz) * maskV, t_src * maskT)
        u_src, v_src = left_to_faces(du, dv, self.nx, self.ny)
        t_src = centres_to_veros(db * self.temp_per_b, self.nx, self.ny)
        return VerosSources(
            self.groups.spread(np.moveaxis(u_src, -1, 0), nz) * (maskU * momentum),
            self.groups.spread(np.moveaxis(v_src, -1, 0), nz) * (maskV * momentum),
            self.groups.spread(np.moveaxis(t_src, -1, 0), nz) * (maskT * buoyancy),
        )
