"""Every bad value through `python -m lasar_jax.main` on the tiny chain: exit status 2, one line on
stderr naming the key, no traceback, and the workdir untouched.

The values the config alone shows are refused before jax is imported (well under a second each);
the last cases need the devices (mesh, GRPO's modes) and are refused right after jax starts.
"""

import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

# (override arguments, text the one line must hold)
CASES = [
    (["--config.sft.stage1_steps=-5"], "--config.sft.stage1_steps=-5"),
    (["--config.reasoning.stage2_steps=-1"], "--config.reasoning.stage2_steps=-1"),
    (["--config.eval.ks=(1,5,50)"], "--config.eval.beam_width=10"),
    (["--config.eval.ks=ten"], "--config.eval.ks=('ten',)"),
    (["--config.eval.splits=train"], "--config.eval.splits"),
    (["--config.grpo.group_size=1"], "--config.grpo.group_size=1"),
    (["--config.grpo.prefix_credit=(0.1,0.2)"], "--config.grpo.prefix_credit=(0.1, 0.2)"),
    (["--config.train.steps=0"], "--config.train.steps=0"),
    (["--config.train.steps=-3"], "--config.train.steps=-3"),
    (["--config.train.batch_size=0"], "--config.train.batch_size=0"),
    (["--config.train.batch_size=16", "--config.train.grad_accum=3"],
     "--config.train.grad_accum=3"),
    (["--config.train.learning_rate=0"], "--config.train.learning_rate=0"),
    (["--config.eval.batch_size=0"], "--config.eval.batch_size=0"),
    (["--config.eval.beam_width=0"], "--config.eval.beam_width=0"),
    (["--config.mesh.data=0"], "--config.mesh.data=0"),
    (["--config.model.dtype=float16"], "--config.model.dtype='float16'"),
    (["--config.model.source=hf", "--config.model.checkpoint=/no/such/model"],
     "--config.model.checkpoint='/no/such/model'"),
    (["--config.seed=abc"], "--config.seed"),
    (["--config.train.learnin_rate=1"], 'unknown config key --config.train.learnin_rate (Did you '
                                        'mean "learning_rate"'),
    (["--config.modle.dtype=bfloat16"], "unknown config key --config.modle.dtype"),
    (["--config.data.format=lcrec"], "--config.data.path is empty"),
    (["--config.data.format=lcrec", "--config.data.path=/no/such/folder"],
     "--config.data.path='/no/such/folder' is not a folder"),
    (["--config.cot.source=file"], "--config.cot.path=''"),
    (["--workdir=gs://bucket/run"], "--workdir=gs://bucket/run is a URL"),
    # Checked once jax has started (before the workdir is touched).
    (["--config.mesh.data=3"], "config.mesh"),
    (["--config.reasoning.mode=cot"], "GRPO supports the reasoning modes"),
]


def _snapshot(folder: pathlib.Path) -> dict:
  """Every path under `folder` with its size and modification time."""
  return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.mark.parametrize("overrides,expected", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_value_is_one_line_before_any_work(tmp_path, overrides, expected):
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "keep.txt").write_text("unchanged")
  before = _snapshot(tmp_path)
  args = [f"--workdir={workdir}", *overrides]  # a --workdir among the overrides comes last: wins
  result = subprocess.run(
      [sys.executable, "-m", "lasar_jax.main", "--config=configs/grpo.py:tiny", *args], cwd=REPO,
      capture_output=True, text=True, timeout=120)
  assert result.returncode == 2, result.stderr
  lines = result.stderr.splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
  assert expected in lines[0]
  assert "Traceback" not in result.stderr + result.stdout
  assert _snapshot(tmp_path) == before
