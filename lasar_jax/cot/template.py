"""Template rationales: K short reasoning steps written from the item metadata of a sample.

Step kinds, in the order a rationale reads (each present only when the data supports it):

  focus       " Recent purchases are mostly Kitchen items."      >= 2 recent items with a category
  shift       " The latest purchase moved to Beauty."            last item leaves the main category
  brand       " The user prefers the brand Ironwood."            a brand bought >= 2 times, >= half
  last        " The last item was Ironwood Chef Knife 8 inch."   always (every item has a title)
  empty       " The user has no purchase history yet."           instead of all above, empty history
  earlier     " Before that they bought ..."                     only to reach `min_steps`
  conclusion  " Next they likely want Kitchen > Cutlery from Ironwood."   `mentions_target` only

"Recent" is the last RECENT_ITEMS items of the history; an item's category is its first
(top-level) category. K therefore varies per sample with the data (short histories, mixed or
loyal users), and is clipped to [min_steps, max_steps]: past max_steps the kinds of lowest
priority go (conclusion, last, focus, brand, shift, earlier: first kept first); below min_steps
earlier purchases are added, most recent first (a history too short for that gives fewer steps).

The conclusion (ours): with `mentions_target` the rationale explains the recommendation as a
teacher-written CoT would, naming the target's category path (its first two categories) and brand,
or its title when it has neither. The anchors are teacher-forced hidden states used in training
only, so the target never reaches the model's input at inference.

Every step starts with a space, so steps concatenate into running text after `<bot>`. Each kind
has two phrasings; which one a sample uses is drawn from the seed, so rationales are deterministic
for a seed.
"""

import collections

import numpy as np

from lasar_jax.data.prepare import PreparedData, Split
from lasar_jax.data.sources.records import ItemText

RECENT_ITEMS = 5  # most recent history items the focus / shift / brand steps look at
MAX_TITLE_CHARS = 80  # a longer title is cut at a word boundary inside a step

# kind -> phrasings, in reading order (fields filled by `_history_steps`, `template_rationale`)
PHRASINGS = {
    "focus_all": (" Recent purchases are all {category} items.",
                  " Every recent purchase is in {category}."),
    "focus_mostly": (" Recent purchases are mostly {category} items.",
                     " Most recent purchases are {category} items."),
    "focus_mixed": (" Recent purchases span {categories}.", " Recent purchases mix {categories}."),
    "shift": (" The latest purchase moved to {category}.",
              " Their interest just shifted to {category}."),
    "brand": (" The user prefers the brand {brand}.", " They keep buying {brand}."),
    "last": (" The last item was {title}.", " Their latest purchase was {title}."),
    "empty": (" The user has no purchase history yet.", " This user has bought nothing yet."),
    "earlier": (" Before that they bought {title}.", " Earlier they bought {title}."),
    "conclusion": (" Next they likely want {what}.", " So the next item is likely {what}."),
}
KINDS = tuple(PHRASINGS)
# kinds kept first when a rationale has more than max_steps candidates (earlier: last)
PRIORITY = ("conclusion", "last", "focus", "brand", "shift", "earlier")


def _short(title: str) -> str:
  """`title`, cut at a word boundary to at most MAX_TITLE_CHARS characters."""
  title = str(title)
  if len(title) <= MAX_TITLE_CHARS:
    return title
  return title[:MAX_TITLE_CHARS].rsplit(" ", 1)[0]


def _join(names: list[str]) -> str:
  """'A', 'A and B', 'A, B and C'."""
  return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _target_phrase(item: ItemText, title: str) -> str:
  """What the conclusion says the next item is: category path and brand, else the title."""
  path = " > ".join(item.categories[:2])
  if path and item.brand:
    return f"{path} from {item.brand}"
  if path:
    return path
  if item.brand:
    return f"something from {item.brand}"
  return _short(title)


def _history_steps(history: np.ndarray, items, titles) -> list[tuple[str, str, dict]]:
  """(kind, priority group, fields) of every history step the data supports, in reading order."""
  recent = [int(i) for i in history[-RECENT_ITEMS:]]
  if not recent:
    return [("empty", "last", {})]
  steps = []
  categories = [items[i].categories[0] for i in recent if items[i].categories]
  if len(categories) >= 2:
    counts = collections.Counter(categories)
    # most common first, ties broken by recency
    ranked = sorted(counts, key=lambda c: (-counts[c], -max(
        j for j, name in enumerate(categories) if name == c)))
    top = ranked[0]
    if counts[top] == len(categories):
      steps.append(("focus_all", "focus", {"category": top}))
    elif 2 * counts[top] > len(categories):
      steps.append(("focus_mostly", "focus", {"category": top}))
    else:
      steps.append(("focus_mixed", "focus", {"categories": _join(ranked[:3])}))
    last_categories = items[recent[-1]].categories
    if last_categories and last_categories[0] != top:
      steps.append(("shift", "shift", {"category": last_categories[0]}))
  brands = collections.Counter(items[i].brand for i in recent if items[i].brand)
  if brands:
    brand, count = brands.most_common(1)[0]
    if count >= 2 and 2 * count >= sum(brands.values()):
      steps.append(("brand", "brand", {"brand": brand}))
  steps.append(("last", "last", {"title": _short(titles[recent[-1]])}))
  seen = {recent[-1]}
  for i in (int(i) for i in history[::-1]):
    if i not in seen:
      seen.add(i)
      steps.append(("earlier", "earlier", {"title": _short(titles[i])}))
  return steps


def template_rationale(history: np.ndarray, target: int, items, titles, variants: np.ndarray,
                       min_steps: int, max_steps: int, mentions_target: bool = True) -> list[str]:
  """The step strings of one sample.

  Args:
    history: [n] int item indices, oldest first (empty: one 'no history' step).
    target: the item index to predict (read only when `mentions_target`).
    items: [I] ItemText of every item.
    titles: [I] title of every item (the item id where it has none).
    variants: [len(KINDS)] int, phrasing choice per step kind (taken modulo the phrasings).
    min_steps, max_steps: bounds on the number of steps (1 <= min_steps <= max_steps).
    mentions_target: end with a conclusion naming the target's category / brand (ours).

  Returns:
    1..max_steps step strings, each starting with a space.
  """
  candidates = _history_steps(history, items, titles)
  conclusion = []
  if mentions_target:
    conclusion = [("conclusion", "conclusion",
                   {"what": _target_phrase(items[target], titles[target])})]
  core = [c for c in candidates if c[1] != "earlier"]
  earlier = [c for c in candidates if c[1] == "earlier"]
  chosen = core + earlier[:max(min_steps - len(core) - len(conclusion), 0)] + conclusion
  keep = sorted(range(len(chosen)), key=lambda j: PRIORITY.index(chosen[j][1]))[:max_steps]
  return [PHRASINGS[kind][variants[KINDS.index(kind)] % len(PHRASINGS[kind])].format(**fields)
          for kind, _, fields in (chosen[j] for j in sorted(keep))]


def template_rationales(data: PreparedData, split: Split, seed: int, min_steps: int,
                        max_steps: int, mentions_target: bool = True) -> list[list[str]]:
  """`template_rationale` of every sample of `split`, phrasings drawn from `seed`."""
  if not 1 <= min_steps <= max_steps:
    raise ValueError(f"need 1 <= cot.min_steps ({min_steps}) <= cot.max_steps ({max_steps})")
  variants = np.random.default_rng(seed).integers(0, 1 << 16, size=(len(split), len(KINDS)))
  return [template_rationale(split.history(n), int(split.targets[n]), data.items, data.titles,
                             variants[n], min_steps, max_steps, mentions_target)
          for n in range(len(split))]
