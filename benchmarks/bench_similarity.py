"""Cost of the resolution-transfer options at inference: the exported network plain, with the similarity
scaling, and with the scaling and a view spacing (the stack run on a grid of 1000 km / VIEW cells between
two spectral resamplings), the same architecture (the shipped default's), interleaved in one process,
one torch thread.

Run: ``PYTHONHASHSEED=0 .venv/bin/python benchmarks/bench_similarity.py [--n 64] [--view 96]``. Prints the
ms per call of each and their ratio to the plain net (best of several interleaved rounds,
``roteq_param.models.time_inference``, a 1000 km square).
"""

import argparse

import torch

from roteq_param import models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="grid points per side (default 64)")
    parser.add_argument("--view", type=int, default=96, help="cells across the 1000 km view grid (default 96)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    arch = dict(channels=(32, 32, 32), kernel_sizes=(5, 3, 3), dilations=(1, 2, 4))
    variants = {"plain": {}, "similarity-scaled": {"similarity": True},
                f"similarity + view 1000 km / {args.view}": {"similarity": True, "view_spacing": 1.0e6 / args.view}}
    nets = {}
    for label, options in variants.items():
        net = models.build_model(**options, **arch)
        if net.config.similarity:
            net.set_similarity_reference(1.0e6 / args.n, 1.0e-5)
        nets[label] = net.eval().export()
    best = dict.fromkeys(nets, float("inf"))
    for _ in range(args.rounds):
        for label, exported in nets.items():
            best[label] = min(best[label], models.time_inference(exported, n=args.n, repeats=50))
    print(f"{args.n}^2, exported net, batch 1, float32, 1 thread:")
    for label, ms in best.items():
        print(f"  {label}: {ms:.3f} ms, {ms / best['plain']:.3f}x plain")


if __name__ == "__main__":
    main()
