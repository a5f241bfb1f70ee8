r"""A Cartesian, zonally cyclic beta-plane channel in Veros: pyqg's "eddy" regime with walls.

Levels of equal thickness ``dz = 500 m`` (Veros's vertical grid centres its w-faces between tracer
points, which needs smoothly varying thicknesses: a 2000 m level under a 500 m one gives it a
negative ``dzw``). The top ``H1 = 500 m`` are the upper layer, the ``H2 = 2000 m`` below the lower
layer; each layer starts homogeneous, with ``T_top - T_bottom`` giving the reduced gravity
``g' = g beta_T (T_top - T_bottom)`` of pyqg's two-layer model. Tracers are advected with Veros's
flux-limited superbee scheme, which creates no new extrema, so no level becomes statically unstable
(a hydrostatic model without convection has no remedy for that). The defaults put the network's
inputs where they were in training (docs/design.md §4, card ``training.dataset_attrs``):

=====================  =============================================  ==================
quantity               how                                            value
=====================  =============================================  ==================
grid spacing           ``dxt = dyt``                                  15.625 km (1000 km / 64)
deformation radius     ``sqrt(g' H1 H2 / H) / f0``                    15 km
beta                   ``coriolis_t = f0 + beta (y - y_mid)``         1.5e-11 m^-1 s^-1
mean shear             zonal-mean temperature relaxed to a meridional gradient in thermal-wind
                       balance with ``U1 - U2``                       0.025 m s^-1
bottom drag            Veros's ``r_bot`` on the bottom level          5.787e-7 s^-1 (pyqg's rek;
                       (500 m), so the lower layer's mean drag is     ``r_bot = rek H2 / dz``
                       ``r_bot dz / H2``                              would match pyqg)
=====================  =============================================  ==================

The forcing that keeps the mean shear: every step the *zonal mean* of temperature on each level is
relaxed, with time scale ``restore_days``, towards ``T*(y) = T_k + a (y - y_mid)`` with
``a = -(U1 - U2) f0 / (g beta_T D)`` (D = 1250 m between the layers' centres), so the thermal wind of
``T*`` is ``U1 - U2``. Relaxing only the zonal mean leaves the eddies free; baroclinic instability
of the shear makes them, and their heat flux is what the relaxation balances. There is no wind:
bottom drag holds the lower layer's mean flow near 0, as ``U2 = 0`` in pyqg. Grid-scale enstrophy
is removed by biharmonic friction and diffusion (``A_hbi = K_hbi``), the counterpart of pyqg's
spectral filter.
"""

from __future__ import annotations

import numpy as np
from veros import VerosSetup, veros_routine
from veros.core.density import linear_eq
from veros.core.operators import at, update

__all__ = ["ChannelSetup", "CHANNEL_DEFAULTS"]

CHANNEL_DEFAULTS = dict(
    nx=64, ny=64, dx=15625.0, H1=500.0, H2=2000.0, dz=500.0, f0=1.0e-4, beta=1.5e-11, rd=15.0e3, shear=0.025,
    restore_days=10.0, r_bot=5.787e-7, A_hbi=1.0e9, dt=1800.0, T_bottom=10.0, noise=0.005, seed=0,
)


class ChannelSetup(VerosSetup):
    """The beta-plane channel (see the module docstring), optionally with a closure.

    Parameters
    ----------
    closure:
        A :class:`~solver_coupling.veros.VerosClosure` (or None for the bare model). Its sources are
        added to the channel's own temperature forcing in ``set_forcing``.
    land:
        Optional boolean array ``(nx, ny)``, True where an interior column is land (an island).
    years:
        Run length in 360-day years (``runlen``).
    **params:
        Any of :data:`CHANNEL_DEFAULTS` (SI units, ``restore_days`` in days, ``noise`` the initial
        temperature perturbation in K). An unknown name is an error.
    """

    def __init__(self, closure=None, *, land=None, years: float = 1.0, override=None, **params):
        unknown = sorted(set(params) - set(CHANNEL_DEFAULTS))
        if unknown:
            raise ValueError(f"unknown channel parameter(s) {unknown}; known: {sorted(CHANNEL_DEFAULTS)}")
        self.p = {**CHANNEL_DEFAULTS, **params}
        self.closure = closure
        self.land = None if land is None else np.asarray(land, dtype=bool)
        self.years = float(years)
        super().__init__(override=override)

    # derived physics -------------------------------------------------------------------------------
    @property
    def n_levels(self) -> int:
        """Veros levels: ``(H1 + H2) / dz``; ``H1`` must be a whole number of levels."""
        p = self.p
        n, n1 = (p["H1"] + p["H2"]) / p["dz"], p["H1"] / p["dz"]
        if abs(n - round(n)) > 1e-9 or abs(n1 - round(n1)) > 1e-9:
            raise ValueError(f"H1 = {p['H1']:g} m and H2 = {p['H2']:g} m must be whole numbers of dz = {p['dz']:g} m levels")
        return int(round(n))

    @property
    def delta_T(self) -> float:
        """Top-minus-bottom temperature [K] giving ``g' = (rd f0)^2 H / (H1 H2)``."""
        p = self.p
        g_reduced = (p["rd"] * p["f0"]) ** 2 * (p["H1"] + p["H2"]) / (p["H1"] * p["H2"])
        return g_reduced / (9.81 * linear_eq.betaT)

    @property
    def temperature_gradient(self) -> float:
        """Meridional gradient [K m^-1] of the relaxation target, in thermal-wind balance with the shear."""
        p = self.p
        return -p["shear"] * p["f0"] / (9.81 * linear_eq.betaT * 0.5 * (p["H1"] + p["H2"]))

    # Veros hooks -----------------------------------------------------------------------------------
    @veros_routine
    def set_parameter(self, state):
        s, p = state.settings, self.p
        s.identifier = "roteq_channel"
        s.description = "beta-plane channel, pyqg eddy regime, roteq-param closure" if self.closure else \
            "beta-plane channel, pyqg eddy regime"
        s.nx, s.ny, s.nz = int(p["nx"]), int(p["ny"]), self.n_levels
        s.dt_mom = s.dt_tracer = float(p["dt"])
        s.runlen = self.years * 360 * 86400.0
        s.coord_degree = False
        s.x_origin = s.y_origin = float(p["dx"])  # Veros puts the first u/v face here: walls at y = 0 and ny dx
        s.enable_cyclic_x = True
        s.eq_of_state_type = 1
        s.enable_biharmonic_friction = True
        s.A_hbi = float(p["A_hbi"])
        s.enable_biharmonic_mixing = True
        s.K_hbi = float(p["A_hbi"])
        s.enable_superbee_advection = True
        s.enable_bottom_friction = True
        s.r_bot = float(p["r_bot"])
        s.enable_implicit_vert_friction = False
        s.kappaM_0 = 0.0
        s.kappaH_0 = 0.0
        s.enable_neutral_diffusion = False
        s.enable_skew_diffusion = False
        s.enable_tke = s.enable_eke = s.enable_idemix = False
        s.enable_conserve_energy = False
        s.enable_tempsalt_sources = True
        s.enable_momentum_sources = self.closure is not None

    @veros_routine
    def set_grid(self, state):
        vs, p = state.variables, self.p
        vs.dxt = update(vs.dxt, at[...], p["dx"])
        vs.dyt = update(vs.dyt, at[...], p["dx"])
        vs.dzt = np.full(self.n_levels, float(p["dz"]))  # k = 0 is the bottom

    @veros_routine
    def set_coriolis(self, state):
        vs, p = state.variables, self.p
        y_mid = 0.5 * p["ny"] * p["dx"]
        vs.coriolis_t = update(vs.coriolis_t, at[...], p["f0"] + p["beta"] * (vs.yt[None, :] - y_mid))

    @veros_routine
    def set_topography(self, state):
        vs = state.variables
        kbot = np.ones((state.settings.nx + 4, state.settings.ny + 4), dtype=int)
        if self.land is not None:
            if self.land.shape != (state.settings.nx, state.settings.ny):
                raise ValueError(f"land must have shape (nx, ny) = {(state.settings.nx, state.settings.ny)}; "
                                 f"got {self.land.shape}")
            kbot[2:-2, 2:-2][self.land] = 0
        vs.kbot = kbot

    def target_temperature(self, yt: np.ndarray) -> np.ndarray:
        """``T*(y)`` per level ``[y, z]`` [deg C]: the relaxation target (and the initial state)."""
        p = self.p
        y_mid = 0.5 * p["ny"] * p["dx"]
        n_upper = int(round(p["H1"] / p["dz"]))
        levels = np.full(self.n_levels, float(p["T_bottom"]))
        levels[-n_upper:] += self.delta_T  # k = 0 is the bottom
        return levels[None, :] + self.temperature_gradient * (yt[:, None] - y_mid)

    @veros_routine
    def set_initial_conditions(self, state):
        vs, p = state.variables, self.p
        T = self.target_temperature(np.asarray(vs.yt))[None] * np.ones((state.settings.nx + 4, 1, 1))
        # Seed baroclinic instability with a smooth perturbation, the same at every level: it tilts the
        # interface (changes b) but leaves every column's stratification as it is, so no level is
        # statically unstable (noise within the homogeneous lower layer would be, at once).
        rng = np.random.default_rng(int(p["seed"]))
        noise = rng.standard_normal((state.settings.nx, state.settings.ny))
        for axis in (0, 1, 0, 1):  # two 1-2-1 passes along each axis: removes grid-scale noise
            noise = 0.25 * (np.roll(noise, 1, axis) + 2 * noise + np.roll(noise, -1, axis))
        noise *= p["noise"] / noise.std()
        T[2:-2, 2:-2] += noise[..., None]
        vs.temp = update(vs.temp, at[...], (T * vs.maskT)[..., None])
        vs.salt = update(vs.salt, at[...], linear_eq.S0 * vs.maskT[..., None])
        u = np.zeros(vs.u.shape[:3])
        u[..., -int(round(p["H1"] / p["dz"])):] = p["shear"]  # thermal wind of T*: U1 - U2 = shear, U2 = 0
        vs.u = update(vs.u, at[...], (u * vs.maskU)[..., None])
        self._relax_rate = 1.0 / (p["restore_days"] * 86400.0)
        self._T_star = self.target_temperature(np.asarray(vs.yt))

    @veros_routine
    def set_forcing(self, state):
        vs = state.variables
        temp = np.asarray(vs.temp[..., vs.tau])
        maskT = np.asarray(vs.maskT)
        wet = maskT[2:-2].sum(axis=0)
        zonal_mean = np.where(wet > 0, (temp * maskT)[2:-2].sum(axis=0) / np.maximum(wet, 1), 0.0)
        source = -self._relax_rate * (zonal_mean - self._T_star)[None] * maskT
        if self.closure is not None:
            s = self.closure.tendencies(state)
            vs.u_source = s.u_source
            vs.v_source = s.v_source
            source = source + s.temp_source
        vs.temp_source = source

    @veros_routine
    def set_diagnostics(self, state):
        for name in list(state.diagnostics):  # the run script writes its own diagnostics
            state.diagnostics[name].output_frequency = 0.0
            state.diagnostics[name].sampling_frequency = 0.0

    @veros_routine
    def after_timestep(self, state):
        pass
