"""RQ3, plug-and-play: a host model with its own item-item graph vs. the refined one.

Three runs of one host model (FREEDOM by default; any registered model with
an ``item_graph`` config field: FREEDOM, LATTICE, SMORE, GUME, SOIL) that differ
only in the item-item graph they read:

* ``<HOST>`` -- its own kNN graph of the raw item features (:math:`k = 10`);
* ``<HOST> + GD`` -- the output of ``ThresholdKNN`` alone
  (``data["item", "related", "item"]`` built without co-occurrence);
* ``<HOST> + GR`` -- the output of ``ThresholdKNN`` + ``JaccardCoOccurrence``
  + ``MergeGraphs``, i.e. MLLMRec's refined graph :math:`S^*`.

The graphs come from the public transforms applied to the same
:class:`~torch_geometric.data.HeteroData`; the host only gets
``item_graph=("item", "related", "item")``. FREEDOM's results go to
``plug_and_play/``, another host's to ``plug_and_play_<host>/``.

SOIL's item-item graph of a modality is the sum of an interest graph (items
linked to what their users' histories point to) and the feature kNN graph;
the refined graph replaces the kNN part only, the part the refinement is
about (see :mod:`mllmrec_pyg.nn.soil`), so all three SOIL variants keep the
same interest graphs and second-order user-item graph, and the edge count
reported for vanilla SOIL is that of the kNN part it replaces.
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
    edge_stats,
    graph_stats,
    prepare_data,
    summarise,
    write_results,
)
from mllmrec_pyg.experiments.plots import bar_chart
from mllmrec_pyg.nn.freedom import knn_item_graph
from mllmrec_pyg.nn.registry import make_config, model_class

log = logging.getLogger(__name__)

NAME = "plug_and_play"
VANILLA = "FREEDOM"
GD = "FREEDOM + GD"
GR = "FREEDOM + GR"
#: hosts: registry name -> label
HOSTS = {
    "freedom": "FREEDOM",
    "lattice": "LATTICE",
    "smore": "SMORE",
    "gume": "GUME",
    "soil": "SOIL",
}


def run_plug_and_play(
    settings: ExperimentSettings,
    data: HeteroData | None = None,
    freedom: dict[str, Any] | None = None,
    with_gd: bool = True,
    model: str = "freedom",
) -> dict[str, Any]:
    """Train a host model on its own graph and on the refined graphs; write the comparison.

    Args:
        settings: dataset, training caps, seeds, output folder.
        data: a prepared dataset (item features; user features unused);
            default :func:`~mllmrec_pyg.experiments.common.prepare_data`.
        freedom: host config values shared by all variants (e.g. FREEDOM's
            ``{"dropout": 0.9, "reg_weight": 1e-3}``).
        with_gd: also run the threshold-only graph.
        model: the host, a key of :data:`HOSTS`.

    Returns:
        The ``results.json`` object with ``rows``, ``graphs`` (edge statistics)
        and ``findings`` (relative improvements over vanilla FREEDOM).
    """
    if model not in HOSTS:
        raise ValueError(f"plug-and-play hosts are {sorted(HOSTS)}, got {model!r}")
    host = HOSTS[model]
    vanilla, with_gd_name, with_gr = host, f"{host} + GD", f"{host} + GR"
    data = data if data is not None else prepare_data(settings)
    base = dict(freedom or {})
    gr = build_graph(data, settings.graph)
    variants: list[tuple[str, HeteroData, dict[str, Any]]] = [(vanilla, gr, {})]
    graphs: dict[str, Any] = {}
    cfg = make_config(model, base)
    feats = [data["item"][m] for m in cfg.modalities]
    ei, _ = knn_item_graph(feats, cfg.knn_k, getattr(cfg, "modality_weights", None))
    graphs[vanilla] = edge_stats(ei, int(data["item"].num_nodes))
    if with_gd:
        gd = build_graph(data, replace(settings.graph, cooccurrence=False))
        variants.append((with_gd_name, gd, {"item_graph": list(RELATED)}))
        graphs[with_gd_name] = graph_stats(gd, RELATED)
    variants.append((with_gr, gr, {"item_graph": list(RELATED)}))
    graphs[with_gr] = graph_stats(gr, RELATED)

    seeded = "seed" in model_class(model).config_class.__dataclass_fields__
    jobs = [
        (RunSpec(name, model, {**base, **change, **({"seed": seed} if seeded else {})}, seed), g)
        for name, g, change in variants
        for seed in settings.seeds
    ]
    name = NAME if model == "freedom" else f"{NAME}_{model}"
    runs = RunCache(settings, name).run_all(jobs)
    order = [v[0] for v in variants]
    rows = summarise(runs, order=order)
    by = {r["variant"]: r for r in rows}
    improvement = {
        name: {
            m: (by[name][f"test {m}"] - by[vanilla][f"test {m}"]) / by[vanilla][f"test {m}"]
            if by[vanilla][f"test {m}"]
            else None
            for m in HEADLINE
        }
        for name in order[1:]
    }
    folder = settings.experiment_dir(name)
    fig = bar_chart(
        rows,
        HEADLINE,
        folder / f"{name}.png",
        f"{host} + graph refinement on {settings.dataset_tag()}",
    )
    extra = [] if with_gd else ["--no-gd"]
    if model != "freedom":
        extra += ["--model", model]
    for key, value in sorted(base.items()):
        extra += ["--freedom", f"{key}={value!r}"]
    return write_results(
        settings,
        name,
        {
            "host": model,
            "freedom_config": {**cfg.__dict__},
            "graphs": graphs,
            "runs": runs,
            "figures": [fig.name],
            "findings": {
                "relative_improvement": improvement,
                "gr_helps_recall": (improvement.get(with_gr) or {}).get("recall@20", 0) > 0,
                "gr_helps_ndcg": (improvement.get(with_gr) or {}).get("ndcg@20", 0) > 0,
            },
        },
        rows,
        command_extra=extra,
        command_name="plug-and-play",
        data=data,
    )


__all__ = ["GD", "GR", "HOSTS", "NAME", "VANILLA", "run_plug_and_play"]
