"""Result tables: one writer for the terminal (aligned text) and for Markdown."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: metrics shown in tables by default
TABLE_METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")
#: columns holding counts (epochs, seconds): no fixed decimals
COUNT_COLUMNS = frozenset({"best epoch", "epochs", "seconds", "users", "seeds"})


def result_row(name: str, result: Any, ks: Sequence[int] | None = None) -> dict[str, Any]:
    """One table row of a :class:`~mllmrec_pyg.train.TrainResult`: valid and test metrics,
    best epoch, epochs and seconds (Recall and NDCG at 10 and 20, or at the cut-offs ``ks``)."""
    metrics = TABLE_METRICS
    if ks is not None and not set(metrics) <= set(result.valid):
        metrics = tuple(f"{m}@{k}" for m in ("recall", "ndcg") for k in sorted(ks)[-2:])
    row: dict[str, Any] = {"model": name}
    for split, values in (("valid", result.valid), ("test", result.test)):
        row.update({f"{split} {m}": float(values[m]) for m in metrics})
    row.update(
        {
            "best epoch": float(result.best_epoch),
            "epochs": float(result.epochs),
            "seconds": float(round(result.seconds, 1)),
        }
    )
    return row


def _cell(row: Mapping[str, Any], column: str, digits: int) -> str:
    v = row.get(column)
    if isinstance(v, float) and column in COUNT_COLUMNS:
        return f"{v:.0f}" if v.is_integer() else f"{v:.1f}"
    if isinstance(v, float):
        text = f"{v:.{digits}f}" if abs(v) < 1000 else f"{v:.0f}"
        std = row.get(f"{column} std")
        if isinstance(std, float) and std > 0:
            text += f" ± {std:.{digits}f}"
        return text
    return "" if v is None else str(v)


def format_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    label: str | None = None,
    digits: int = 4,
    style: str = "markdown",
) -> str:
    """``rows`` (dicts) as a table; ``<col> std`` values are shown as ``± std`` when non-zero.

    Args:
        rows: one dict per row.
        columns: columns after the label (default: every key of the first row
            except the label and the ``std`` columns).
        label: the first column (default: the first key of the first row).
        digits: decimals of float cells.
        style: ``"markdown"`` or ``"plain"`` (aligned, for a terminal).
    """
    if not rows:
        return ""
    label = label or next(iter(rows[0]))
    if columns is None:
        columns = [c for c in rows[0] if c != label and not c.endswith(" std")]
    head = [label, *columns]
    body = [[str(r[label]), *(_cell(r, c, digits) for c in columns)] for r in rows]
    if style == "markdown":
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in body])
    if style != "plain":
        raise ValueError(f"style must be 'markdown' or 'plain', got {style!r}")
    widths = [max(len(h), *(len(cells[j]) for cells in body)) for j, h in enumerate(head)]

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(cells, widths))
        )

    return "\n".join([fmt(head), fmt(["-" * w for w in widths]), *(fmt(c) for c in body)])


__all__ = ["COUNT_COLUMNS", "TABLE_METRICS", "format_table", "result_row"]
