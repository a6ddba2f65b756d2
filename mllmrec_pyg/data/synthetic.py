"""A seeded synthetic product catalog: the embedded default dataset.

Items are baby-store products described by real words (category, brand,
colour, material, style, functions). Users have latent tastes over those
attributes; each user's interactions are drawn from the tastes plus item
popularity plus noise, so that item text carries real signal about who buys
what. A fraction of items get *generic* text (boilerplate sentences that say
nothing about the product) or *noisy* text (the real description buried in
unrelated words): their nearest text neighbours are unreliable, which is what
the similarity threshold of :class:`~mllmrec_pyg.transforms.ThresholdKNN`
is for.

The result is 5-core filtered and split per user as in MMRec
(:func:`~mllmrec_pyg.data.split.per_user_split`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch_geometric.data import HeteroData

from mllmrec_pyg.data.schema import ITEM, USER
from mllmrec_pyg.data.split import k_core, per_user_split, remap, to_heterodata

CATEGORIES: dict[str, list[str]] = {
    "stroller": ["one-hand folding", "all-terrain wheels", "reclining seat", "travel system"],
    "car seat": ["rear-facing", "side-impact protection", "isofix base", "adjustable headrest"],
    "baby bottle": ["anti-colic vent", "slow-flow nipple", "wide neck", "easy to clean"],
    "swaddle blanket": ["breathable weave", "secure wrap", "better sleep", "lightweight"],
    "teether": ["soothing gums", "freezer safe", "textured surface", "easy grip"],
    "high chair": [
        "adjustable height",
        "removable tray",
        "converts to booster",
        "five-point harness",
    ],
    "baby monitor": ["night vision camera", "two-way audio", "temperature sensor", "long range"],
    "diaper bag": [
        "changing pad",
        "insulated bottle pockets",
        "stroller straps",
        "wipeable lining",
    ],
    "crib sheet": ["fitted corners", "hypoallergenic", "machine washable", "deep pocket"],
    "bath tub": ["non-slip base", "temperature indicator", "foldable design", "newborn sling"],
    "play mat": ["tummy time", "padded foam", "activity arch", "waterproof surface"],
    "baby carrier": [
        "ergonomic hip seat",
        "lumbar support",
        "front and back carry",
        "breathable mesh",
    ],
    "bib": ["waterproof", "crumb catcher pocket", "snap closure", "soft neckline"],
    "pacifier": [
        "orthodontic nipple",
        "glow in the dark",
        "shield with air holes",
        "sterilizer case",
    ],
    "sippy cup": ["spill-proof valve", "weighted straw", "easy-hold handles", "transition cup"],
    "rattle toy": ["sensory textures", "gentle chime", "high-contrast pattern", "easy to grasp"],
}
BRANDS = (
    "Bramble, Pipkin, Tootsie Lane, Little Otter, Cuddlebug, Moonbeam, Sproutly, Hushaby, "
    "Nuzzle, Wonderkin, Plumtree, Bumblebee"
).split(", ")
COLOURS = "pink, sky blue, grey, white, mint green, navy, mustard yellow, red, beige, black".split(
    ", "
)
MATERIALS = (
    "organic cotton, silicone, bamboo, stainless steel, recycled plastic, muslin, beech wood, "
    "fleece, polyester, borosilicate glass"
).split(", ")
STYLES = "minimalist classic playful modern vintage scandinavian sporty luxury".split()
GENERIC_SENTENCES = [
    "Great product for your little one.",
    "High quality and made to last.",
    "Perfect gift for new parents.",
    "Customers love it.",
    "Satisfaction guaranteed.",
    "Fast shipping and easy returns.",
    "Trusted by families everywhere.",
    "A must-have for every home.",
    "Best value in its class.",
    "Order yours today.",
    "Designed with care.",
    "Makes life easier.",
    "Limited time offer.",
    "Five stars from happy buyers.",
    "See the photos for details.",
]
NOISE_WORDS = (
    "lorem ipsum sku bundle promo warehouse batch listing variant clearance import misc "
    "assorted lot pack n/a tbd oem model ref garden hammer laptop kettle bicycle printer sofa "
    "guitar"
).split()


@dataclass
class SyntheticConfig:
    """Sizes and noise levels of the synthetic catalog.

    Args:
        num_users: users drawn before 5-core filtering.
        num_items: items drawn before 5-core filtering.
        mean_interactions: mean interactions per user (at least 5 each).
        generic_fraction: items whose text is boilerplate only.
        noisy_fraction: items whose text is mixed with unrelated words.
        taste_strength: how strongly latent tastes drive choices (vs popularity).
        popularity_strength: weight of log item popularity.
        noise: scale of the Gumbel noise added to utilities.
        core: k of the k-core filter.
    """

    num_users: int = 2000
    num_items: int = 1000
    mean_interactions: float = 12.0
    generic_fraction: float = 0.08
    noisy_fraction: float = 0.07
    taste_strength: float = 1.0
    popularity_strength: float = 0.6
    noise: float = 1.0
    core: int = 5


def _item_text(
    rng: np.random.Generator,
    cat: str,
    brand: str,
    colour: str,
    material: str,
    style: str,
    funcs: list,
) -> str:
    title = f"{brand} {style} {colour} {material} {cat}"
    body = f"{funcs[0].capitalize()} and {funcs[1]}."
    extra = [
        f"Made of {material} in a {style} design.",
        f"Available in {colour}.",
        f"A {cat} that parents can rely on.",
    ]
    rng.shuffle(extra)
    return f"{title}. {body} {' '.join(extra[:2])}"


def make_synthetic(seed: int = 0, config: SyntheticConfig | None = None, **overrides) -> HeteroData:
    """Build the synthetic catalog as a :class:`HeteroData` (see the schema).

    Args:
        seed: seeds everything; the same seed gives the same object.
        config: sizes and noise levels; keyword ``overrides`` replace fields.

    Returns:
        HeteroData with ``data["item"].text`` and per-item attribute ids
        (``category``, ``brand``, ``colour``, ``material``, ``style``,
        ``text_kind``: 0 clean, 1 generic, 2 noisy), training ``edge_index``
        with ``time``, ``val_edge_index`` and ``test_edge_index``. Features
        (``x``) are left to the encoder.
    """
    cfg = config or SyntheticConfig()
    if overrides:
        cfg = SyntheticConfig(**{**asdict(cfg), **overrides})
    if cfg.num_users < 1 or cfg.num_items < cfg.core:
        raise ValueError(f"synthetic sizes too small: {cfg}")
    rng = np.random.default_rng(seed)
    n_u, n_i = cfg.num_users, cfg.num_items
    cats = list(CATEGORIES)

    # Items and their attributes.
    cat = rng.integers(len(cats), size=n_i)
    brand = rng.integers(len(BRANDS), size=n_i)
    colour = rng.integers(len(COLOURS), size=n_i)
    material = rng.integers(len(MATERIALS), size=n_i)
    style = rng.integers(len(STYLES), size=n_i)
    p_clean = 1 - cfg.generic_fraction - cfg.noisy_fraction
    kind = rng.choice(3, size=n_i, p=[p_clean, cfg.generic_fraction, cfg.noisy_fraction])
    texts = []
    for i in range(n_i):
        funcs = list(rng.choice(CATEGORIES[cats[cat[i]]], size=2, replace=False))
        names = (BRANDS[brand[i]], COLOURS[colour[i]], MATERIALS[material[i]], STYLES[style[i]])
        clean = _item_text(rng, cats[cat[i]], *names, funcs)
        if kind[i] == 1:
            text = " ".join(rng.choice(GENERIC_SENTENCES, size=3, replace=False))
        elif kind[i] == 2:
            words = clean.split()
            junk = list(rng.choice(NOISE_WORDS, size=len(words)))
            keep = words[: max(2, len(words) // 3)]
            text = " ".join(list(rng.permutation(keep + junk)))
        else:
            text = clean
        texts.append(text)
    log_pop = rng.normal(0.0, 1.0, size=n_i)

    # Users: a few favourite categories, one or two styles, colours, materials, brands.
    cat_pref = rng.dirichlet(np.full(len(cats), 0.15), size=n_u)
    style_pref = rng.dirichlet(np.full(len(STYLES), 0.3), size=n_u)
    colour_pref = rng.dirichlet(np.full(len(COLOURS), 0.3), size=n_u)
    material_pref = rng.dirichlet(np.full(len(MATERIALS), 0.3), size=n_u)
    brand_pref = rng.dirichlet(np.full(len(BRANDS), 0.5), size=n_u)
    n_per_user = cfg.core + rng.poisson(max(cfg.mean_interactions - cfg.core, 0.0), size=n_u)
    n_per_user = np.minimum(n_per_user, n_i)

    eps = 1e-6
    users, items = [], []
    block = 512
    for start in range(0, n_u, block):
        sl = slice(start, min(start + block, n_u))
        util = (
            np.log(cat_pref[sl][:, cat] + eps) * 1.0
            + np.log(style_pref[sl][:, style] + eps) * 0.5
            + np.log(colour_pref[sl][:, colour] + eps) * 0.3
            + np.log(material_pref[sl][:, material] + eps) * 0.3
            + np.log(brand_pref[sl][:, brand] + eps) * 0.2
        ) * cfg.taste_strength + cfg.popularity_strength * log_pop
        util = util + cfg.noise * rng.gumbel(size=util.shape)
        order = np.argsort(-util, axis=1)
        for r, u in enumerate(range(sl.start, sl.stop)):
            chosen = order[r, : n_per_user[u]]
            users.append(np.full(chosen.size, u))
            items.append(chosen)
    users = np.concatenate(users)
    items = np.concatenate(items)
    times = rng.integers(1_300_000_000, 1_400_000_000, size=users.size)

    keep = k_core(users, items, cfg.core)
    users, items, times = users[keep], items[keep], times[keep]
    users, _ = remap(users)
    items, item_ids = remap(items)
    labels = per_user_split(users, seed=seed)
    texts = [texts[i] for i in item_ids]
    data = to_heterodata(
        users, items, labels, int(users.max()) + 1, item_ids.size, timestamps=times, item_text=texts
    )
    attributes = {"category": cat, "brand": brand, "colour": colour, "material": material}
    for name, arr in (attributes | {"style": style, "text_kind": kind}).items():
        data[ITEM][name] = torch.from_numpy(arr[item_ids].astype(np.int64))
    data[USER].num_nodes = int(users.max()) + 1
    data.name = "synthetic"
    data.config = asdict(cfg) | {"seed": seed}
    return data


#: (users, items, interactions) of the paper's datasets after 5-core (as used by the paper and MMRec).
SCALE_PRESETS: dict[str, tuple[int, int, int]] = {
    "baby": (19_445, 7_050, 160_792),
    "sports": (35_598, 18_357, 296_337),
    "clothing": (39_387, 23_033, 278_677),
}


def make_scale_data(
    size: str | tuple[int, int, int] = "baby", dim: int = 384, seed: int = 0, clusters: int = 64
) -> HeteroData:
    """Random data at the scale of a real dataset, for benchmarks.

    No text: ``data["item"].x`` and ``data["user"].x`` are clustered random
    ``dim``-d features; interactions follow a Zipf-like item popularity and a
    long-tailed user activity (at least 5 per user), then the per-user split.

    Args:
        size: a key of :data:`SCALE_PRESETS` or ``(users, items, interactions)``.
        dim: feature dimension (384 = MiniLM).
        seed: seeds everything.
        clusters: number of feature clusters.
    """
    num_users, num_items, num_inter = SCALE_PRESETS[size] if isinstance(size, str) else size
    rng = np.random.default_rng(seed)
    pop = (1.0 + rng.permutation(num_items)) ** -0.8
    pop /= pop.sum()
    extra = max(num_inter / num_users - 5.0, 1e-3)
    deg = 5 + rng.geometric(1.0 / (extra + 1.0), size=num_users) - 1
    users = np.repeat(np.arange(num_users), deg)
    items = rng.choice(num_items, size=users.size, p=pop)
    key = np.unique(users.astype(np.int64) * num_items + items)
    users, items = key // num_items, key % num_items
    labels = per_user_split(users, seed=seed)
    data = to_heterodata(users, items, labels, num_users, num_items)
    gen = torch.Generator().manual_seed(seed)
    for node_type, n in ((ITEM, num_items), (USER, num_users)):
        centres = torch.randn(clusters, dim, generator=gen)
        assign = torch.randint(clusters, (n,), generator=gen)
        data[node_type].x = centres[assign] + 0.8 * torch.randn(n, dim, generator=gen)
    data.name = size if isinstance(size, str) else "custom"
    return data
