"""GRPO: rollouts on a tiny random model and trie, the loss against a float64 NumPy recomputation,
and the stage end to end on the tiny synthetic config (Stage 1 and 2 trained once per module)."""

import functools
import json
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lasar_jax import inference
from lasar_jax.model import transformer as T
from lasar_jax.reasoning import latent, policy_head
from lasar_jax.rl import grpo_loss, trainer
from lasar_jax.rl import rollout as rollout_lib
from lasar_jax.stages import grpo_stage, latent_stage, sid_stage
from lasar_jax.train import metrics as metrics_lib
from test_beam_search import CFG, ITEMS, LEVELS, PARAMS, SIDS, TABLE, TRIE
from test_stages import tiny_config

BOT, EOT, PAUSE = 58, 59, 60  # special ids of the tiny vocabulary (SID tokens are 40..57)
K_MAX, GROUP = 3, 4
LENGTHS = (5, 3, 7)  # real prompt tokens per prompt (right padded)
MODES = ("none", "pause", "latent", "lasar")


def spec_of(mode: str) -> inference.ReasoningSpec:
  return inference.ReasoningSpec(mode=mode, max_depth=K_MAX, fixed_depth=2, num_pause=2,
                                 policy_hidden=16, bot_id=BOT, eot_id=EOT, pause_id=PAUSE)


@functools.cache
def grpo_params(mode: str) -> dict:
  """The tiny backbone plus a projection (latent modes) and a random Policy Head ('lasar')."""
  params = {"backbone": PARAMS}
  if mode in ("latent", "lasar"):
    params["projection"] = nn.meta.unbox(latent.init_projection(CFG, jax.random.key(1)))
  if mode == "lasar":
    head = policy_head.PolicyHead(K_MAX, 16)
    params["policy"] = jax.tree.map(lambda x: 0.1 * x, nn.meta.unbox(  # every depth likely
        policy_head.init_policy_head(head, jax.random.key(2), CFG.hidden_size)))
  return params


def prompt_block(spec, seed: int = 3):
  """[3, T] prompt blocks with the mode's suffix, right padded, and their mask."""
  rng = np.random.default_rng(seed)
  rows = [inference.mode_prompt(rng.integers(0, 40, n), spec) for n in LENGTHS]
  width = max(len(r) for r in rows)
  tokens, mask = np.zeros((len(rows), width), np.int32), np.zeros((len(rows), width), bool)
  for i, row in enumerate(rows):
    tokens[i, :len(row)], mask[i, :len(row)] = row, True
  return tokens, mask


def run_rollout(mode: str, key=jax.random.key(0), temperature=1.0, targets=(0, 1, 2)):
  """G rollouts of each prompt of `prompt_block`; `targets` are the prompts' target items."""
  spec = spec_of(mode)
  tokens, mask = prompt_block(spec)
  return rollout_lib.rollout(grpo_params(mode), TRIE, TABLE, tokens, mask,
                             SIDS[np.asarray(targets)].astype(np.int32), key, temperature,
                             cfg=CFG, spec=spec, group_size=GROUP)


def loss_batch(mode: str, sampled, seed: int = 4) -> dict:
  """The update batch of a rollout (key 0): prompts repeated G times, targets (prompt b's target
  is the item of its rollout b, so groups get exact, prefix and zero rewards) with their path
  log-probs, noisy old/ref log-probs, random anchors (the last row without one)."""
  tokens, mask = prompt_block(spec_of(mode))
  rng = np.random.default_rng(seed)
  items = np.asarray(sampled.items).reshape(-1, GROUP)
  targets = np.array([items[b, b % GROUP] for b in range(len(LENGTHS))])
  toward = run_rollout(mode, targets=targets)  # the same samples, walked to these targets
  np.testing.assert_array_equal(np.asarray(toward.codes), np.asarray(sampled.codes))
  n = len(LENGTHS) * GROUP
  batch = {"prompt": np.repeat(tokens, GROUP, 0), "mask": np.repeat(mask, GROUP, 0),
           "target_codes": np.repeat(SIDS[targets], GROUP, 0).astype(np.int32),
           "target_logq": toward.target_logprobs,
           "depth": sampled.depth, "codes": sampled.codes, "sid_tokens": sampled.sid_tokens,
           "anchor": rng.normal(0, 2.0, (n, CFG.hidden_size)).astype(np.float32),
           "has_anchor": np.arange(n) < n - 1}
  logp = grpo_loss.sid_log_probs(grpo_params(mode), batch, cfg=CFG, spec=spec_of(mode))
  batch["old_logp"] = logp + rng.normal(0, 0.3, logp.shape).astype(np.float32)
  batch["ref_logp"] = logp + rng.normal(0, 0.5, logp.shape).astype(np.float32)
  return {k: jnp.asarray(v) for k, v in batch.items()}


@pytest.mark.parametrize("mode", MODES)
def test_rollouts_are_valid_items_and_reproducible(mode):
  sampled = run_rollout(mode)
  items = np.asarray(sampled.items)
  assert items.shape == (len(LENGTHS) * GROUP,)
  assert ((items >= 0) & (items < ITEMS)).all()
  np.testing.assert_array_equal(np.asarray(sampled.codes), SIDS[items])
  np.testing.assert_array_equal(np.asarray(sampled.sid_tokens),
                                TABLE[np.arange(LEVELS), SIDS[items]])
  depth = np.asarray(sampled.depth)
  expected = {"none": 0, "pause": 0, "latent": 2}
  if mode in expected:
    assert (depth == expected[mode]).all()
  else:
    assert ((depth >= 0) & (depth <= K_MAX)).all() and len(set(depth.tolist())) > 1
  histogram = grpo_loss.depth_histogram(jnp.asarray(depth), K_MAX + 1)
  shares = np.array([float(histogram[f"depth_{k}"]) for k in range(K_MAX + 1)])
  assert shares.sum() == pytest.approx(1.0)
  np.testing.assert_allclose(shares, np.bincount(depth, minlength=K_MAX + 1) / len(depth))
  again = run_rollout(mode)
  for a, b in zip(jax.tree.leaves(sampled), jax.tree.leaves(again)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  other = run_rollout(mode, key=jax.random.key(1))
  assert (np.asarray(other.items) != items).any()
  # the target walk: rollouts of one prompt at one depth share it; other depths change it
  target_p = np.exp(np.asarray(sampled.target_logprobs, np.float64).sum(1))
  assert ((target_p > 0) & (target_p <= 1 + 1e-6)).all()
  by_depth = {}
  for row, d in enumerate(depth):
    by_depth.setdefault((row // GROUP, int(d)), []).append(target_p[row])
  for values in by_depth.values():
    np.testing.assert_allclose(values, values[0], rtol=1e-5)
  if mode == "lasar":
    assert len({round(v[0], 6) for (b, _), v in by_depth.items() if b == 0}) > 1
  # the scoring pass (teacher forced) gives the log-probs the rollout sampled under
  batch = loss_batch(mode, sampled)
  np.testing.assert_allclose(
      np.asarray(grpo_loss.sid_log_probs(grpo_params(mode), batch, cfg=CFG, spec=spec_of(mode))),
      np.asarray(sampled.model_logprobs), atol=2e-4)


def test_cot_is_refused():
  with pytest.raises(ValueError, match="cot"):
    rollout_lib.check_mode("cot")


def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def numpy_grpo_loss(w, batch, logp, final_logits, anchor_logits, depth_logits) -> dict:
  """float64 reference of every loss term from the policy's log-probs and logits."""
  f = lambda x: np.asarray(x, np.float64)  # noqa: E731
  logp, old, ref = f(logp), f(batch["old_logp"]), f(batch["ref_logp"])
  codes, target = np.asarray(batch["codes"]), np.asarray(batch["target_codes"])
  depth = np.asarray(batch["depth"])
  matched = np.cumprod(codes == target, axis=1).sum(1)
  credit = np.array(list(w.prefix_credit) + [w.exact_reward])
  r = credit[matched].reshape(-1, w.group_size)
  adv = ((r - r.mean(1, keepdims=True)) / (r.std(1, keepdims=True) + 1e-6)).reshape(-1, 1)
  ratio = np.exp(logp - old)
  surr_tok = -np.minimum(ratio * adv, np.clip(ratio, 1 - w.clip_eps, 1 + w.clip_eps) * adv)
  x = ref - logp
  kl_tok = np.exp(x) - x - 1
  reduce = ((lambda t: t.mean()) if w.aggregation == "token_mean" else
            (lambda t: t.mean(1).mean()))
  logp_h, logp_a = _log_softmax(f(final_logits) / w.tau), _log_softmax(f(anchor_logits) / w.tau)
  bkl = ((np.exp(logp_h) - np.exp(logp_a)) * (logp_h - logp_a)).sum(-1)
  counted = (depth > 0) & np.asarray(batch["has_anchor"])
  at_least = np.exp(np.concatenate([np.zeros((len(depth), 1)),
                                    np.cumsum(f(batch["target_logq"]), axis=1)], axis=1))
  expected = ((at_least[:, :-1] - at_least[:, 1:]) @ np.array(credit[:-1])
              + w.exact_reward * at_least[:, -1])
  head_r = expected if w.depth_reward == "expected" else r.reshape(-1)
  depth_r = (head_r - w.lambda_step * depth / K_MAX).reshape(-1, w.group_size)
  depth_adv = (depth_r - depth_r.mean(1, keepdims=True)).reshape(-1)
  logp_depth = _log_softmax(f(depth_logits))[np.arange(len(depth)), depth]
  terms = {"surrogate": reduce(surr_tok), "kl": reduce(kl_tok),
           "terminal_bkl": bkl[counted].mean(), "policy_reinforce": -(depth_adv * logp_depth).mean(),
           "clip_fraction": np.mean(np.clip(ratio, 1 - w.clip_eps, 1 + w.clip_eps) * adv
                                    < ratio * adv), "reward_mean": r.mean(),
           "expected_reward_mean": expected.mean()}
  terms["loss"] = (terms["surrogate"] + w.beta_kl * terms["kl"] + w.lambda_term *
                   terms["terminal_bkl"] + w.policy_weight * terms["policy_reinforce"])
  return terms


@jax.jit
def policy_outputs(params, batch):
  """The 'lasar' policy's SID log-probs [N, L'], LM-head logits of the final latent hidden and of
  the anchor [N, V], and Policy Head logits [N, K+1]."""
  spec = spec_of("lasar")
  fwd = grpo_loss.sid_forward(params, batch, cfg=CFG, spec=spec)
  head = lambda h: T.Decoder(CFG).apply({"params": PARAMS}, h[:, None],  # noqa: E731
                                        method=T.Decoder.logits)[:, 0]
  return (fwd.logp_nl, head(fwd.final_hidden_nd), head(batch["anchor"]),
          inference.policy_depth(params, spec, fwd.prompt_hidden_nd))


@pytest.mark.parametrize("aggregation,depth_reward", (("token_mean", "expected"),
                                                       ("sequence_mean", "sampled")))
def test_loss_matches_numpy(aggregation, depth_reward):
  w = grpo_loss.GrpoWeights(group_size=GROUP, clip_eps=0.2, beta_kl=0.05, kl_kind="k3",
                            lambda_term=0.3, lambda_step=0.4, policy_weight=0.7, exact_reward=1.0,
                            prefix_credit=(0.0, 0.25, 0.5), aggregation=aggregation, tau=1.5,
                            depth_reward=depth_reward)
  spec, params = spec_of("lasar"), grpo_params("lasar")
  sampled = run_rollout("lasar")
  batch = loss_batch("lasar", sampled)
  loss, metrics = jax.jit(grpo_loss.make_loss_fn(CFG, spec, w))(params, batch, None)
  expected = numpy_grpo_loss(w, batch, *policy_outputs(params, batch))
  # every term is exercised: rewards differ within groups, ratios clip, rows align
  assert 0 < expected["reward_mean"] < 1 and expected["clip_fraction"] > 0
  assert expected["terminal_bkl"] > 0 and expected["policy_reinforce"] != 0
  for name, value in expected.items():
    got = float(loss) if name == "loss" else float(metrics[name])
    assert got == pytest.approx(value, rel=1e-5, abs=1e-6), name


def test_loss_without_policy_for_token_modes():
  w = grpo_loss.GrpoWeights(GROUP, 0.2, 0.05, "k3", 0.3, 0.4, 0.7, 1.0, (), "token_mean", 1.0)
  sampled = run_rollout("none")
  batch = loss_batch("none", sampled)
  loss_fn = jax.jit(grpo_loss.make_loss_fn(CFG, spec_of("none"), w))
  loss, metrics = loss_fn(grpo_params("none"), batch, None)
  assert "policy_reinforce" not in metrics and "terminal_bkl" not in metrics
  assert float(metrics["depth_0"]) == 1.0
  assert float(loss) == pytest.approx(float(metrics["surrogate"] + 0.05 * metrics["kl"]), rel=1e-6)


def grpo_specs(mode: str) -> dict:
  """Logical axis names of `grpo_params(mode)`."""
  specs = {"backbone": T.logical_specs(CFG)}
  if mode in ("latent", "lasar"):
    specs["projection"] = nn.get_partition_spec(latent.init_projection(CFG, jax.random.key(1)))
  if mode == "lasar":
    specs["policy"] = nn.get_partition_spec(policy_head.init_policy_head(
        policy_head.PolicyHead(K_MAX, 16), jax.random.key(2), CFG.hidden_size))
  return specs


def test_reinforce_lowers_depth(tmp_path):
  """Zero SID reward, a cost per latent step: the Policy Head learns to take fewer steps."""
  config = tiny_config()
  config.grpo.update(steps=10, prompts_per_step=8, learning_rate=0.05, policy_learning_rate=0.05,
                     exact_reward=0.0, lambda_step=1.0, beta_kl=0.0, lambda_term=0.0, log_every=1)
  spec, params = spec_of("lasar"), grpo_params("lasar")
  rng = np.random.default_rng(5)
  examples = [{"prompt": inference.mode_prompt(rng.integers(0, 40, rng.integers(3, 8)), spec),
               "target_codes": SIDS[rng.integers(ITEMS)].astype(np.int32),
               "anchor": rng.normal(size=CFG.hidden_size).astype(np.float32),
               "has_anchor": np.bool_(True)} for _ in range(32)]
  _, summary = trainer.train(config, tmp_path, cfg=CFG, spec=spec, params=params,
                             logical_specs=grpo_specs("lasar"),
                             reference=grpo_loss.reference_params(params), examples=examples,
                             trie=TRIE, code_token_ids=TABLE, pad_id=0)
  rows = metrics_lib.read_rows(tmp_path / metrics_lib.METRICS_FILE)
  assert [r["step"] for r in rows] == list(range(1, 11)) and summary["steps"] == 10
  assert all(math.isfinite(v) for r in rows for v in r.values())
  assert all(r["reward_mean"] == 0.0 for r in rows)
  depth = [r["depth_mean"] for r in rows]
  assert np.mean(depth[-3:]) < np.mean(depth[:3]) - 0.5, depth


# ---- the stage end to end on the tiny synthetic config ----


def lasar_config(**grpo):
  """tiny_config in 'lasar' with a small GRPO run (8 devices: 16 prompts split 2 per device);
  short SFT stages with one bucket, so each compiles its step once."""
  config = tiny_config()
  config.reasoning.mode = "lasar"
  config.train.buckets = (128,)
  config.sft.stage1_steps = config.reasoning.stage2_steps = 4
  config.grpo.prompts_per_step = 16
  config.grpo.log_every = 1
  config.grpo.update(grpo)
  return config


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """SIDs, Stage 1 and Stage 2 ('lasar') trained once for the stage tests."""
  path = tmp_path_factory.mktemp("grpo_stage")
  latent_stage.run(lasar_config(), path)
  return path


def test_grpo_stage_end_to_end(workdir):
  levels = sid_stage.load_codes(workdir).shape[1]
  config = lasar_config(steps=3, learning_rate=1e-3,
                        prefix_credit=tuple(0.5 * m / levels for m in range(levels)))
  summary = grpo_stage.run(config, workdir)
  out = workdir / grpo_stage.STAGE
  rows = metrics_lib.read_rows(out / metrics_lib.METRICS_FILE)
  assert [r["step"] for r in rows] == [1, 2, 3]
  for row in rows:
    assert all(math.isfinite(v) for v in row.values()), row
    assert {"surrogate", "kl", "terminal_bkl", "policy_reinforce", "reward_mean"} <= set(row)
    assert sum(row[f"depth_{k}"] for k in range(config.reasoning.max_depth + 1)) == \
        pytest.approx(1.0)
  assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # step 1: the policy is the reference
  assert summary["steps"] == 3 and summary["mode"] == "lasar"
  assert (out / "model" / "config.json").is_file()
  with np.load(out / latent_stage.REASONING_PARAMS_FILE) as npz:
    assert {k.split("/")[0] for k in npz.files} == {"policy", "projection"}
  assert json.loads((out / "summary.json").read_text())["fingerprint"] == summary["fingerprint"]
  assert grpo_stage.run(config, workdir)["fingerprint"] == summary["fingerprint"]  # reused


def test_prefix_credit_of_the_wrong_length_is_refused_before_training(workdir):
  levels = sid_stage.load_codes(workdir).shape[1]
  grpo_stage.check_prefix_credit(lasar_config(prefix_credit=(0.0,) * levels), workdir)
  grpo_stage.check_prefix_credit(lasar_config(prefix_credit=()), workdir)
  with pytest.raises(ValueError, match=rf"has {levels + 1} values but the SIDs .* have {levels} codes"):
    grpo_stage.check_prefix_credit(lasar_config(prefix_credit=(0.0,) * (levels + 1)), workdir)
