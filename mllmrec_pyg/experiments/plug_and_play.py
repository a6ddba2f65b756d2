"""RQ3, plug-and-play: FREEDOM with its own item-item graph vs. the refined one.

Three FREEDOM runs that differ only in the item-item graph they read:

* ``FREEDOM`` -- its frozen kNN graph (:math:`k = 10`) of the raw item features;
* ``FREEDOM + GD`` -- the output of ``ThresholdKNN`` alone
  (``data["item", "related", "item"]`` built without co-occurrence);
* ``FREEDOM + GR`` -- the output of ``ThresholdKNN`` + ``JaccardCoOccurrence``
  + ``MergeGraphs``, i.e. MLLMRec's refined graph :math:`S^*`.

The graphs come from the public transforms applied to the same
:class:`~torch_geometric.data.HeteroData`; FREEDOM only gets
``item_graph=("item", "related", "item")``.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from torch_geometric.data import HeteroData

from mllmrec_pyg.data.schema import RELATED
from mllmrec_pyg.experiments.common import (
    HEADLINE,
    ExperimentSettings,
    RunCache,
    RunSpec,
    build_graph,
    dataset_stats,
    graph_stats,
    prepare_data,
    summarise,
    write_results,
)
from mllmrec_pyg.experiments.plots import bar_chart
from mllmrec_pyg.nn.freedom import FREEDOMConfig, knn_item_graph

log = logging.getLogger(__name__)

NAME = "plug_and_play"
VANILLA = "FREEDOM"
GD = "FREEDOM + GD"
GR = "FREEDOM + GR"


def run_plug_and_play(
    settings: ExperimentSettings,
    data: HeteroData | None = None,
    freedom: dict[str, Any] | None = None,
    with_gd: bool = True,
) -> dict[str, Any]:
    """Train FREEDOM on its own graph and on the refined graphs; write the comparison.

    Args:
        settings: dataset, training caps, seeds, output folder.
        data: a prepared dataset (item features; user features unused);
            default :func:`~mllmrec_pyg.experiments.common.prepare_data`.
        freedom: FREEDOM config values shared by all variants (e.g.
            ``{"dropout": 0.9, "reg_weight": 1e-3}``).
        with_gd: also run the threshold-only graph.

    Returns:
        The ``results.json`` object with ``rows``, ``graphs`` (edge statistics)
        and ``findings`` (relative improvements over vanilla FREEDOM).
    """
    data = data if data is not None else prepare_data(settings)
    base = dict(freedom or {})
    gr = build_graph(data, settings.graph)
    variants: list[tuple[str, HeteroData, dict[str, Any]]] = [(VANILLA, gr, {})]
    graphs: dict[str, Any] = {}
    cfg = FREEDOMConfig(**base)
    feats = [data["item"][m] for m in cfg.modalities]
    ei, _ = knn_item_graph(feats, cfg.knn_k, cfg.modality_weights)
    n = int(data["item"].num_nodes)
    graphs[VANILLA] = {
        "edges": int(ei.size(1)),
        "self_loops": int((ei[0] == ei[1]).sum()),
        "mean_neighbours": ei.size(1) / n,
    }
    if with_gd:
        gd = build_graph(data, replace(settings.graph, cooccurrence=False))
        variants.append((GD, gd, {"item_graph": list(RELATED)}))
        graphs[GD] = graph_stats(gd, RELATED)
    variants.append((GR, gr, {"item_graph": list(RELATED)}))
    graphs[GR] = graph_stats(gr, RELATED)

    jobs = [
        (RunSpec(name, "freedom", {**base, **change, "seed": seed}, seed), g)
        for name, g, change in variants
        for seed in settings.seeds
    ]
    runs = RunCache(settings, NAME).run_all(jobs)
    order = [v[0] for v in variants]
    rows = summarise(runs, order=order)
    by = {r["variant"]: r for r in rows}
    improvement = {
        name: {
            m: (by[name][f"test {m}"] - by[VANILLA][f"test {m}"]) / by[VANILLA][f"test {m}"]
            if by[VANILLA][f"test {m}"]
            else None
            for m in HEADLINE
        }
        for name in order[1:]
    }
    folder = settings.experiment_dir(NAME)
    fig = bar_chart(
        rows,
        HEADLINE,
        folder / "plug_and_play.png",
        f"FREEDOM + graph refinement on {settings.dataset_tag()}",
    )
    extra = [] if with_gd else ["--no-gd"]
    for key, value in sorted(base.items()):
        extra += ["--freedom", f"{key}={value!r}"]
    return write_results(
        settings,
        NAME,
        {
            "data": dataset_stats(data),
            "freedom_config": {**FREEDOMConfig(**base).__dict__},
            "graphs": graphs,
            "runs": [{k: v for k, v in r.items() if k != "history"} for r in runs],
            "figures": [fig.name],
            "findings": {
                "relative_improvement": improvement,
                "gr_helps_recall": (improvement.get(GR) or {}).get("recall@20", 0) > 0,
                "gr_helps_ndcg": (improvement.get(GR) or {}).get("ndcg@20", 0) > 0,
            },
        },
        rows,
        command_extra=extra,
    )


__all__ = ["GD", "GR", "NAME", "VANILLA", "run_plug_and_play"]
