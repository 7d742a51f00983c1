"""The entry point: config errors are one clear line; the backbone stage runs from Python."""

import json
import pathlib
import subprocess
import sys

from lasar_jax import pipeline
from lasar_jax.configs.validate import ConfigError, validate

REPO = pathlib.Path(__file__).resolve().parents[1]


def _main(*args):
  return subprocess.run([sys.executable, "-m", "lasar_jax.main", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=120)


def test_unknown_key_is_one_clear_line():
  result = _main("--config=configs/grpo.py", "--config.modle.dtype=bfloat16")
  assert result.returncode == 2
  assert "unknown config key 'modle'" in result.stderr
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
