"""The leakage audit: preferences from training history vs. the reference's full history.

The authors' preference script builds each user's behaviour list from the
whole interaction file, so the preference text of a user already describes
the items the model is later tested on. This runner measures what that is
worth: MLLMRec is trained twice, identical in everything (graph, seeds,
hyper-parameters, encoder, backend) except the user preference texts,

* ``train history`` -- the package default: behaviour lists from the
  training pairs only;
* ``full history (audit)`` -- :func:`~mllmrec_pyg.reasoning.behaviour_lists`
  with ``full_history=True``: valid and test items appended,

plus, for reference, the *w/o RS* variant (no preference text at all). It
reports the metric gap and how much held-out information reached the prompts
(held-out pairs whose item is in the user's behaviour list and in the
token-budgeted prompt).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from torch_geometric.data import HeteroData

from mllmrec_pyg.data.schema import INTERACTS, USER
from mllmrec_pyg.experiments.common import (
    Experiment,
    ExperimentSettings,
    RunSpec,
    claim,
    load_raw,
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
from mllmrec_pyg.reasoning import behaviour_lists, build_preference_prompts

log = logging.getLogger(__name__)

NAME = "leakage"
TRAIN = "train history"
FULL = "full history (audit)"
NO_PREFS = "no preferences (w/o RS)"


def _pairs(edge_index) -> set[tuple[int, int]]:
    return set(zip(edge_index[0].tolist(), edge_index[1].tolist()))


def exposure(data: HeteroData, token_budget: int) -> dict[str, dict[str, float]]:
    """How many held-out pairs reach the behaviour lists and the prompts, per mode.

    Args:
        data: the dataset (training pairs + held-out pairs + item text).
        token_budget: Prompt 2 budget used for the prompts.

    Returns:
        ``{mode: stats}`` for ``"train"`` and ``"full"``: mean behaviour-list
        length, mean items in the prompt, and the number and fraction of
        valid / test pairs whose item is in the list and in the prompt.
    """
    store = data[INTERACTS]
    held = {"valid": _pairs(store.val_edge_index), "test": _pairs(store.test_edge_index)}
    out: dict[str, dict[str, float]] = {}
    lists = {}
    for mode, full in (("train", False), ("full", True)):
        lists[mode] = behaviour_lists(data, full_history=full)
        prompts = build_preference_prompts(data, token_budget, full_history=full)
        in_list = {(u, i) for u, items in lists[mode].items() for i in items}
        in_prompt = {(p.user, i) for p in prompts for i in p.items}
        stats: dict[str, float] = {
            "mean_list_length": sum(map(len, lists[mode].values())) / max(len(lists[mode]), 1),
            "mean_prompt_items": sum(len(p.items) for p in prompts) / max(len(prompts), 1),
        }
        for split, pairs in held.items():
            n = max(len(pairs), 1)
            stats[f"{split}_pairs"] = len(pairs)
            stats[f"{split}_in_list"] = len(pairs & in_list)
            stats[f"{split}_in_prompt"] = len(pairs & in_prompt)
            stats[f"{split}_in_prompt_fraction"] = len(pairs & in_prompt) / n
        out[mode] = stats
    out["users_with_changed_list"] = {
        "count": sum(lists["train"][u] != lists["full"][u] for u in lists["train"]),
        "of": len(lists["train"]),
    }
    return out


def run_leakage(settings: ExperimentSettings, raw: HeteroData | None = None) -> dict[str, Any]:
    """Train MLLMRec with honest and with leaky preferences; write the gap and the exposure.

    Args:
        settings: dataset, backend, training caps, seeds, output folder.
        raw: the loaded dataset (with item text), default
            :func:`~mllmrec_pyg.experiments.common.load_raw`; preferences and
            features are prepared here for both modes.

    Returns:
        The ``results.json`` object: ``rows`` (per mode), ``exposure``,
        ``text_changed`` (users whose preference text differs) and
        ``findings`` (the gap).
    """
    raw = raw if raw is not None else load_raw(settings)
    honest = prepare_data(settings, full_history=False, raw=raw)
    leaky = prepare_data(settings, full_history=True, raw=raw)
    command = settings.command(NAME)
    jobs = []
    for seed in settings.seeds:
        jobs.append((RunSpec(TRAIN, "mllmrec", {}, seed), honest))
        jobs.append((RunSpec(FULL, "mllmrec", {}, seed, full_history=True), leaky))
        jobs.append((RunSpec(NO_PREFS, "mllmrec", {"use_user_features": False}, seed), honest))
    runs = run_jobs(settings.store(NAME, command), jobs)
    rows = summarise(runs, order=[TRAIN, FULL, NO_PREFS])
    metrics = settings.headline(honest)
    texts_a, texts_b = honest[USER].text, leaky[USER].text
    changed = sum(a != b for a, b in zip(texts_a, texts_b))

    folder = settings.experiment_dir(NAME)
    fig = bar_chart(
        rows, metrics, folder / "leakage.png", f"Leakage audit on {settings.dataset_tag()}"
    )
    return write_results(
        settings,
        NAME,
        {
            "backend": settings.text.backend,
            "exposure": exposure(raw, settings.text.token_budget),
            "text_changed": {"count": changed, "of": len(texts_a)},
            "runs": runs,
            "figures": [fig.name],
        },
        rows,
        command,
        data=honest,
        findings=findings,
    )


def findings(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The metric gap between full-history and training-history preferences, whether it
    exceeds the seed spread, and the audit's claim that the leak inflates test metrics."""
    by = {r["variant"]: r for r in obj["rows"]}
    metrics = result_metrics(obj)
    gap = {}
    for split in ("valid", "test"):
        for m in metrics:
            col = f"{split} {m}"
            a, b = by[TRAIN][col], by[FULL][col]
            gap[col] = {
                "train": a,
                "full": b,
                "gap": b - a,
                "relative": relative(b, a),
                "within_noise": within_noise(by[TRAIN], by[FULL], col),
            }
    g = gap[f"test {metrics[0]}"]
    return {
        "metrics": list(metrics),
        "gap": gap,
        "leak_inflates_test": g["gap"] > 0,
        "claims": claim(
            f"Audit: full-history preferences inflate test {short(metrics[0])}",
            g["gap"] > 0,
            f"{g['train']:.4f} -> {g['full']:.4f} ({pct(g['relative'])})",
            70,
        ),
    }


EXPERIMENT = Experiment(
    "leakage", lambda settings, data: run_leakage(settings), findings, (), False
)


__all__ = ["EXPERIMENT", "FULL", "findings", "NAME", "NO_PREFS", "TRAIN", "exposure", "run_leakage"]
