"""The honest comparison: every model tuned by the same validation-only search, test read once.

For each candidate (:data:`mllmrec_pyg.tuning.CANDIDATES`):

1. :func:`~mllmrec_pyg.tuning.tune` chooses its settings on valid Recall@20
   with the same trial budget, epoch cap and patience as every other model
   (the search is stored and reused);
2. the chosen settings are trained once per seed, and test metrics are read
   at the best-valid epoch;
3. per-user test Recall@20 and NDCG@20 (averaged over the seeds) give a
   paired sign-flip randomisation test of the proposed model against the
   best baseline;
4. with ``ablation_seeds``, the proposed model's ablation: its chosen
   settings with one switch changed (:data:`ABLATIONS`), not searched again,
   rows ``<proposed>-ablate-<name>`` beside it (never a baseline).

Nothing held out reaches an input: features and graphs come from the
pipeline, which reads training pairs only.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from mllmrec_pyg.config import GraphConfig
from mllmrec_pyg.data.schema import INTERACTS, RELATED
from mllmrec_pyg.experiments.common import (
    HEADLINE,
    ExperimentSettings,
    RunCache,
    RunSpec,
    prepare_data,
    summarise,
    write_results,
)
from mllmrec_pyg.experiments.plots import bar_chart
from mllmrec_pyg.io import jsonable, write_json
from mllmrec_pyg.pipeline import cached_graph
from mllmrec_pyg.train import TrainConfig, Trainer
from mllmrec_pyg.tuning import CANDIDATES, candidate, tune

log = logging.getLogger(__name__)

NAME = "compare"
#: the model this package proposes; the rest are baselines
PROPOSED = "langgcn"
#: LangGCN's ablation at its chosen settings: name -> (graph changes, model changes);
#: a switch that the chosen settings already have is skipped
ABLATIONS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "id-users": ({}, {"user_init": "id", "id_embeddings": True}),
    "preference-text": ({}, {"user_init": "mean+preference"}),
    "no-ids": ({}, {"id_embeddings": False}),
    "id-only": (
        {},
        {"use_item_text": False, "user_init": "id", "item_graph": None, "id_embeddings": True},
    ),
    "no-item-graph": ({}, {"item_graph": None}),
    "plain-knn": ({"alpha": None, "cooccurrence": False}, {"item_graph": RELATED}),
    "refined-graph": ({}, {"item_graph": RELATED}),
    "sampled-256": ({}, {"num_negatives": 256}),
    "full-softmax": ({}, {"num_negatives": 0}),
    "bpr": ({}, {"loss": "bpr", "num_negatives": 1, "cosine": False}),
}


def per_user_metrics(model: Any, data: HeteroData, k: int = 20) -> dict[str, Tensor]:
    """Test Recall@k and NDCG@k of every user with a test item (training items masked).

    Returns ``{"users": ids, "recall@k": [U], "ndcg@k": [U]}``; the means equal
    the trainer's test metrics.
    """
    evaluator = Trainer(model, data, TrainConfig(show_progress=False)).evaluator
    users = evaluator.users("test")
    model.eval()
    with torch.no_grad():
        top = evaluator.rank(model.scorer(), users, k, split="test")
    test = data[INTERACTS].test_edge_index
    pos = torch.zeros(int(users.max()) + 1, model.num_items, dtype=torch.bool)
    pos[test[0], test[1]] = True
    pos = pos[users]
    hits = pos.gather(1, top).float()
    n_pos = pos.sum(1).float()
    discount = 1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.float))
    idcg = torch.cumsum(discount, 0)[(n_pos.clamp(max=k) - 1).long()]
    return {
        "users": users,
        f"recall@{k}": hits.sum(1) / n_pos,
        f"ndcg@{k}": (hits * discount).sum(1) / idcg,
    }


#: a run JSON's field with its per-user test metrics (:func:`per_user_record`)
PER_USER = "per_user_test"


def per_user_record(model: Any, data: HeteroData) -> dict[str, Any]:
    """``{PER_USER: {"users": [...], "recall@20": [...], "ndcg@20": [...]}}`` of ``model``
    (values rounded to 1e-7), for :meth:`RunCache.run`'s ``extra``."""
    m = per_user_metrics(model, data)
    return {
        PER_USER: {
            "users": m["users"].tolist(),
            **{k: [round(float(v), 7) for v in m[k]] for k in HEADLINE},
        }
    }


def stored_with_per_user(cache: RunCache, spec: RunSpec, data: HeteroData) -> dict[str, Any]:
    """A stored run's record, with its per-user test metrics. A run stored without them
    gets them from its checkpoint (or, where none was kept, from training it again with
    the same seed, which replaces the record), and they are added to its JSON, so this
    happens once."""
    stored = cache.load(spec, data)
    if stored is None or PER_USER not in stored:
        _, model = cache.run(spec, data, keep_model=True)
        stored = cache.load(spec, data)
        stored.update(per_user_record(model, data))
        write_json(cache.path(spec), jsonable(stored), indent=None)
    return stored


def per_user_tensors(record: dict[str, Any]) -> dict[str, Tensor]:
    """The per-user test metrics of a run record (:data:`PER_USER`), as tensors."""
    pu = record[PER_USER]
    return {"users": torch.tensor(pu["users"]), **{k: torch.tensor(pu[k]) for k in HEADLINE}}


def sign_flip_test(diff: Tensor, rounds: int = 10000, seed: int = 0) -> float:
    """Two-sided p-value of a zero mean of paired differences ``diff`` (random sign flips)."""
    diff = diff.double()
    observed = diff.mean().abs()
    g = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, (rounds, diff.numel()), generator=g).double() * 2 - 1
    flipped = (signs * diff).mean(1).abs()
    return float(((flipped >= observed - 1e-15).sum() + 1) / (rounds + 1))


def run_compare(
    settings: ExperimentSettings,
    data: HeteroData | None = None,
    models: list[str] | None = None,
    proposed: str = PROPOSED,
    trials: int = 6,
    tuned_dir: str = "tuned",
    ablation_seeds: list[int] | None = None,
    ablations: list[str] | None = None,
) -> dict[str, Any]:
    """Tune every model with one budget, train the choices over ``settings.seeds``, test once.

    Args:
        settings: dataset, text, base graph, epoch cap and patience, seeds, output.
        data: the prepared dataset (item and user features), default
            :func:`~mllmrec_pyg.experiments.common.prepare_data`.
        models: candidate keys (default: every candidate).
        proposed: the candidate whose win is tested against the best baseline.
        trials: the search budget of every model.
        tuned_dir: root of the stored searches.
        ablation_seeds: train the proposed model's :data:`ABLATIONS` at its chosen
            settings with these seeds (``None``: no ablation).
        ablations: the :data:`ABLATIONS` names to train (default: all).

    Returns:
        The ``results.json`` object: ``rows`` (mean ± std over seeds, with the
        tuned settings and training seconds), ``tuned`` (each model's chosen
        point), ``significance`` and ``findings``.
    """
    keys = list(models or CANDIDATES)
    for key in keys:
        candidate(key)
    data = data if data is not None else prepare_data(settings)
    graphs: dict[GraphConfig, HeteroData] = {}
    jobs: list[tuple[RunSpec, HeteroData]] = []
    tuned: dict[str, Any] = {}
    chosen_of: dict[str, dict[str, Any]] = {}
    for key in keys:
        cand = candidate(key)
        search = tune(
            key,
            settings.data,
            settings.text,
            settings.graph,
            settings.train,
            trials=trials,
            out=tuned_dir,
            cache=settings.cache,
            data=data,
        )
        chosen = chosen_of[key] = search.settings()
        tuned[key] = {
            "point": search.best["point"],
            "valid recall@20": search.best["valid"]["recall@20"],
            "trials": len(search.trials),
            "search seconds": sum(t["seconds"] for t in search.trials),
        }
        run_data = data
        if "graph" in cand.needs([search.best["point"]]):
            run_data = cached_graph(graphs, data, GraphConfig(**chosen["graph"]))
        values = {k: v for k, v in chosen["model"].items() if k != "seed"}
        train_values = {k: chosen["train"][k] for k in ("lr", "batch_size")}
        for seed in settings.seeds:
            config = {**values, **({"seed": seed} if "seed" in chosen["model"] else {})}
            spec = RunSpec(key, cand.model, config, seed, train=train_values)
            jobs.append((spec, run_data))
    cache = RunCache(settings, NAME)
    # each new run stores its per-user test metrics (the per-user test below needs the
    # best baseline's, known only once every run is done)
    runs = cache.run_all(jobs, extra=per_user_record)
    ablated = []
    if ablation_seeds and proposed in tuned:
        more = ablation_jobs(
            proposed, chosen_of[proposed], data, settings.graph, graphs, ablation_seeds, ablations
        )
        ablated = [spec.variant for spec, _ in more]
        runs += cache.run_all(more)
    order = [*keys, *dict.fromkeys(ablated)]
    rows = summarise(runs, order=order)
    users: dict[str, list[dict[str, Tensor]]] = {}
    while (best := best_baseline(rows, proposed)) is not None and proposed in tuned:
        # a stored run without per-user metrics and without a checkpoint is trained again
        # (RunCache.run), which replaces it on disk: the rows are then summarised anew, so
        # the table and the test read the same models, and the best baseline is re-read
        users, retrained = {}, False
        for i, (spec, run_data) in enumerate(jobs):
            if spec.variant in (proposed, best):
                now = stored_with_per_user(cache, spec, run_data)
                users.setdefault(spec.variant, []).append(per_user_tensors(now))
                retrained |= now.get("replaces") != runs[i].get("replaces")
                runs[i] = now
        if not retrained:
            break
        rows = summarise(runs, order=order)
    for row in rows:
        point = tuned.get(row["variant"], {}).get("point", {})
        row["tuned"] = " ".join(f"{k}={v}" for k, v in point.items())
        if row["variant"].startswith(f"{proposed}-ablate-"):
            row["tuned"] = f"as {proposed}, one switch changed"
    significance = _significance(rows, users, proposed)
    folder = settings.experiment_dir(NAME)
    fig = bar_chart(
        rows, HEADLINE, folder / "compare.png", f"Tuned models on {settings.dataset_tag()}: test"
    )
    return write_results(
        settings,
        NAME,
        {
            "budget": trials,
            "proposed": proposed,
            "tuned": tuned,
            "runs": runs,
            "significance": significance,
            "figures": [fig.name],
            "findings": findings(rows, proposed, significance),
        },
        rows,
        command_extra=[
            "--models",
            *keys,
            "--trials",
            str(trials),
            *(["--ablation-seeds", *map(str, ablation_seeds)] if ablation_seeds else []),
            *(["--ablations", *ablations] if ablation_seeds and ablations else []),
        ],
        data=data,
    )


def ablation_jobs(
    proposed: str,
    chosen: dict[str, Any],
    data: HeteroData,
    base_graph: GraphConfig,
    graphs: dict[GraphConfig, HeteroData],
    seeds: list[int],
    names: list[str] | None = None,
) -> list[tuple[RunSpec, HeteroData]]:
    """The proposed model's chosen settings with one :data:`ABLATIONS` switch changed.

    Args:
        proposed: the candidate key.
        chosen: its tuned settings (:meth:`~mllmrec_pyg.tuning.TuneResult.settings`).
        data: the prepared dataset.
        base_graph: the experiment's item graph (``chosen["graph"]`` overrides it).
        graphs: built graphs by recipe, shared with the comparison.
        seeds: training seeds.
        names: the ablations to train (default: all of :data:`ABLATIONS`).
    """

    def norm(model: dict[str, Any]) -> dict[str, Any]:
        graph = model.get("item_graph")
        return {**model, "item_graph": tuple(graph) if graph is not None else None}

    cand = candidate(proposed)
    base = norm({k: v for k, v in chosen["model"].items() if k != "seed"})
    graph = GraphConfig(**{**base_graph.as_dict(), **(chosen.get("graph") or {})})
    train_values = {k: chosen["train"][k] for k in ("lr", "batch_size")}
    jobs = []
    unknown = sorted(set(names or ()) - set(ABLATIONS))
    if unknown:
        raise ValueError(f"unknown ablation(s) {unknown}; choose from {sorted(ABLATIONS)}")
    for name, (graph_change, model_change) in ABLATIONS.items():
        if names and name not in names:
            continue
        model = norm({**base, **model_change})
        g = dataclasses.replace(graph, **graph_change)
        if model == base and g == graph:
            continue  # the chosen settings already are this variant
        run_data = data if model["item_graph"] is None else cached_graph(graphs, data, g)
        for seed in seeds:
            config = {**model, **({"seed": seed} if "seed" in chosen["model"] else {})}
            spec = RunSpec(
                f"{proposed}-ablate-{name}", cand.model, config, seed, train=train_values
            )
            jobs.append((spec, run_data))
    return jobs


def best_baseline(rows: list[dict[str, Any]], proposed: str) -> str | None:
    """The baseline with the best mean test Recall@20. The proposed model's own ablations
    (``<proposed>-...``) are not baselines: they are reported beside it."""
    by = {r["variant"]: r for r in rows}
    baselines = [v for v in by if v != proposed and not v.startswith(f"{proposed}-")]
    if proposed not in by or not baselines:
        return None
    return max(baselines, key=lambda v: by[v]["test recall@20"])


def _significance(
    rows: list[dict[str, Any]], users: dict[str, list[dict[str, Tensor]]], proposed: str
) -> dict[str, Any]:
    best = best_baseline(rows, proposed)
    if best is None or proposed not in users:
        return {}
    out: dict[str, Any] = {"against": best, "users": None}
    for metric in HEADLINE:
        a = torch.stack([u[metric] for u in users[proposed]]).mean(0)
        b = torch.stack([u[metric] for u in users[best]]).mean(0)
        out["users"] = int(a.numel())
        out[metric] = {
            "mean difference": float((a - b).mean()),
            "users better": int((a > b).sum()),
            "users worse": int((a < b).sum()),
            "p (paired sign-flip, per user)": sign_flip_test(a - b),
        }
    return out


def findings(
    rows: list[dict[str, Any]], proposed: str, significance: dict[str, Any]
) -> dict[str, Any]:
    """Whether the proposed model beats the best tuned baseline by at least 3% on R@20 and N@20."""
    best = best_baseline(rows, proposed)
    if best is None:
        return {}
    by = {r["variant"]: r for r in rows}
    gain = {
        m: (by[proposed][f"test {m}"] - by[best][f"test {m}"]) / by[best][f"test {m}"]
        for m in HEADLINE
    }
    return {
        "best_baseline": best,
        "relative_gain": gain,
        "beats_best_baseline": all(g > 0 for g in gain.values()),
        "beats_by_3_percent": all(g >= 0.03 for g in gain.values()),
        "significant_at_0.05": bool(significance)
        and all(significance[m]["p (paired sign-flip, per user)"] < 0.05 for m in HEADLINE),
    }


__all__ = [
    "NAME",
    "PER_USER",
    "PROPOSED",
    "findings",
    "per_user_metrics",
    "per_user_record",
    "per_user_tensors",
    "run_compare",
    "sign_flip_test",
    "stored_with_per_user",
]
