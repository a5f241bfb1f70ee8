"""The ``roteq`` command.

Each subcommand lives next to the code it drives; this module only wires them
together. It is the one module of the solver-agnostic core that may import a
solver adapter (DESIGN.md §1).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _add_demo_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run a short coarse pyqg simulation and check the rotation utilities on its state",
        description="Runs the default 'eddy' configuration at 64x64 for --days model days (one core), "
                    "checks the symmetry conventions against pyqg's own spectral operators on the final "
                    "state for every element of D4, and writes a plot.",
    )
    p.add_argument("--days", type=float, default=1800.0, help="model days to run (default: 1800, i.e. 5 model years)")
    p.add_argument("--nx", type=int, default=64, help="grid points per side (default: 64)")
    p.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder (default: out/demo)")
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    import numpy as np
    import pyqg
    from tqdm import tqdm

    from solver_coupling.pyqg_selfcheck import symmetry_selfcheck

    if args.days <= 0 or args.nx < 8:
        print("error: --days must be positive and --nx at least 8", file=sys.stderr)
        return 2
    day = 86400.0
    m = pyqg.QGModel(nx=args.nx, dt=3600.0, tmax=args.days * day, twrite=10**9, ntd=1, log_level=0)
    steps = int(round(args.days * day / m.dt))
    ke_t, ke = [], []
    start = time.perf_counter()
    with tqdm(total=steps, desc=f"pyqg {args.nx}x{args.nx}", unit="step") as bar:
        for _ in m.run_with_snapshots(tsnapstart=0.0, tsnapint=m.dt):
            bar.update(1)
            if m.tc % 24 == 0:
                ke_t.append(m.t / day)
                ke.append(float(0.5 * np.mean(m.u**2 + m.v**2)))
    wall = time.perf_counter() - start
    if not np.all(np.isfinite(m.q)):
        print("error: the model state became non-finite", file=sys.stderr)
        return 1
    worst = symmetry_selfcheck(m, "D4")
    print(f"ran {steps} steps ({args.days:g} days) in {wall:.1f} s: {1e3 * wall / steps:.2f} ms per step")
    print("symmetry self-check on the final state, worst over D4 (relative, round-off is ~1e-15):")
    for name, err in worst.items():
        print(f"  {name:10s} {err:.2e}")

    args.out.mkdir(parents=True, exist_ok=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    im = axes[0].imshow(m.q[0], origin="lower", extent=(0, m.L / 1e3, 0, m.W / 1e3), cmap="RdBu_r")
    axes[0].set(title=f"upper-layer PV q1 at day {m.t / day:.0f}", xlabel="x [km]", ylabel="y [km]")
    fig.colorbar(im, ax=axes[0], label="q1 [1/s]")
    axes[1].plot(ke_t, ke)
    axes[1].set(title="domain-mean kinetic energy (both layers)", xlabel="day", ylabel="KE [m²/s²]")
    fig.tight_layout()
    png = args.out / "demo.png"
    fig.savefig(png, dpi=100)
    print(f"wrote {png}")
    tolerance = 1e-12
    if max(worst.values()) > tolerance:
        print(f"error: a symmetry identity is violated beyond {tolerance:g}", file=sys.stderr)
        return 1
    return 0


def _add_envcheck_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("envcheck", help="check the installed stack (numpy<2, pyqg with FFTW, torch 2.13.0, escnn)")
    p.set_defaults(func=lambda args: __import__("roteq_param.envcheck", fromlist=["main"]).main())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="roteq",
        description="roteq-param: rotation-equivariant subgrid flux parameterizations for pyqg and C-grid solvers.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_demo_parser(sub)
    _add_envcheck_parser(sub)
    from solver_coupling.pyqg_data import add_coarsen_parser, add_generate_parser
    from solver_coupling.pyqg_bench import add_bench_parser
    from solver_coupling.pyqg_evaluate import add_evaluate_parser
    from solver_coupling.pyqg_rollout import add_rollout_parser

    add_generate_parser(sub)
    add_coarsen_parser(sub)
    add_rollout_parser(sub)
    add_evaluate_parser(sub)
    add_bench_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
