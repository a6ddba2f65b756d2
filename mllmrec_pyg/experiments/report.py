"""Write ``docs/results.md`` from the experiments' results folders.

Every number in the report is read from a ``results.json`` written by a
runner; every sentence that compares numbers is generated from them. Run::

    python -m mllmrec_pyg.experiments.report --results docs/experiments --out docs/results.md

or ``mllmrec experiment report --out docs/experiments --report-out docs/results.md``.
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mllmrec_pyg.experiments.common import DEFAULT_HOST, RESULTS_FORMAT
from mllmrec_pyg.experiments.plug_and_play import folder_name
from mllmrec_pyg.io import read_json, write_text
from mllmrec_pyg.nn.registry import BABY_R20, Derived, hosts, label, paper_numbers
from mllmrec_pyg.tables import format_table

log = logging.getLogger(__name__)

MAIN_COLUMNS = (
    "valid recall@20",
    "valid ndcg@20",
    "test recall@10",
    "test recall@20",
    "test ndcg@10",
    "test ndcg@20",
    "best epoch",
    "epochs",
)
DATASET_TITLES = {
    "movielens": "MovieLens (ml-latest-small)",
    "synthetic": "Synthetic catalog (make_synthetic defaults)",
    "mmrec-scientific": "Amazon 2018 Industrial_and_Scientific 5-core (prepare-amazon)",
}


#: the host models of the paper's RQ3 (plug-and-play) table
PAPER_HOSTS = ("FREEDOM", "SOIL", "GUME", "SMORE", "DOGE")
#: the paper's mean RQ3 gain over those hosts (Amazon Baby)
PAPER_RQ3_MEAN = "R@20 +5.05%, N@20 +3.80%"
#: R@20 on Amazon Baby of the baselines implemented here, from the paper's Table 1, as each
#: model's registration gives it (MLLMRec's own row is left out: its user text saw held-out
#: items, see the leakage audit)
PAPER_BABY_R20 = Derived(lambda: paper_numbers(BABY_R20))


def _fmt(v: Any, digits: int = 4) -> str:
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:+.2f}%"


def group_of(obj: Mapping[str, Any]) -> str:
    """The results group of a ``results.json``: its dataset tag, then its text source's tag
    and its own tag where it has them (``movielens+transformers-smollm2-budget1024``)."""
    return "+".join(p for p in (obj["dataset"], obj.get("text_tag"), obj.get("tag")) if p)


def group_title(exps: Mapping[str, Mapping[str, Any]]) -> str:
    """A group's heading: the dataset's title, the text source and the tag where set."""
    obj = next(iter(exps.values()))
    parts = [DATASET_TITLES.get(obj["dataset"], obj["dataset"])]
    s = obj["settings"]
    if obj.get("text_tag"):
        model = f" ({s['backend_model']})" if s.get("backend_model") else ""
        parts.append(
            f"preference text from the `{s['backend']}` backend{model}, token budget "
            f"{s['token_budget']}"
            + (f", user text `{s['user_text']}`" if s["user_text"] != "preferences" else "")
        )
    if obj.get("tag"):
        parts.append(f"`{obj['tag']}`")
    return ", ".join(parts)


def load_results(root: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """``{group: {experiment: results.json}}`` under ``root`` (:func:`group_of`)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    if not root.is_dir():
        raise FileNotFoundError(f"results folder {root} does not exist")
    for path in sorted(root.glob("*/*/results.json")):
        obj = read_json(path)
        if obj.get("format") != RESULTS_FORMAT:
            log.warning("%s is not an experiment result; skipped", path)
            continue
        obj["_dir"] = path.parent
        obj["_folder"] = path.parent.relative_to(root).as_posix()
        out.setdefault(group_of(obj), {})[obj["experiment"]] = obj
    return out


def _cap_note(obj: Mapping[str, Any]) -> str:
    runs = obj.get("runs") or []
    if not runs:
        return ""
    capped = sum(1 for r in runs if not r.get("stopped_early", True))
    s = obj["settings"]
    text = (
        f"Training: Adam (lr {s['lr']}), batch {s['batch_size']}, early stopping on valid "
        f"Recall@20 with patience {s['patience']}, at most {s['epochs']} epochs, "
        f"{len(s['seeds'])} seed(s) {tuple(s['seeds'])}."
    )
    if capped:
        text += (
            f" {capped} of {len(runs)} run(s) reached the epoch cap before early stopping; "
            "their numbers may still rise with more epochs."
        )
    else:
        text += f" All {len(runs)} runs stopped early, before the cap."
    elsewhere = collections.Counter(
        f"{r['variant']} ({r['device']})" for r in runs if r.get("device", "cpu") != "cpu"
    )
    if elsewhere:
        text += (
            " Trained on a GPU, the rest on the CPU: "
            + ", ".join(f"{name} x{n}" for name, n in elsewhere.items())
            + " (same code and settings; float sums in another order)."
        )
    replaced: dict[str, list[str]] = {}
    for r in runs:
        if r.get("replaces"):
            old = r["replaces"]
            replaced.setdefault(f"{r['variant']} (from {old.get('device') or 'cpu'})", []).append(
                f"{float(old['test']['recall@20']):.4f} -> {float(r['test']['recall@20']):.4f}"
            )
    if replaced:
        text += (
            " Trained again here for the per-user test, their checkpoints not having been "
            "kept; the rows use the new runs (test Recall@20, old -> new): "
            + "; ".join(f"{name}: {', '.join(v)}" for name, v in replaced.items())
            + "."
        )
    return text


def _figures(obj: Mapping[str, Any], md_dir: Path) -> list[str]:
    return [
        f"![{name}]({Path(os.path.relpath(Path(obj['_dir']) / name, md_dir)).as_posix()})"
        for name in obj.get("figures", [])
    ]


# -- one section per experiment ------------------------------------------------------------


def _noise(rows: Sequence[Mapping[str, Any]], a: str, b: str, col: str) -> str:
    """:func:`_noise_between` the rows of variants ``a`` and ``b`` (``""`` if one is missing)."""
    by = {r["variant"]: r for r in rows}
    return _noise_between(by[a], by[b], col) if a in by and b in by else ""


def _noise_between(a: Mapping[str, Any], b: Mapping[str, Any], col: str) -> str:
    """`` (smaller than the seed standard deviation)`` when rows ``a`` and ``b`` (means over
    several seeds) differ in ``col`` by less than the larger of their stds."""
    if a.get("seeds", 1) < 2:
        return ""
    spread = max(a.get(f"{col} std") or 0.0, b.get(f"{col} std") or 0.0)
    return " (smaller than the seed standard deviation)" if abs(a[col] - b[col]) < spread else ""


def _graph_table(graphs: Mapping[str, Any], title: str) -> list[str]:
    if not graphs:
        return []
    return [
        title,
        "",
        format_table(
            [{"variant": k, **v} for k, v in graphs.items()],
            ("edges", "self_loops", "mean_neighbours"),
            digits=2,
        ),
        "",
    ]


def _rs_lowers_most(f: Mapping[str, Any]) -> bool:
    """Removing RS lowers test R@20, and more than any other removal."""
    return bool(f.get("rs_largest_drop")) and f["drop"][f["largest_drop"]] > 0


def ablation_section(obj: Mapping[str, Any]) -> list[str]:
    rows = obj["rows"]
    f = obj.get("findings") or {}
    lines = [format_table(rows, MAIN_COLUMNS), ""]
    lines += _graph_table(
        obj.get("graphs") or {}, "Item graph of each variant (`data['item', 'related', 'item']`):"
    )
    if not f:
        return lines
    drops = f.get("drop", {})
    lines.append(
        f"- Test Recall@20 of full MLLMRec: {_fmt(f['full'])}; change when a component is "
        "removed: " + ", ".join(f"{v} {-d:+.4f}" for v, d in drops.items()) + "."
    )
    if f.get("every_removal_hurts"):
        lines.append("- Every removal lowers test Recall@20, as the paper reports.")
    else:
        lines.append(
            "- Not every removal hurts, unlike in the paper: "
            + ", ".join(f.get("variants_better_than_full", []))
            + " score(s) at least as high as the full model."
        )
    if f.get("largest_drop"):
        if f["drop"][f["largest_drop"]] <= 0:
            lines.append(
                "- No removal lowers test Recall@20; the paper has w/o RS lowering it most."
            )
        else:
            agree = "as in the paper" if _rs_lowers_most(f) else "where the paper has w/o RS"
            lines.append(f"- The largest drop comes from {f['largest_drop']}, {agree}.")
    if f.get("best_anchor"):
        by = {r["variant"]: r for r in rows}
        best = f["best_anchor"]
        verdict = "beats" if f.get("full_beats_anchors") else "does not beat"
        lines.append(
            f"- Full MLLMRec {verdict} every anchor; the best anchor is {best} "
            f"({_fmt(by[best]['test recall@20'])} test Recall@20)"
            + _noise(rows, "MLLMRec", best, "test recall@20")
            + "."
        )
    return lines


def _host(obj: Mapping[str, Any]) -> str:
    """The label of a plug-and-play result's host (a result that names none is the default's)."""
    return label(obj.get("host", DEFAULT_HOST))


def _host_config(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """The host settings a plug-and-play result shared by all variants: those of its first
    row's (the vanilla host's) first run."""
    rows, runs = obj.get("rows") or [], obj.get("runs") or []
    vanilla = rows[0]["variant"] if rows else None
    return next((r["config"] for r in runs if r["variant"] == vanilla), {})


def plug_and_play_section(obj: Mapping[str, Any]) -> list[str]:
    rows = obj["rows"]
    f = obj.get("findings") or {}
    host = _host(obj)
    lines = [format_table(rows, MAIN_COLUMNS), ""]
    lines += _graph_table(obj.get("graphs") or {}, "Item-item graph each variant reads:")
    cfg = _host_config(obj)
    if cfg:
        keys = ("embedding_dim", "knn_k", "dropout", "reg_weight", "num_ui_layers")
        lines += [
            f"{host} settings, shared by all variants and not tuned here: "
            + ", ".join(f"{k}={cfg[k]}" for k in keys if k in cfg)
            + ".",
            "",
        ]
    for name, v in (f.get("relative_improvement") or {}).items():
        lines.append(
            f"- {name} vs {host}: test Recall@20 {_pct(v.get('recall@20'))}"
            + _noise(rows, name, host, "test recall@20")
            + f", NDCG@20 {_pct(v.get('ndcg@20'))}"
            + _noise(rows, name, host, "test ndcg@20")
            + "."
        )
    if f.get("relative_improvement"):
        both = f.get("gr_helps_recall") and f.get("gr_helps_ndcg")
        in_paper = host in PAPER_HOSTS
        lines.append(
            "- The paper reports that the refinement improves every model it was plugged "
            "into ("
            + ", ".join(PAPER_HOSTS)
            + ") on both metrics"
            + ("" if in_paper else f"; it did not use {host}")
            + "; here it "
            + (f"does so for {host}." if both else f"does not improve both metrics of {host}.")
        )
    return lines


def sensitivity_section(obj: Mapping[str, Any]) -> list[str]:
    f = obj.get("findings") or {}
    alphas, k_cs = obj["alphas"], obj["k_cs"]
    lines = []
    for metric, grid in obj["grid"].items():
        rows = [
            {"alpha": a, **{f"K_c={k}": grid[i][j] for j, k in enumerate(k_cs)}}
            for i, a in enumerate(alphas)
        ]
        lines += [
            f"Test {metric} over alpha (rows) x K_c (columns):",
            "",
            format_table(rows, [f"K_c={k}" for k in k_cs], label="alpha"),
            "",
        ]
    curves = obj["dim_curves"]
    rows = []
    for i, d in enumerate(obj["dims"]):
        row: dict[str, Any] = {"d": d}
        for name, c in curves.items():
            row[name] = c["mean"][i]
            row[f"{name} std"] = c["std"][i]
        rows.append(row)
    lines += ["Output dimension d:", "", format_table(rows, list(curves), label="d"), ""]
    if f:
        lines.append(
            f"- Best grid point: alpha={f['best_alpha']}, K_c={f['best_k_c']} "
            f"({_fmt(f['best_value'])} {f['metric']}; the worst is {_fmt(f['worst_value'])})."
        )
        lines.append(
            "- Mean spread (max - min) of the metric along alpha "
            f"{_fmt(f['mean_spread_over_alpha'])}, along K_c {_fmt(f['mean_spread_over_k_c'])}: "
            + (
                "less sensitive to K_c than to alpha, as the paper observes."
                if f["less_sensitive_to_k_c"]
                else "not less sensitive to K_c than to alpha, unlike the paper's observation."
            )
        )
        lines.append(
            f"- Across d the best is d={f['best_d']}; test Recall@20 "
            + ("rises" if f.get("rises_to_64") else "does not rise steadily")
            + " from d=16 to d=64 (the paper: gains up to 64, then a plateau)."
        )
    return lines


def tsne_section(obj: Mapping[str, Any]) -> list[str]:
    rows = obj["rows"]
    f = obj.get("findings") or {}
    lines = [
        format_table(
            rows,
            ("users", "uniformity", "mean cosine", "valid recall@20", "test recall@20"),
            label="model",
        ),
        "",
        f"Points are coloured by {obj.get('colour', 'a user attribute')}. Uniformity is "
        "log mean exp(-2 |h_u - h_v|^2) over pairs of L2-normalised user vectors "
        "(Wang et al. 2022); lower is more uniform.",
        "",
    ]
    if f:
        baseline = obj.get("baseline", "the baseline")
        lines.append(
            (
                f"- MLLMRec's user representations are more uniform than {baseline}'s"
                if f["mllmrec_more_uniform"]
                else f"- MLLMRec's user representations are less uniform than {baseline}'s"
            )
            + f" (uniformity difference {_fmt(f['uniformity_gap'])}); the paper reads its "
            "t-SNE pictures as MLLMRec being the more uniform."
        )
    return lines


def leakage_section(obj: Mapping[str, Any]) -> list[str]:
    rows = obj["rows"]
    f = obj.get("findings") or {}
    exp = obj.get("exposure") or {}
    lines = [format_table(rows, MAIN_COLUMNS), ""]
    if exp:
        table = [
            {
                "behaviour lists": label,
                "mean list length": e["mean_list_length"],
                "mean items in prompt": e["mean_prompt_items"],
                "test pairs in prompts": f"{e['test_in_prompt']} / {e['test_pairs']}",
                "valid pairs in prompts": f"{e['valid_in_prompt']} / {e['valid_pairs']}",
            }
            for e, label in ((exp["train"], "train history"), (exp["full"], "full history (audit)"))
        ]
        lines += [
            "Held-out pairs whose item reaches the user's preference prompt (Prompt 2, "
            f"token budget {obj['settings']['token_budget']}, most recent items kept):",
            "",
            format_table(table, label="behaviour lists", digits=1),
            "",
        ]
        changed = exp.get("users_with_changed_list") or {}
        text = obj.get("text_changed") or {}
        if changed:
            lines.append(
                f"- The audit switch changes the behaviour lists of {changed['count']} of "
                f"{changed['of']} users and the preference texts of {text.get('count')} of "
                f"{text.get('of')} (backend `{obj.get('backend')}`)."
            )
    for col in ("test recall@20", "test ndcg@20"):
        gap = (f.get("gap") or {}).get(col)
        if gap:
            lines.append(
                f"- {col}: {_fmt(gap['train'])} with training-history preferences, "
                f"{_fmt(gap['full'])} with full-history ones ({_pct(gap['relative'])})"
                + _noise(rows, "train history", "full history (audit)", col)
                + "."
            )
    return lines


def compare_section(obj: Mapping[str, Any]) -> list[str]:
    rows = [dict(r) for r in obj["rows"]]
    columns = ("tuned", "valid recall@20", "test recall@20", "test ndcg@20", "epochs", "seconds")
    lines = [
        f"Each model's settings were chosen by the same validation-only search "
        f"(`mllmrec tune`, at most {obj['budget']} trained points per model, the best valid "
        "Recall@20 kept; no test metric computed), then trained with "
        f"{len(obj['settings']['seeds'])} seeds; test is read once per seed at the best-valid "
        "epoch. `tuned` lists the chosen point; `seconds` is training + evaluation per run.",
        "",
        format_table(rows, columns, label="variant"),
        "",
    ]
    sig = obj.get("significance") or {}
    f = obj.get("findings") or {}
    if f:
        gain = f["relative_gain"]
        lines.append(
            f"- {obj['proposed']} vs the best tuned baseline ({f['best_baseline']}): "
            f"test R@20 {_pct(gain['recall@20'])}, N@20 {_pct(gain['ndcg@20'])}."
        )
    for metric in ("recall@20", "ndcg@20"):
        s = sig.get(metric)
        if s:
            lines.append(
                f"- Per user ({sig['users']} test users, {metric} averaged over seeds): "
                f"{s['users better']} better, {s['users worse']} worse, mean difference "
                f"{s['mean difference']:+.4f}, paired sign-flip p = "
                f"{s['p (paired sign-flip, per user)']:.4f}."
            )
    by = {r["variant"]: r for r in rows}
    me = by.get(obj["proposed"])
    if me and "lightgcn" in by:
        lines.append(
            f"- Seconds per run (training + evaluation, same machine): {obj['proposed']} "
            f"{me['seconds']:.0f}, LightGCN {by['lightgcn']['seconds']:.0f}."
        )
    lines += paper_order_lines(rows)
    lines += tuned_refined_lines(rows)
    prefix = f"{obj['proposed']}-ablate-"
    runs = obj.get("runs") or []

    def mean_test(variant: str, metric: str, seeds: list[int]) -> float:
        vals = [r["test"][metric] for r in runs if r["variant"] == variant and r["seed"] in seeds]
        return sum(vals) / len(vals)

    mine = {r["seed"] for r in runs if r["variant"] == obj["proposed"]}
    for name in by:
        # compared on the seeds both were trained with
        seeds = sorted(r["seed"] for r in runs if r["variant"] == name and r["seed"] in mine)
        if not (me and name.startswith(prefix) and seeds):
            continue
        d = {
            m: mean_test(name, m, seeds) - mean_test(obj["proposed"], m, seeds)
            for m in ("recall@20", "ndcg@20")
        }
        lines.append(
            f"- Ablation `{name.removeprefix(prefix)}` (seed(s) {', '.join(map(str, seeds))}; "
            f"{obj['proposed']}'s chosen settings with one switch changed): test R@20 "
            f"{d['recall@20']:+.4f}, N@20 {d['ndcg@20']:+.4f} against {obj['proposed']} "
            "with the same seed(s)."
        )
    return lines


#: the two test columns the RQ3 lines compare, with their short labels
METRIC_LABELS = (("test recall@20", "R@20"), ("test ndcg@20", "N@20"))


def tuned_refined_gains(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """``{host: {"test recall@20": gain, "test ndcg@20": gain}}``: the relative test gain of
    each ``X-refined`` over ``X`` where both were tuned and seeded in the table."""
    by = {r["variant"]: r for r in rows}
    return {
        host: {
            col: by[f"{host}-refined"][col] / by[host][col] - 1.0 if by[host][col] else float("nan")
            for col, _ in METRIC_LABELS
        }
        for host in by
        if f"{host}-refined" in by
    }


def tuned_refined_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Each host ``X`` against ``X-refined`` when both were tuned and seeded in the table
    (RQ3 with each variant's settings searched separately, not shared as in plug-and-play)."""
    gains = tuned_refined_gains(rows)
    if not gains:
        return []
    out = [
        "",
        "The refined graph with each variant tuned separately (the same 6-trial search; "
        "the plug-and-play sections below share the host's settings instead):",
        "",
    ]
    for host, gain in gains.items():
        parts = [
            f"{label} {_pct(gain[col])}{_noise(rows, f'{host}-refined', host, col)}"
            for col, label in METRIC_LABELS
        ]
        out.append(f"- {host}-refined vs {host}: test " + ", ".join(parts) + ".")
    if len(gains) > 1:
        mean = _mean_gain(gains, [c for c, _ in METRIC_LABELS])
        out.append(
            f"- Mean over the {len(gains)} hosts: R@20 {_pct(mean['test recall@20'])}, "
            f"N@20 {_pct(mean['test ndcg@20'])} (the paper, Amazon Baby, 5 hosts at shared "
            f"settings: {PAPER_RQ3_MEAN})."
        )
    return out


def _mean_gain(gains: Mapping[str, Mapping[str, float]], cols: Sequence[str]) -> dict[str, float]:
    """The mean over hosts of each column in ``cols``."""
    return {c: sum(g[c] for g in gains.values()) / len(gains) for c in cols}


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's :math:`\\tau_a` of two equally long score lists (ties count as 0)."""
    n, total = len(a), 0.0
    for i in range(n):
        for j in range(i + 1, n):
            total += _sign(a[i] - a[j]) * _sign(b[i] - b[j])
    return total / (n * (n - 1) / 2)


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def paper_order_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """How the baselines rank here against the paper's Table 1 (Amazon Baby, R@20)."""
    ours = {r["variant"]: r["test recall@20"] for r in rows if r["variant"] in PAPER_BABY_R20}
    if len(ours) < 3:
        return []
    names = sorted(ours, key=lambda k: -PAPER_BABY_R20[k])
    rank_here = {k: i + 1 for i, k in enumerate(sorted(names, key=lambda k: -ours[k]))}
    table = [
        {
            "model": k,
            "paper R@20 (Baby)": PAPER_BABY_R20[k],
            "paper rank": i + 1,
            "test R@20 here": ours[k],
            "rank here": rank_here[k],
        }
        for i, k in enumerate(names)
    ]
    tau = kendall_tau([PAPER_BABY_R20[k] for k in names], [ours[k] for k in names])
    # (a, b) with a above b in the paper but below it here
    swapped = [
        f"{a} / {b}" for i, a in enumerate(names) for b in names[i + 1 :] if ours[b] > ours[a]
    ]
    return [
        "",
        "The baselines' order here against the paper's Table 1 (Amazon Baby, R@20, as the "
        "paper reports them). The datasets differ, so only the order is compared:",
        "",
        format_table(table, label="model"),
        "",
        f"- Kendall's tau between the two orders: {tau:+.2f} over {len(names)} models; "
        + (
            f"pairs ordered the other way here (paper's better one first): {', '.join(swapped)}."
            if swapped
            else "every pair is ordered as in the paper."
        ),
    ]


#: the rows of the "does a language model's text help" table: (model, user text, results
#: folder, experiment, variant); "no text" rows are the models without preference input;
#: ``{proposed}`` is the comparison's proposed model (its label in the model column)
TEXT_SOURCES = (
    ("MLLMRec", "no text (w/o RS)", "movielens", "ablation", "w/o RS"),
    ("MLLMRec", "`none` backend", "movielens", "ablation", "MLLMRec"),
    ("MLLMRec", "SmolLM2-135M", "movielens+transformers-smollm2-budget1024", "ablation", "MLLMRec"),
    ("{proposed}", "no text (mean of its items)", "movielens", "compare", "{proposed}"),
    (
        "{proposed}",
        "`none` backend",
        "movielens+none-text",
        "compare",
        "{proposed}-ablate-preference-text",
    ),
    (
        "{proposed}",
        "SmolLM2-135M",
        "movielens+transformers-smollm2-budget1024",
        "compare",
        "{proposed}-ablate-preference-text",
    ),
)


def text_sources_section(results: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """MovieLens test metrics of each model with no preference text, the offline `none`
    backend's text and a trained language model's text (empty when fewer than two of a
    model's rows exist)."""
    rows, found = [], {}
    for model, text, tag, exp, variant in TEXT_SOURCES:
        obj = results.get(tag, {}).get(exp)
        proposed = (obj or {}).get("proposed", "")
        model, variant = model.format(proposed=label(proposed)), variant.format(proposed=proposed)
        row = next((r for r in (obj or {}).get("rows", []) if r["variant"] == variant), None)
        if row is None:
            continue
        found.setdefault(model, []).append((text, row))
        rows.append(
            {
                "model": model,
                "user text": text,
                "seeds": row.get("seeds", 1),
                "test recall@20": row["test recall@20"],
                "test recall@20 std": row.get("test recall@20 std"),
                "test ndcg@20": row["test ndcg@20"],
                "test ndcg@20 std": row.get("test ndcg@20 std"),
                "results": f"`{obj['_folder']}` {variant}",
            }
        )
    found = {m: r for m, r in found.items() if len(r) > 1}
    if not found:
        return []
    rows = [r for r in rows if r["model"] in found]
    lines = [
        "## Does a language model's preference text help? (MovieLens)",
        "",
        "Each model with its settings fixed and only the user's preference input changed: "
        "none, the offline `none` backend's text (salient phrases of the training history), "
        "or text written by SmolLM2-135M-Instruct from the training history. Rows are read "
        "from the results folders named in the last column (their commands are in the "
        "sections below); means ± std over the seeds run.",
        "",
        format_table(
            rows, ("user text", "seeds", "test recall@20", "test ndcg@20", "results"), label="model"
        ),
        "",
    ]
    for model, got in found.items():
        base_text, base = got[0]
        for text, row in got[1:]:
            d = {m: row[f"test {m}"] - base[f"test {m}"] for m in ("recall@20", "ndcg@20")}
            lines.append(
                f"- {model}, {text} against {base_text}: test R@20 {d['recall@20']:+.4f} "
                f"({_pct(d['recall@20'] / base['test recall@20'])}), N@20 "
                f"{d['ndcg@20']:+.4f}" + _noise_between(row, base, "test recall@20") + "."
            )
    return lines + [""]


#: the sections of ``<results>/<dataset>/llm/README.md`` (language-model measurements on CPU,
#: each table under the ``benchmarks/llm_cpu.py`` command that measured it) the report carries
LLM_SECTIONS = ("Throughput", "NF4")


def llm_sections(root: Path, md_dir: Path) -> list[str]:
    """The :data:`LLM_SECTIONS` of every dataset's ``llm/README.md``, one heading level down."""
    out = []
    for path in sorted(root.glob("*/llm/README.md")):
        parts = re.split(r"(?m)^## ", path.read_text(encoding="utf-8"))[1:]
        kept = [p.rstrip() for p in parts if p.startswith(LLM_SECTIONS)]
        if kept:
            rel = Path(os.path.relpath(path, md_dir)).as_posix()
            out += [f"## Language model on CPU ({path.parent.parent.name})", ""]
            out += [f"From [{rel}]({rel}), which also lists the generation settings.", ""]
            out += [line for part in kept for line in (f"### {part}", "")]
    return out


def _claims(tag: str, exps: Mapping[str, Mapping[str, Any]]) -> list[dict[str, str]]:
    """One row per paper claim that the results of dataset ``tag`` can check."""
    out = []

    def add(claim: str, holds: bool | None, evidence: str) -> None:
        if holds is None:
            return
        out.append(
            {"claim": claim, "dataset": tag, "here": "yes" if holds else "no", "evidence": evidence}
        )

    def found(exp: str) -> Mapping[str, Any]:
        return (exps.get(exp) or {}).get("findings") or {}

    f = found("ablation")
    if f.get("drop"):  # an ablation run without removals has nothing to claim
        worst = min(f["drop"], key=f["drop"].get)
        add(
            "RQ2: removing any component lowers R@20",
            f["every_removal_hurts"],
            f"removal that hurts least: {worst} {-f['drop'][worst]:+.4f} test R@20",
        )
        add(
            "RQ2: removing RS lowers it most",
            _rs_lowers_most(f),
            f"largest drop: {f['largest_drop']} {-f['drop'][f['largest_drop']]:+.4f} test R@20",
        )
        by = {r["variant"]: r for r in exps["ablation"]["rows"]}
        if f.get("best_anchor"):
            add(
                "RQ1: MLLMRec beats the ID-based baselines",
                f["full_beats_anchors"],
                f"MLLMRec {_fmt(f['full'])} vs {f['best_anchor']} "
                f"{_fmt(by[f['best_anchor']]['test recall@20'])} test R@20",
            )
    if f := found("compare"):
        gain = f["relative_gain"]
        add(
            "A leakage-free language-driven model beats the best tuned baseline by 3%",
            f["beats_by_3_percent"],
            f"{exps['compare']['proposed']} vs {f['best_baseline']}: "
            f"R@20 {_pct(gain['recall@20'])}, N@20 {_pct(gain['ndcg@20'])}",
        )
    gains = {}
    for exp in (e for e in SECTIONS if e.startswith("plug_and_play") and e in exps):
        f = found(exp)
        host = _host(exps[exp])
        imp = (f.get("relative_improvement") or {}).get(f"{host} + GR")
        if imp:
            gains[host] = imp
            add(
                f"RQ3: the refined graph improves {host} (R@20 and N@20)",
                bool(f.get("gr_helps_recall") and f.get("gr_helps_ndcg")),
                f"R@20 {_pct(imp['recall@20'])}, N@20 {_pct(imp['ndcg@20'])}",
            )
    if len(gains) > 1:
        mean = _mean_gain(gains, ("recall@20", "ndcg@20"))
        add(
            f"RQ3: on average over the hosts (paper, Baby, 5 hosts: {PAPER_RQ3_MEAN})",
            mean["recall@20"] > 0 and mean["ndcg@20"] > 0,
            f"mean over {', '.join(gains)}: R@20 {_pct(mean['recall@20'])}, "
            f"N@20 {_pct(mean['ndcg@20'])}",
        )
    tuned = tuned_refined_gains((exps.get("compare") or {}).get("rows") or [])
    if len(tuned) > 1:
        mean = _mean_gain(tuned, [c for c, _ in METRIC_LABELS])
        short = [
            f"{host} ({', '.join(lbl for c, lbl in METRIC_LABELS if g[c] <= 0)})"
            for host, g in tuned.items()
            if any(g[c] <= 0 for c, _ in METRIC_LABELS)
        ]
        add(
            "RQ3, each variant tuned separately: the refined graph improves every host "
            "(R@20 and N@20)",
            not short,
            f"mean over {len(tuned)} hosts: R@20 {_pct(mean['test recall@20'])}, "
            f"N@20 {_pct(mean['test ndcg@20'])}"
            + (f"; no gain for {', '.join(short)}" if short else ""),
        )
    if f := found("sensitivity"):
        add(
            "RQ4: less sensitive to K_c than to alpha",
            f["less_sensitive_to_k_c"],
            f"mean spread {_fmt(f['mean_spread_over_k_c'])} (K_c) vs "
            f"{_fmt(f['mean_spread_over_alpha'])} (alpha)",
        )
        add(
            "RQ4: R@20 rises with d up to 64",
            f.get("rises_to_64"),
            "d curve " + ", ".join(f"{d}: {_fmt(v)}" for d, v in f["d_curve"].items()),
        )
    if f := found("tsne"):
        obj = exps["tsne"]
        by = {r["model"]: r for r in obj["rows"]}
        add(
            f"RQ5: MLLMRec's users are spread more uniformly (vs {obj['baseline']})",
            f["mllmrec_more_uniform"],
            f"uniformity {_fmt(by['MLLMRec']['uniformity'])} vs "
            f"{_fmt(by[obj['baseline']]['uniformity'])}",
        )
    if gap := (found("leakage").get("gap") or {}).get("test recall@20"):
        add(
            "Audit: full-history preferences inflate test R@20",
            gap["gap"] > 0,
            f"{_fmt(gap['train'])} -> {_fmt(gap['full'])} ({_pct(gap['relative'])})",
        )
    return out


def sections() -> dict[str, tuple[str, Any]]:
    """Experiment folder -> (section title, renderer), in report order; one plug-and-play
    section per registered host."""
    return {
        "compare": ("Every model tuned alike: the honest comparison", compare_section),
        "ablation": ("Ablation (RQ2)", ablation_section),
        **{
            folder_name(key): (
                f"Plug-and-play: {host} + graph refinement (RQ3)",
                plug_and_play_section,
            )
            for key, host in hosts().items()
        },
        "sensitivity": ("Sensitivity (RQ4)", sensitivity_section),
        "tsne": ("User representations, t-SNE (RQ5)", tsne_section),
        "leakage": ("Leakage audit", leakage_section),
    }


#: :func:`sections`, as a mapping
SECTIONS: Mapping[str, tuple[str, Any]] = Derived(sections)


# -- the document ---------------------------------------------------------------------------

AMAZON = """\
## Reproducing the paper's Amazon tables

Every runner accepts an MMRec-format folder as `--dataset`. With the Amazon
2014 files (ratings, metadata, images) and a GPU, for Baby:

```bash
# 1. raw files -> MMRec folder (5-core, per-user split, item texts, image paths)
mllmrec prepare-amazon --root raw/ --category Baby --out data/baby --images raw/baby_img
# 2. Prompt 1 on every image with Gemma 3 27B (4-bit NF4), fused with the item text
mllmrec describe-items data/baby --dataset-name Baby --backend transformers --model <gemma-3-27b-it>
# 3. the experiments; preferences (Prompt 2, training history only) are generated with the
#    same backend and stored in data/baby/generations.sqlite, so they are made only once
mllmrec experiment all --dataset data/baby --backend transformers --backend-model <gemma-3-27b-it> \\
    --alpha 0.7 --k-c 10 --device cuda --out docs/experiments
mllmrec experiment report --out docs/experiments --report-out docs/results.md
```

A model served over an OpenAI-compatible API (vLLM, Ollama's `/v1`) works the
same way with `--backend openai --backend-model gemma3:27b --backend-url
http://host:port/v1` (and `--backend openai --model ... --base-url ...` for
`describe-items`). The reference's tuned graphs are `--alpha 0.7 --k-c 10`
(Baby), `--alpha 0.4 --k-c 10` (Sports) and `--alpha 0.6 --k-c 15`
(Clothing). The default epoch cap (1000) and patience (20) are the paper's
protocol. A folder that only holds the authors' feature files
(`image_text_feat.npy`, `user_preferences_feat.npy`) runs every experiment
except the leakage audit, which needs item texts to regenerate preferences;
note that the authors' preference features were built from the full
interaction file, the *full history (audit)* setting of this package.
"""


def build_report(root: Path, md_path: Path) -> str:
    """The Markdown text of the report for the results under ``root``."""
    results = load_results(root)
    md_dir = md_path.parent
    out = [
        "# Results",
        "",
        "<!-- Generated by `python -m mllmrec_pyg.experiments.report`; do not edit by hand. -->",
        "",
        "Every table and figure below was produced by the command printed above it and read "
        f"from the `results.json` files under `{os.path.relpath(root, md_dir)}/` by "
        "`python -m mllmrec_pyg.experiments.report`. Metrics are full-ranking Recall and "
        "NDCG over all items with training items masked, at the epoch with "
        "the best valid Recall@20; rows are means over the seeds listed (± standard "
        "deviation when there are several).",
        "",
    ]
    backends = sorted(
        {e["settings"]["backend"] for exps in results.values() for e in exps.values()}
    )
    others = [f"`{b}`" for b in backends if b != "none"]
    if "none" in backends:
        out += [
            "User preferences come from the offline `none` backend (the salient phrases of "
            "each user's training history, no language model)"
            + (
                f" except where a section's command names another backend ({', '.join(others)})"
                if others
                else ""
            )
            + ", and no image descriptions exist for these datasets: the numbers measure the "
            "pipeline and the graph refinement, not Gemma 3.",
            "",
        ]
    elif backends:
        out += [f"Preference backends: {', '.join(others)}.", ""]
    first = next((e for exps in results.values() for e in exps.values()), None)
    if first is not None:
        v = first["versions"]
        out += [
            f"Software: Python {v['python']}, torch {v['torch']}, torch_geometric "
            f"{v['torch_geometric']}, mllmrec-pyg {v['mllmrec_pyg']}; training on "
            + ", ".join(
                sorted(
                    {e["settings"]["device"] for exps in results.values() for e in exps.values()}
                )
            )
            + ".",
            "",
        ]
    order = sorted(results, key=lambda t: (t != "movielens", t))
    claims = [c for tag in order for c in _claims(tag, results[tag])]
    if claims:
        out += [
            "## The paper's claims, checked here",
            "",
            'Each row is generated from the findings of the experiment below it; "here" '
            "compares means over the seeds run, without a significance test.",
            "",
            format_table(claims, ("dataset", "here", "evidence"), label="claim"),
            "",
        ]
    out += text_sources_section(results)
    out += llm_sections(root, md_dir)
    for tag in order:
        exps = results[tag]
        any_obj = next(iter(exps.values()))
        d = any_obj.get("data") or {}
        title = group_title(exps)
        out += [f"## {title}", ""]
        if d:
            out += [
                f"{d['users']} users, {d['items']} items; {d['train']} / {d['valid']} / "
                f"{d['test']} train / valid / test pairs (5-core, per-user split).",
                "",
            ]
        for exp, (heading, render) in SECTIONS.items():
            if exp not in exps:
                continue
            obj = exps[exp]
            out += [f"### {heading}", "", "```bash", obj["command"], "```", ""]
            note = _cap_note(obj)
            if note:
                out += [note, ""]
            out += render(obj)
            out += [""] + _figures(obj, md_dir) + [""]
    out.append(AMAZON)
    return "\n".join(out).rstrip() + "\n"


def write_report(root: str | os.PathLike, md_path: str | os.PathLike) -> Path:
    """Write the report for ``root`` to ``md_path`` atomically."""
    root, md_path = Path(root), Path(md_path)
    return write_text(md_path, build_report(root, md_path))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="docs/experiments", help="results root")
    parser.add_argument("--out", default="docs/results.md", help="Markdown file to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    print(f"wrote {write_report(args.results, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = [
    "build_report",
    "load_results",
    "tuned_refined_gains",
    "tuned_refined_lines",
    "write_report",
]
