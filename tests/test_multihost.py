"""Two processes on one machine (jax.distributed over loopback) train like one process.

Each process of `lasar_jax.main` gets 4 simulated CPU devices, so the 2-process mesh has the 8
devices of the single-process run (conftest). Stage 1 of `multihost_config.py` runs three ways:
  1. in this process (8 devices): the reference losses and parameters;
  2. as 2 processes: the same losses (every process feeds its rows of the same global batches);
  3. in this process again, resuming from the 2-process checkpoint of update 2: the same losses of
     updates 3-4 and the same final parameters.
"""

import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import safetensors.numpy

import jax
import multihost_config
from lasar_jax import distributed, pipeline
from lasar_jax.model import hf_io
from tiny_lm import compilation_cache_dir  # noqa: F401  (module-scoped autouse fixture)

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG = REPO / "tests" / "multihost_config.py"
TIMEOUT_S = 240
RTOL = 1e-4


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _run_two_processes(workdir: pathlib.Path) -> list[tuple[str, str]]:
  """(stdout, stderr) of `python -m lasar_jax.main` run as processes 0 and 1 of a loopback
  jax.distributed run; a failed process's output is printed."""
  # The same XLA flags as this process (code generation settings change float rounding), with 4
  # devices per process instead of 8.
  xla_flags = os.environ["XLA_FLAGS"].replace("--xla_force_host_platform_device_count=8",
                                              "--xla_force_host_platform_device_count=4")
  env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": xla_flags, "TOKENIZERS_PARALLELISM": "false",
         "JAX_COMPILATION_CACHE_DIR": jax.config.jax_compilation_cache_dir,  # the fixture's
         "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
  address = f"127.0.0.1:{_free_port()}"
  procs = [subprocess.Popen(
      [sys.executable, "-m", "lasar_jax.main", f"--config={CONFIG}", f"--workdir={workdir}",
       "--distributed=on", f"--coordinator_address={address}", "--num_processes=2",
       f"--process_id={i}"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True) for i in range(2)]
  outputs = []
  try:
    for proc in procs:
      outputs.append(proc.communicate(timeout=TIMEOUT_S))
  finally:
    for proc in procs:
      proc.kill()
  for i, (proc, (out, err)) in enumerate(zip(procs, outputs)):
    if proc.returncode != 0:
      print(f"--- process {i} stdout ---\n{out}\n--- process {i} stderr ---\n{err}")
    assert proc.returncode == 0, f"process {i} exited with {proc.returncode}"
  return outputs


def _losses(stage_dir: pathlib.Path) -> dict[int, float]:
  rows = [json.loads(line) for line in (stage_dir / "metrics.jsonl").read_text().splitlines()]
  return {row["step"]: row["loss"] for row in rows}


def _weights(stage_dir: pathlib.Path) -> dict[str, np.ndarray]:
  return safetensors.numpy.load_file(stage_dir / "model" / hf_io.WEIGHTS_FILE)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """(single-process workdir, 2-process workdir, the 2-process run's outputs)."""
  single = tmp_path_factory.mktemp("single")
  pipeline.run(multihost_config.get_config(), str(single))
  multi = tmp_path_factory.mktemp("multi")
  outputs = _run_two_processes(multi)
  return single, multi, outputs


def test_two_processes_reach_the_single_process_losses(runs):
  single, multi, outputs = runs
  expected, got = _losses(single / "stage1"), _losses(multi / "stage1")
  assert list(got) == [1, 2, 3, 4]
  np.testing.assert_allclose([got[s] for s in expected], list(expected.values()), rtol=RTOL)
  for name, value in _weights(single / "stage1").items():
    np.testing.assert_allclose(_weights(multi / "stage1")[name], value, rtol=1e-3, atol=1e-5)
  (out0, _), (out1, _) = outputs
  assert "stage1 (" in out0 and "stage1 (" not in out1  # the summary table: process 0 only
  assert "reusing" not in out1 and "prepared data" not in out1


def test_two_process_checkpoint_resumes_in_one_process(runs):
  _, multi, _ = runs
  stage_dir = multi / "stage1"
  final_losses, final_weights = _losses(stage_dir), _weights(stage_dir)
  shutil.rmtree(stage_dir / "checkpoints" / "4")
  shutil.rmtree(stage_dir / "model")
  (stage_dir / "summary.json").unlink()
  summary = pipeline.run(multihost_config.get_config(), str(multi))["stage1"]
  assert summary["start_step"] == 2 and summary["steps"] == 4
  resumed = _losses(stage_dir)
  np.testing.assert_allclose([resumed[s] for s in (3, 4)], [final_losses[s] for s in (3, 4)],
                             rtol=RTOL)
  for name, value in final_weights.items():
    np.testing.assert_allclose(_weights(stage_dir)[name], value, rtol=1e-3, atol=1e-5)


def test_launch_detection():
  assert not distributed.launched_multiprocess({})
  assert not distributed.launched_multiprocess({"SLURM_NTASKS": "1"})
  assert distributed.launched_multiprocess({"SLURM_NTASKS": "4"})
  assert distributed.launched_multiprocess({"TPU_WORKER_HOSTNAMES": "host-a,host-b"})
  assert not distributed.launched_multiprocess({"TPU_WORKER_HOSTNAMES": "localhost"})
  assert distributed.launched_multiprocess({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"})
  assert not distributed.initialize("off")


def test_help_explains_the_distributed_flags():
  result = subprocess.run([sys.executable, "-m", "lasar_jax.main", "--helpfull"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
  for flag in ("--distributed", "--coordinator_address", "--num_processes", "--process_id"):
    assert flag in result.stdout
