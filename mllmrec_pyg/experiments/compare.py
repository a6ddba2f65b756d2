"""The honest comparison: every model tuned by the same validation-only search, test read once.

For each candidate (:data:`mllmrec_pyg.tuning.CANDIDATES`, declared by the models'
registrations):

1. :func:`~mllmrec_pyg.tuning.tune` chooses its settings on valid Recall@20
   with the same trial budget, epoch cap and patience as every other model
   (the search is stored and reused);
2. the chosen settings are trained once per seed, and test metrics are read
   at the best-valid epoch;
3. per-user test Recall@20 and NDCG@20 (averaged over the seeds) give a
   paired sign-flip randomisation test of the proposed model against the
   best baseline;
4. with ``ablation_seeds``, the proposed model's ablation: its chosen
   settings with one switch changed (the ``ablations`` of its registration,
   :func:`ablations_of`), not searched again,
   rows ``<proposed>-ablate-<name>`` beside it (never a baseline);
5. with ``rerank``, every trained run (every model, the ablations too) gets the same
   post-hoc re-ranking, its two weights chosen on validation (:mod:`mllmrec_pyg.rerank`):
   the rows and the per-user test are then the re-ranked models'. The searches are not
   changed: each model's settings are chosen as without it.

Nothing held out reaches an input: features and graphs come from the
pipeline, which reads training pairs only.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from mllmrec_pyg.config import GraphConfig
from mllmrec_pyg.experiments.common import (
    PROPOSED,
    Experiment,
    ExperimentSettings,
    Option,
    RunSpec,
    claim,
    pct,
    prepare_data,
    relative,
    result_metrics,
    run_jobs,
    short,
    summarise,
    text_source,
    within_noise,
    write_results,
)
from mllmrec_pyg.experiments.plots import bar_chart
from mllmrec_pyg.nn.registry import (
    BABY_R20,
    Ablation,
    Derived,
    label,
    make_config,
    model_class,
    model_spec,
    paper_numbers,
    point_text,
)
from mllmrec_pyg.runs import per_user_tensors, summary
from mllmrec_pyg.tuning import CANDIDATES, TuneResult, candidate, draw, read_tuned, tune

log = logging.getLogger(__name__)

NAME = "compare"
#: the model whose seconds per run the proposed model's are shown beside
SPEED_REFERENCE = "lightgcn"
#: R@20 on Amazon Baby of the baselines implemented here, from the paper's Table 1, as each
#: model's registration gives it (MLLMRec's own row is left out: its user text saw held-out
#: items, see the leakage audit)
PAPER_BABY_R20 = Derived(lambda: paper_numbers(BABY_R20))
#: the default proposed model's ablation at its chosen settings: name -> (graph changes,
#: model changes); a switch that the chosen settings already have is skipped
ABLATIONS: Mapping[str, Ablation] = Derived(lambda: ablations_of(PROPOSED))


def ablations_of(key: str) -> dict[str, Ablation]:
    """The ablation switches of candidate ``key``'s model (``ablations`` of its registration)."""
    return dict(model_spec(candidate(key).model).ablations)


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
    proposed: str | None = None,
    trials: int | None = None,
    tuned_dir: str | None = None,
    ablation_seeds: list[int] | None = None,
    ablations: list[str] | None = None,
    rerank: bool = False,
    chosen_dir: str | None = None,
) -> dict[str, Any]:
    """Tune every model with one budget, train the choices over ``settings.seeds``, test once.

    Args:
        settings: dataset, text, base graph, epoch cap and patience, seeds, output.
        data: the prepared dataset (item and user features), default
            :func:`~mllmrec_pyg.experiments.common.prepare_data`.
        models: candidate keys (default: every candidate).
        proposed: the candidate whose win is tested against the best baseline
            (default :data:`~mllmrec_pyg.experiments.common.PROPOSED`).
        trials: the search budget of every model (default 6).
        tuned_dir: root of the stored searches (default ``<out>/tuned``).
        ablation_seeds: train the proposed model's ablations (:func:`ablations_of`) at
            its chosen settings with these seeds (``None``: no ablation).
        ablations: the ablation names to train (default: all).
        rerank: give every run the post-hoc re-ranking chosen on validation
            (:mod:`mllmrec_pyg.rerank`); the results then read the re-ranked models.
        chosen_dir: take each model's chosen settings from the finished search
            ``<chosen_dir>/<dataset tag>/<key>.json`` as it stands (e.g. searched on
            features encoded on another machine, whose trial runs are not reusable here)
            instead of searching; its budget must be ``trials``. The results name the file.

    Returns:
        The ``results.json`` object: ``rows`` (mean ± std over seeds, with the
        tuned settings and training seconds), ``tuned`` (each model's chosen
        point), ``significance`` and ``findings``.
    """
    proposed, trials = proposed or PROPOSED, trials or 6
    keys = list(models or CANDIDATES)
    for key in keys:
        candidate(key)
    known = ablations_of(proposed) if proposed in CANDIDATES else {}
    unknown = sorted(set(ablations or ()) - set(known))
    if unknown:
        raise ValueError(f"unknown ablation(s) {unknown}; choose from {sorted(known)}")
    default_tuned = str(Path(settings.out) / "tuned")
    tuned_dir = tuned_dir or default_tuned
    command = settings.command(
        NAME,
        [
            "--models",
            *keys,
            "--trials",
            str(trials),
            *(["--tuned-dir", tuned_dir] if tuned_dir != default_tuned else []),
            *(["--ablation-seeds", *map(str, ablation_seeds)] if ablation_seeds else []),
            *(["--ablations", *ablations] if ablation_seeds and ablations else []),
            *(["--rerank"] if rerank else []),
            *(["--chosen-dir", chosen_dir] if chosen_dir else []),
        ],
    )
    data = data if data is not None else prepare_data(settings)
    metrics = settings.headline(data)
    store = settings.store(NAME, command)
    jobs: list[tuple[RunSpec, HeteroData]] = []
    tuned: dict[str, Any] = {}
    chosen_of: dict[str, dict[str, Any]] = {}
    for key in keys:
        if chosen_dir is not None:
            search, source = chosen_search(chosen_dir, settings.dataset_tag(), key, trials)
        else:
            search, source = (
                tune(
                    key,
                    settings.data,
                    settings.text,
                    settings.graph,
                    settings.train,
                    trials=trials,
                    out=tuned_dir,
                    cache=settings.cache,
                    data=data,
                    command=command,
                ),
                None,
            )
        chosen = chosen_of[key] = search.settings()
        tuned[key] = {
            "point": search.best["point"],
            f"valid {metrics[0]}": search.best["valid"][metrics[0]],
            "trials": len(search.trials),
            "search seconds": sum(t["seconds"] for t in search.trials),
            **({"searched in": source} if source else {}),
        }
        jobs += [
            (spec, data)
            for spec in chosen_runs(key, chosen, settings.graph, settings.seeds, rerank)
        ]
    # each new run stores its per-user test metrics (the per-user test below needs the
    # best baseline's, known only once every run is done)
    runs = run_jobs(store, jobs, per_user=True)
    ablated = []
    if ablation_seeds and proposed in tuned:
        more = ablation_jobs(
            proposed, chosen_of[proposed], settings.graph, ablation_seeds, ablations, rerank
        )
        ablated = [spec.variant for spec in more]
        runs += run_jobs(store, [(spec, data) for spec in more])
    order = [*keys, *dict.fromkeys(ablated)]
    rows = summarise(runs, order=order)
    users: dict[str, list[dict[str, Tensor]]] = {}
    while (best := best_baseline(rows, proposed, metrics[0])) is not None and proposed in tuned:
        # a stored run without per-user metrics and without a checkpoint is trained again,
        # which replaces it in the store: the rows are then summarised anew, so the table
        # and the test read the same models, and the best baseline is read again
        users, retrained = {}, False
        for i, (spec, _) in enumerate(jobs):
            if spec.variant in (proposed, best):
                now = store.with_per_user(spec, data)
                users.setdefault(spec.variant, []).append(per_user_tensors(now))
                retrained |= now.get("replaces") != runs[i].get("replaces")
                runs[i] = summary(now, spec)
        if not retrained:
            break
        rows = summarise(runs, order=order)
    for row in rows:
        point = tuned.get(row["variant"], {}).get("point", {})
        row["tuned"] = point_text(point)
        if row["variant"].startswith(f"{proposed}-ablate-"):
            row["tuned"] = f"as {proposed}, one switch changed"
    significance = _significance(rows, users, proposed, metrics)  # per user: needs the runs
    folder = settings.experiment_dir(NAME)
    fig = bar_chart(
        rows, metrics, folder / "compare.png", f"Tuned models on {settings.dataset_tag()}: test"
    )
    return write_results(
        settings,
        NAME,
        {
            "budget": trials,
            "proposed": proposed,
            "rerank": rerank,
            "tuned": tuned,
            "runs": runs,
            "significance": significance,
            "figures": [fig.name],
        },
        rows,
        command,
        data=data,
        findings=findings,
    )


def chosen_search(
    folder: str | Path, dataset_tag: str, key: str, trials: int
) -> tuple[TuneResult, str]:
    """The finished search of candidate ``key`` in ``<folder>/<dataset_tag>/<key>.json``,
    taken as it stands, and the file's path.

    Raises:
        ValueError: no such file, another candidate's search, or another budget (naming
            the file).
    """
    path = Path(folder) / dataset_tag / f"{key}.json"
    if not path.is_file():
        raise ValueError(f"{path}: no stored search of {key!r} (run `mllmrec tune` first)")
    obj = read_tuned(path)
    if obj.get("key") != key:
        raise ValueError(f"{path}: the search of {obj.get('key')!r}, not {key!r}")
    if obj.get("budget") != trials:
        raise ValueError(
            f"{path}: searched with a budget of {obj.get('budget')} trials, not {trials}: "
            "every compared model must have the same budget"
        )
    points = draw(candidate(key), trials, obj.get("seed", 0))  # a small grid has fewer
    if len(obj["trials"]) < len(points):
        raise ValueError(f"{path}: {len(obj['trials'])} of {len(points)} trials finished")
    return TuneResult(key, obj["trials"], obj["best"]), str(path)


def chosen_runs(
    key: str,
    chosen: dict[str, Any],
    base_graph: GraphConfig,
    seeds: Sequence[int],
    rerank: bool = False,
) -> list[RunSpec]:
    """The runs of candidate ``key`` at its tuned settings ``chosen``, one per seed (each
    with the post-hoc re-ranking of :mod:`mllmrec_pyg.rerank` where ``rerank``)."""
    cand = candidate(key)
    graph = chosen.get("graph")
    g = GraphConfig(**{**base_graph.as_dict(), **graph}) if graph else None
    config = {k: v for k, v in chosen["model"].items() if k != "seed"}
    train = {k: chosen["train"][k] for k in ("lr", "batch_size")}
    return [RunSpec(key, cand.model, config, seed, train, g, rerank=rerank) for seed in seeds]


def ablation_jobs(
    proposed: str,
    chosen: dict[str, Any],
    base_graph: GraphConfig,
    seeds: Sequence[int],
    names: Sequence[str] | None = None,
    rerank: bool = False,
) -> list[RunSpec]:
    """The proposed model's chosen settings with one of its ablation switches changed.

    Args:
        proposed: the candidate key.
        chosen: its tuned settings (:meth:`~mllmrec_pyg.tuning.TuneResult.settings`).
        base_graph: the experiment's item graph (``chosen["graph"]`` overrides it).
        seeds: training seeds.
        names: the ablations to train (default: all of :func:`ablations_of`).
        rerank: give each run the post-hoc re-ranking (as the compared models get it).
    """

    def norm(model: dict[str, Any]) -> dict[str, Any]:  # JSON turned the edge type into a list
        graph = model.get("item_graph")
        return {**model, "item_graph": tuple(graph)} if graph is not None else model

    known = ablations_of(proposed)
    unknown = sorted(set(names or ()) - set(known))
    if unknown:
        raise ValueError(f"unknown ablation(s) {unknown}; choose from {sorted(known)}")
    cand = candidate(proposed)
    base = norm({k: v for k, v in chosen["model"].items() if k != "seed"})
    graph = GraphConfig(**{**base_graph.as_dict(), **(chosen.get("graph") or {})})
    train = {k: chosen["train"][k] for k in ("lr", "batch_size")}
    specs = []
    for name, (graph_change, model_change) in known.items():
        if names and name not in names:
            continue
        model = norm({**base, **model_change})
        g = dataclasses.replace(graph, **graph_change)
        if model == base and g == graph:
            continue  # the chosen settings already are this variant
        try:
            make_config(cand.model, model)
        except ValueError as exc:
            log.warning("ablation %s skipped: %s", name, exc)
            continue
        for seed in seeds:
            specs.append(
                RunSpec(
                    f"{proposed}-ablate-{name}", cand.model, model, seed, train, g, rerank=rerank
                )
            )
    return specs


def best_baseline(
    rows: list[dict[str, Any]], proposed: str, metric: str = "recall@20"
) -> str | None:
    """The baseline with the best mean test ``metric``. The proposed model's own ablations
    (``<proposed>-...``) are not baselines: they are reported beside it."""
    by = {r["variant"]: r for r in rows}
    baselines = [v for v in by if v != proposed and not v.startswith(f"{proposed}-")]
    if proposed not in by or not baselines:
        return None
    return max(baselines, key=lambda v: by[v][f"test {metric}"])


def _significance(
    rows: list[dict[str, Any]],
    users: dict[str, list[dict[str, Tensor]]],
    proposed: str,
    metrics: Sequence[str],
) -> dict[str, Any]:
    best = best_baseline(rows, proposed, metrics[0])
    if best is None or proposed not in users:
        return {}
    out: dict[str, Any] = {"against": best, "users": None}
    for metric in metrics:
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


def findings(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What the table of a comparison's ``results.json`` says.

    Whether the proposed model beats the best tuned baseline by at least 3% on Recall and
    NDCG at the monitored cut-off (with the per-user test of ``significance``); its
    ablations against it on the seeds both were trained with; each ``X-refined`` against
    ``X`` (RQ3 with each variant tuned separately); the baselines' order against the
    paper's Table 1; seconds per run against :data:`SPEED_REFERENCE`.
    """
    rows, runs, proposed = obj["rows"], obj.get("runs") or [], obj["proposed"]
    metrics = result_metrics(obj)
    by = {r["variant"]: r for r in rows}
    out: dict[str, Any] = {"metrics": list(metrics)}
    best = best_baseline(rows, proposed, metrics[0])
    sig = obj.get("significance") or {}
    claims = []
    if best is not None:
        gain = {m: relative(by[proposed][f"test {m}"], by[best][f"test {m}"]) for m in metrics}
        out.update(
            best_baseline=best,
            relative_gain=gain,
            beats_best_baseline=all(g > 0 for g in gain.values()),
            beats_by_3_percent=all(g >= 0.03 for g in gain.values()),
        )
        out["significant_at_0.05"] = bool(sig) and all(
            sig[m]["p (paired sign-flip, per user)"] < 0.05 for m in metrics
        )
        claims += claim(
            "A leakage-free language-driven model beats the best tuned baseline by 3%",
            out["beats_by_3_percent"],
            f"{proposed} vs {best}: " + ", ".join(f"{short(m)} {pct(gain[m])}" for m in metrics),
            20,
        )
    if proposed in by and SPEED_REFERENCE in by:
        out["seconds"] = {v: by[v]["seconds"] for v in (proposed, SPEED_REFERENCE)}
    out["paper_order"] = paper_order(rows, metrics[0])
    tuned = tuned_refined(rows, metrics)
    out["tuned_refined"] = tuned
    if len(tuned["gains"]) > 1:
        short_of = tuned["no_gain"]
        claims += claim(
            "RQ3, each variant tuned separately: the refined graph improves every host "
            f"({' and '.join(short(m) for m in metrics)})",
            not short_of,
            f"mean over {len(tuned['gains'])} hosts: "
            + ", ".join(f"{short(m)} {pct(tuned['mean'][m])}" for m in metrics)
            + (
                "; no gain for "
                + ", ".join(f"{h} ({', '.join(map(short, ms))})" for h, ms in short_of.items())
                if short_of
                else ""
            ),
            40,
        )
    out["ablations"] = ablation_deltas(runs, proposed, metrics)
    out["text_rows"] = text_rows(obj, proposed)
    out["claims"] = claims
    return out


def ablation_deltas(
    runs: Sequence[Mapping[str, Any]], proposed: str, metrics: Sequence[str]
) -> list[dict[str, Any]]:
    """Each ``<proposed>-ablate-<name>`` against the proposed model, compared on the seeds
    both were trained with: ``{"name", "seeds", "delta": {metric: mean test difference}}``."""
    prefix = f"{proposed}-ablate-"
    mine = {r["seed"] for r in runs if r["variant"] == proposed}

    def mean_test(variant: str, metric: str, seeds: list[int]) -> float:
        vals = [r["test"][metric] for r in runs if r["variant"] == variant and r["seed"] in seeds]
        return sum(vals) / len(vals)

    out = []
    for name in dict.fromkeys(r["variant"] for r in runs if r["variant"].startswith(prefix)):
        seeds = sorted(r["seed"] for r in runs if r["variant"] == name and r["seed"] in mine)
        if seeds:
            delta = {m: mean_test(name, m, seeds) - mean_test(proposed, m, seeds) for m in metrics}
            out.append({"name": name.removeprefix(prefix), "seeds": seeds, "delta": delta})
    return out


def tuned_refined(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> dict[str, Any]:
    """Each host ``X`` against ``X-refined`` where both were tuned and seeded in the table:
    ``gains`` (``{host: {metric: relative test gain}}``), ``within_noise`` (the same keys:
    whether the gain is smaller than the seed spread), their ``mean`` over hosts and the
    hosts with ``no_gain`` on some metric."""
    by = {r["variant"]: r for r in rows}
    hosts = [h for h in by if f"{h}-refined" in by]
    gains = {
        h: {
            m: by[f"{h}-refined"][f"test {m}"] / by[h][f"test {m}"] - 1.0
            if by[h][f"test {m}"]
            else float("nan")
            for m in metrics
        }
        for h in hosts
    }
    noise = {
        h: {m: within_noise(by[f"{h}-refined"], by[h], f"test {m}") for m in metrics} for h in hosts
    }
    mean = {m: sum(g[m] for g in gains.values()) / len(gains) for m in metrics} if gains else {}
    no_gain = {h: [m for m in metrics if g[m] <= 0] for h, g in gains.items()}
    return {
        "gains": gains,
        "within_noise": noise,
        "mean": mean,
        "no_gain": {h: ms for h, ms in no_gain.items() if ms},
    }


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's :math:`\\tau_a` of two equally long score lists (ties count as 0)."""
    n, total = len(a), 0.0
    for i in range(n):
        for j in range(i + 1, n):
            total += _sign(a[i] - a[j]) * _sign(b[i] - b[j])
    return total / (n * (n - 1) / 2)


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def paper_order(rows: Sequence[Mapping[str, Any]], metric: str) -> dict[str, Any] | None:
    """How the baselines rank here against the paper's Table 1 (Amazon Baby, R@20): the
    table, Kendall's tau and the pairs ordered the other way (``None`` below 3 models)."""
    paper = PAPER_BABY_R20
    ours = {r["variant"]: r[f"test {metric}"] for r in rows if r["variant"] in paper}
    if len(ours) < 3:
        return None
    names = sorted(ours, key=lambda k: -paper[k])
    rank_here = {k: i + 1 for i, k in enumerate(sorted(names, key=lambda k: -ours[k]))}
    table = [
        {
            "model": k,
            "paper R@20 (Baby)": paper[k],
            "paper rank": i + 1,
            f"test {short(metric)} here": ours[k],
            "rank here": rank_here[k],
        }
        for i, k in enumerate(names)
    ]
    return {
        "table": table,
        "tau": kendall_tau([paper[k] for k in names], [ours[k] for k in names]),
        "models": len(names),
        # (a, b) with a above b in the paper but below it here
        "swapped": [
            f"{a} / {b}" for i, a in enumerate(names) for b in names[i + 1 :] if ours[b] > ours[a]
        ],
    }


def text_rows(obj: Mapping[str, Any], proposed: str) -> list[dict[str, Any]]:
    """The proposed model's row and its ablations that differ from it in reading the users'
    preference text: ``{"model", "variant", "text"}`` (``text``: the text source, or
    ``"no text"``)."""
    runs = obj.get("runs") or []
    model = next((r["model"] for r in runs if r["variant"] == proposed), None)
    if model is None:
        return []

    def reads_text(variant: str) -> bool:
        run = next(r for r in runs if r["variant"] == variant)
        config = {k: tuple(v) if isinstance(v, list) else v for k, v in run["config"].items()}
        return "users" in model_class(run["model"]).requires(make_config(run["model"], config))

    mine = reads_text(proposed)
    variants = [proposed] + [
        v
        for v in dict.fromkeys(r["variant"] for r in runs)
        if v.startswith(f"{proposed}-ablate-") and reads_text(v) != mine
    ]
    source = text_source(obj["settings"])
    return [
        {"model": label(model), "variant": v, "text": source if reads_text(v) else "no text"}
        for v in variants
    ]


EXPERIMENT = Experiment(
    "compare",
    run_compare,
    findings,
    (
        Option("--models", "models", "candidate names (default: all)", {"nargs": "+"}),
        Option("--proposed", "proposed", f"the model tested for a win (default: {PROPOSED})"),
        Option("--trials", "trials", "search budget per model (default: 6)", {"type": int}),
        Option("--tuned-dir", "tuned_dir", "root of the stored searches (default: <out>/tuned)"),
        Option(
            "--ablation-seeds",
            "ablation_seeds",
            "also train the proposed model's ablation (one switch changed at its chosen "
            "settings) with these seeds",
            {"type": int, "nargs": "+"},
        ),
        Option(
            "--ablations", "ablations", "which ablation switches (default: all)", {"nargs": "+"}
        ),
        Option(
            "--chosen-dir",
            "chosen_dir",
            "take each model's chosen settings from the finished searches under this "
            "root (<root>/<dataset tag>/<model>.json) as they stand, instead of searching",
        ),
        Option(
            "--rerank",
            "rerank",
            "give every run the same post-hoc re-ranking (co-purchase prior + log popularity, "
            "weights chosen on validation; mllmrec_pyg.rerank)",
            {"action": "store_true"},
        ),
    ),
)


__all__ = [
    "ABLATIONS",
    "EXPERIMENT",
    "SPEED_REFERENCE",
    "ablation_deltas",
    "kendall_tau",
    "paper_order",
    "tuned_refined",
    "NAME",
    "PROPOSED",
    "ablation_jobs",
    "ablations_of",
    "chosen_runs",
    "chosen_search",
    "findings",
    "run_compare",
    "sign_flip_test",
]
