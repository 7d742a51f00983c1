"""The notebooks run top to bottom (tiny chain, headless matplotlib) and show what they promise.

Both notebooks share one workdir: `quickstart` trains the tiny chain, `latent_reasoning` reuses it.
Kernels are subprocesses: they get this process's environment (8 simulated CPU devices) plus
LASAR_NOTEBOOK_TINY=1, the workdir, a headless MPLBACKEND and PYTHONPATH=<repository root>.
"""

import os
import pathlib

import pytest

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")

from lasar_jax import trained  # noqa: E402
from lasar_jax.configs import chain  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
# Headless and what Jupyter uses: figures become image/png outputs (with plain Agg, plt.show()
# in a kernel draws nothing that the test could see).
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return tmp_path_factory.mktemp("notebooks") / "workdir"


def execute(name: str, workdir: pathlib.Path):
  """Runs notebooks/<name> in a fresh kernel; returns the executed notebook."""
  notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
  env = {**os.environ, "LASAR_NOTEBOOK_TINY": "1", "LASAR_NOTEBOOK_WORKDIR": str(workdir),
         "MPLBACKEND": INLINE_BACKEND,
         "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
  client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                   resources={"metadata": {"path": str(NOTEBOOKS)}})
  try:
    client.execute(env=env)
  finally:  # kept beside the workdir for reading after a failure
    nbformat.write(notebook, workdir.parent / f"executed_{name}")
  return notebook


def text_of(cell) -> str:
  """Stream and plain-text outputs of a code cell."""
  parts = []
  for output in cell.get("outputs", []):
    if output["output_type"] == "stream":
      parts.append(output["text"])
    elif "data" in output:
      parts.append(output["data"].get("text/plain", ""))
  return "".join(parts)


def figures(cell) -> int:
  return sum("image/png" in output.get("data", {}) for output in cell.get("outputs", []))


def test_committed_notebooks_have_no_outputs():
  for path in NOTEBOOKS.glob("*.ipynb"):
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
      if cell.cell_type == "code":
        assert not cell.outputs and cell.execution_count is None, path.name


def test_quickstart(workdir):
  notebook = execute("quickstart.ipynb", workdir)
  code = [c for c in notebook.cells if c.cell_type == "code"]
  assert "variant: tiny" in text_of(code[1])
  assert sum(figures(c) for c in code) >= 2  # training curves, depth histograms
  table = next(text_of(c) for c in code if "most popular" in text_of(c))
  assert "ndcg@10" in table and "recall@10" in table and "grpo (final)" in table
  shown = text_of(code[-1])
  assert shown.count("top 5 recommended") == 3 and "target:" in shown
  assert (workdir / "sid" / "sids.json").is_file()
  for stage in ("stage1", "stage2", "grpo", "eval"):
    assert (workdir / stage / "summary.json").is_file(), stage


def test_latent_reasoning(workdir):
  if not (workdir / "grpo" / "summary.json").is_file():
    pytest.skip("needs the quickstart's workdir (test_quickstart)")
  stamp = (workdir / "grpo" / "summary.json").stat().st_mtime_ns
  notebook = execute("latent_reasoning.ipynb", workdir)
  assert (workdir / "grpo" / "summary.json").stat().st_mtime_ns == stamp  # reused, not retrained
  text = "\n".join(text_of(c) for c in notebook.cells if c.cell_type == "code")
  assert "CoT step 1:" in text and "per-step BKL" in text and "P(depth)" in text
  assert "latent 1:" in text and "anchor 1:" in text
  assert sum(figures(c) for c in notebook.cells if c.cell_type == "code") >= 2


def test_load_stage_and_trace(workdir):
  """`trained.load_stage` on the notebooks' workdir: the final model, Stage 1, prompts."""
  if not (workdir / "grpo" / "summary.json").is_file():
    pytest.skip("needs the quickstart's workdir (test_quickstart)")
  config = chain.get_config("tiny")
  stage = trained.load_stage(config, workdir, "grpo")
  assert stage.spec.mode == "lasar" and stage.spec.max_depth == config.reasoning.max_depth
  assert set(stage.reasoning_params) == {"policy", "projection"}
  assert stage.codes_il.shape[0] == stage.data.num_items
  assert trained.load_stage(config, workdir, "stage1").spec.mode == "none"
  prompt_list, users, targets = stage.split_prompts("test", max_users=5)
  assert len(prompt_list) == len(users) == len(targets) == 5
  assert all(p[-1] == stage.rec.vocab.bot_id for p in prompt_list)
  tokens, mask = trained.prompt_block(prompt_list, stage.rec.vocab.pad_id)
  assert mask.sum(1).tolist() == [len(p) for p in prompt_list]
  # (trace_latent_steps against the inference path: tests/test_trained.py)
