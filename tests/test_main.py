"""The entry point: config errors are one clear line, library INFO logs are hidden by default; the
backbone stage runs from Python."""

import json
import os
import pathlib
import subprocess
import sys

from lasar_jax import pipeline
from lasar_jax.configs.validate import ConfigError, validate

REPO = pathlib.Path(__file__).resolve().parents[1]


def _main(*args, env=None):
  return subprocess.run([sys.executable, "-m", "lasar_jax.main", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=120, env=env)


def test_unknown_key_is_one_clear_line():
  result = _main("--config=configs/grpo.py", "--config.modle.dtype=bfloat16")
  assert result.returncode == 2
  assert result.stderr.startswith("error: unknown config key --config.modle.dtype (Did you mean")
  assert "Traceback" not in result.stderr


def test_bad_values_name_the_key():
  result = _main("--config=configs/grpo.py", "--config.seed=abc")
  assert result.returncode == 2 and "--config.seed" in result.stderr
  result = _main("--config=configs/grpo.py", "--config.model.dtype=float16")
  assert result.returncode == 2 and "--config.model.dtype='float16'" in result.stderr
  assert "Traceback" not in result.stderr


def test_validate_rejects_missing_checkpoint():
  from configs import backbone  # noqa: PLC0415  (configs/ is loaded by path in real runs)

  config = backbone.get_config()
  config.model.source = "gguf"
  try:
    validate(config)
  except ConfigError as e:
    assert "--config.model.checkpoint" in str(e)
  else:
    raise AssertionError("a gguf source without a checkpoint must be rejected")


def test_backbone_stage_writes_its_summary(tmp_path):
  from configs import backbone  # noqa: PLC0415

  config = backbone.get_config()
  summaries = pipeline.run(config, str(tmp_path))
  written = json.loads((tmp_path / "backbone" / "summary.json").read_text())
  assert written == summaries["backbone"]
  assert written["logits_finite"] is True
  assert written["parameters"] > 0


def test_library_info_logs_are_hidden_unless_asked_for(tmp_path):
  """The backbone stage from the command line: jax's INFO line on the missing TPU backend (probed
  when JAX_PLATFORMS is unset) is hidden by default and shown with --verbosity=0."""
  args = ("--config=configs/backbone.py", f"--workdir={tmp_path}")
  env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
  quiet, loud = _main(*args, env=env), _main(*args, "--verbosity=0", env=env)
  assert quiet.returncode == 0 and loud.returncode == 0, quiet.stderr + loud.stderr
  assert "Unable to initialize backend" in loud.stderr
  assert "Unable to initialize backend" not in quiet.stderr
  assert (tmp_path / "backbone" / "summary.json").is_file()


def test_stage_configs_share_the_chain_settings():
  """A stage run after the chain in its workdir (another mode's Stage 2, an eval) has the chain's
  settings, so it reuses the chain's SIDs and Stage 1 instead of refusing the workdir."""
  from configs import backbone, eval as eval_config, grpo, sft_ground, sft_latent, sid  # noqa: PLC0415

  for variant in ("", "tiny"):
    chain = grpo.get_config(variant).to_dict()
    for module in (backbone, eval_config, sft_ground, sft_latent, sid):
      config = module.get_config(variant).to_dict()
      assert config.pop("stage") != chain["stage"]
      assert config == {k: v for k, v in chain.items() if k != "stage"}, module.__name__
