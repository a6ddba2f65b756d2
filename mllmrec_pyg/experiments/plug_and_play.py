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
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from torch_geometric.data import HeteroData

from mllmrec_pyg.config import GraphConfig
from mllmrec_pyg.data.schema import RELATED
from mllmrec_pyg.experiments.common import (
    DEFAULT_HOST,
    Experiment,
    ExperimentSettings,
    Option,
    RunSpec,
    claim,
    edge_stats,
    graph_stats,
    pct,
    prepare_data,
    relative,
    result_metrics,
    run_jobs,
    short,
    summarise,
    within_noise,
    write_results,
)
from mllmrec_pyg.experiments.plots import bar_chart
from mllmrec_pyg.fields import key_value
from mllmrec_pyg.nn import knn_item_graph
from mllmrec_pyg.nn.registry import Derived, hosts, label, make_config, paper_hosts

log = logging.getLogger(__name__)

NAME = "plug_and_play"
#: the default host's variants
VANILLA = label(DEFAULT_HOST)
GD = f"{VANILLA} + GD"
GR = f"{VANILLA} + GR"
#: the paper's mean plug-and-play gain over its hosts (Amazon Baby)
PAPER_RQ3_MEAN = "R@20 +5.05%, N@20 +3.80%"
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
    model: str | None = None,
) -> dict[str, Any]:
    """Train a host model on its own graph and on the refined graphs; write the comparison.

    Args:
        settings: dataset, training caps, seeds, output folder.
        data: a prepared dataset (item features; user features unused);
            default :func:`~mllmrec_pyg.experiments.common.prepare_data`.
        host_config: host config values shared by all variants (e.g.
            ``{"dropout": 0.9, "reg_weight": 1e-3}``).
        with_gd: also run the threshold-only graph.
        model: the host, a key of :data:`HOSTS` (default
            :data:`~mllmrec_pyg.experiments.common.DEFAULT_HOST`).

    Returns:
        The ``results.json`` object with ``rows``, ``graphs`` (edge statistics)
        and ``findings`` (relative improvements over the vanilla host).
    """
    model = model or DEFAULT_HOST
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
    folder = settings.experiment_dir(name)
    fig = bar_chart(
        rows,
        metrics,
        folder / f"{name}.png",
        f"{host} + graph refinement on {settings.dataset_tag()}",
    )
    return write_results(
        settings,
        name,
        {
            "host": model,
            "host_config": {**cfg.__dict__},
            "graphs": graphs,
            "runs": runs,
            "figures": [fig.name],
        },
        rows,
        command,
        data=data,
        findings=findings,
    )


def findings(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Each refined-graph variant of a ``results.json`` against the vanilla host (its first
    row): relative test gains, whether they exceed the seed spread, and the paper's claim
    that the refinement improves every host on both metrics (RQ3)."""
    rows = obj["rows"]
    metrics = result_metrics(obj)
    host = label(obj.get("host", DEFAULT_HOST))  # a result that names no host is the default's
    vanilla = rows[0]
    improvement, noise = {}, {}
    for row in rows[1:]:
        improvement[row["variant"]] = {
            m: relative(row[f"test {m}"], vanilla[f"test {m}"]) for m in metrics
        }
        noise[row["variant"]] = {m: within_noise(row, vanilla, f"test {m}") for m in metrics}
    gain = improvement.get(f"{host} + GR") or {}
    helps = {m: (gain.get(m) or 0) > 0 for m in metrics}
    out = {
        "host": host,
        "metrics": list(metrics),
        "relative_improvement": improvement,
        "within_noise": noise,
        "gr_helps_recall": helps[metrics[0]],
        "gr_helps_ndcg": helps[metrics[1]],
        "paper_hosts": paper_hosts(),
    }
    r, n = (short(m) for m in metrics)
    evidence = ", ".join(f"{short(m)} {pct(gain.get(m))}" for m in metrics)
    out["claims"] = (
        claim(
            f"RQ3: the refined graph improves {host} ({r} and {n})",
            all(helps.values()),
            evidence,
            30,
        )
        if gain
        else []
    )
    return out


def mean_over_hosts(results: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The mean refined-graph gain over the hosts of several plug-and-play results of one
    dataset, and the paper's claim about it (``None`` with fewer than two hosts)."""
    gains = {}
    for obj in results:
        f = obj.get("findings") or {}
        gain = (f.get("relative_improvement") or {}).get(f"{f.get('host')} + GR")
        if gain:
            gains[f["host"]] = gain
    if len(gains) < 2:
        return None
    metrics = results[0]["findings"]["metrics"]
    mean = {m: sum(g[m] for g in gains.values()) / len(gains) for m in metrics}
    return claim(
        f"RQ3: on average over the hosts (paper, Baby, 5 hosts: {PAPER_RQ3_MEAN})",
        all(v > 0 for v in mean.values()),
        f"mean over {', '.join(gains)}: "
        + ", ".join(f"{short(m)} {pct(mean[m])}" for m in metrics),
        35,
    )[0]


EXPERIMENT = Experiment(
    "plug-and-play",
    run_plug_and_play,
    findings,
    (
        Option(
            "--host-set",
            "host_config",
            "a config value of the host, shared by all variants (repeatable), e.g. dropout=0.9",
            {"type": key_value, "action": "append", "metavar": "KEY=VALUE"},
        ),
        Option("--no-gd", "with_gd", "skip the GD-only graph", {"action": "store_false"}),
        Option(
            "--model",
            "model",
            f"the host model whose item-item graph is replaced (default: {DEFAULT_HOST})",
            {"choices": HOSTS},
        ),
    ),
)

__all__ = [
    "EXPERIMENT",
    "GD",
    "GR",
    "HOSTS",
    "NAME",
    "VANILLA",
    "findings",
    "folder_name",
    "mean_over_hosts",
    "run_plug_and_play",
]
