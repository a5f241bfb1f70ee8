"""``roteq bench``: cost of the parameterization as ratios measured in one process.

Absolute times on a shared machine are noisy; ratios of interleaved measurements
taken in the same process are not (much). Reported:

* parameterized 64^2 step / bare 64^2 step (target <= 3), for several call intervals;
* high-res 256^2 step / parameterized 64^2 step (target >= 5);
* pyqg's backscatter closure (Ross et al.'s tuning) / bare 64^2 step, for comparison;
* ensemble throughput in member-years per wall-hour against the ensemble size M for each
  engine: pyqg + plugin (one batched network call per step), the torch twin with the network
  in its graph (:class:`~solver_coupling.torchqg.TorchQGModel`; "twin32": its float32 state),
  both unparameterized too, and
  pyqg-jax (``jit`` + ``vmap``, unparameterized) where it is installed; on the CPU and, when
  torch sees a CUDA GPU, on the GPU (M up to 4096, or the largest that fits).

Every figure is the median over ``repeats`` interleaved blocks of ``steps`` steps.
"""

from __future__ import annotations

import time
from statistics import median
from typing import Any, Callable

import pyqg
import torch

from solver_coupling.pyqg.baselines import pyqg_baseline
from solver_coupling.pyqg.config import YEAR, get_config
from solver_coupling.pyqg.plugin import Ensemble, RotEqParameterization

__all__ = ["bench", "spun_up", "interleaved"]


def spun_up(nx: int, param=None, steps: int = 200, threads: int = 1) -> pyqg.QGModel:
    """An eddy ``nx``^2 pyqg model (with ``param``, FFTW on ``threads`` threads) after ``steps`` steps."""
    cfg = get_config("eddy", {"nx": nx}, coarse_nx=nx)
    m = cfg.make_model(log_level=0, tmax=1e12, tavestart=1e12, parameterization=param, ntd=threads)
    for _ in range(steps):
        m._step_forward()
    return m


def _time_steps(step: Callable[[], None], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - start) / n


def interleaved(cases: dict[str, Callable[[], None]], steps: int, repeats: int) -> dict[str, float]:
    """Median seconds per step of each case, measured in alternating blocks."""
    samples: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(repeats):
        for name, step in cases.items():
            samples[name].append(_time_steps(step, steps))
    return {k: median(v) for k, v in samples.items()}


def bench(model: str, *, steps: int = 200, repeats: int = 7, members: tuple[int, ...] = (1, 4, 16, 64),
          threads: int = 1, gpu_members: tuple[int, ...] = (1, 16, 64, 256, 1024, 4096)) -> dict[str, Any]:
    """Run the benchmark and return the figures (seconds and ratios)."""
    torch.set_num_threads(threads)
    bare = spun_up(64)
    params = {k: RotEqParameterization(model, call_interval=k) for k in (1, 2, 4, 8)}
    param_models = {k: spun_up(64, p) for k, p in params.items()}
    high = spun_up(256, steps=20)
    backscatter = spun_up(64, pyqg_baseline("backscatter"))
    cases = {"bare_64": bare._step_forward, "highres_256": high._step_forward,
             "backscatter_64": backscatter._step_forward}
    cases.update({f"param_64_k{k}": m._step_forward for k, m in param_models.items()})
    t = interleaved(cases, steps, repeats)
    result: dict[str, Any] = {
        "threads": threads,
        "seconds_per_step": t,
        "ratio_param_over_bare": {f"k{k}": t[f"param_64_k{k}"] / t["bare_64"] for k in params},
        "ratio_highres_over_param_k1": t["highres_256"] / t["param_64_k1"],
        "ratio_highres_over_bare": t["highres_256"] / t["bare_64"],
        "ratio_backscatter_over_bare": t["backscatter_64"] / t["bare_64"],
    }
    engines = {"pyqg + plugin": _pyqg_ensemble(model), "twin + closure": _twin_ensemble(model, "cpu"),
               "twin32 + closure": _twin_ensemble(model, "cpu", torch.float32),
               "pyqg": _pyqg_ensemble(None), "twin": _twin_ensemble(None, "cpu")}
    jax_stepper = _pyqg_jax_ensemble()
    if isinstance(jax_stepper, str):
        result["pyqg_jax"] = jax_stepper
    else:
        engines["pyqg-jax"] = jax_stepper
    result["throughput_cpu"] = {name: _throughput(make, members, steps, repeats) for name, make in engines.items()}
    if torch.cuda.is_available():
        result["throughput_cuda"] = {name: _throughput(make, gpu_members, steps, repeats) for name, make in
                                     {"twin + closure": _twin_ensemble(model, "cuda"),
                                      "twin32 + closure": _twin_ensemble(model, "cuda", torch.float32),
                                      "twin": _twin_ensemble(None, "cuda")}.items()}
    else:
        result["throughput_cuda"] = "no CUDA GPU visible to torch on this machine: GPU rows not measured"
    return result


_EDDY64 = dict(log_level=0, tmax=1e12, tavestart=1e12)


def _pyqg_ensemble(model: str | None) -> Callable[[int], Callable[[], None]]:
    """M pyqg members, with the plugin's batched network call (``model``) or bare; returns a stepper."""
    def make(M: int) -> Callable[[], None]:
        kwargs = get_config("eddy", {"nx": 64}, coarse_nx=64).model_kwargs(**_EDDY64)
        if model is None:
            ms = [pyqg.QGModel(**kwargs) for _ in range(M)]
            return lambda: [m._step_forward() for m in ms] and None
        ens = Ensemble.build(RotEqParameterization(model), M, **kwargs)
        return ens.step
    return make


def _twin_ensemble(model: str | None, device: str, dtype: torch.dtype = torch.float64
                   ) -> Callable[[int], Callable[[], None]]:
    """M members of the torch twin (state in ``dtype``; the network in float32 in the same graph)."""
    from solver_coupling.torchqg import TorchQGModel
    from solver_coupling.torchqg.closures import FluxNetClosure

    def make(M: int) -> Callable[[], None]:
        kwargs = get_config("eddy", {"nx": 64}, coarse_nx=64).model_kwargs(**_EDDY64)
        twin = TorchQGModel(M, device=device, dtype=dtype, parameterization=FluxNetClosure(model) if model else None,
                            **kwargs)
        if device == "cuda":
            return lambda: (twin.step(1), torch.cuda.synchronize())
        return lambda: twin.step(1)
    return make


def _pyqg_jax_ensemble() -> Callable[[int], Callable[[], None]] | str:
    """pyqg-jax (the JAX port) on eddy 64^2, M members under ``jit(vmap(step))``; or why not."""
    try:
        import jax
        import pyqg_jax
    except ImportError as e:
        return f"pyqg-jax is not installed here ({e.name}): its rows are not measured"
    jax.config.update("jax_enable_x64", True)
    cfg = get_config("eddy", {"nx": 64}, coarse_nx=64).params
    stepped = pyqg_jax.steppers.SteppedModel(
        model=pyqg_jax.qg_model.QGModel(nx=64, ny=64, L=cfg["L"], W=cfg["L"], rek=cfg["rek"], filterfac=cfg["filterfac"],
                                        f=None, g=9.81, beta=cfg["beta"], rd=cfg["rd"], delta=cfg["delta"],
                                        H1=cfg["H1"], U1=cfg["U1"], U2=cfg["U2"], precision=pyqg_jax.state.Precision.DOUBLE),
        stepper=pyqg_jax.steppers.AB3Stepper(dt=cfg["dt"]))
    step = jax.jit(jax.vmap(stepped.step_model))

    def make(M: int) -> Callable[[], None]:
        keys = jax.random.split(jax.random.key(0), M)
        state = jax.vmap(stepped.create_initial_state)(keys)
        box = [step(state)]
        jax.block_until_ready(box[0])  # compile outside the timing

        def one() -> None:
            box[0] = step(box[0])
            jax.block_until_ready(box[0])
        return one
    return make


def _throughput(make: Callable[[int], Callable[[], None]], sizes: tuple[int, ...], steps: int,
                repeats: int) -> dict[str, Any]:
    """Member-years per wall-hour for each ensemble size (median of timed blocks)."""
    out: dict[str, Any] = {}
    dt = get_config("eddy").dt
    for M in sizes:
        try:
            step = make(M)
            for _ in range(3):
                step()
            per_step = median(_time_steps(step, max(3, steps // M)) for _ in range(max(3, repeats // 2)))
        except (torch.cuda.OutOfMemoryError if torch.cuda.is_available() else MemoryError) as e:
            out[str(M)] = f"does not fit: {type(e).__name__}"
            break
        out[str(M)] = {"seconds_per_ensemble_step": per_step,
                       "member_years_per_wall_hour": M * 3600.0 / per_step * dt / YEAR}
    return out
