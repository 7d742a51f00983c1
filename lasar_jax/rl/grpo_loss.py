"""The GRPO loss with the adaptive-depth Policy Head (METHOD.md section 4), over rollout batches.

Shape letters as in `lasar_jax.rl.rollout`: N = B * G rollout rows (row b * G + g), L' SID levels,
K = K_max, D hidden width, V vocabulary.

A batch (every field split on its leading axis N) holds
  prompt [N, T] int, mask [N, T] bool    the prompt block of each row's prompt (repeated G times)
  target_codes [N, L'] int               the SID codes of the prompt's target item
  depth [N] int, codes / sid_tokens [N, L'] int   what the rollout sampled
  old_logp, ref_logp [N, L'] f32         the sampled SID tokens' log-probs under the rollout
                                         policy and under the frozen reference (Stage 2), from
                                         `sid_log_probs` before the update
  target_logq [N, L'] f32                the target's path log-probs under the rollout's sampling
                                         distribution at its depth (`Rollout.target_logprobs`)
  anchor [N, D] f32, has_anchor [N] bool  ('lasar') the last CoT anchor a_K of the train sample

Loss = surrogate + beta_kl * kl + lambda_term * terminal_bkl + policy_weight * policy_reinforce:
  reward r: `exact_reward` for the target item, `prefix_credit[m]` for m matched leading codes;
  advantage A = (r - group mean) / (group std + eps);
  surrogate: PPO clipped ratio exp(logp - old_logp) times A over the L' SID tokens;
  kl: KL(policy || reference) estimated per SID token (`kl_kind`, k3 by default);
  terminal_bkl ('lasar'): BKL(LM head(final latent hidden), LM head(a_K)) over rows with depth > 0;
  policy_reinforce ('lasar'): REINFORCE on the Policy Head with reward r - lambda_step * d / K_max
    and the group mean as baseline (the head's input is stop-gradient: it trains the head only).
    `depth_reward='expected'` puts E[r | prompt, d] in place of the sampled r: the expected reward
    of the SID sample given the depth, exact from `target_logq` (`rewards.expected_sid_reward`).
    The head's log-prob depends on d alone, so this is the same policy gradient with the SID
    sample's noise integrated out (a one-in-hundreds exact hit otherwise drowns the depth signal).
The log-probs are of the model's plain distribution (full vocabulary, temperature 1) from a
teacher-forced forward of `[prompt, <bot>, d latent steps, <eot>, SID]` (`latent.latent_forward`,
K_max = 0 for the token modes); the sampling temperature only shapes exploration.
"""

import dataclasses
import functools

import flax
import jax
import jax.numpy as jnp
import ml_collections

from lasar_jax import inference
from lasar_jax.model import transformer
from lasar_jax.model.config import ModelConfig
from lasar_jax.reasoning import alignment, latent, policy_head
from lasar_jax.rl import grpo_math, rewards
from lasar_jax.rl.rollout import split_params

LATENT_MODES = ("latent", "lasar")
REFERENCE_KEYS = ("backbone", "projection")  # the parameters the SID log-probs depend on
DEPTH_REWARDS = ("expected", "sampled")  # the SID reward in the Policy Head's REINFORCE reward


@dataclasses.dataclass(frozen=True)
class GrpoWeights:
  """The static settings of the loss (from `config.grpo`)."""

  group_size: int  # G rollouts per prompt
  clip_eps: float  # ratio clip range
  beta_kl: float  # weight of the KL to the reference
  kl_kind: str  # 'k1' | 'k2' | 'k3'
  lambda_term: float  # weight of the terminal BKL ('lasar')
  lambda_step: float  # per-step cost in the Policy Head's reward ('lasar')
  policy_weight: float  # weight of the Policy Head's REINFORCE loss ('lasar')
  exact_reward: float  # reward of the target item
  prefix_credit: tuple[float, ...]  # reward by matched prefix length (() = exact match only)
  aggregation: str  # 'token_mean' | 'sequence_mean'
  tau: float  # softmax temperature of the BKL (`config.reasoning.tau`)
  depth_reward: str = "expected"  # Policy Head reward: E[r | depth] or the sampled r (DEPTH_REWARDS)

  @classmethod
  def from_config(cls, grpo_config: ml_collections.ConfigDict, tau: float) -> "GrpoWeights":
    """The loss settings of `config.grpo` and the reasoning config's BKL temperature."""
    g = grpo_config
    return cls(int(g.group_size), float(g.clip_eps), float(g.beta_kl), str(g.kl_kind),
               float(g.lambda_term), float(g.lambda_step), float(g.policy_weight),
               float(g.exact_reward), tuple(float(x) for x in g.prefix_credit),
               str(g.aggregation), float(tau), str(g.depth_reward))


@flax.struct.dataclass
class SidForward:
  """What `sid_forward` returns."""

  logp_nl: jax.Array  # [N, L'] f32 log-prob of each sampled SID token (full vocabulary, T = 1)
  final_hidden_nd: jax.Array  # [N, D] hidden of the last latent step (h0 at depth 0)
  prompt_hidden_nd: jax.Array  # [N, D] hidden at the prompt block's last token (Policy Head input)


def reference_params(params: dict) -> dict:
  """The part of the GRPO parameters the SID log-probs depend on (backbone, projection)."""
  return {k: v for k, v in params.items() if k in REFERENCE_KEYS}


def sid_forward(params: dict, batch, *, cfg: ModelConfig, spec: inference.ReasoningSpec,
                remat: bool = False) -> SidForward:
  """Teacher-forced forward of each rollout: its depth of latent steps, then its sampled SID."""
  backbone = params["backbone"]
  sid_nl = batch["sid_tokens"]
  n = sid_nl.shape[0]
  if spec.mode in LATENT_MODES:  # suffix <eot>, sid_1 .. sid_L'-1: column s predicts sid_{s+1}
    suffix_ns = jnp.concatenate([jnp.full((n, 1), spec.eot_id, sid_nl.dtype), sid_nl[:, :-1]], 1)
    depth_n, max_depth = batch["depth"], spec.max_depth
  else:  # the prompt's last token predicts sid_1; suffix sid_1 .. sid_L'-1 predicts the rest
    suffix_ns = sid_nl[:, :-1]
    depth_n, max_depth = jnp.zeros(n, jnp.int32), 0
  out = latent.latent_forward(backbone, cfg, batch["prompt"], batch["mask"], depth_n, suffix_ns,
                              jnp.ones_like(suffix_ns, bool), max_depth, params.get("projection"),
                              remat=remat)
  logits_nlv = out.suffix_logits_bsv.astype(jnp.float32)
  if spec.mode not in LATENT_MODES:
    first_n1v = _head(backbone, cfg, out.final_hidden_bd[:, None])
    logits_nlv = jnp.concatenate([first_n1v.astype(jnp.float32), logits_nlv], axis=1)
  logp_nl = (jnp.take_along_axis(logits_nlv, sid_nl[..., None], axis=-1)[..., 0]
             - jax.nn.logsumexp(logits_nlv, axis=-1))
  return SidForward(logp_nl, out.final_hidden_bd, out.prompt_hidden_bd)


@functools.partial(jax.jit, static_argnames=("cfg", "spec"))
def sid_log_probs(params: dict, batch, *, cfg: ModelConfig,
                  spec: inference.ReasoningSpec) -> jax.Array:
  """The scoring pass: log-probs of the sampled SID tokens under `params` (the rollout policy, or
  the frozen reference; `reference_params` of either). [N, L'] f32"""
  return sid_forward(params, batch, cfg=cfg, spec=spec).logp_nl


def _head(backbone, cfg: ModelConfig, hidden_ntd: jax.Array) -> jax.Array:
  """LM-head logits of hidden states. [N, T, V]"""
  return transformer.Decoder(cfg).apply({"params": backbone}, hidden_ntd,
                                        method=transformer.Decoder.logits)


def expected_rewards(batch, w: GrpoWeights) -> jax.Array:
  """E[reward | prompt, depth] of each rollout's SID sample, from its target path log-probs. [N]"""
  return rewards.expected_sid_reward(batch["target_logq"], w.exact_reward, w.prefix_credit)


def group_rewards(batch, w: GrpoWeights) -> tuple[jax.Array, jax.Array]:
  """(rewards [B, G], GRPO advantages [B, G]) of the rollouts in `batch`."""
  r_n = rewards.sid_reward(batch["codes"], batch["target_codes"], w.exact_reward,
                           w.prefix_credit)
  r_bg = r_n.reshape(-1, w.group_size)
  return r_bg, grpo_math.group_advantages(r_bg)


def depth_histogram(depth_n: jax.Array, num_depths: int) -> dict[str, jax.Array]:
  """{'depth_k': share of rollouts with depth k} for k = 0 .. num_depths - 1."""
  share_k = jnp.mean(depth_n[:, None] == jnp.arange(num_depths)[None, :], axis=0)
  return {f"depth_{k}": share_k[k] for k in range(num_depths)}


def make_loss_fn(cfg: ModelConfig, spec: inference.ReasoningSpec, w: GrpoWeights,
                 remat: bool = False):
  """`loss_fn(params, batch, rng) -> (loss, metrics)` of GRPO (see the module docstring).

  Metrics hold every term by name (surrogate, kl, and for 'lasar' terminal_bkl and
  policy_reinforce) plus reward_mean, expected_reward_mean (E[r | depth], a low-noise view of
  the same reward), reward_std, exact_match, clip_fraction, ratio_mean,
  depth_mean and depth_0 .. depth_K (shares of the sampled depths).
  """
  aligned = spec.mode == "lasar"
  num_depths = spec.max_depth + 1 if spec.mode in LATENT_MODES else 1
  group = w.group_size

  def loss_fn(params, batch, rng):
    del rng
    fwd = sid_forward(params, batch, cfg=cfg, spec=spec, remat=remat)
    r_bg, adv_bg = group_rewards(batch, w)
    grouped = lambda x_nl: x_nl.reshape(-1, group, x_nl.shape[-1])  # noqa: E731 [B, G, L']
    token_mask_bgl = jnp.ones(grouped(fwd.logp_nl).shape, bool)
    surrogate, clip_metrics = grpo_math.clipped_surrogate(
        grouped(fwd.logp_nl), grouped(batch["old_logp"]), adv_bg, token_mask_bgl, w.clip_eps,
        aggregation=w.aggregation)
    kl_bgl = grpo_math.kl_estimate(grouped(fwd.logp_nl), grouped(batch["ref_logp"]), w.kl_kind)
    kl = grpo_math.aggregate_tokens(kl_bgl, token_mask_bgl, w.aggregation)
    loss = surrogate + w.beta_kl * kl
    depth_n = batch["depth"]
    expected_n = expected_rewards(batch, w)
    metrics = {"surrogate": surrogate, "kl": kl, "reward_mean": jnp.mean(r_bg),
               "expected_reward_mean": jnp.mean(expected_n),
               "reward_std": jnp.mean(jnp.std(r_bg, axis=-1)),
               "exact_match": jnp.mean(jnp.all(batch["codes"] == batch["target_codes"], axis=-1)),
               "clip_fraction": clip_metrics["clip_fraction"],
               "ratio_mean": clip_metrics["ratio_mean"],
               "depth_mean": jnp.mean(depth_n.astype(jnp.float32)),
               **depth_histogram(depth_n, num_depths)}
    if aligned:
      backbone, reasoning_params = split_params(params)
      head_fn = lambda h: _head(backbone, cfg, h)  # noqa: E731
      terminal, _ = alignment.terminal_bkl(fwd.final_hidden_nd, batch["anchor"][:, None],
                                           batch["has_anchor"].astype(jnp.int32), head_fn, w.tau,
                                           mask_b=depth_n > 0)
      head_r_bg = expected_n.reshape(-1, group) if w.depth_reward == "expected" else r_bg
      depth_r_bg = grpo_math.depth_rewards(head_r_bg, depth_n.reshape(-1, group), spec.max_depth,
                                           w.lambda_step)
      depth_adv_n = grpo_math.reinforce_advantages(depth_r_bg).reshape(-1)
      depth_logits_nk = inference.policy_depth(reasoning_params, spec, fwd.prompt_hidden_nd)
      reinforce, head_metrics = policy_head.reinforce_loss(depth_logits_nk, depth_n, depth_adv_n)
      loss = loss + w.lambda_term * terminal + w.policy_weight * reinforce
      metrics.update(terminal_bkl=terminal, policy_reinforce=reinforce,
                     policy_entropy=head_metrics["entropy"], depth_reward_mean=jnp.mean(depth_r_bg))
    return loss, metrics

  return loss_fn
