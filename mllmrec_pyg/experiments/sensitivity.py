"""RQ4, sensitivity: the alpha x K_c grid (heatmaps) and the output dimension d (line plot).

Grid: the similarity threshold :math:`\\alpha \\in \\{0.4, 0.5, 0.6, 0.7\\}`
times the co-occurrence top-K :math:`K_c \\in \\{5, 10, 15, 20\\}`, everything
else at its default. Dimension: :math:`d \\in \\{16, 32, 64, 128, 256\\}` with
the graph of the settings (the towers' hidden width :math:`d_1` stays 256).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from torch_geometric.data import HeteroData

from mllmrec_pyg.experiments.common import (
    Experiment,
    ExperimentSettings,
    Option,
    RunSpec,
    claim,
    prepare_data,
    result_metrics,
    run_jobs,
    short,
    summarise,
    write_results,
)
from mllmrec_pyg.experiments.plots import heatmaps, line_plot
from mllmrec_pyg.io import write_csv

log = logging.getLogger(__name__)

NAME = "sensitivity"
ALPHAS: tuple[float, ...] = (0.4, 0.5, 0.6, 0.7)
K_CS: tuple[int, ...] = (5, 10, 15, 20)
DIMS: tuple[int, ...] = (16, 32, 64, 128, 256)


def grid_label(alpha: float, k_c: int) -> str:
    return f"alpha={alpha:g}, K_c={k_c}"


def dim_label(d: int) -> str:
    return f"d={d}"


def run_sensitivity(
    settings: ExperimentSettings,
    data: HeteroData | None = None,
    alphas: Sequence[float] | None = None,
    k_cs: Sequence[int] | None = None,
    dims: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Train MLLMRec over the alpha x K_c grid and the dimension sweep; write heatmaps and a line plot.

    Args:
        settings: dataset, training caps, seeds, output folder.
        data: a prepared dataset; default
            :func:`~mllmrec_pyg.experiments.common.prepare_data`.
        alphas: similarity thresholds (grid rows; default :data:`ALPHAS`).
        k_cs: co-occurrence top-K values (grid columns; default :data:`K_CS`).
        dims: output dimensions :math:`d` (default :data:`DIMS`).

    Returns:
        The ``results.json`` object with ``grid`` (``metric -> [alpha][K_c]``
        test means), ``dims`` (per-``d`` means and stds) and ``findings``.
    """
    alphas, k_cs, dims = tuple(alphas or ALPHAS), tuple(k_cs or K_CS), tuple(dims or DIMS)
    data = data if data is not None else prepare_data(settings)
    command = settings.command(NAME, _grid_args(alphas, k_cs, dims))
    store = settings.store(NAME, command)
    jobs: list[tuple[RunSpec, HeteroData]] = []
    for a in alphas:
        for k in k_cs:
            g = replace(settings.graph, alpha=a, k_c=k)
            for seed in settings.seeds:
                extra = {"alpha": a, "k_c": k}
                jobs.append(
                    (RunSpec(grid_label(a, k), "mllmrec", {}, seed, graph=g, extra=extra), data)
                )
    for d in dims:
        for seed in settings.seeds:
            spec = RunSpec(dim_label(d), "mllmrec", {"embedding_dim": d}, seed, extra={"d": d})
            jobs.append((spec, data))
    runs = run_jobs(store, jobs)
    metrics = settings.headline(data)

    grid_rows = summarise(runs, order=[grid_label(a, k) for a in alphas for k in k_cs])
    dim_rows = summarise(runs, order=[dim_label(d) for d in dims])
    by = {r["variant"]: r for r in grid_rows}
    grid = {m: [[by[grid_label(a, k)][f"test {m}"] for k in k_cs] for a in alphas] for m in metrics}
    valid_grid = {
        m: [[by[grid_label(a, k)][f"valid {m}"] for k in k_cs] for a in alphas] for m in metrics
    }
    dims_out = {
        f"{split} {m}": (
            [r[f"{split} {m}"] for r in dim_rows],
            [r[f"{split} {m} std"] for r in dim_rows],
        )
        for split in ("valid", "test")
        for m in metrics
    }

    folder = settings.experiment_dir(NAME)
    tag = settings.dataset_tag()
    figs = [
        heatmaps(
            {f"test {m}": grid[m] for m in metrics},
            list(alphas),
            list(k_cs),
            "alpha",
            "K_c",
            folder / "alpha_kc_heatmap.png",
            f"MLLMRec on {tag}: similarity threshold x co-occurrence top-K",
        ).name,
        line_plot(
            list(dims),
            {k: v for k, v in dims_out.items() if k.startswith("test")},
            folder / "dimension.png",
            f"MLLMRec on {tag}: output dimension d",
            "d",
        ).name,
    ]
    write_csv(folder / "grid.csv", grid_rows)
    write_csv(folder / "dims.csv", dim_rows)
    return write_results(
        settings,
        NAME,
        {
            "alphas": list(alphas),
            "k_cs": list(k_cs),
            "dims": list(dims),
            "grid": grid,
            "valid_grid": valid_grid,
            "dim_curves": {k: {"mean": v[0], "std": v[1]} for k, v in dims_out.items()},
            "runs": runs,
            "figures": figs,
        },
        grid_rows + dim_rows,
        command,
        data=data,
        findings=findings,
    )


def _grid_args(alphas: Sequence[float], k_cs: Sequence[int], dims: Sequence[int]) -> list[str]:
    """Command-line arguments for a non-default grid."""
    out: list[str] = []
    for flag, values, default in (
        ("--alphas", alphas, ALPHAS),
        ("--k-cs", k_cs, K_CS),
        ("--dims", dims, DIMS),
    ):
        if tuple(values) != tuple(default):
            out += [flag, *map(str, values)]
    return out


def findings(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The paper's sensitivity claims, checked on the grid of a ``results.json``.

    Claims: performance is less sensitive to :math:`K_c` than to
    :math:`\\alpha`; it rises with :math:`d` up to 64, then flattens.
    """
    alphas, k_cs, dims = obj["alphas"], obj["k_cs"], obj["dims"]
    metric = result_metrics(obj)[0]
    g = obj["grid"][metric]
    best = max(
        ((a, k) for a in range(len(alphas)) for k in range(len(k_cs))), key=lambda p: g[p[0]][p[1]]
    )
    # spread along each axis: mean over the other axis of (max - min)
    spread_alpha = sum(
        max(g[a][k] for a in range(len(alphas))) - min(g[a][k] for a in range(len(alphas)))
        for k in range(len(k_cs))
    ) / len(k_cs)
    spread_kc = sum(max(row) - min(row) for row in g) / len(alphas)
    curve = obj["dim_curves"][f"test {metric}"]["mean"]
    rising = [curve[i + 1] >= curve[i] for i in range(len(curve) - 1)]
    d_curve = dict(zip(map(str, dims), curve))
    out = {
        "metric": f"test {metric}",
        "best_alpha": alphas[best[0]],
        "best_k_c": k_cs[best[1]],
        "best_value": g[best[0]][best[1]],
        "worst_value": min(min(row) for row in g),
        "mean_spread_over_alpha": spread_alpha,
        "mean_spread_over_k_c": spread_kc,
        "less_sensitive_to_k_c": spread_kc < spread_alpha,
        "best_d": dims[max(range(len(curve)), key=curve.__getitem__)] if curve else None,
        "monotone_in_d": all(rising),
        "rises_to_64": all(rising[: dims.index(64)]) if 64 in dims[1:] else None,
        "d_curve": d_curve,
    }
    claims = claim(
        "RQ4: less sensitive to K_c than to alpha",
        out["less_sensitive_to_k_c"],
        f"mean spread {spread_kc:.4f} (K_c) vs {spread_alpha:.4f} (alpha)",
        50,
    )
    claims += claim(
        f"RQ4: {short(metric)} rises with d up to 64",
        out["rises_to_64"],
        "d curve " + ", ".join(f"{d}: {v:.4f}" for d, v in d_curve.items()),
        51,
    )
    return {**out, "claims": claims}


EXPERIMENT = Experiment(
    "sensitivity",
    run_sensitivity,
    findings,
    (
        Option("--alphas", "alphas", "alpha values", {"type": float, "nargs": "+"}),
        Option("--k-cs", "k_cs", "K_c values", {"type": int, "nargs": "+"}),
        Option("--dims", "dims", "d values", {"type": int, "nargs": "+"}),
    ),
)

__all__ = ["EXPERIMENT", "ALPHAS", "DIMS", "K_CS", "NAME", "findings", "run_sensitivity"]
