"""A deterministic synthetic shop: a catalog with real-looking product text, and users whose
sequences carry structure a sequence model can learn.

Catalog: each item has a sub-category of a department, a product kind, a brand sold in that
department, a variant (material, colour, scent...) and a size, all written into its title
("Ironwood Stainless Steel Chef Knife 8 inch, Model IR-204"), its categories and a description.

Users: a sequence starts in a sub-category drawn by popularity and moves by a Markov chain over
sub-categories (each has a few likely successors). Within a department a user keeps one favourite
brand (`brand_loyalty`); within a sub-category they keep the variant they chose before
(`attribute_continuity`); now and then they buy again something they bought (`repeat_prob`).
"""

import numpy as np

from lasar_jax.data.sources.records import ItemText, RawDataset

BRANDS_PER_DEPARTMENT = 5
VARIANTS_PER_SUBCATEGORY = 4

# department -> brands sold there
DEPARTMENTS = {
    "Kitchen": ("Ironwood", "Bellhaven", "Copperline", "Marlow", "Tessaro"),
    "Office Products": ("Inkwell", "Northwind", "Paperhouse", "Scribe & Co", "Ledgerly"),
    "Sports & Outdoors": ("Ridgeline", "Everpeak", "Trailcraft", "Summit Gear", "Velo"),
    "Beauty": ("Lumina", "Aurelle", "Pure Botanica", "Velvetine", "Solis"),
}
# (department, sub-category) -> (product kinds, variants, sizes, what it is for)
SUBCATEGORIES = {
    ("Kitchen", "Cookware"): (
        ("Frying Pan", "Saucepan", "Stock Pot", "Dutch Oven"),
        ("Stainless Steel", "Cast Iron", "Nonstick", "Hard-Anodized"),
        ("8 inch", "10 inch", "12 inch"),
        "even heating on gas, electric and induction stoves"),
    ("Kitchen", "Cutlery"): (
        ("Chef Knife", "Paring Knife", "Bread Knife", "Santoku Knife"),
        ("Stainless Steel", "Damascus Steel", "Ceramic", "Carbon Steel"),
        ("3.5 inch", "6 inch", "8 inch"),
        "precise slicing, dicing and chopping"),
    ("Kitchen", "Small Appliances"): (
        ("Blender", "Toaster", "Coffee Maker", "Electric Kettle"),
        ("Matte Black", "Brushed Steel", "White", "Red"), ("1 liter", "1.5 liter", "2 slice"),
        "quick breakfasts and everyday cooking"),
    ("Office Products", "Writing Instruments"): (
        ("Gel Pens", "Ballpoint Pens", "Mechanical Pencils", "Highlighters"),
        ("Black", "Blue", "Assorted Colors", "Fine Point"), ("12 count", "24 count", "36 count"),
        "smooth writing at school, home and office"),
    ("Office Products", "Paper"): (
        ("Spiral Notebook", "Sticky Notes", "Copy Paper", "Legal Pad"),
        ("College Ruled", "Wide Ruled", "Recycled", "Neon"),
        ("100 sheets", "500 sheets", "12 pack"),
        "notes, printing and planning"),
    ("Office Products", "Desk Accessories"): (
        ("Desk Organizer", "Stapler", "Tape Dispenser", "Letter Tray"),
        ("Mesh Metal", "Bamboo", "Clear Acrylic", "Black Plastic"), ("small", "medium", "large"),
        "a tidy, productive desk"),
    ("Sports & Outdoors", "Camping"): (
        ("Dome Tent", "Sleeping Bag", "LED Lantern", "Camp Stove"),
        ("Ultralight", "Waterproof", "Four-Season", "Compact"),
        ("1 person", "2 person", "4 person"),
        "weekend trips and backcountry nights"),
    ("Sports & Outdoors", "Hiking"): (
        ("Hiking Backpack", "Trekking Poles", "Water Bottle", "Hiking Socks"),
        ("Merino Wool", "Aluminum", "Insulated", "Ripstop Nylon"), ("20 liter", "32 oz", "medium"),
        "long days on the trail"),
    ("Sports & Outdoors", "Cycling"): (
        ("Bike Helmet", "Bike Light", "Cycling Gloves", "U-Lock"),
        ("Reflective", "Carbon", "Gel Padded", "Hardened Steel"), ("small", "medium", "large"),
        "safe commuting and road rides"),
    ("Beauty", "Skin Care"): (
        ("Face Moisturizer", "Foaming Cleanser", "Vitamin C Serum", "Sunscreen SPF 50"),
        ("Fragrance-Free", "Hyaluronic", "Aloe", "Oil-Free"), ("1 oz", "1.7 oz", "4 oz"),
        "soft, hydrated, healthy-looking skin"),
    ("Beauty", "Hair Care"): (
        ("Shampoo", "Conditioner", "Hair Mask", "Hair Oil"),
        ("Argan Oil", "Coconut", "Tea Tree", "Keratin"), ("8 oz", "12 oz", "16 oz"),
        "shine and strength from root to tip"),
    ("Beauty", "Makeup"): (
        ("Matte Lipstick", "Volumizing Mascara", "Liquid Foundation", "Gel Eyeliner"),
        ("Nude", "Classic Red", "Deep Brown", "Jet Black"), ("0.1 oz", "0.3 oz", "1 oz"),
        "long-wearing everyday looks"),
}


def make_catalog(num_items: int, rng: np.random.Generator) -> tuple[list[ItemText], np.ndarray,
                                                                    np.ndarray, np.ndarray]:
  """Items' text, and per item its sub-category, brand (index in its department) and variant."""
  keys = list(SUBCATEGORIES)
  subcategory = rng.choice(len(keys), size=num_items, p=rng.dirichlet(np.full(len(keys), 20.0)))
  brand = rng.integers(0, BRANDS_PER_DEPARTMENT, size=num_items)
  variant = rng.integers(0, VARIANTS_PER_SUBCATEGORY, size=num_items)
  texts = []
  for i in range(num_items):
    department, name = keys[subcategory[i]]
    kinds, variants, sizes, purpose = SUBCATEGORIES[department, name]
    brand_name = DEPARTMENTS[department][brand[i]]
    kind, size = kinds[rng.integers(len(kinds))], sizes[rng.integers(len(sizes))]
    model = f"{brand_name[:2].upper()}-{100 + i}"
    texts.append(ItemText(
        title=f"{brand_name} {variants[variant[i]]} {kind} {size}, Model {model}",
        brand=brand_name,
        categories=(department, name, kind),
        description=(f"The {brand_name} {kind.lower()} in {variants[variant[i]].lower()}, {size}, "
                     f"made for {purpose}.")))
  return texts, subcategory, brand, variant


def make_transitions(rng: np.random.Generator) -> np.ndarray:
  """A Markov chain over sub-categories: stay, two likely successors, a little of everything."""
  n = len(SUBCATEGORIES)
  departments = [department for department, _ in SUBCATEGORIES]
  chain = np.full((n, n), 0.04 / n)
  for s in range(n):
    same = [t for t in range(n) if departments[t] == departments[s] and t != s]
    other = [t for t in range(n) if departments[t] != departments[s]]
    chain[s, s] += 0.28
    chain[s, rng.choice(same)] += 0.35
    chain[s, rng.choice(other)] += 0.25
  return chain / chain.sum(axis=1, keepdims=True)


def draw(weights: np.ndarray, rng: np.random.Generator) -> int:
  """An index drawn with probability proportional to `weights` (not all zero)."""
  cumulative = np.cumsum(weights)
  return int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))


def generate(cfg, seed: int) -> RawDataset:
  """The synthetic dataset of `config.data.synthetic` (its own seed, or `seed` when it is -1)."""
  if cfg.num_items < 1 or not 1 <= cfg.min_length <= cfg.max_length:
    raise ValueError("config.data.synthetic needs num_items >= 1 and 1 <= min_length <= max_length")
  seed = seed if cfg.seed < 0 else cfg.seed
  num_items, brand_loyalty = cfg.num_items, cfg.brand_loyalty
  attribute_continuity, repeat_prob = cfg.attribute_continuity, cfg.repeat_prob
  rng = np.random.default_rng(seed)
  texts, subcategory, brand, variant = make_catalog(num_items, rng)
  popularity = rng.lognormal(0.0, 0.4, size=num_items)
  chain = make_transitions(rng)
  start = np.bincount(subcategory, popularity, minlength=len(SUBCATEGORIES))
  department_of = [list(DEPARTMENTS).index(department) for department, _ in SUBCATEGORIES]
  members = [np.flatnonzero(subcategory == s) for s in range(len(SUBCATEGORIES))]
  item_ids = [f"SYN{i:05d}" for i in range(num_items)]
  sequences = {}
  for u in range(cfg.num_users):
    favourite_brand = rng.integers(0, BRANDS_PER_DEPARTMENT, size=len(DEPARTMENTS))
    chosen_variant = {}
    length = rng.integers(cfg.min_length, cfg.max_length + 1)
    s = draw(start, rng)
    bought = []
    while len(bought) < length:
      if bought and rng.random() < repeat_prob:
        bought.append(bought[rng.integers(len(bought))])
        continue
      pool = members[s]
      weight = popularity[pool]
      loyal = brand[pool] == favourite_brand[department_of[s]]
      if loyal.any() and rng.random() < brand_loyalty:
        weight = weight * loyal
      if s in chosen_variant and rng.random() < attribute_continuity:
        same_variant = weight * (variant[pool] == chosen_variant[s])
        weight = same_variant if same_variant.any() else weight
      if len(pool):
        item = pool[draw(weight, rng)]
        bought.append(item)
        chosen_variant[s] = variant[item]
      s = draw(chain[s], rng)
    sequences[f"U{u:05d}"] = tuple(item_ids[i] for i in bought)
  return RawDataset(items=dict(zip(item_ids, texts)), sequences=sequences, timestamps={},
                    split=None, drops={},
                    notes=(f"synthetic: {num_items} items, {cfg.num_users} users, seed {seed}",))
