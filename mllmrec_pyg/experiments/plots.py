"""Matplotlib figures of the experiments, written atomically as PNG (headless ``Agg`` backend)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mllmrec_pyg.io import atomic_path


def _pyplot():
    try:
        import matplotlib
    except ImportError as err:  # pragma: no cover - a [plots]/[dev] dependency
        raise ImportError(
            "the experiment figures need matplotlib: pip install 'mllmrec-pyg[plots]'"
        ) from err
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save ``fig`` as PNG atomically and close it."""
    plt = _pyplot()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return Path(path)


def bar_chart(
    rows: Sequence[Mapping[str, Any]],
    metrics: Sequence[str],
    path: str | os.PathLike,
    title: str,
    label: str = "variant",
    split: str = "test",
) -> Path:
    """Grouped bars: one group per row, one bar per metric, error bars from ``<col> std``."""
    plt = _pyplot()
    names = [str(r[label]) for r in rows]
    width = 0.8 / max(len(metrics), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(names) + 2), 4.0))
    for j, m in enumerate(metrics):
        col = f"{split} {m}"
        vals = [float(r[col]) for r in rows]
        errs = [float(r.get(f"{col} std", 0.0)) for r in rows]
        xs = [i + (j - (len(metrics) - 1) / 2) * width for i in range(len(names))]
        ax.bar(xs, vals, width, yerr=errs if any(errs) else None, capsize=3, label=f"{split} {m}")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=20, ha="right")
    ax.set_title(title)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def heatmaps(
    grids: Mapping[str, Sequence[Sequence[float]]],
    row_values: Sequence[Any],
    col_values: Sequence[Any],
    row_name: str,
    col_name: str,
    path: str | os.PathLike,
    title: str,
) -> Path:
    """One annotated heatmap per entry of ``grids`` (``grid[r][c]``), side by side."""
    plt = _pyplot()
    fig, axes = plt.subplots(
        1, len(grids), figsize=(5.0 * len(grids), 4.2), squeeze=False, constrained_layout=True
    )
    for ax, (name, grid) in zip(axes[0], grids.items()):
        im = ax.imshow(grid, cmap="viridis", aspect="auto", origin="lower")
        ax.set_xticks(range(len(col_values)))
        ax.set_xticklabels([str(v) for v in col_values])
        ax.set_yticks(range(len(row_values)))
        ax.set_yticklabels([str(v) for v in row_values])
        ax.set_xlabel(col_name)
        ax.set_ylabel(row_name)
        ax.set_title(name)
        finite = [v for row in grid for v in row if v == v]
        mid = (max(finite) + min(finite)) / 2 if finite else 0.0
        for r, row in enumerate(grid):
            for c, v in enumerate(row):
                colour = "black" if v > mid else "white"
                ax.text(c, r, f"{v:.4f}", ha="center", va="center", fontsize=8, color=colour)
        fig.colorbar(im, ax=ax, shrink=0.9)
    fig.suptitle(title)
    return save_figure(fig, path)


def line_plot(
    xs: Sequence[float],
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: str | os.PathLike,
    title: str,
    xlabel: str,
    log2_x: bool = True,
) -> Path:
    """Lines with error bands: ``series[name] = (means, stds)``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    for name, (mean, std) in series.items():
        ax.plot(xs, mean, marker="o", label=name)
        if any(s > 0 for s in std):
            lo = [m - s for m, s in zip(mean, std)]
            hi = [m + s for m, s in zip(mean, std)]
            ax.fill_between(xs, lo, hi, alpha=0.2)
    if log2_x:
        ax.set_xscale("log", base=2)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([str(x) for x in xs])
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def scatter_panels(
    panels: Mapping[str, Any],
    colours: Any,
    colour_label: str,
    path: str | os.PathLike,
    title: str,
    categorical: bool = False,
) -> Path:
    """Side-by-side 2-D scatter plots (``panels[name]`` is an ``[N, 2]`` array)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 5.0), squeeze=False)
    cmap = "tab20" if categorical else "viridis"
    sc = None
    for ax, (name, xy) in zip(axes[0], panels.items()):
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=colours, s=9, cmap=cmap, alpha=0.85, linewidths=0)
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    if sc is not None:
        bar = fig.colorbar(sc, ax=list(axes[0]), fraction=0.025, pad=0.02)
        bar.set_label(colour_label)
    fig.suptitle(title)
    return save_figure(fig, path)


__all__ = ["bar_chart", "heatmaps", "line_plot", "save_figure", "scatter_panels"]
