"""The closure inside real Veros 1.7.0 (numpy backend) on small channels: conventions, conservation,
land, convergence, repeatability and errors. Every test builds a real ``ChannelSetup`` and reads
Veros's own arrays; nothing of Veros is mocked."""

from __future__ import annotations

import numpy as np
import pytest
from veros import logs, veros_routine  # a dependency: a missing Veros must fail, not skip

logs.setup_logging(loglevel="warning")

from solver_coupling.cgrid import GradientModel, staggered  # noqa: E402
from solver_coupling.veros import ChannelSetup, VerosClosure, VerosClosureError  # noqa: E402
from solver_coupling.veros.convention import LevelGroups, faces_to_left  # noqa: E402
from veros.core.density import linear_eq  # noqa: E402

L = 500.0e3  # channel length and width [m]


class Recorder:
    """A real collocated flux model (the gradient model) that also keeps what it was given."""

    def __init__(self, model):
        self.model, self.seen = model, None

    def __call__(self, u_c, v_c, b_c):
        self.seen = (u_c.copy(), v_c.copy(), b_c.copy())
        return self.model(u_c, v_c, b_c)


def channel(closure, n, ny=None, land=None, **kw):
    ny = n if ny is None else ny
    sim = ChannelSetup(closure, nx=n, ny=ny, dx=L / n, land=land, **kw)
    sim.setup()
    return sim


def envelope(y, W):
    """Smooth in a channel of width W, vanishing to 6th order at both walls (y = 0 and y = W)."""
    return np.where((y > 0) & (y < W), np.sin(np.pi * np.clip(y, 0, W) / W) ** 6, 0.0)


def fu(x, y, k, W=L):
    return (0.05 if k == 1 else 0.01) * envelope(y, W) * np.cos(2 * np.pi * x / L + 0.3 * k)


def fv(x, y, k, W=L):
    return (0.04 if k == 1 else 0.008) * envelope(y, W) * np.sin(4 * np.pi * x / L - 0.2 * k)


def ftemp(x, y, k, W=L):
    return (10.0 + 0.9 * k) + (0.2 if k == 1 else 0.05) * envelope(y, W) * np.cos(2 * np.pi * x / L) * np.cos(np.pi * y / W)


def write_analytic_state(sim, W=L):
    """u, v, temp from the formulas above, written on Veros's own points (xu, yt), (xt, yu), (xt, yt)."""
    vs = sim.state.variables
    xt, yt, xu, yu = (np.asarray(getattr(vs, a)) for a in ("xt", "yt", "xu", "yu"))
    assert abs(yu[1]) < 1e-6 and abs(yu[-3] - W) < 1e-6  # the channel's walls are at y = 0 and y = W
    layer = [0, 0, 0, 0, 1]  # Veros levels, bottom first: 4 x 500 m lower layer, 1 x 500 m upper layer
    assert np.allclose(vs.dzt, 500.0) and len(layer) == len(vs.dzt)
    u = np.stack([fu(xu[:, None], yt[None, :], k, W) for k in layer], -1)
    v = np.stack([fv(xt[:, None], yu[None, :], k, W) for k in layer], -1)
    T = np.stack([ftemp(xt[:, None], yt[None, :], k, W) for k in layer], -1)
    assign(sim.state, u=(u * vs.maskU), v=(v * vs.maskV), temp=(T * vs.maskT))


@veros_routine
def assign(state, **fields):
    """Set time level ``tau`` of Veros variables (its arrays are writable only inside a routine)."""
    vs = state.variables
    for name, value in fields.items():
        a = np.array(getattr(vs, name))
        a[..., vs.tau] = value
        setattr(vs, name, a)


def b_of(T_upper, T_lower, f0, dz=500.0):
    """psi_1 - psi_2 [m^2/s] of one 500 m level over four, each layer vertically uniform, worked out by
    hand from the hydrostatic pressure (p_1 - mean of the lower four levels' p): g beta_T dz (T_1/2 + 2 T_2) / f0
    with temperatures counted from the linear equation of state's theta0."""
    c = 9.81 * linear_eq.betaT * dz / f0
    return c * (0.5 * (T_upper - linear_eq.theta0) + 2.0 * (T_lower - linear_eq.theta0))


def test_analytic_state_on_veros_faces_reaches_the_network_as_the_collocated_average():
    n, ny = 16, 12  # not square: a swapped axis cannot pass
    rec = Recorder(GradientModel(L / n, L / n, delta=L / n))
    sim = channel(VerosClosure(flux_model=rec), n, ny)
    dx = L / n
    W = ny * dx
    write_analytic_state(sim, W)
    closure = sim.closure
    closure.tendencies(sim.state)
    uc, vc, bc = rec.seen
    vs = sim.state.variables
    xt, yt = np.asarray(vs.xt)[2:-2], np.asarray(vs.yt)[2:-2]
    X, Y = np.meshgrid(xt, yt)  # [y, x]
    # the collocated field: the average of the two analytic face values around each centre
    u_exp = np.stack([0.5 * (fu(X - dx / 2, Y, k, W) + fu(X + dx / 2, Y, k, W)) for k in (1, 0)])
    v_exp = np.stack([0.5 * (fv(X, Y - dx / 2, k, W) + fv(X, Y + dx / 2, k, W)) for k in (1, 0)])
    U = u_exp.mean(axis=(1, 2))  # every interior cell is wet
    f0 = closure.f0
    b_exp = b_of(ftemp(X, Y, 1, W), ftemp(X, Y, 0, W), f0) + (U[0] - U[1]) * (Y - Y.mean())
    b_exp -= b_exp.mean()
    np.testing.assert_allclose(uc[:, :ny], u_exp - U[:, None, None], atol=1e-14)
    np.testing.assert_allclose(vc[:, :ny], v_exp, atol=1e-14)
    np.testing.assert_allclose(bc[:ny], b_exp, rtol=0, atol=1e-10 * np.abs(b_exp).max())
    assert not uc[:, ny].any() and not vc[:, ny].any() and not bc[ny].any()  # the closing land row
    # Veros's own u-mask is the adapter's derived one (east faces shifted to west faces)
    maskU = np.asarray(vs.maskU)[2:-2, 2:-2, -1].astype(bool)
    np.testing.assert_array_equal(np.roll(maskU, 1, axis=0).T, closure.mask_u[:ny])
    np.testing.assert_allclose(closure.beta, [0.0, 1.5e-11], rtol=1e-10, atol=1e-25)


def island(n):
    land = np.zeros((n, n), dtype=bool)
    land[5:9, 4:7] = True
    return land


def test_wet_sums_vanish_and_nothing_is_read_from_land():
    n = 16
    sim = channel(VerosClosure(), n, land=island(n))
    write_analytic_state(sim)
    closure = sim.closure
    s = closure.tendencies(sim.state)
    vs = sim.state.variables
    for name, src, mask in (("u", s.u_source, vs.maskU), ("v", s.v_source, vs.maskV), ("temp", s.temp_source, vs.maskT)):
        interior = (src * mask)[2:-2, 2:-2]
        for k in range(interior.shape[-1]):
            assert np.abs(interior[..., k]).sum() > 0, name
            # flux form on a uniform grid: the wet-point sum is zero to round-off
            assert abs(interior[..., k].sum()) < 1e-12 * np.abs(interior[..., k]).sum(), (name, k)
        assert not src[~mask.astype(bool)].any(), f"{name}_source is not 0 on land"
    # NaN wherever Veros has land (island, walls, halos) changes nothing: land is never read
    assign(sim.state, **{name: np.where(m.astype(bool), np.asarray(getattr(vs, name))[..., vs.tau], np.nan)
                         for name, m in (("u", vs.maskU), ("v", vs.maskV), ("temp", vs.maskT), ("salt", vs.maskT))})
    s2 = closure.tendencies(sim.state)
    for a, b in zip(s, s2):
        np.testing.assert_array_equal(a, b)


def test_tendencies_converge_to_the_collocated_spectral_forcing_at_second_order():
    errors = []
    for n in (16, 32, 64):
        dx = L / n
        model = GradientModel(dx, dx, delta=L / 16, derivative="spectral")  # fixed filter width
        sim = channel(VerosClosure(flux_model=model), n)
        write_analytic_state(sim)
        s = sim.closure.tendencies(sim.state)
        vs = sim.state.variables
        # path: Veros u- and v-point tendencies of the top level, averaged to centres
        du = np.roll(s.u_source[2:-2, 2:-2, -1], 1, axis=0).T  # west faces
        dv = s.v_source[2:-2, 1:-3, -1].T  # south faces
        du_c = staggered.u_to_centre(du)
        dv_c = staggered.v_to_centre(np.concatenate([dv, np.zeros((1, n))], 0))[:n]
        # reference: exact centre fields on the same padded periodic grid, spectral derivatives
        xt = np.asarray(vs.xt)[2:-2]
        yc = np.concatenate([np.asarray(vs.yt)[2:-2], [L + dx / 2]])
        X, Y = np.meshgrid(xt, yc)
        u_c = np.stack([fu(X, Y, k) for k in (1, 0)])
        v_c = np.stack([fv(X, Y, k) for k in (1, 0)])
        b_c = b_of(ftemp(X, Y, 1), ftemp(X, Y, 0), sim.closure.f0) * (Y < L)
        tau, _ = model(u_c, v_c, b_c)
        ru, rv = (np.stack(c) for c in zip(*[[-(model.gradient(tau[k, 0])[0] + model.gradient(tau[k, 1])[1]),
                                              -(model.gradient(tau[k, 1])[0] + model.gradient(tau[k, 2])[1])]
                                             for k in range(2)]))
        scale = np.abs(ru[0]).max()
        errors.append(max(np.abs(du_c - ru[0, :n]).max(), np.abs(dv_c - rv[0, :n]).max()) / scale)
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert errors[-1] < 0.05
    assert np.all(orders > 1.8), (errors, orders)


def run_steps(n_steps):
    sim = channel(VerosClosure(), 16, years=1, dt=1800.0)
    for _ in range(n_steps):
        sim.step(sim.state)
    vs = sim.state.variables
    return [np.array(a) for a in (vs.u, vs.v, vs.temp, vs.u_source, vs.temp_source)]


def test_a_short_run_with_the_closure_is_bit_for_bit_repeatable():
    a, b = run_steps(4), run_steps(4)
    assert np.abs(a[3]).max() > 0  # the closure did act
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_bad_input_gets_a_clear_error():
    with pytest.raises(ValueError, match="3 layers, but the network has 2"):
        VerosClosure(interfaces=(500.0, 1000.0))
    with pytest.raises(ValueError, match="terms must be a non-empty subset"):
        VerosClosure(terms=("heat",))
    with pytest.raises(ValueError, match="not a boundary between Veros levels"):
        LevelGroups.split([500.0] * 5, 700.0)
    with pytest.raises(ValueError, match=r"shape \(nx \+ 4, ny \+ 4"):
        faces_to_left(np.zeros((16, 12)), np.zeros((20, 16)), 16, 12)
    with pytest.raises(ValueError, match="eq_of_state_type must be 1"):
        channel(VerosClosure(), 16, override={"eq_of_state_type": 3})  # set-up calls set_forcing once
    sim = channel(VerosClosure(), 16)
    temp = np.array(sim.state.variables.temp[..., sim.state.variables.tau])
    temp[5, 6, 3] = np.nan
    assign(sim.state, temp=temp)
    with pytest.raises(VerosClosureError, match=r"'temp' is not finite .* model time 0 s"):
        sim.closure.tendencies(sim.state)


# ---------------------------------------------------------------- the balanced injection (injection="balanced")


def to_adapter(closure, s):
    """Balanced sources back on the adapter's grid: layer-mean du, dv [m s^-2], the interface tendency db [m^2 s^-2]."""
    from solver_coupling.veros.convention import faces_to_left
    g, nx, ny = closure.groups, closure.nx, closure.ny
    du, dv = faces_to_left(np.moveaxis(g.layer_mean(np.asarray(s.u_source)), 0, -1),
                           np.moveaxis(g.layer_mean(np.asarray(s.v_source)), 0, -1), nx, ny)
    k = int(np.flatnonzero(closure.balanced_temp_per_b)[0])  # the one level that gets the buoyancy tendency
    db = np.zeros((ny + 1, nx))
    db[:ny] = np.asarray(s.temp_source)[2:-2, 2:-2, k].T / closure.balanced_temp_per_b[k]
    return du, dv, db


def balanced_channel(n=32, ny=24, flux_model=None):
    dx = L / n
    flux_model = flux_model or GradientModel(dx, dx, delta=2 * dx)
    sim = channel(VerosClosure(flux_model=flux_model, injection="balanced"), n, ny)
    write_analytic_state(sim, ny * dx)
    return sim


def test_balanced_injection_is_non_divergent_with_no_flow_through_the_walls_and_conserves():
    sim = balanced_channel()
    closure, vs = sim.closure, sim.state.variables
    s = closure.tendencies(sim.state)
    dx, nx, ny = closure.dx, closure.nx, closure.ny
    # F_i = f0^2 / (g' H_i) of the channel: g' = (rd f0)^2 H / (H1 H2), so F_i = H_j / (rd^2 H)
    np.testing.assert_allclose(closure.balance.F, [2000.0 / (15e3**2 * 2500.0), 500.0 / (15e3**2 * 2500.0)], rtol=1e-6)
    u, v = s.u_source[2:-2, 2:-2], s.v_source[2:-2, 1:-2]  # v with the southern wall face (Veros j = 1)
    div = (u - np.roll(u, 1, axis=0)) / dx + (v[:, 1:] - v[:, :-1]) / dx  # C-grid divergence at every cell, level
    assert np.abs(u).max() > 0
    assert np.abs(div).max() < 1e-12 * np.abs(u).max() / dx
    assert not v[:, 0].any() and not v[:, -1].any()  # no flow through the southern and northern walls
    for src, mask in ((s.u_source, vs.maskU), (s.v_source, vs.maskV), (s.temp_source, vs.maskT)):
        interior = (src * mask)[2:-2, 2:-2]
        for k in range(interior.shape[-1]):
            assert abs(interior[..., k].sum()) <= 1e-12 * np.abs(interior[..., k]).sum()
        assert not src[~mask.astype(bool)].any()
    # the buoyancy tendency is one interface tendency, on the level above the interface (the top one here):
    # the lower layer stays uniform, as the one lower-layer velocity tendency's thermal wind asks
    t = s.temp_source[2:-2, 2:-2]
    assert np.abs(t[..., -1]).max() > 0 and not t[..., :-1].any()
    # b changes by exactly db: the closure's own reading of b, before and after adding the source
    cg0 = closure.read_state(sim.state)
    assign(sim.state, temp=np.asarray(vs.temp)[..., vs.tau] + 1e3 * s.temp_source)
    db = to_adapter(closure, s)[2]
    np.testing.assert_allclose(closure.read_state(sim.state).b - cg0.b, 1e3 * (db - db[:ny].mean()) * closure.mask,
                               rtol=0, atol=1e-9 * np.abs(1e3 * db).max())


def balanced_pv_errors(n, ny):
    """The PV tendency of the balanced sources against S at interior corners: (exact part, Veros's part)."""
    sim = balanced_channel(n, ny, GradientModel(L / n, L / n, delta=L / 16))  # fixed filter width
    closure = sim.closure
    cg = closure.read_state(sim.state)
    bal = closure.balance
    S = bal.pv_forcing(*closure.adapter(cg.u, cg.v, cg.b))  # what pyqg would get from the same fluxes
    du, dv, db = to_adapter(closure, closure.tendencies(sim.state))
    F = np.array([-bal.F[0], bal.F[1]])[:, None, None]
    curl = bal.curl(du, dv)
    dpsi = bal.invert(S)
    inner = slice(1, ny)
    # exact: the returned velocity tendencies' curl plus the stretching of corner dpsi_1 - dpsi_2
    exact = np.abs((curl + F * (dpsi[0] - dpsi[1]))[:, inner] - S[:, inner]).max() / np.abs(S).max()
    # Veros's own PV tendency (the centre buoyancy tendency averaged back to corners): S to second order
    q = curl + F * bal.centres_to_corners(db)[None]
    away = slice(ny // 4, ny - ny // 4 + 1)  # away from the walls
    return exact, np.abs(q[:, away] - S[:, away]).max() / np.abs(S[:, away]).max()


def test_balanced_injection_reproduces_the_pv_forcing():
    (exact_1, e1), (exact_2, e2) = balanced_pv_errors(32, 24), balanced_pv_errors(64, 48)
    assert max(exact_1, exact_2) < 1e-10
    assert e2 < 0.03 and np.log2(e1 / e2) > 1.8, (e1, e2)  # measured 0.095, 0.026


def test_balanced_injection_drops_the_isotropic_and_divergent_momentum_flux():
    def isotropic(u_c, v_c, b_c):
        p = u_c**2 + v_c**2  # any isotropic tau = p I: its divergence is a gradient, which pyqg never sees
        tau = np.stack([p, np.zeros_like(p), p], axis=1)
        return tau, np.zeros((u_c.shape[0], 2, *u_c.shape[1:]))
    sim = balanced_channel(flux_model=isotropic)
    s = sim.closure.tendencies(sim.state)
    raw = sim.closure.adapter(*sim.closure.read_state(sim.state)[:3])
    scale = np.abs(raw.du).max()
    assert scale > 0
    for a in s:
        assert np.abs(a).max() < 1e-12 * max(scale, 1.0)


def test_balanced_inversion_is_exact_on_the_adapter_grid():
    from solver_coupling.cgrid.balanced import ChannelBalance
    nx, ny, dx = 12, 9, 1.0e4
    bal = ChannelBalance(nx, ny, dx, 3e-9, 1e-9)
    rng = np.random.default_rng(0)
    du, dv, db = (rng.standard_normal((2, ny + 1, nx)) for _ in range(3))
    du[:, ny] = 0.0
    dv[:, 0] = dv[:, ny] = 0.0
    db[:, ny] = 0.0
    bu, bv, bb, dpsi = bal(du, dv, db)
    S = bal.pv_forcing(du, dv, db)
    q = bal.curl(bu, bv) + np.array([-3e-9, 1e-9])[:, None, None] * (dpsi[0] - dpsi[1])
    np.testing.assert_allclose(q[:, 1:ny], S[:, 1:ny], rtol=0, atol=1e-12 * np.abs(S).max())
    assert abs(bb[:ny].sum()) < 1e-12 * np.abs(bb).sum()  # mass (heat) is conserved
    assert abs(bu[:, :ny].sum()) < 1e-12 * np.abs(bu).sum()  # and each layer's zonal momentum
    np.testing.assert_array_equal(dpsi[:, 0], dpsi[:, 0, :1] * np.ones(nx))  # dpsi constant along each wall
    np.testing.assert_array_equal(dpsi[:, ny], dpsi[:, ny, :1] * np.ones(nx))
    with pytest.raises(ValueError, match="shape"):
        bal.pv_forcing(du[:, :ny], dv, db)


def test_balanced_vorticity_damping_is_the_biharmonic_of_a_free_slip_mode():
    from solver_coupling.cgrid.balanced import ChannelBalance
    nx, ny, dx, rate = 16, 10, 1.0e4, 1.0e-6
    bal = ChannelBalance(nx, ny, dx, 3e-9, 1e-9)
    j, i = np.arange(ny + 1)[:, None], np.arange(nx)[None, :]
    m, k = 3, 2
    psi = np.sin(np.pi * m * j / ny) * np.cos(2 * np.pi * k * i / nx) * np.ones((2, 1, 1))  # 0 on the walls
    u, v, _ = bal.tendencies(psi)  # the velocities of psi (the same differences)
    lam = -(4.0 / dx**2) * (np.sin(np.pi * m / (2 * ny)) ** 2 + np.sin(np.pi * k / nx) ** 2)  # 5-point eigenvalue
    zeta = lam * psi
    S = bal.vorticity_damping(u, v, rate)
    np.testing.assert_allclose(S[:, 1:ny], -(rate * dx**4 / 16.0) * lam**2 * zeta[:, 1:ny], rtol=1e-10,
                               atol=1e-12 * np.abs(rate * zeta).max())
    # the grid's Nyquist mode (x) decays at `rate`
    psi = np.sin(np.pi * j / ny) * np.cos(np.pi * i) * np.ones((2, 1, 1))
    u, v, _ = bal.tendencies(psi)
    zeta = bal.curl(u, v)
    S = bal.vorticity_damping(u, v, rate)
    ratio = S[:, 1:ny] / zeta[:, 1:ny]
    np.testing.assert_allclose(ratio, -rate * (1 + np.sin(np.pi / (2 * ny)) ** 2) ** 2, rtol=1e-10)


def test_geostrophic_inputs_are_the_depth_mean_flow_plus_the_thermal_wind_of_b():
    n = 32
    dx = L / n
    sim = channel(VerosClosure(flux_model=GradientModel(dx, dx, delta=2 * dx), inputs="geostrophic"), n)
    write_analytic_state(sim)
    closure = sim.closure
    cg = closure.read_state(sim.state)
    closure.inputs = "veros"
    raw = closure.read_state(sim.state)
    w = closure.groups.thickness / closure.groups.thickness.sum()
    np.testing.assert_allclose(np.tensordot(w, cg.u, axes=1), np.tensordot(w, raw.u, axes=1), atol=1e-15)
    np.testing.assert_allclose(np.tensordot(w, cg.v, axes=1), np.tensordot(w, raw.v, axes=1), atol=1e-15)
    # the shear is the thermal wind of b: u_1 - u_2 = -d_y b (u-faces), v_1 - v_2 = d_x b (v-faces), inside
    b = cg.b
    gy = (np.roll(b, -1, 0) - np.roll(b, 1, 0) + np.roll(np.roll(b, -1, 0) - np.roll(b, 1, 0), 1, 1)) / (4 * dx)
    gx = (b - np.roll(b, 1, 1) + np.roll(b - np.roll(b, 1, 1), 1, 0)) / (2 * dx)  # at south-face points, x-centred
    gx = np.roll(gx, -1, 1)
    inner = slice(4, n - 4)
    scale = np.abs(gy[inner]).max()
    assert scale > 0
    np.testing.assert_allclose((cg.u[0] - cg.u[1])[inner], -gy[inner], atol=0.05 * scale)
    np.testing.assert_allclose((cg.v[0] - cg.v[1])[inner], gx[inner], atol=0.05 * scale)


def test_balanced_grid_damping_damps_veros_flow_whatever_the_network_sees():
    def zero(u_c, v_c, b_c):
        return np.zeros((u_c.shape[0], 3, *u_c.shape[1:])), np.zeros((u_c.shape[0], 2, *u_c.shape[1:]))
    out = []
    for inputs in ("veros", "geostrophic"):
        sim = channel(VerosClosure(flux_model=zero, injection="balanced", inputs=inputs, grid_damping=1e-5), 16)
        write_analytic_state(sim)
        out.append(sim.closure.tendencies(sim.state))
        vs = sim.state.variables
        u, v = np.asarray(vs.u[..., vs.tau]), np.asarray(vs.v[..., vs.tau])
        assert np.sum(out[-1].u_source * u) + np.sum(out[-1].v_source * v) < 0  # it drains Veros's kinetic energy
    for a, b in zip(*out):
        np.testing.assert_array_equal(a, b)
