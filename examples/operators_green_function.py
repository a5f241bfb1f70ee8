"""
Learning the Poisson Green's function from one dipole
=====================================================

A learned equivariant operator (:func:`roteq_param.operators.neural`) is a convolution with a
radial profile times a unit field: for charge -> potential the profile multiplies the scalar 1,
for charge -> field it multiplies the unit vector ``n = r / |r|``. Here both profiles are
hat-function expansions in ``ln r`` and are fitted with L-BFGS to **one** sample: the potential
and field of a dipole (two opposite point charges), computed with the analytic kernels
``ln(r) / (2 pi)`` and ``-n / (2 pi r)`` of ``laplacian(psi) = rho`` on a bounded domain.

The fitted operators are then applied to unseen neutral charge distributions (random point
charges and smooth random blobs). The last line printed is the relative L2 error of the learned
potential and field against the analytic operators on those charges. The figure shows the learned
profiles against the analytic ones (the potential's profile up to the constant a neutral charge
cannot see; it is aligned by its mean offset).

Run::

    python examples/operators_green_function.py            # 64 x 64 grid, 12 unseen charges
    python examples/operators_green_function.py --small    # 32 x 32, for the test suite
"""

from __future__ import annotations

import argparse
import math
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from roteq_param import operators as ops  # noqa: E402

LENGTH = 1.0e5  # domain side (m); charges are per m^2, potentials per m^2 times m^2


def dipole(n: int, dx: float, separation: int) -> torch.Tensor:
    """Two opposite unit point charges ``separation`` cells apart along a diagonal, in a corner (per m^2).

    In the corner, the sample shows the kernel at every distance up to the domain's diagonal, which
    is what any charge distribution in the domain needs; from the centre it would show only half.
    """
    rho = torch.zeros(n, n, dtype=torch.float64)
    rho[1, 1] = 1.0 / (dx * dx)
    rho[1 + separation, 1 + separation] = -1.0 / (dx * dx)
    return rho


def unseen_charges(n: int, dx: float, count: int, seed: int) -> torch.Tensor:
    """Neutral test charges: half random point charges, half sums of Gaussian blobs (per m^2)."""
    rng = np.random.default_rng(seed)
    x = (np.arange(n) + 0.5) * dx
    X, Y = np.meshgrid(x, x)
    out = []
    for k in range(count):
        rho = np.zeros((n, n))
        if k % 2 == 0:
            cells = rng.integers(n // 8, n - n // 8, size=(6, 2))
            rho[cells[:, 1], cells[:, 0]] += rng.standard_normal(6) / (dx * dx)
        else:
            for _ in range(5):
                x0, y0 = rng.uniform(0.2, 0.8, size=2) * n * dx
                width = rng.uniform(1.5, 4.0) * dx
                rho += rng.standard_normal() * np.exp(-((X - x0) ** 2 + (Y - y0) ** 2) / (2 * width ** 2))
        rho -= rho.mean()  # neutral: a learned potential is defined up to a constant times the net charge
        out.append(rho)
    return torch.as_tensor(np.stack(out))


def fit(op: ops.RadialOperator, source: torch.Tensor, target: torch.Tensor, iters: int) -> list[float]:
    """Least-squares fit of the operator's profile to one (source, target) pair with L-BFGS."""
    scale = target.pow(2).mean()
    opt = torch.optim.LBFGS(op.parameters(), lr=1.0, max_iter=iters, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-15, tolerance_change=1e-18, history_size=50)
    history: list[float] = []

    def closure():
        opt.zero_grad()
        loss = (op(source) - target).pow(2).mean() / scale
        loss.backward()
        history.append(loss.item())
        return loss

    opt.step(closure)
    return history


def relative_error(pred: torch.Tensor, true: torch.Tensor) -> float:
    """Mean over samples of ||pred - true|| / ||true|| (L2 over the grid and components)."""
    dims = tuple(range(1, true.ndim))
    return float((torch.linalg.vector_norm(pred - true, dim=dims) / torch.linalg.vector_norm(true, dim=dims)).mean())


def run(n: int = 64, n_basis: int = 32, separation: int = 8, n_test: int = 12, iters: int = 200, seed: int = 1,
        figure: str | None = None, verbose: bool = True) -> dict:
    """Fit both operators to one dipole, score them on unseen charges, draw the profiles."""
    t0 = time.perf_counter()
    dx = LENGTH / n
    true_pot = ops.green_potential(dx, shape=(n, n))
    true_field = ops.green_field(dx, shape=(n, n))
    rmax = math.hypot(n * dx, n * dx)
    learned = {
        name: ops.neural("scalar", kind, rmax, dx, n_basis=n_basis, spacing="log", rmin=dx,
                         scale=dx * dx / (2 * math.pi), boundary="zero")
        for name, kind in (("potential", "scalar"), ("field", "vector"))
    }
    truth = {"potential": true_pot, "field": true_field}
    rho = dipole(n, dx, separation)
    histories = {}
    for name, op in learned.items():
        with torch.no_grad():
            target = truth[name](rho)
        histories[name] = fit(op, rho, target, iters)
    test = unseen_charges(n, dx, n_test, seed)
    with torch.no_grad():
        errors = {name: relative_error(learned[name](test), truth[name](test)) for name in learned}
    result = {"errors": errors, "final_loss": {k: h[-1] for k, h in histories.items()},
              "seconds": time.perf_counter() - t0}
    if figure is not None or verbose:
        _draw(learned, truth, dx, figure)
    if verbose:
        for name, h in histories.items():
            print(f"{name}: {len(h)} L-BFGS evaluations, training misfit {h[-1]:.2e}")
        print(f"grid {n} x {n}, {n_basis} knots per profile, {n_test} unseen charges, {result['seconds']:.1f} s")
        print(f"relative error on unseen charges: potential {errors['potential']:.2e}, field {errors['field']:.2e}")
    return result


def _draw(learned: dict, truth: dict, dx: float, path: str | None) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, name in zip(axes, ("potential", "field")):
        with torch.no_grad():
            offs, k_learned = learned[name].stencil()
            _, k_true = truth[name].stencil()
        r = np.hypot(offs[:, 0], offs[:, 1]) * dx
        keep = (offs[:, 1] == 0) & (offs[:, 0] > 0)  # the +x axis: the unit field n there is (1, 0)
        order = np.argsort(r[keep])
        rk = r[keep][order] / 1e3
        true_k = k_true[0, 0, keep].numpy()[order]
        learned_k = k_learned[0, 0, keep].numpy()[order]
        if name == "potential":
            learned_k = learned_k - np.mean(learned_k - true_k)
        ax.plot(rk, true_k, "k-", lw=2, label="analytic")
        ax.plot(rk, learned_k, "C1--", lw=1.5, label="learned (one dipole)")
        ax.set_xscale("log")
        ax.set_xlabel("r (km)")
        ax.set_title("potential: ln(r) dx dy / 2 pi" if name == "potential" else "field: -dx dy / (2 pi r)")
        ax.legend()
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=90)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description="Learn the Poisson Green's function from one dipole")
    p.add_argument("--n", type=int, default=64, help="grid points per side")
    p.add_argument("--n-basis", type=int, default=32, help="hat functions per profile")
    p.add_argument("--n-test", type=int, default=12, help="unseen charge distributions")
    p.add_argument("--iters", type=int, default=200, help="L-BFGS evaluations per operator")
    p.add_argument("--small", action="store_true", help="32 x 32 grid (the test suite's size)")
    p.add_argument("--figure", default=None, help="save the profile figure to this PNG")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    n = 32 if a.small else a.n
    return run(n=n, n_basis=a.n_basis, n_test=a.n_test, iters=a.iters, figure=a.figure)


if __name__ == "__main__":
    main()
