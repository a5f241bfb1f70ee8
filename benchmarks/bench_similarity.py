"""Cost of the similarity scaling at inference: the exported network with and without it, the same
architecture (the shipped default's), interleaved in one process, one torch thread.

Run: ``PYTHONHASHSEED=0 .venv/bin/python benchmarks/bench_similarity.py [--n 64]``. Prints the ms per
call of each and their ratio (best of several interleaved rounds, ``roteq_param.models.time_inference``).
"""

import argparse

import torch

from roteq_param import models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="grid points per side (default 64)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    arch = dict(channels=(32, 32, 32), kernel_sizes=(5, 3, 3), dilations=(1, 2, 4))
    nets = {}
    for similar in (False, True):
        net = models.build_model(similarity=similar, **arch)
        if similar:
            net.set_similarity_reference(1.0e6 / args.n, 1.0e-5)
        nets[similar] = net.eval().export()
    best = {False: float("inf"), True: float("inf")}
    for _ in range(args.rounds):
        for similar, exported in nets.items():
            best[similar] = min(best[similar], models.time_inference(exported, n=args.n, repeats=50))
    print(f"{args.n}^2, exported net, batch 1, float32, 1 thread: plain {best[False]:.3f} ms, "
          f"similarity-scaled {best[True]:.3f} ms, ratio {best[True] / best[False]:.3f}")


if __name__ == "__main__":
    main()
