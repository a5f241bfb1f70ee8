"""Accuracy tables of roteq_param.operators: convergence, the Green's function, arbitrary-angle equivariance.

Three tables, printed as Markdown (docs/operators.md quotes them):

1. the max-norm error of each differential operator against the exact derivatives of a smooth
   periodic field, on rectangular grids (dy = 4 dx), and the observed order;
2. the Poisson Green's function on a bounded domain against the closed-form potential and field
   of neutral Gaussian charges, and ``laplacian(G * rho) - rho`` (4th-order stencil);
3. the equivariance error under 30- and 45-degree rotations (and 30 degrees after a reflection)
   measured on an analytic field sampled at the rotated points (``operators.analytic``), for
   three grid spacings.

    .venv/bin/python benchmarks/operators_accuracy.py
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch
from scipy.special import exp1

from roteq_param import operators as ops
from roteq_param.operators import analytic
from roteq_param.symmetry import n_components

# -- 1. convergence on a smooth periodic field ---------------------------------------------------------
LX, LY = 2 * math.pi, 4 * math.pi


def periodic_grid(n: int):
    """Cell centres of an n x n/2 grid on [0, 2 pi) x [0, 4 pi): dy = 4 dx."""
    nx, ny = n, n // 2
    dx, dy = LX / nx, LY / ny
    X, Y = np.meshgrid((np.arange(nx) + 0.5) * dx, (np.arange(ny) + 0.5) * dy)
    return X, Y, dx, dy


def periodic_fields(X: np.ndarray, Y: np.ndarray) -> dict[str, np.ndarray]:
    """A smooth periodic scalar s, vector v = (s, b) and tensor T = (s, b, s), with exact derivatives."""
    s = np.exp(np.sin(X) + 0.5 * np.cos(0.5 * Y))
    b = np.cos(X - 0.5 * Y)
    sx, sy = np.cos(X) * s, -0.25 * np.sin(0.5 * Y) * s
    lap = (np.cos(X) ** 2 - np.sin(X)) * s + (0.0625 * np.sin(0.5 * Y) ** 2 - 0.125 * np.cos(0.5 * Y)) * s
    bx, by = -np.sin(X - 0.5 * Y), 0.5 * np.sin(X - 0.5 * Y)
    return {"s": s, "grad": np.stack([sx, sy]), "lap": lap, "v": np.stack([s, b]), "div": sx + by,
            "curl": bx - sy, "symgrad": np.stack([sx, 0.5 * (sy + bx), by]),
            # T = (xx, xy, yy) = (s, b, s): (div T)_x = d_x s + d_y b, (div T)_y = d_x b + d_y s
            "T": np.stack([s, b, s]), "divT": np.stack([sx + by, bx + sy])}


DIFFERENTIAL = [("gradient", ops.gradient, "s", "grad"), ("divergence", ops.divergence, "v", "div"),
                ("curl", ops.curl, "v", "curl"), ("laplacian", ops.laplacian, "s", "lap"),
                ("symmetric_gradient", ops.symmetric_gradient, "v", "symgrad"),
                ("tensor_divergence", ops.tensor_divergence, "T", "divT")]


def convergence(sizes=(32, 64, 128), order: int = 2) -> dict[str, list[float]]:
    """Relative max-norm errors of each differential operator for each grid size."""
    out: dict[str, list[float]] = {}
    for n in sizes:
        X, Y, dx, dy = periodic_grid(n)
        fl = periodic_fields(X, Y)
        for name, make, src, ref in DIFFERENTIAL:
            got = make(dx, dy, order=order)(torch.as_tensor(fl[src])).numpy()
            out.setdefault(name, []).append(float(np.abs(got - fl[ref]).max() / np.abs(fl[ref]).max()))
    return out


# -- 2. the Green's function --------------------------------------------------------------------------
DOMAIN = 1.0e5  # m
# Inside [0.38, 0.62] L with widths <= 0.06 L: the charge outside the domain is below 2e-9 of it.
CHARGES = [(0.4e5, 0.5e5, 0.05e5, 1.0), (0.6e5, 0.56e5, 0.06e5, -0.6), (0.5e5, 0.4e5, 0.055e5, -0.4)]


def gaussian_charges(X: np.ndarray, Y: np.ndarray, charges=CHARGES):
    """Charge density, potential (laplacian psi = rho) and field grad psi of Gaussian charges (x0, y0, s, q)."""
    rho, psi, E = np.zeros_like(X), np.zeros_like(X), np.zeros((2,) + X.shape)
    for x0, y0, s, q in charges:
        r2 = (X - x0) ** 2 + (Y - y0) ** 2
        rho += q / (2 * np.pi * s * s) * np.exp(-r2 / (2 * s * s))
        psi += q / (4 * np.pi) * (np.log(r2) + exp1(r2 / (2 * s * s)))
        E += q / (2 * np.pi * r2) * (1 - np.exp(-r2 / (2 * s * s))) * np.stack([X - x0, Y - y0])
    return rho, psi, E


def green(sizes=(48, 96, 192)) -> dict[str, list[float]]:
    """Relative L2 errors of potential, field and laplacian(potential) - rho (4 cells from the walls)."""
    out: dict[str, list[float]] = {"potential": [], "field": [], "laplacian inverse": []}
    for n in sizes:
        dx = DOMAIN / n
        X, Y = np.meshgrid((np.arange(n) + 0.5) * dx, (np.arange(n) + 0.5) * dx)
        rho, psi, E = gaussian_charges(X, Y)
        P = ops.green_potential(dx, shape=(n, n))(torch.as_tensor(rho))
        F = ops.green_field(dx, shape=(n, n))(torch.as_tensor(rho)).numpy()
        lap = ops.laplacian(dx, order=4, boundary="zero")(P).numpy()[4:-4, 4:-4]
        out["potential"].append(float(np.linalg.norm(P.numpy() - psi) / np.linalg.norm(psi)))
        out["field"].append(float(np.linalg.norm(F - E) / np.linalg.norm(E)))
        inner = rho[4:-4, 4:-4]
        out["laplacian inverse"].append(float(np.linalg.norm(lap - inner) / np.linalg.norm(inner)))
    return out


# -- 3. equivariance under arbitrary angles -------------------------------------------------------------
def analytic_field(kind):
    """A smooth anisotropic field decaying like exp(-r^2 / 2) (coordinates in m), one function per component."""
    def f(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        g = np.exp(-(x * x + 2 * y * y) / 2 - 0.3 * x * y)
        comps = [g * (1 + 0.5 * x), g * (y - 0.3 * x * x), g * (0.2 + x * y)]
        return np.stack(comps[:n_components(kind)])
    return f


def rotation_operators(h: float) -> dict[str, ops.RadialOperator]:
    """The built-ins on a grid of spacing h (m), plus a learnable operator with a fixed smooth profile."""
    neural = ops.neural("vector", "tensor", 1.0, h, n_basis=6)
    with torch.no_grad():  # profiles that vanish at r = 1 m, so the truncated kernel is continuous
        neural.profile.weight.copy_(torch.tensor([[0.0, 1.0, 0.6, 0.3, 0.1, 0.0], [0.5, -0.4, 0.2, 0.1, 0.05, 0.0],
                                                  [0.0, 0.3, -0.2, 0.1, 0.0, 0.0]], dtype=torch.float64) * h * h)
    return {
        "gradient": ops.gradient(h), "divergence": ops.divergence(h), "curl": ops.curl(h),
        "laplacian": ops.laplacian(h), "symmetric_gradient": ops.symmetric_gradient(h),
        "tensor_divergence": ops.tensor_divergence(h),
        "gaussian_diffusion": ops.gaussian_diffusion(0.05, 1.0, h),
        # rmax 9 m: the field is below 1e-13 of its peak where the disc's rim meets it from the test points
        "green_potential": ops.green_potential(h, rmax=9.0), "green_field": ops.green_field(h, rmax=9.0),
        "neural vector->tensor": neural,
    }


TURNS = (("30", math.pi / 6, False), ("45", math.pi / 4, False), ("30+flip", math.pi / 6, True))


def rotation_errors(spacings=(0.4, 0.2, 0.1), turns=TURNS) -> dict[tuple[str, str], list[float]]:
    """Equivariance errors per (operator, turn) for each grid spacing, at a 13 x 13 set of points in [-1.5, 1.5]^2 m."""
    c = np.linspace(-1.5, 1.5, 13)
    X, Y = np.meshgrid(c, c)
    out: dict[tuple[str, str], list[float]] = {}
    for h in spacings:
        for name, op in rotation_operators(h).items():
            for label, angle, flip in turns:
                out.setdefault((name, label), []).append(
                    analytic.rotation_error(op, analytic_field(op.kind_in), X, Y, angle, flip))
    return out


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.set_default_dtype(torch.float64)
    for order in (2, 4):
        sizes = (32, 64, 128)
        conv = convergence(sizes, order)
        rows = [[name] + [f"{e:.2e}" for e in errs] + [f"{math.log2(errs[-2] / errs[-1]):.2f}"]
                for name, errs in conv.items()]
        print(f"\nOrder-{order} stencils, smooth periodic field, nx x ny = n x n/2 (dy = 4 dx), relative max error\n")
        print(_table(["operator"] + [f"n = {n}" for n in sizes] + ["order (last)"], rows))
    gsizes = (48, 96, 192)
    g = green(gsizes)
    print("\nPoisson Green's function, bounded 100 km domain, neutral Gaussian charges, relative L2 error\n")
    print(_table(["quantity"] + [f"{n}^2" for n in gsizes] + ["order (last)"],
                 [[k] + [f"{e:.2e}" for e in v] + [f"{math.log2(v[-2] / v[-1]):.2f}"] for k, v in g.items()]))
    spacings = (0.4, 0.2, 0.1)
    rot = rotation_errors(spacings)
    print("\nEquivariance error under non-grid rotations, analytic field sampled at rotated points "
          "(max |A(g f) - g A(f)| / max |A f|)\n")
    print(_table(["operator", "turn"] + [f"h = {h} m" for h in spacings],
                 [[name, label] + [f"{e:.1e}" for e in errs] for (name, label), errs in rot.items()]))


if __name__ == "__main__":
    main()
