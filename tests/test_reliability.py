"""Never silently wrong (issue 15): one run per workdir, a kill -9 in the middle of a checkpoint
write resumes from the last complete one, damaged checkpoints and stages are noticed and rebuilt,
expected failures are one line, settings that cannot change results do not change a stage's
identity, data whose files key items differently is refused."""

import json
import os
import pathlib
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lasar_jax import main as main_lib
from lasar_jax import trained, workdir_lock
from lasar_jax.configs import chain, common as config_common
from lasar_jax.configs.validate import ConfigError, validate
from lasar_jax.data.errors import DataError
from lasar_jax.data.sources import files
from lasar_jax.stages import common
from lasar_jax.train import checkpoint

import test_data_sources as sources_test

REPO = pathlib.Path(__file__).resolve().parents[1]
STAGE1_STEPS = 12
# Stage 1 of the tiny chain (data, SIDs, Stage 1), a checkpoint after every update.
STAGE1_ARGS = ("--config=configs/sft_ground.py:tiny", f"--config.sft.stage1_steps={STAGE1_STEPS}",
               "--config.train.checkpoint_every=1")
TMP_SUFFIX = ".orbax-checkpoint-tmp"  # orbax's name for a step directory being written


@pytest.fixture(scope="module")
def main_env(tmp_path_factory) -> dict:
  """The environment of `lasar_jax.main` subprocesses: one persistent compilation cache, so a
  rerun does not compile again what the run before it compiled."""
  return {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(tmp_path_factory.mktemp("jax_cache")),
          "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}


def _main_args(workdir, *args) -> list[str]:
  return [sys.executable, "-m", "lasar_jax.main", f"--workdir={workdir}", *args]


def _run_main(env, workdir, *args, timeout=300) -> subprocess.CompletedProcess:
  return subprocess.run(_main_args(workdir, *args), cwd=REPO, capture_output=True, text=True,
                        timeout=timeout, env=env)


def _wait_for(condition, process, timeout=240.0, poll=0.005):
  """Polls `condition()` until true; fails when `process` ends or time runs out first."""
  deadline = time.monotonic() + timeout
  while not condition():
    assert process.poll() is None, "the run ended before the condition held"
    assert time.monotonic() < deadline, "timed out"
    time.sleep(poll)


def _lock_holder(workdir) -> int | None:
  try:
    return json.loads((workdir / workdir_lock.LOCK_FILE).read_text())["pid"]
  except (OSError, ValueError, KeyError):
    return None


def _writing_after_a_complete_step(checkpoints: pathlib.Path) -> bool:
  """A step directory is being written and an earlier one is complete."""
  names = [p.name for p in checkpoints.iterdir()] if checkpoints.is_dir() else []
  return any(TMP_SUFFIX in n for n in names) and any(n.isdigit() for n in names)


def test_second_run_refused_kill9_mid_checkpoint_resumes_damaged_stages_rebuilt(tmp_path,
                                                                                 main_env):
  workdir = tmp_path / "run"
  checkpoints = workdir / "stage1" / "checkpoints"
  first = subprocess.Popen(_main_args(workdir, *STAGE1_ARGS), cwd=REPO, env=main_env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    _wait_for(lambda: _lock_holder(workdir) == first.pid, first)
    second = _run_main(main_env, workdir, *STAGE1_ARGS, timeout=120)
    assert second.returncode == 1
    assert second.stderr.splitlines() == [
        f"error: workdir {workdir} is in use by pid {first.pid} on host {os.uname().nodename} "
        f"(started {json.loads((workdir / '.lock').read_text())['started']}); wait for that run "
        "to end or use another --workdir"]
    _wait_for(lambda: _writing_after_a_complete_step(checkpoints), first)
    first.kill()  # SIGKILL while a checkpoint is being written
  finally:
    first.kill()
    first.wait()
  complete = max(int(p.name) for p in checkpoint.step_dirs(checkpoints))
  assert complete < STAGE1_STEPS

  resumed = _run_main(main_env, workdir, *STAGE1_ARGS)  # same command; the lock died with its run
  assert resumed.returncode == 0, resumed.stderr
  summary = json.loads((workdir / "stage1" / "summary.json").read_text())
  assert (summary["start_step"], summary["steps"]) == (complete, STAGE1_STEPS)
  logged = [json.loads(line)["step"]
            for line in (workdir / "stage1" / "metrics.jsonl").read_text().splitlines()]
  assert logged == list(range(1, STAGE1_STEPS + 1))  # each update once, none from both runs
  assert not any(TMP_SUFFIX in p.name for p in checkpoints.iterdir())

  model_file = workdir / "stage1" / "model" / "model.safetensors"
  model_bytes = model_file.read_bytes()
  for lost in (model_file, workdir / "sid" / "sids.json", workdir / "data" / "splits.npz"):
    lost.unlink()
  rebuilt = _run_main(main_env, workdir, *STAGE1_ARGS)
  assert rebuilt.returncode == 0, rebuilt.stderr
  for folder, lost in (("data", "splits.npz"), ("sid", "sids.json"),
                       ("stage1", "model/model.safetensors")):
    assert f"{workdir / folder} is incomplete ({lost} is missing); rebuilding it" in rebuilt.stdout
  assert model_file.read_bytes() == model_bytes  # rebuilt from the final checkpoint, unchanged
  assert (workdir / "sid" / "sids.json").is_file() and (workdir / "data" / "splits.npz").is_file()


def test_expected_failure_is_one_line_and_debug_shows_the_traceback(tmp_path, main_env):
  """A data file that cannot be read stops the run after jax started: one line (status 2); with
  --debug the traceback."""
  source = tmp_path / "source"
  source.mkdir()
  sources_test.write(source / "Toys.inter.json", '{"u1": ["a", "b",')
  sources_test.write(source / "Toys.item.json", '{"a": {"title": "A"}}')
  args = ("--config=configs/sid.py:tiny", "--config.data.format=lcrec",
          f"--config.data.path={source}")
  quiet = _run_main(main_env, tmp_path / "run", *args, timeout=120)
  assert quiet.returncode == 2
  assert quiet.stderr.splitlines() == [
      f"error: {source / 'Toys.inter.json'}:1: malformed JSON (Expecting value, column 18)"]
  loud = _run_main(main_env, tmp_path / "run", *args, "--debug", timeout=120)
  assert loud.returncode != 0 and "Traceback" in loud.stderr and "DataError" in loud.stderr


def test_generate_hides_library_info_lines(tmp_path):
  """`lasar_jax.generate` does not print jax's INFO line about a missing TPU backend."""
  env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
  result = subprocess.run([sys.executable, "-m", "lasar_jax.generate",
                           f"--checkpoint={tmp_path / 'none'}", "--prompt=hi"], cwd=REPO,
                          capture_output=True, text=True, timeout=120, env=env)
  assert result.returncode == 1 and "Unable to initialize backend" not in result.stderr
  assert result.stderr.splitlines()[-1].startswith("error: ")


def test_expected_failures_map_to_exit_statuses_bugs_do_not(tmp_path):
  assert main_lib.exit_status(ConfigError("x")) == 2
  assert main_lib.exit_status(DataError("f", "bad")) == 2
  assert main_lib.exit_status(common.StageConflictError("x")) == 1
  assert main_lib.exit_status(workdir_lock.WorkdirBusyError("x")) == 1
  assert main_lib.exit_status(PermissionError(13, "Permission denied", "/w/f")) == 1
  assert main_lib.exit_status(OSError(28, "No space left on device", "/w/f")) == 1
  assert main_lib.exit_status(KeyError("policy")) is None
  assert main_lib.exit_status(ValueError("shapes")) is None
  assert main_lib.describe(OSError(30, "Read-only file system", "/w/f")) == (
      "/w/f: Read-only file system")


def test_interrupt_names_the_kept_checkpoint(tmp_path):
  assert "no checkpoint was written yet" in main_lib.interrupted_message(str(tmp_path))
  for stage, step in (("stage1", 6), ("stage2", 4)):
    (tmp_path / stage / "checkpoints" / str(step)).mkdir(parents=True)
    time.sleep(0.01)  # distinct modification times
  assert main_lib.interrupted_message(str(tmp_path)) == (
      f"interrupted; checkpoint {tmp_path / 'stage2' / 'checkpoints' / '4'} is kept: run the same "
      "command to resume (finished stages are reused)")


def test_stale_lock_of_a_dead_run_is_taken_over(tmp_path):
  dead = subprocess.run([sys.executable, "-c", (
      "import sys, os; from lasar_jax import workdir_lock\n"
      f"with workdir_lock.hold({str(tmp_path)!r}): os._exit(0)")], timeout=60)
  assert dead.returncode == 0 and (tmp_path / workdir_lock.LOCK_FILE).is_file()
  with workdir_lock.hold(tmp_path):
    assert _lock_holder(tmp_path) == os.getpid()
    with workdir_lock.hold(tmp_path):  # the holder may enter again
      other = subprocess.run([sys.executable, "-c", (
          "from lasar_jax import workdir_lock\n"
          f"with workdir_lock.hold({str(tmp_path)!r}): pass")], capture_output=True, text=True,
                             timeout=60)
  assert f"WorkdirBusyError: workdir {tmp_path} is in use by pid {os.getpid()}" in other.stderr


def _saved_steps(directory, steps=(1, 2)) -> dict:
  """Checkpoints `steps` of {'w': step * [0, 1, 2, 3]}, written synchronously."""
  manager = checkpoint.make_manager(directory, keep=3, async_save=False)
  for step in steps:
    checkpoint.save(manager, step, {"w": jnp.arange(4.0) * step})
  manager.close()
  return {"w": jax.ShapeDtypeStruct((4,), jnp.float32,
                                    sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0]))}


@pytest.mark.parametrize("damage", ["resized", "not_json"])
def test_damaged_latest_checkpoint_falls_back_to_the_previous(tmp_path, capsys, damage):
  directory = tmp_path / "checkpoints"
  target = _saved_steps(directory)
  assert all((directory / s / checkpoint.STEP_MANIFEST).is_file() for s in ("1", "2"))
  if damage == "resized":
    victim = max((p for p in (directory / "2" / "state").rglob("*") if p.is_file()),
                 key=lambda p: p.stat().st_size)
    victim.write_bytes(victim.read_bytes()[:10])
    reason = f"{victim.relative_to(directory / '2').as_posix()} was resized"
  else:  # a step without a manifest (its run was killed before recording it), metadata garbled
    (directory / "2" / checkpoint.STEP_MANIFEST).unlink()
    (directory / "2" / "_CHECKPOINT_METADATA").write_text("{garbage")
    reason = "_CHECKPOINT_METADATA is not valid JSON"
  manager = checkpoint.make_manager(directory, keep=3)
  assert manager.latest_step() == 1
  aside = tmp_path / checkpoint.DAMAGED_DIR / "2"
  assert capsys.readouterr().err == (f"warning: checkpoint {directory / '2'} is damaged "
                                     f"({reason}); moved to {aside}, resuming from step 1\n")
  np.testing.assert_array_equal(checkpoint.restore(manager, target)["w"], np.arange(4.0))
  manager.close()


def test_unreadable_checkpoint_names_its_directory(tmp_path):
  directory = tmp_path / "checkpoints"
  target = _saved_steps(directory)
  for path in (directory / "2" / "state").rglob("*"):  # same sizes, garbage bytes: not detectable
    if path.is_file() and path.parent.name == "d":  # tensorstore's data files
      path.write_bytes(b"\0" * path.stat().st_size)
  manager = checkpoint.make_manager(directory, keep=3)
  with pytest.raises(checkpoint.CheckpointDamagedError,
                     match=f"checkpoint {directory / '2'} cannot be read .*delete it to resume "
                           "from step 1"):
    checkpoint.restore(manager, target)
  manager.close()


def test_stage_manifest_catches_missing_and_resized_files(tmp_path, capsys):
  stage = tmp_path / "stage2"
  (stage / "model").mkdir(parents=True)
  (stage / "model" / "weights.bin").write_bytes(b"x" * 100)
  (stage / "reasoning_params.npz").write_bytes(b"y" * 10)
  (stage / "checkpoints" / "3").mkdir(parents=True)  # working state: not in the manifest
  (stage / "eval").mkdir()
  common.write_summary(stage, {"fingerprint": "k", "loss": 1.0})
  assert json.loads((stage / common.MANIFEST_FILE).read_text())["files"] == {
      "model/weights.bin": 100, "reasoning_params.npz": 10}
  (stage / "eval" / "summary.json").write_text("{}")  # a nested stage may come and go
  assert common.finished_summary(stage, "k") == {"fingerprint": "k", "loss": 1.0}
  assert common.finished_summary(stage, "other") is None
  (stage / "model" / "weights.bin").write_bytes(b"x" * 99)
  assert common.finished_summary(stage, "k") is None
  (stage / "reasoning_params.npz").unlink()
  (stage / common.MANIFEST_FILE).unlink()
  assert common.finished_summary(stage, "k") is None
  assert capsys.readouterr().out.splitlines() == [
      f"{stage} is incomplete (model/weights.bin has 99 bytes, 100 were written); rebuilding it",
      f"{stage} is incomplete (no readable manifest.json); rebuilding it"]


def test_model_without_its_reasoning_params_is_refused(tmp_path):
  config = chain.get_config("tiny")
  for mode, needs in (("latent", "latent projection"), ("lasar", "latent projection and Policy "
                                                                 "Head")):
    with pytest.raises(FileNotFoundError, match=f"reasoning_params.npz is missing: the '{mode}' "
                                                f"model needs its {needs}"):
      trained.load_model(config, tmp_path, mode)


def test_negative_stage_steps_are_refused_not_read_as_unset():
  config = chain.get_config("tiny")
  assert common.stage_train_config(config, 0).steps == config.train.steps
  assert common.stage_train_config(config, 7).steps == 7
  with pytest.raises(ValueError, match="a stage step count of -1"):
    common.stage_train_config(config, -1)


def test_settings_that_cannot_change_results_are_not_part_of_the_identity():
  config = chain.get_config("tiny")
  key = common.fingerprint(config.train, config.grpo)
  config.train.update(checkpoint_every=7, log_every=3, keep_checkpoints=1,
                      async_checkpointing=False, data_threads=5)
  config.grpo.update(log_every=4, checkpoint_every=9)
  assert common.fingerprint(config.train, config.grpo) == key
  config.train.learning_rate = 1e-3
  assert common.fingerprint(config.train, config.grpo) != key


def test_stage_of_other_settings_names_what_differs_and_how_to_start_over(tmp_path):
  config = chain.get_config("tiny")
  stage = tmp_path / "stage1"
  (stage / "checkpoints").mkdir(parents=True)  # a run stopped before its first checkpoint
  inputs = common.stage_inputs(train=config.train, seed=0)
  common.claim_stage_dir(stage, common.fingerprint(inputs), inputs)
  config.train.learning_rate = 1e-3
  changed = common.stage_inputs(train=config.train, seed=0)
  common.claim_stage_dir(stage, common.fingerprint(changed), changed)  # nothing to resume: fine
  common.claim_stage_dir(stage, common.fingerprint(inputs), inputs)
  (stage / "checkpoints" / "2").mkdir()
  with pytest.raises(common.StageConflictError) as error:
    common.claim_stage_dir(stage, common.fingerprint(changed), changed)
  assert str(error.value) == (
      f"{stage} holds checkpoints of a run with other settings (train.learning_rate 0.003 -> "
      f"0.001); to train this stage anew with these settings delete {stage / 'checkpoints'} (or "
      "the whole folder), or use another --workdir")


def test_cutoffs_longer_than_any_compared_list_are_refused():
  config = chain.get_config()
  config.stage = "eval"
  config.eval.update(beam_width=100, ks=(1, 10, 30))
  if "compare" not in config:
    pytest.skip("no compare section in this config")
  config.compare.beam_widths = (20, 50)
  with pytest.raises(ConfigError, match=r"K=30 but --config.compare.beam_widths=\(20, 50\) ranks "
                                        "only 20 items"):
    validate(config)


def test_degenerate_data_is_warned_about():
  config = chain.get_config("tiny")
  stats = {"users": 1, "items": 3, "items_without_text": 3}
  assert common.data_warnings(stats, config) == [
      "only 1 users: their metrics are noise",
      "only 3 items, no more than K=10: every item is in every ranked list",
      "no item has text: Semantic IDs come from the item ids alone"]
  assert common.data_warnings({"users": 40, "items": 50, "items_without_text": 0}, config) == []


def test_bytes_that_are_not_utf8_are_named_by_line_and_offset(tmp_path):
  path = tmp_path / "seq.txt"
  path.write_bytes(b"u1 a b\nu2 c \xff d\n")
  with pytest.raises(DataError, match=r"seq.txt:2: not valid utf-8 text at byte 12 \(b'\\xff'"):
    list(files.read_lines(path))
  with pytest.raises(DataError, match=r"seq.txt:2: not valid utf-8 text at byte 12"):
    files.read_text(path)


def test_empty_data_path_is_named():
  with pytest.raises(DataError, match="^config.data.path: empty: set it to the source folder$"):
    files.source_folder("")


def _unisrec_folder(folder, with_index: bool):
  """A UniSRec-style folder: split files of item indices, text keyed by the original ids."""
  folder.mkdir(parents=True, exist_ok=True)
  header = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
  rows = {"train": "u1\t1\t2\nu2\t2\t3\n", "valid": "u1\t1 2\t3\nu2\t2 3\t1\n",
          "test": "u1\t1 2 3\t2\nu2\t2 3 1\t3\n"}
  for split, text in rows.items():
    sources_test.write(folder / f"Sci.{split}.inter", header + text)
  sources_test.write(folder / "Sci.text", "item_id:token\ttext:token_seq\n"
                     "B001\tred pen\nB002\tblue ink\nB003\tgreen pad\n")
  if with_index:
    sources_test.write(folder / "Sci.item2index", "B001\t1\nB002\t2\nB003\t3\n")


def test_unisrec_indices_are_mapped_through_item2index(tmp_path):
  _unisrec_folder(tmp_path, with_index=True)
  raw = sources_test.read("recbole", tmp_path)
  assert sorted(raw.items) == ["B001", "B002", "B003"]
  assert raw.items["B002"].title == "blue ink"
  assert raw.sequences["u1"] == ("B001", "B002", "B003", "B002")


def test_interaction_and_text_files_keyed_differently_are_refused(tmp_path):
  _unisrec_folder(tmp_path / "unisrec", with_index=False)
  with pytest.raises(DataError, match=r"Sci.test.inter: its 3 item ids \(e.g. '1'\) and the 3 of "
                                      r".*Sci.text \(e.g. 'B001'\) have 0 in common"):
    sources_test.read("recbole", tmp_path / "unisrec")
  sources_test.write_lcrec(tmp_path / "lcrec", False, {"u1": [0, 1, 2]},
                           {"B001": {"title": "A"}, "B002": {"title": "B"}})
  with pytest.raises(DataError, match="have 0 in common"):
    sources_test.read("lcrec", tmp_path / "lcrec")
