"""``roteq bench``: cost of the parameterization as ratios measured in one process.

Absolute times on a shared machine are noisy; ratios of interleaved measurements
taken in the same process are not (much). Reported:

* parameterized 64^2 step / bare 64^2 step (target <= 2), for several call intervals;
* high-res 256^2 step / parameterized 64^2 step (target >= 5);
* ensemble throughput in member-years per wall-hour against the ensemble size M,
  on the CPU and, when torch sees a CUDA GPU, on the GPU (M up to 256).

Every figure is the median over ``repeats`` interleaved blocks of ``steps`` steps.
"""

from __future__ import annotations

import time
from statistics import median
from typing import Any, Callable

import numpy as np
import pyqg
import torch

from solver_coupling.pyqg.config import YEAR, get_config
from solver_coupling.pyqg.plugin import Ensemble, RotEqParameterization

__all__ = ["bench"]


def _spun_up(nx: int, param=None, steps: int = 200) -> pyqg.QGModel:
    cfg = get_config("eddy", {"nx": nx}, coarse_nx=nx)
    m = cfg.make_model(log_level=0, tmax=1e12, tavestart=1e12, parameterization=param)
    for _ in range(steps):
        m._step_forward()
    return m


def _time_steps(step: Callable[[], None], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - start) / n


def _interleaved(cases: dict[str, Callable[[], None]], steps: int, repeats: int) -> dict[str, float]:
    """Median seconds per step of each case, measured in alternating blocks."""
    samples: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(repeats):
        for name, step in cases.items():
            samples[name].append(_time_steps(step, steps))
    return {k: median(v) for k, v in samples.items()}


def bench(model: str, *, steps: int = 200, repeats: int = 7, members: tuple[int, ...] = (1, 4, 16, 64),
          threads: int = 1, gpu_members: tuple[int, ...] = (1, 16, 64, 256)) -> dict[str, Any]:
    """Run the benchmark and return the figures (seconds and ratios)."""
    torch.set_num_threads(threads)
    bare = _spun_up(64)
    params = {k: RotEqParameterization(model, call_interval=k) for k in (1, 2, 4)}
    param_models = {k: _spun_up(64, p) for k, p in params.items()}
    high = _spun_up(256, steps=20)
    cases = {"bare_64": bare._step_forward, "highres_256": high._step_forward}
    cases.update({f"param_64_k{k}": m._step_forward for k, m in param_models.items()})
    t = _interleaved(cases, steps, repeats)
    result: dict[str, Any] = {
        "threads": threads,
        "seconds_per_step": t,
        "ratio_param_over_bare": {f"k{k}": t[f"param_64_k{k}"] / t["bare_64"] for k in params},
        "ratio_highres_over_param_k1": t["highres_256"] / t["param_64_k1"],
        "ratio_highres_over_bare": t["highres_256"] / t["bare_64"],
    }
    result["ensemble_cpu"] = _ensemble_throughput(model, "cpu", members, steps, repeats)
    if torch.cuda.is_available():
        result["ensemble_cuda"] = _ensemble_throughput(model, "cuda", gpu_members, steps, repeats)
    else:
        result["ensemble_cuda"] = "no CUDA GPU visible to torch on this machine"
    return result


def _ensemble_throughput(model: str, device: str, sizes: tuple[int, ...], steps: int, repeats: int) -> dict:
    out = {}
    dt = get_config("eddy").dt
    for M in sizes:
        ens = Ensemble.build(RotEqParameterization(model, device=device), M,
                             **get_config("eddy", {"nx": 64}, coarse_nx=64).model_kwargs(
                                 log_level=0, tmax=1e12, tavestart=1e12))
        rng = np.random.default_rng(M)
        for m in ens.members:
            m.q = 1e-6 * rng.standard_normal(m.q.shape)
        for _ in range(5):
            ens.step()
        per_step = median(_time_steps(ens.step, max(5, steps // M)) for _ in range(max(3, repeats // 2)))
        out[str(M)] = {"seconds_per_ensemble_step": per_step,
                       "member_years_per_wall_hour": M * 3600.0 / per_step * dt / YEAR}
    return out
