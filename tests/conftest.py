"""Test setup: 8 simulated CPU devices, set before anything imports jax."""

import os

# Cheap XLA CPU code generation: compiling, not running, dominates these tiny tests. Float rounding
# can differ from default code generation, so subprocesses compared with this process get the same
# flags (tests/test_multihost.py).
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8"
                           " --xla_backend_optimization_level=0"
                           " --xla_llvm_disable_expensive_passes=true").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pathlib  # noqa: E402

import pytest  # noqa: E402

SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def shared_data() -> pathlib.Path:
  """../shared/data beside the repository; tests that use it skip when it is absent."""
  if not SHARED_DATA.is_dir():
    pytest.skip(f"shared data folder {SHARED_DATA} is absent")
  return SHARED_DATA


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs():
  """Drops jax's compiled programs after each test module: a worker runs many modules, and their
  beam searches, train steps and probes would otherwise stay in memory to the end."""
  yield
  import jax  # noqa: PLC0415 (imported late: XLA_FLAGS above must be set first)
  jax.clear_caches()
