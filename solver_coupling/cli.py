"""The ``roteq`` command.

Each subcommand lives next to the code it drives; this module only wires them
together. It is the one module of the solver-agnostic core that may import a
solver adapter (DESIGN.md §1).
"""

from __future__ import annotations

import argparse
import sys


def _add_envcheck_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("envcheck", help="check the installed stack (numpy<2, pyqg with FFTW, torch 2.13.0, escnn)")
    p.set_defaults(func=lambda args: __import__("solver_coupling.pyqg.envcheck", fromlist=["main"]).main())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="roteq",
        description="roteq-param: rotation-equivariant subgrid flux parameterizations for pyqg and C-grid solvers.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    from roteq_param.train import add_train_parser
    from solver_coupling.pyqg.bench import add_bench_parser
    from solver_coupling.pyqg.data import add_coarsen_parser, add_generate_parser
    from solver_coupling.pyqg.demo import add_demo_parser
    from solver_coupling.pyqg.evaluate import add_evaluate_parser
    from solver_coupling.pyqg.rollout import add_rollout_parser

    add_demo_parser(sub)
    _add_envcheck_parser(sub)
    add_generate_parser(sub)
    add_coarsen_parser(sub)
    add_train_parser(sub)
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
