"""RQ3, plug-and-play: a host model with its own item-item graph vs. the refined one.

Three runs of one host model (any model registered with ``host=True``, see
:func:`~mllmrec_pyg.nn.registry.hosts`; :data:`~mllmrec_pyg.experiments.common.DEFAULT_HOST`
unless told otherwise) that differ only in the item-item graph they read:

* ``<HOST>`` -- its own kNN graph of the raw item features (:math:`k = 10`);
* ``<HOST> + GD`` -- the output of ``ThresholdKNN`` alone
  (``data["item", "related", "item"]`` built without co-occurrence);
* ``<HOST> + GR`` -- the output of ``ThresholdKNN`` + ``JaccardCoOccurrence``
  + ``MergeGraphs``, i.e. MLLMRec's refined graph :math:`S^*`.

The graphs come from the public transforms applied to the same
:class:`~torch_geometric.data.HeteroData`; the host only gets
``item_graph=("item", "related", "item")``. The default host's results go to
``plug_and_play/``, another host's to ``plug_and_play_<host>/``.

A host whose item-item graph has more than the feature kNN part (e.g. one that
adds an interest graph per modality) has the refined graph replace the kNN
part only, the part the refinement is about, and the edge count reported for
the vanilla host is that of the kNN part it replaces.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from torch_geometric.data import HeteroData

from mllmrec_pyg.config import GraphConfig
from mllmrec_pyg.data.schema import RELATED
from mllmrec_pyg.experiments.common import (
    DEFAULT_HOST,
    ExperimentSettings,
    RunSpec,
    edge_stats,
    graph_stats,
    prepare_data,
    run_jobs,
    summarise,
    write_results,
)
from mllmrec_pyg.experiments.plots import bar_chart
from mllmrec_pyg.nn import knn_item_graph
from mllmrec_pyg.nn.registry import Derived, hosts, label, make_config

log = logging.getLogger(__name__)

NAME = "plug_and_play"
#: the default host's variants
VANILLA = label(DEFAULT_HOST)
GD = f"{VANILLA} + GD"
GR = f"{VANILLA} + GR"
#: hosts: registry name -> label (:func:`~mllmrec_pyg.nn.registry.hosts`)
HOSTS = Derived(hosts)


def folder_name(model: str) -> str:
    """The results folder of host ``model``: ``plug_and_play`` for the default host,
    ``plug_and_play_<model>`` for another."""
    return NAME if model == DEFAULT_HOST else f"{NAME}_{model}"


def run_plug_and_play(
    settings: ExperimentSettings,
    data: HeteroData | None = None,
    host_config: dict[str, Any] | None = None,
    with_gd: bool = True,
    model: str = DEFAULT_HOST,
) -> dict[str, Any]:
    """Train a host model on its own graph and on the refined graphs; write the comparison.

    Args:
        settings: dataset, training caps, seeds, output folder.
        data: a prepared dataset (item features; user features unused);
            default :func:`~mllmrec_pyg.experiments.common.prepare_data`.
        host_config: host config values shared by all variants (e.g.
            ``{"dropout": 0.9, "reg_weight": 1e-3}``).
        with_gd: also run the threshold-only graph.
        model: the host, a key of :data:`HOSTS`.

    Returns:
        The ``results.json`` object with ``rows``, ``graphs`` (edge statistics)
        and ``findings`` (relative improvements over the vanilla host).
    """
    if model not in HOSTS:
        raise ValueError(f"plug-and-play hosts are {sorted(HOSTS)}, got {model!r}")
    host = HOSTS[model]
    vanilla, with_gd_name, with_gr = host, f"{host} + GD", f"{host} + GR"
    data = data if data is not None else prepare_data(settings)
    base = dict(host_config or {})
    name = folder_name(model)
    extra = [] if with_gd else ["--no-gd"]
    if model != DEFAULT_HOST:
        extra += ["--model", model]
    for key, value in sorted(base.items()):
        extra += ["--host-set", f"{key}={value!r}"]
    command = settings.command("plug-and-play", extra)
    store = settings.store(name, command)
    cfg = make_config(model, base)
    feats = [data["item"][m] for m in cfg.modalities]
    ei, _ = knn_item_graph(feats, cfg.knn_k, getattr(cfg, "modality_weights", None))
    graphs: dict[str, Any] = {vanilla: edge_stats(ei, int(data["item"].num_nodes))}
    variants: list[tuple[str, dict[str, Any], GraphConfig | None]] = [(vanilla, {}, None)]
    refined = {"item_graph": list(RELATED)}
    if with_gd:
        gd = replace(settings.graph, cooccurrence=False)
        variants.append((with_gd_name, refined, gd))
        graphs[with_gd_name] = graph_stats(store.with_graph(data, gd), RELATED)
    variants.append((with_gr, refined, settings.graph))
    graphs[with_gr] = graph_stats(store.with_graph(data, settings.graph), RELATED)
    jobs = [
        (RunSpec(label, model, {**base, **change}, seed, graph=graph), data)
        for label, change, graph in variants
        for seed in settings.seeds
    ]
    runs = run_jobs(store, jobs)
    order = [v[0] for v in variants]
    rows = summarise(runs, order=order)
    metrics = settings.headline(data)
    by = {r["variant"]: r for r in rows}
    improvement = {
        label: {
            m: (by[label][f"test {m}"] - by[vanilla][f"test {m}"]) / by[vanilla][f"test {m}"]
            if by[vanilla][f"test {m}"]
            else None
            for m in metrics
        }
        for label in order[1:]
    }
    folder = settings.experiment_dir(name)
    fig = bar_chart(
        rows,
        metrics,
        folder / f"{name}.png",
        f"{host} + graph refinement on {settings.dataset_tag()}",
    )
    gain = improvement.get(with_gr) or {}
    return write_results(
        settings,
        name,
        {
            "host": model,
            "host_config": {**cfg.__dict__},
            "graphs": graphs,
            "runs": runs,
            "figures": [fig.name],
            "findings": {
                "relative_improvement": improvement,
                "gr_helps_recall": (gain.get(metrics[0]) or 0) > 0,
                "gr_helps_ndcg": (gain.get(metrics[1]) or 0) > 0,
            },
        },
        rows,
        command,
        data=data,
    )


__all__ = ["GD", "GR", "HOSTS", "NAME", "VANILLA", "folder_name", "run_plug_and_play"]
