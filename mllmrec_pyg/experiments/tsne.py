"""RQ5, visualisation: t-SNE of 500 random users' learned representations, MLLMRec beside a baseline.

The paper reads its t-SNE pictures as "MLLMRec's user representations are
spread more uniformly". A picture is a weak test of that, so the runner also
measures it, on the same sampled users, with the uniformity loss of Wang et
al. (2022) on L2-normalised representations,

.. math::
    \\mathcal L_{\\mathrm{uniform}} = \\log \\frac{1}{n(n-1)}
    \\sum_{u \\neq v} e^{-2 \\lVert \\tilde h_u - \\tilde h_v \\rVert^2},

lower = more uniform, and with the mean pairwise cosine similarity.
Points are coloured by the user's dominant item category when the items
have one (``data["item"].category``, the synthetic catalog), else by
:math:`\\log_{10}` of the user's number of training interactions.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import HeteroData

from mllmrec_pyg.data.schema import INTERACTS, ITEM, USER
from mllmrec_pyg.experiments.ablation import ANCHORS
from mllmrec_pyg.experiments.common import (
    DEFAULT_HOST,
    Experiment,
    ExperimentSettings,
    Option,
    RunSpec,
    claim,
    prepare_data,
    write_results,
)
from mllmrec_pyg.experiments.plots import scatter_panels
from mllmrec_pyg.nn.registry import label as label_of
from mllmrec_pyg.runs import summary

log = logging.getLogger(__name__)

NAME = "tsne"
#: baseline name -> (registry name, config values): two ID-based anchors and the default
#: plug-and-play host
BASELINES: dict[str, tuple[str, dict[str, Any]]] = {
    "LightGCN": ANCHORS["LightGCN"],
    "BPR-MF": ANCHORS["BPR-MF"],
    label_of(DEFAULT_HOST): (DEFAULT_HOST, {}),
}


@torch.no_grad()
def user_representations(model: Any) -> Tensor:
    """The final user vectors a model scores with (``[U, d]``)."""
    model.eval()
    if hasattr(model, "representations"):
        return model.representations()[0].detach().cpu()
    if hasattr(model, "embeddings"):
        return model.embeddings()[0].detach().cpu()
    if hasattr(model, "user_emb"):
        return model.user_emb.weight.detach().cpu()
    raise TypeError(f"{type(model).__name__} exposes no user representations")


def uniformity(h: Tensor, t: float = 2.0) -> float:
    """:math:`\\log` mean over distinct pairs of :math:`e^{-t\\lVert\\tilde h_u - \\tilde h_v\\rVert^2}`."""
    z = F.normalize(h.double(), dim=1)
    n = z.size(0)
    if n < 2:
        raise ValueError("uniformity needs at least two points")
    sq = torch.cdist(z, z).pow(2)
    off = ~torch.eye(n, dtype=torch.bool)
    return float(torch.logsumexp(-t * sq[off], 0) - math.log(n * (n - 1)))


def mean_cosine(h: Tensor) -> float:
    """Mean cosine similarity over distinct pairs."""
    z = F.normalize(h.double(), dim=1)
    n = z.size(0)
    sim = z @ z.t()
    return float((sim.sum() - sim.diagonal().sum()) / (n * (n - 1)))


def user_colours(data: HeteroData, users: Tensor) -> tuple[np.ndarray, str, bool]:
    """``(values, label, categorical)`` colouring ``users``."""
    ei = data[INTERACTS].edge_index
    num_users = int(data[USER].num_nodes)
    category = data[ITEM].get("category")
    if category is not None:
        num_cat = int(category.max()) + 1
        counts = torch.zeros(num_users, num_cat)
        counts.index_put_((ei[0], category[ei[1]]), torch.ones(ei.size(1)), accumulate=True)
        return counts[users].argmax(1).numpy(), "dominant item category", True
    deg = torch.bincount(ei[0], minlength=num_users).float()
    return torch.log10(deg[users].clamp_min(1)).numpy(), "log10 training interactions", False


def tsne_2d(h: Tensor, seed: int) -> np.ndarray:
    """2-D t-SNE of ``h`` (scikit-learn, PCA init, seeded)."""
    try:
        from sklearn.manifold import TSNE
    except ImportError as err:  # pragma: no cover - a [plots]/[dev] dependency
        raise ImportError("t-SNE needs scikit-learn: pip install 'mllmrec-pyg[plots]'") from err
    n = h.size(0)
    perplexity = float(min(30.0, max(2.0, (n - 1) / 3)))
    return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
        h.double().numpy()
    )


def run_tsne(
    settings: ExperimentSettings,
    data: HeteroData | None = None,
    baseline: str | None = None,
    num_users: int | None = None,
) -> dict[str, Any]:
    """Train MLLMRec and ``baseline``, embed ``num_users`` random users with t-SNE, plot side by side.

    Args:
        settings: dataset, training caps, output folder; its one seed trains the
            models and draws the users.
        data: a prepared dataset; default
            :func:`~mllmrec_pyg.experiments.common.prepare_data`.
        baseline: one of :data:`BASELINES` (default LightGCN).
        num_users: users drawn (default 500; all of them if the dataset has fewer).

    Returns:
        The ``results.json`` object with ``rows`` (per model: uniformity, mean
        cosine, valid/test Recall@20) and ``figures``.
    """
    baseline, num_users = baseline or "LightGCN", num_users or 500
    if len(settings.seeds) > 1:
        raise ValueError(f"tsne trains once: give one seed, got {list(settings.seeds)}")
    if baseline not in BASELINES:
        raise ValueError(f"unknown baseline {baseline!r}; choose from {list(BASELINES)}")
    data = data if data is not None else prepare_data(settings)
    seed = settings.seeds[0]
    command = settings.command(
        NAME,
        (["--baseline", baseline] if baseline != "LightGCN" else [])
        + (["--sample-users", str(num_users)] if num_users != 500 else []),
    )
    store = settings.store(NAME, command)
    model_name, config = BASELINES[baseline]
    models, results = {}, {}
    for label, spec in (
        ("MLLMRec", RunSpec("MLLMRec", "mllmrec", {}, seed)),
        (baseline, RunSpec(baseline, model_name, dict(config), seed)),
    ):
        record, models[label] = store.run(spec, data, keep_model=True)
        results[label] = summary(record, spec)
    metric = settings.headline(data)[0]

    total = int(data[USER].num_nodes)
    gen = torch.Generator().manual_seed(seed)
    users = torch.randperm(total, generator=gen)[: min(num_users, total)].sort().values
    colours, colour_label, categorical = user_colours(data, users)
    panels, rows = {}, []
    for label, model in models.items():
        h = user_representations(model)[users]
        short = metric.replace("recall", "R")
        panels[f"{label} (test {short} {results[label]['test'][metric]:.4f})"] = tsne_2d(h, seed)
        rows.append(
            {
                "model": label,
                "users": int(users.numel()),
                "uniformity": uniformity(h),
                "mean cosine": mean_cosine(h),
                f"valid {metric}": results[label]["valid"][metric],
                f"test {metric}": results[label]["test"][metric],
            }
        )
    folder = settings.experiment_dir(NAME)
    fig = scatter_panels(
        panels,
        colours,
        colour_label,
        folder / "tsne_users.png",
        f"t-SNE of {users.numel()} random users' representations ({settings.dataset_tag()})",
        categorical=categorical,
    )
    return write_results(
        settings,
        NAME,
        {
            "baseline": baseline,
            "colour": colour_label,
            "runs": list(results.values()),
            "sampled_users": users.tolist(),
            "figures": [fig.name],
        },
        rows,
        command,
        data=data,
        findings=findings,
    )


def findings(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Whether MLLMRec's users are spread more uniformly than the baseline's (RQ5)."""
    by = {r["model"]: r for r in obj["rows"]}
    mine, base = by["MLLMRec"]["uniformity"], by[obj["baseline"]]["uniformity"]
    more = mine < base
    return {
        "mllmrec_more_uniform": more,
        "uniformity_gap": mine - base,
        "claims": claim(
            f"RQ5: MLLMRec's users are spread more uniformly (vs {obj['baseline']})",
            more,
            f"uniformity {mine:.4f} vs {base:.4f}",
            60,
        ),
    }


EXPERIMENT = Experiment(
    "tsne",
    run_tsne,
    findings,
    (
        Option("--baseline", "baseline", f"{', '.join(BASELINES)} (default: LightGCN)"),
        Option("--sample-users", "num_users", "users drawn (default: 500)", {"type": int}),
    ),
    one_seed=True,
)


__all__ = [
    "BASELINES",
    "EXPERIMENT",
    "NAME",
    "findings",
    "mean_cosine",
    "run_tsne",
    "uniformity",
    "user_representations",
]
