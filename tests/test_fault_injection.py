"""Real processes killed with SIGKILL at random points and resumed: the fault-injection harness in CI.

Each job gets one kill at a random time and one during a staged write (a checkpoint, a dataset
or a model file); ``tests/fault_harness.py --trials 20`` is the longer campaign of the README.
"""

import random

import pytest

from fault_harness import reference_run, run_trial, small_jobs


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    return {job.name: job for job in small_jobs(tmp_path_factory.mktemp("inputs"))}


@pytest.mark.parametrize("name", ["rollout (pyqg engine)", "rollout (torch engine)", "train", "generate"])
def test_killed_job_resumes_bit_for_bit(jobs, name, tmp_path):
    job = jobs[name]
    ref = reference_run(job, tmp_path / "reference")
    rng = random.Random(name)
    for mode in ("random", "write"):
        trial = run_trial(job, ref, tmp_path / mode, mode, rng)
        assert trial.ok, (mode, trial.landed, trial.problems)
        assert not trial.landed.startswith("after the end"), trial.landed  # it really was killed
        if mode == "write":
            assert trial.landed.startswith("writing "), trial.landed  # during a staged write
