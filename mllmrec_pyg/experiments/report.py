"""Write ``docs/results.md`` from the experiments' results folders.

Every number and every sentence that compares numbers in the report is read
from the ``findings`` of a ``results.json``, written by the experiment that
produced it (:attr:`~mllmrec_pyg.experiments.common.Experiment.findings`);
this module only renders them. A result of an older format has its findings
computed again from its stored rows and runs when it is read
(:func:`~mllmrec_pyg.experiments.common.refresh`; ``mllmrec experiment refresh``
rewrites the files). Run::

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

from mllmrec_pyg.experiments import EXPERIMENTS
from mllmrec_pyg.experiments.common import (
    OLDER_FORMATS,
    RESULTS_FORMAT,
    pct,
    refresh,
    result_metrics,
    short,
    within_noise,
)
from mllmrec_pyg.experiments.plug_and_play import PAPER_RQ3_MEAN, folder_name, mean_over_hosts
from mllmrec_pyg.io import read_json, write_text
from mllmrec_pyg.nn.registry import Derived, hosts, label
from mllmrec_pyg.tables import format_table

log = logging.getLogger(__name__)

DATASET_TITLES = {
    "movielens": "MovieLens (ml-latest-small)",
    "synthetic": "Synthetic catalog (make_synthetic defaults)",
    "mmrec-scientific": "Amazon 2018 Industrial_and_Scientific 5-core (prepare-amazon)",
}
#: short dataset names in headings
DATASET_NAMES = {"movielens": "MovieLens", "synthetic": "synthetic catalog"}
NOISE = " (smaller than the seed standard deviation)"


def _fmt(v: Any, digits: int = 4) -> str:
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _long(metric: str) -> str:
    """``recall@20`` -> ``Recall@20``, ``ndcg@20`` -> ``NDCG@20``."""
    name, _, k = metric.partition("@")
    return f"{'NDCG' if name == 'ndcg' else name.capitalize()}@{k}"


def _noise(flag: bool | None) -> str:
    return NOISE if flag else ""


def main_columns(obj: Mapping[str, Any]) -> list[str]:
    """The columns of an experiment's main table: valid Recall and NDCG at the monitored
    cut-off, the test metrics of the table, best epoch and epochs."""
    row = obj["rows"][0]
    r, n = (obj.get("findings") or {}).get("metrics") or result_metrics(obj)
    test = [c for c in row if c.startswith("test ") and not c.endswith(" std")]
    return [f"valid {r}", f"valid {n}", *test, "best epoch", "epochs"]


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
    """``{group: {experiment: results.json}}`` of every result under ``root``
    (:func:`group_of`); a result of an older format gets its findings computed again."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    if not root.is_dir():
        raise FileNotFoundError(f"results folder {root} does not exist")
    for path in sorted(root.glob("*/*/results.json")):
        obj = read_json(path)
        if obj.get("format") in OLDER_FORMATS:
            obj = refresh(obj, EXPERIMENTS)
        elif obj.get("format") != RESULTS_FORMAT:
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
    metric = ((obj.get("findings") or {}).get("metrics") or result_metrics(obj))[0]
    text = (
        f"Training: Adam (lr {s['lr']}), batch {s['batch_size']}, early stopping on valid "
        f"{_long(metric)} with patience {s['patience']}, at most {s['epochs']} epochs, "
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
                f"{float(old['test'][metric]):.4f} -> {float(r['test'][metric]):.4f}"
            )
    if replaced:
        text += (
            " Trained again here for the per-user test, their checkpoints not having been "
            f"kept; the rows use the new runs (test {_long(metric)}, old -> new): "
            + "; ".join(f"{name}: {', '.join(v)}" for name, v in replaced.items())
            + "."
        )
    return text


def _figures(obj: Mapping[str, Any], md_dir: Path) -> list[str]:
    return [
        f"![{name}]({Path(os.path.relpath(Path(obj['_dir']) / name, md_dir)).as_posix()})"
        for name in obj.get("figures", [])
    ]


# -- one section per experiment: each renders its result's findings ---------------------------


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


def ablation_section(obj: Mapping[str, Any]) -> list[str]:
    f = obj.get("findings") or {}
    lines = [format_table(obj["rows"], main_columns(obj)), ""]
    lines += _graph_table(
        obj.get("graphs") or {}, "Item graph of each variant (`data['item', 'related', 'item']`):"
    )
    if not f:
        return lines
    metric = f["metric"].split()[1]
    drops = f.get("drop", {})
    lines.append(
        f"- Test {_long(metric)} of full MLLMRec: {_fmt(f['full'])}; change when a component "
        "is removed: " + ", ".join(f"{v} {-d:+.4f}" for v, d in drops.items()) + "."
    )
    if f.get("every_removal_hurts"):
        lines.append(f"- Every removal lowers test {_long(metric)}, as the paper reports.")
    else:
        lines.append(
            "- Not every removal hurts, unlike in the paper: "
            + ", ".join(f.get("variants_better_than_full", []))
            + " score(s) at least as high as the full model."
        )
    if f.get("largest_drop"):
        if drops[f["largest_drop"]] <= 0:
            lines.append(
                f"- No removal lowers test {_long(metric)}; the paper has w/o RS lowering it most."
            )
        else:
            agree = "as in the paper" if f["rs_largest_drop"] else "where the paper has w/o RS"
            lines.append(f"- The largest drop comes from {f['largest_drop']}, {agree}.")
    if f.get("best_anchor"):
        verdict = "beats" if f.get("full_beats_anchors") else "does not beat"
        lines.append(
            f"- Full MLLMRec {verdict} every anchor; the best anchor is {f['best_anchor']} "
            f"({_fmt(f['best_anchor_value'])} test {_long(metric)})"
            + _noise(f.get("best_anchor_within_noise"))
            + "."
        )
    return lines


def _host_config(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """The host settings a plug-and-play result shared by all variants: those of its first
    row's (the vanilla host's) first run."""
    rows, runs = obj.get("rows") or [], obj.get("runs") or []
    vanilla = rows[0]["variant"] if rows else None
    return next((r["config"] for r in runs if r["variant"] == vanilla), {})


def plug_and_play_section(obj: Mapping[str, Any]) -> list[str]:
    f = obj.get("findings") or {}
    host = f.get("host") or obj["rows"][0]["variant"]
    lines = [format_table(obj["rows"], main_columns(obj)), ""]
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
        noise = f["within_noise"][name]
        lines.append(
            f"- {name} vs {host}: "
            + ", ".join(
                f"{'test ' if i == 0 else ''}{_long(m)} {pct(v.get(m))}{_noise(noise[m])}"
                for i, m in enumerate(f["metrics"])
            )
            + "."
        )
    if f.get("relative_improvement"):
        both = f.get("gr_helps_recall") and f.get("gr_helps_ndcg")
        lines.append(
            "- The paper reports that the refinement improves every model it was plugged "
            "into ("
            + ", ".join(f["paper_hosts"])
            + ") on both metrics"
            + ("" if host in f["paper_hosts"] else f"; it did not use {host}")
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
            f"- Across d the best is d={f['best_d']}; test {_long(f['metric'].split()[1])} "
            + ("rises" if f.get("rises_to_64") else "does not rise steadily")
            + " from d=16 to d=64 (the paper: gains up to 64, then a plateau)."
        )
    return lines


def tsne_section(obj: Mapping[str, Any]) -> list[str]:
    rows = obj["rows"]
    f = obj.get("findings") or {}
    metric = [c for c in rows[0] if c.startswith("valid ")][0].split()[1]
    lines = [
        format_table(
            rows,
            ("users", "uniformity", "mean cosine", f"valid {metric}", f"test {metric}"),
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
    f = obj.get("findings") or {}
    exp = obj.get("exposure") or {}
    lines = [format_table(obj["rows"], main_columns(obj)), ""]
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
    for col in (f"test {m}" for m in f.get("metrics", ())):
        gap = f["gap"][col]
        lines.append(
            f"- {col}: {_fmt(gap['train'])} with training-history preferences, "
            f"{_fmt(gap['full'])} with full-history ones ({pct(gap['relative'])})"
            + _noise(gap.get("within_noise"))
            + "."
        )
    return lines


def compare_section(obj: Mapping[str, Any]) -> list[str]:
    f = obj.get("findings") or {}
    metrics = f.get("metrics") or result_metrics(obj)
    proposed = obj["proposed"]
    columns = ("tuned", f"valid {metrics[0]}", *(f"test {m}" for m in metrics))
    lines = [
        f"Each model's settings were chosen by the same validation-only search "
        f"(`mllmrec tune`, at most {obj['budget']} trained points per model, the best valid "
        f"{_long(metrics[0])} kept; no test metric computed), then trained with "
        f"{len(obj['settings']['seeds'])} seeds; test is read once per seed at the best-valid "
        "epoch. `tuned` lists the chosen point; `seconds` is training + evaluation per run.",
    ]
    elsewhere = {
        k: t["searched in"] for k, t in (obj.get("tuned") or {}).items() if "searched in" in t
    }
    if elsewhere:
        lines[-1] += (
            f" The searches of {', '.join(elsewhere)} were taken as stored "
            f"(`--chosen-dir`: {', '.join(sorted({str(Path(p).parent) for p in elsewhere.values()}))}),"
            " not run again here."
        )
    if obj.get("rerank"):
        lines[-1] += (
            " **Re-ranked:** every run (every model alike) then got the same post-hoc "
            "re-ranking, the co-purchase prior and the log popularity of the training pairs "
            "added to its scores, each weighted 0, 0.5, 1, 2 or 4 times the model's mean "
            "per-user score spread, the pair chosen on validation per run "
            "(`--rerank`, `mllmrec_pyg.rerank`); every valid and test number below, and the "
            "per-user test, are the re-ranked models'."
        )
    lines += [
        "",
        format_table(obj["rows"], (*columns, "epochs", "seconds"), label="variant"),
        "",
    ]
    sig = obj.get("significance") or {}
    if f.get("best_baseline"):
        gain = f["relative_gain"]
        lines.append(
            f"- {proposed} vs the best tuned baseline ({f['best_baseline']}): test "
            + ", ".join(f"{short(m)} {pct(gain[m])}" for m in metrics)
            + "."
        )
    for metric in metrics:
        s = sig.get(metric)
        if s:
            lines.append(
                f"- Per user ({sig['users']} test users, {metric} averaged over seeds): "
                f"{s['users better']} better, {s['users worse']} worse, mean difference "
                f"{s['mean difference']:+.4f}, paired sign-flip p = "
                f"{s['p (paired sign-flip, per user)']:.4f}."
            )
    if f.get("seconds"):
        (a, sa), (b, sb) = f["seconds"].items()
        lines.append(
            f"- Seconds per run (training + evaluation, same machine): {a} {sa:.0f}, "
            f"{label(b)} {sb:.0f}."
        )
    lines += paper_order_lines(f.get("paper_order"))
    lines += tuned_refined_lines(f.get("tuned_refined") or {})
    for a in f.get("ablations") or ():
        lines.append(
            f"- Ablation `{a['name']}` (seed(s) {', '.join(map(str, a['seeds']))}; "
            f"{proposed}'s chosen settings with one switch changed): test "
            + ", ".join(f"{short(m)} {a['delta'][m]:+.4f}" for m in metrics)
            + f" against {proposed} with the same seed(s)."
        )
    return lines


def tuned_refined_lines(tuned: Mapping[str, Any]) -> list[str]:
    """Each host ``X`` against ``X-refined`` where both were tuned and seeded in the table
    (RQ3 with each variant's settings searched separately, not shared as in plug-and-play)."""
    gains = tuned.get("gains") or {}
    if not gains:
        return []
    out = [
        "",
        "The refined graph with each variant tuned separately (the same 6-trial search; "
        "the plug-and-play sections below share the host's settings instead):",
        "",
    ]
    for host, gain in gains.items():
        noise = tuned["within_noise"][host]
        parts = [f"{short(m)} {pct(g)}{_noise(noise[m])}" for m, g in gain.items()]
        out.append(f"- {host}-refined vs {host}: test " + ", ".join(parts) + ".")
    if len(gains) > 1:
        mean = ", ".join(f"{short(m)} {pct(v)}" for m, v in tuned["mean"].items())
        out.append(
            f"- Mean over the {len(gains)} hosts: {mean} (the paper, Amazon Baby, 5 hosts at "
            f"shared settings: {PAPER_RQ3_MEAN})."
        )
    return out


def paper_order_lines(order: Mapping[str, Any] | None) -> list[str]:
    """How the baselines rank here against the paper's Table 1 (Amazon Baby, R@20)."""
    if not order:
        return []
    swapped = order["swapped"]
    return [
        "",
        "The baselines' order here against the paper's Table 1 (Amazon Baby, R@20, as the "
        "paper reports them). The datasets differ, so only the order is compared:",
        "",
        format_table(order["table"], label="model"),
        "",
        f"- Kendall's tau between the two orders: {order['tau']:+.2f} over {order['models']} "
        "models; "
        + (
            f"pairs ordered the other way here (paper's better one first): {', '.join(swapped)}."
            if swapped
            else "every pair is ordered as in the paper."
        ),
    ]


def text_sources_section(results: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Per dataset, each model with no preference text and with each text source, from the
    ``text_rows`` of the ablation and comparison results of every results group (a model
    with one row is left out); the first group, in name order, with a row gives it."""
    datasets: dict[str, dict[str, dict[str, tuple[str, Mapping[str, Any]]]]] = {}
    metrics: dict[str, Sequence[str]] = {}
    for exp in ("ablation", "compare"):
        for group in sorted(results):
            obj = results[group].get(exp) or {}
            f = obj.get("findings") or {}
            by = {r["variant"]: r for r in obj.get("rows", [])}
            for t in f.get("text_rows", []):
                metrics.setdefault(obj["dataset"], f.get("metrics") or result_metrics(obj))
                rows = datasets.setdefault(obj["dataset"], {}).setdefault(t["model"], {})
                if t["text"] not in rows:
                    rows[t["text"]] = (f"`{obj['_folder']}` {t['variant']}", by[t["variant"]])
    out = []
    for dataset, models in datasets.items():
        models = {m: got for m, got in models.items() if len(got) > 1}
        if not models:
            continue
        cols = [f"test {m}" for m in metrics[dataset]]
        table = [
            {"model": model, "user text": text, "seeds": row.get("seeds", 1), **row, "results": at}
            for model, got in models.items()
            for text, (at, row) in got.items()
        ]
        texts = dict.fromkeys(t for got in models.values() for t in got)
        llms = [t for t in texts if not t.startswith(("`", "no text"))]
        out += [
            f"## Does a language model's preference text help? "
            f"({DATASET_NAMES.get(dataset, dataset)})",
            "",
            "Each model with its settings fixed and only the user's preference input changed: "
            + ("none, " if llms else "none or ")
            + "the offline `none` backend's text (salient phrases of the training history)"
            + (f", or text written by {', '.join(llms)} from the training history" if llms else "")
            + ". Rows are read from the results folders named in the last column (their "
            "commands are in the sections below); means ± std over the seeds run.",
            "",
            format_table(table, ("user text", "seeds", *cols, "results"), label="model"),
            "",
        ]
        r, n = metrics[dataset]
        for model, got in models.items():
            (base_text, (_, base)), *others = got.items()
            for text, (_, row) in others:
                d = {m: row[f"test {m}"] - base[f"test {m}"] for m in (r, n)}
                out.append(
                    f"- {model}, {text} against {base_text}: test {short(r)} {d[r]:+.4f} "
                    f"({pct(d[r] / base[f'test {r}'])}), {short(n)} {d[n]:+.4f}"
                    + _noise(within_noise(row, base, f"test {r}"))
                    + "."
                )
        out.append("")
    return out


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
    """The paper claims the findings of results group ``tag`` check, in the paper's order."""
    found = [c for e in SECTIONS if e in exps for c in exps[e]["findings"].get("claims", [])]
    mean = mean_over_hosts(
        [exps[e] for e in SECTIONS if e.startswith("plug_and_play") and e in exps]
    )
    found += [mean] if mean else []
    return [
        {
            "claim": c["claim"],
            "dataset": tag,
            "here": "yes" if c["holds"] else "no",
            "evidence": c["evidence"],
        }
        for c in sorted(found, key=lambda c: c["rank"])
    ]


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


__all__ = ["build_report", "load_results", "write_report"]
