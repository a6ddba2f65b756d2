"""RQ2, the ablation study: MLLMRec and its variants, each with valid and test metrics.

=============  ==============================================================
variant        what changes (everything else as in MLLMRec)
=============  ==============================================================
MLLMRec        preference features + ThresholdKNN/Jaccard/Merge graph + towers
w/o RS         users get trainable random ID embeddings (no preferences)
w/o GD         plain top-K_s semantic graph (no similarity threshold)
w/o TE         no co-occurrence graph (semantic graph only)
w/o GCN_II     towers on the raw item features (no item-item convolution)
w/ GCN_UI      adds a 2-layer LightGCN over the user-item graph to the towers
=============  ==============================================================

MostPop, BPR-MF and LightGCN are trained beside them as anchors (``anchors``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from torch_geometric.data import HeteroData

from mllmrec_pyg.data.schema import RELATED
from mllmrec_pyg.experiments.common import (
    Experiment,
    ExperimentSettings,
    Option,
    RunSpec,
    claim,
    graph_stats,
    prepare_data,
    result_metrics,
    run_jobs,
    short,
    summarise,
    text_source,
    within_noise,
    write_results,
)
from mllmrec_pyg.experiments.plots import bar_chart

log = logging.getLogger(__name__)

NAME = "ablation"
FULL = "MLLMRec"
#: variant -> (graph change, model config values)
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    FULL: ({}, {}),
    "w/o RS": ({}, {"use_user_features": False}),
    "w/o GD": ({"alpha": None}, {}),
    "w/o TE": ({"cooccurrence": False}, {}),
    "w/o GCN_II": ({}, {"item_conv": False}),
    "w/ GCN_UI": ({}, {"ui_layers": 2}),
}
#: anchor -> (registry name, config values)
ANCHORS: dict[str, tuple[str, dict[str, Any]]] = {
    "MostPop": ("pop", {}),
    "BPR-MF": ("bpr", {}),
    "LightGCN": ("lightgcn", {}),
}


def run_ablation(
    settings: ExperimentSettings,
    data: HeteroData | None = None,
    variants: list[str] | None = None,
    anchors: bool = True,
) -> dict[str, Any]:
    """Train MLLMRec and its ablation variants (and the anchors); write the results folder.

    Args:
        settings: dataset, training caps, seeds, output folder.
        data: a prepared dataset (item and user features); default
            :func:`~mllmrec_pyg.experiments.common.prepare_data`.
        variants: subset of :data:`VARIANTS` (default all).
        anchors: also train MostPop, BPR-MF and LightGCN.

    Returns:
        The ``results.json`` object: ``rows`` (one per variant, mean over
        seeds), ``runs`` (every run), ``graphs`` (edge statistics of each
        variant's item graph), ``figures``, ``findings``.
    """
    names = variants or list(VARIANTS)
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        raise ValueError(f"unknown ablation variant(s) {unknown}; known: {list(VARIANTS)}")
    data = data if data is not None else prepare_data(settings)
    command = settings.command(
        NAME,
        (["--variants", *names] if names != list(VARIANTS) else [])
        + ([] if anchors else ["--no-anchors"]),
    )
    store = settings.store(NAME, command)
    jobs: list[tuple[RunSpec, HeteroData]] = []
    graph_info: dict[str, Any] = {}
    for name in names:
        change, config = VARIANTS[name]
        graph = replace(settings.graph, **change)
        graph_info[name] = {
            "graph": graph.as_dict(),
            **graph_stats(store.with_graph(data, graph), RELATED),
        }
        for seed in settings.seeds:
            jobs.append((RunSpec(name, "mllmrec", dict(config), seed, graph=graph), data))
    order = list(names)
    if anchors:
        for name, (model, config) in ANCHORS.items():
            order.append(name)
            for seed in settings.seeds:
                jobs.append((RunSpec(name, model, dict(config), seed), data))
    runs = run_jobs(store, jobs)
    rows = summarise(runs, order=order)
    metric = settings.headline(data)

    folder = settings.experiment_dir(NAME)
    fig = bar_chart(
        rows,
        metric,
        folder / "ablation.png",
        f"Ablation (RQ2) on {settings.dataset_tag()}: test metrics",
    )
    return write_results(
        settings,
        NAME,
        {
            "graphs": graph_info,
            "runs": runs,
            "figures": [fig.name],
        },
        rows,
        command,
        data=data,
        findings=findings,
    )


def findings(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What the table of a ``results.json`` says about the paper's ablation claims.

    The paper reports that removing any component degrades MLLMRec and that removing RS
    degrades it most (RQ2), and that MLLMRec beats the ID-based baselines (RQ1). The
    ``text_rows`` are the full model with its preference text and without (w/o RS).
    """
    rows = obj["rows"]
    metric = f"test {result_metrics(obj)[0]}"
    by = {r["variant"]: r for r in rows}
    if FULL not in by:
        return {}
    full = by[FULL][metric]
    removed = [v for v in VARIANTS if v.startswith("w/o") and v in by]
    drops = {v: full - by[v][metric] for v in removed}
    better = [v for v, d in drops.items() if d < 0]
    largest = max(drops, key=drops.get) if drops else None
    anchors = [a for a in ANCHORS if a in by]
    best = max(anchors, key=lambda a: by[a][metric]) if anchors else None
    out: dict[str, Any] = {
        "metric": metric,
        "full": full,
        "drop": drops,
        "variants_better_than_full": better,
        "every_removal_hurts": not better,
        "largest_drop": largest,
        "rs_largest_drop": largest == "w/o RS" and drops[largest] > 0,
        "best_anchor": best,
        "best_anchor_value": by[best][metric] if best else None,
        "best_anchor_within_noise": within_noise(by[FULL], by[best], metric) if best else None,
        "full_beats_anchors": all(full > by[a][metric] for a in anchors) if anchors else None,
        "text_rows": [
            {"model": FULL, "variant": v, "text": t}
            for v, t in (("w/o RS", "no text (w/o RS)"), (FULL, text_source(obj["settings"])))
            if v in by
        ],
    }
    claims, m = [], short(metric.split()[1])
    if drops:  # an ablation run without removals has nothing to claim
        worst = min(drops, key=drops.get)
        claims += claim(
            f"RQ2: removing any component lowers {m}",
            not better,
            f"removal that hurts least: {worst} {-drops[worst]:+.4f} test {m}",
            10,
        )
        claims += claim(
            "RQ2: removing RS lowers it most",
            out["rs_largest_drop"],
            f"largest drop: {largest} {-drops[largest]:+.4f} test {m}",
            11,
        )
        if best:
            claims += claim(
                "RQ1: MLLMRec beats the ID-based baselines",
                out["full_beats_anchors"],
                f"MLLMRec {full:.4f} vs {best} {by[best][metric]:.4f} test {m}",
                12,
            )
    return {**out, "claims": claims}


EXPERIMENT = Experiment(
    "ablation",
    run_ablation,
    findings,
    (
        Option("--variants", "variants", "subset of variants", {"nargs": "+"}),
        Option("--no-anchors", "anchors", "skip Pop/BPR/LightGCN", {"action": "store_false"}),
    ),
)

__all__ = ["ANCHORS", "EXPERIMENT", "FULL", "NAME", "VARIANTS", "findings", "run_ablation"]
