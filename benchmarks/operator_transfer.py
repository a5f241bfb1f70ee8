"""Subgrid transfer spectra of operator closures against the truth's, on held-out coarse-grained runs.

    python benchmarks/operator_transfer.py data/eddy_op_windows.nc eddy-operator runs/opfit/EZ_r6 \
        --holdout 1 --plot docs/_static/operators_transfer.png

For each budget (energy, enstrophy) and layer it prints ``||T_closure - T_truth|| / ||T_truth||`` over
the shells (1 = no closure) on the last ``--holdout`` runs of the dataset, and plots the spectra
(`solver_coupling.torchqg.operator_fit`). A closure that drains energy where the truth injects it
shows here before any rollout does.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from solver_coupling.torchqg.operator_fit import closure_transfer, load_transfer_data, transfer_mismatch
from solver_coupling.torchqg.operator_store import load_operator_closure


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", help="coarse-grained truth from `roteq generate` (q, S_direct)")
    p.add_argument("models", nargs="+", help="operator closures (names under trained_models/ or folders)")
    p.add_argument("--holdout", type=int, default=1, help="score on the last N runs")
    p.add_argument("--plot", type=Path, default=None, help="write the spectra as a PNG here")
    args = p.parse_args()

    data = load_transfer_data(args.data, args.holdout)
    stats = data.held_out
    closures = {Path(m).name: load_operator_closure(m)[0] for m in args.models}
    names = list(transfer_mismatch(None, stats))
    print(f"transfer-spectrum mismatch on held-out runs {data.holdout_runs} of {args.data} "
          f"({stats.snapshots} snapshots; 1 = no closure)")
    print("| closure | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    for label, closure in closures.items():
        row = transfer_mismatch(closure, stats)
        print(f"| {label} | " + " | ".join(f"{row[n]:.3f}" for n in names) + " |")

    if args.plot is not None:
        from matplotlib.figure import Figure

        k = stats.k_r * stats.L / (2 * np.pi)  # cycles per domain
        spectra = {label: closure_transfer(closure, stats) for label, closure in closures.items()}
        fig = Figure(figsize=(10, 6.5), layout="constrained")
        axes = fig.subplots(2, 2, sharex=True)
        for b, budget in enumerate(("energy", "enstrophy")):
            for i in range(stats.target.shape[1]):
                ax = axes[b, i]
                ax.axhline(0.0, color="0.6", lw=0.8)
                ax.plot(k[1:], stats.target[b, i, 1:], "k-", lw=2, label="truth's subgrid forcing")
                for label, t in spectra.items():
                    ax.plot(k[1:], t[b, i, 1:], lw=1.3, label=label)
                ax.set_title(f"{budget} transfer, layer {i + 1}")
                ax.set_xlabel("wavenumber (cycles per domain)")
                ax.set_ylabel("(H_i / H) x unnormalised FFT products")
        axes[0, 0].legend(fontsize=8)
        fig.suptitle(f"held-out runs {data.holdout_runs} of {Path(args.data).name}: transfer spectra "
                     "(positive = the closure adds energy or enstrophy at that scale)")
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=110)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
