"""`inference.trace_latent_steps` against the inference path, and the small `trained` helpers.

(`trained.load_stage` on a real workdir is tested in test_notebooks.py, which trains one.)
"""

import jax.numpy as jnp
import numpy as np
import pytest

from lasar_jax import inference, trained
from lasar_jax.configs import chain
from lasar_jax.model import transformer as T
from lasar_jax.reasoning import latent
from test_beam_search import CFG
from test_grpo import K_MAX, grpo_params, prompt_block, spec_of


@pytest.mark.parametrize("mode", ("latent", "lasar"))
def test_trace_matches_inference(mode):
  spec, params = spec_of(mode), grpo_params(mode)
  tokens, mask = prompt_block(spec)
  trace = inference.trace_latent_steps(params["backbone"], params, tokens, mask, cfg=CFG,
                                       spec=spec)
  reasoned = inference.reason(params["backbone"], params, CFG, spec, tokens, mask, extra_slots=0)
  depth_b = np.asarray(reasoned.depth_b)
  np.testing.assert_array_equal(np.asarray(trace.depth_b), depth_b)
  if mode == "latent":
    assert (depth_b == spec.fixed_depth).all()
  # the first depth_b steps are the ones inference runs with that depth
  prefilled = inference.prefill_prompt(params["backbone"], CFG, spec, tokens, mask, 0)
  ran = latent.run_latent_steps(params["backbone"], CFG, prefilled.cache, prefilled.cache_index,
                                prefilled.h0_bd, prefilled.pos_b, jnp.asarray(depth_b), K_MAX,
                                params["projection"])
  taken_bk = np.arange(K_MAX)[None] < depth_b[:, None]
  np.testing.assert_allclose(np.asarray(trace.hidden_bkd)[taken_bk],
                             np.asarray(ran.hidden_bkd)[taken_bk], atol=1e-4, rtol=1e-4)
  logits = T.Decoder(CFG).apply({"params": params["backbone"]}, trace.hidden_bkd,
                                method=T.Decoder.logits)
  np.testing.assert_allclose(np.asarray(trace.logits_bkv), np.asarray(logits), atol=1e-4, rtol=1e-4)
  if mode == "lasar":
    np.testing.assert_allclose(
        np.asarray(trace.depth_logits_bk),
        np.asarray(inference.policy_depth(params, spec, prefilled.h0_bd)), atol=1e-4, rtol=1e-4)


def test_trace_refuses_token_modes():
  with pytest.raises(ValueError, match="latent"):
    inference.trace_latent_steps(grpo_params("none")["backbone"], {},
                                 *prompt_block(spec_of("none")), cfg=CFG, spec=spec_of("none"))


def test_prompt_block_and_stage_mode():
  tokens, mask = trained.prompt_block([np.array([5, 6, 7]), np.array([8])], pad_id=0, width=4)
  np.testing.assert_array_equal(tokens, [[5, 6, 7, 0], [8, 0, 0, 0]])
  np.testing.assert_array_equal(mask, [[1, 1, 1, 0], [1, 0, 0, 0]])
  config = chain.get_config("tiny")
  names = ("stage1", "stage2", "stage2_pause", "grpo", "grpo_latent")
  assert [trained.stage_mode(n, config) for n in names] == \
      ["none", "lasar", "pause", config.reasoning.mode, "latent"]
  with pytest.raises(ValueError):
    trained.stage_mode("eval", config)
  with pytest.raises(ValueError):
    chain.get_config("huge")
