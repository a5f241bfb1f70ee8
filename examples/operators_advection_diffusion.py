"""
Recovering diffusion and wind from a plume movie
================================================

A point emitter releases a tracer into a uniform wind ``w`` while it diffuses at ``kappa``:

    dc/dt = kappa laplacian(c) - w . grad(c) + s(x).

The right-hand side is built from the equivariant operators :func:`roteq_param.operators.laplacian`
(scalar -> scalar) and :func:`roteq_param.operators.gradient` (scalar -> vector) on a periodic grid,
and stepped with Heun's method. A "movie" of snapshots made at the true ``kappa`` and ``w`` is the
data; starting from a wrong guess, ``ln kappa`` and ``w`` are fitted by L-BFGS through the
differentiable simulation (a twin experiment: the same discretisation makes data and fit, so
the error left is the optimiser's, not the model's). The last line printed is the relative error
of the recovered diffusivity and of the recovered wind vector (``|w_fit - w| / |w|``).

Run::

    python examples/operators_advection_diffusion.py           # 32 x 32 grid
    python examples/operators_advection_diffusion.py --small   # 24 x 24, for the test suite
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

LENGTH = 2000.0  # domain side (m)
TRUE_KAPPA = 10.0  # m^2/s
TRUE_WIND = (0.45, 0.2)  # m/s
EMITTER = (0.3, 0.35)  # position as a fraction of the domain
RATE = 1.0  # tracer units per m^2 per s at the emitter's centre


class Plume(torch.nn.Module):
    """The advection-diffusion model on an n x n periodic grid, differentiable in kappa and w."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.dx = LENGTH / n
        self.lap = ops.laplacian(self.dx)
        self.grad = ops.gradient(self.dx)
        x = (torch.arange(n, dtype=torch.float64) + 0.5) * self.dx
        yy, xx = torch.meshgrid(x, x, indexing="ij")
        width = 1.5 * self.dx  # a Gaussian emitter a few cells wide (a point source is not resolved)
        self.source = RATE * torch.exp(-((xx - EMITTER[0] * LENGTH) ** 2 + (yy - EMITTER[1] * LENGTH) ** 2)
                                       / (2 * width ** 2))

    def tendency(self, c: torch.Tensor, kappa: torch.Tensor, wind: torch.Tensor) -> torch.Tensor:
        grad = self.grad(c)  # [2, y, x] as (x, y)
        return kappa * self.lap(c) - (wind[0] * grad[0] + wind[1] * grad[1]) + self.source

    def movie(self, kappa: torch.Tensor, wind: torch.Tensor, dt: float, steps: int, every: int) -> torch.Tensor:
        """Snapshots every ``every`` Heun steps of ``dt`` (s) from c = 0: ``[steps // every, y, x]``."""
        c = torch.zeros_like(self.source)
        frames = []
        for step in range(1, steps + 1):
            k1 = self.tendency(c, kappa, wind)
            k2 = self.tendency(c + dt * k1, kappa, wind)
            c = c + 0.5 * dt * (k1 + k2)
            if step % every == 0:
                frames.append(c)
        return torch.stack(frames)


def stable_dt(dx: float, kappa: float, speed: float) -> float:
    """A Heun step inside the diffusive (dx^2 / 4 kappa) and advective (dx / |w|) limits, with margin."""
    return 0.4 * min(dx * dx / (4.0 * kappa), dx / speed)


def run(n: int = 32, duration: float = 2400.0, frames: int = 12, guess: tuple[float, float, float] = (25.0, 0.1, -0.1),
        iters: int = 60, figure: str | None = None, verbose: bool = True) -> dict:
    """Make the movie at the true parameters, fit ``kappa`` and ``w`` from ``guess``, report the errors."""
    t0 = time.perf_counter()
    model = Plume(n)
    dt = stable_dt(model.dx, max(TRUE_KAPPA, guess[0]), 2.0 * math.hypot(*TRUE_WIND))
    steps = int(math.ceil(duration / dt / frames)) * frames
    dt = duration / steps
    every = steps // frames
    true_kappa = torch.tensor(TRUE_KAPPA, dtype=torch.float64)
    true_wind = torch.tensor(TRUE_WIND, dtype=torch.float64)
    with torch.no_grad():
        data = model.movie(true_kappa, true_wind, dt, steps, every)
    scale = data.pow(2).mean()

    log_kappa = torch.tensor(math.log(guess[0]), dtype=torch.float64, requires_grad=True)
    wind = torch.tensor(guess[1:], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_kappa, wind], lr=1.0, max_iter=iters, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-14, tolerance_change=1e-18)
    history: list[tuple[float, float, list[float]]] = []

    def closure():
        opt.zero_grad()
        loss = (model.movie(log_kappa.exp(), wind, dt, steps, every) - data).pow(2).mean() / scale
        loss.backward()
        history.append((loss.item(), log_kappa.exp().item(), wind.detach().tolist()))
        return loss

    opt.step(closure)
    kappa_fit, wind_fit = log_kappa.exp().item(), wind.detach()
    errors = {"diffusion": abs(kappa_fit - TRUE_KAPPA) / TRUE_KAPPA,
              "wind": float(torch.linalg.vector_norm(wind_fit - true_wind) / torch.linalg.vector_norm(true_wind))}
    result = {"errors": errors, "kappa": kappa_fit, "wind": wind_fit.tolist(), "evaluations": len(history),
              "steps": steps, "dt": dt, "seconds": time.perf_counter() - t0}
    if figure is not None or verbose:
        _draw(model, data, history, figure)
    if verbose:
        print(f"grid {n} x {n}, {steps} Heun steps of {dt:.1f} s, {frames} frames, {len(history)} L-BFGS evaluations, "
              f"{result['seconds']:.1f} s")
        print(f"kappa: true {TRUE_KAPPA:.4g}, guess {guess[0]:.4g}, recovered {kappa_fit:.6g} m^2/s")
        print(f"wind: true {TRUE_WIND}, guess {guess[1:]}, recovered ({wind_fit[0]:.6g}, {wind_fit[1]:.6g}) m/s")
        print(f"relative error: diffusion {errors['diffusion']:.2e}, wind {errors['wind']:.2e}")
    return result


def _draw(model: Plume, data: torch.Tensor, history: list, path: str | None) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    extent = (0, LENGTH / 1e3, 0, LENGTH / 1e3)
    for ax, k in zip(axes[:2], (len(data) // 3, len(data) - 1)):
        ax.imshow(data[k].numpy(), origin="lower", extent=extent, cmap="viridis")
        ax.set_title(f"frame {k + 1} of {len(data)}")
        ax.set_xlabel("x (km)")
        ax.set_ylabel("y (km)")
    loss = [h[0] for h in history]
    axes[2].semilogy(loss, "k-")
    axes[2].set_xlabel("L-BFGS evaluation")
    axes[2].set_ylabel("normalised misfit")
    axes[2].set_title("fit of kappa and w")
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=90)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description="Recover diffusion and wind from a plume movie")
    p.add_argument("--n", type=int, default=32, help="grid points per side")
    p.add_argument("--frames", type=int, default=12, help="snapshots in the movie")
    p.add_argument("--iters", type=int, default=60, help="L-BFGS evaluations")
    p.add_argument("--small", action="store_true", help="24 x 24 grid (the test suite's size)")
    p.add_argument("--figure", default=None, help="save the figure to this PNG")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    return run(n=24 if a.small else a.n, frames=a.frames, iters=a.iters, figure=a.figure)


if __name__ == "__main__":
    main()
