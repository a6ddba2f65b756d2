"""The experiment runners on a tiny synthetic catalog: structure and sanity of their outputs,
resumption, the leakage switch, the report and the command line."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from mllmrec_pyg.config import DataConfig, GraphConfig
from mllmrec_pyg.data import COOCCURS, INTERACTS, RELATED, SEMANTIC
from mllmrec_pyg.experiments import (
    ExperimentSettings,
    RunSpec,
    ablation,
    build_graph,
    leakage,
    load_raw,
    plug_and_play,
    prepare_data,
    run_ablation,
    run_leakage,
    run_plug_and_play,
    run_sensitivity,
    run_tsne,
)
from mllmrec_pyg.experiments.report import build_report, write_report
from mllmrec_pyg.experiments.tsne import mean_cosine, uniformity
from mllmrec_pyg.train import TrainConfig

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = {"num_users": 150, "num_items": 80}


def _png(path: Path) -> None:
    assert path.is_file(), f"{path} was not written"
    head = path.read_bytes()[:8]
    assert head == PNG_MAGIC, f"{path} is not a PNG"
    assert path.stat().st_size > 5000, f"{path} looks empty"


def _metrics_in_range(row: dict) -> None:
    values = [v for k, v in row.items() if k.startswith(("valid ", "test ")) and "std" not in k]
    assert values, row
    for v in values:
        assert 0.0 <= v <= 1.0, row


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> ExperimentSettings:
    root = tmp_path_factory.mktemp("experiments")
    return ExperimentSettings(
        data=DataConfig("synthetic", **TINY),
        train=TrainConfig(epochs=2, patience=2, show_progress=False),
        out=str(root / "results"),
        cache=str(root / "cache"),
    )


@pytest.fixture(scope="module")
def data(settings):
    return prepare_data(settings)


def test_prepared_data_has_features_and_the_cache_is_reused(settings, data):
    assert data["item"].x.shape == (data["item"].num_nodes, 384)
    assert data["user"].x.shape == (data["user"].num_nodes, 384)
    assert len(data["user"].text) == data["user"].num_nodes
    cache = settings.cache_dir()
    assert (cache / "item_feat.npy").is_file()
    assert (cache / "user_feat_none_train_history.npy").is_file()
    again = prepare_data(settings)
    assert torch.equal(again["user"].x, data["user"].x)
    assert settings.dataset_tag() == "synthetic-150x80"


def test_graph_config_composes_the_public_transforms(data):
    full = build_graph(data, GraphConfig(alpha=0.6, k_s=5, k_c=4))
    assert {SEMANTIC, COOCCURS, RELATED} <= set(full.edge_types)
    no_te = build_graph(data, GraphConfig(alpha=0.6, k_s=5, cooccurrence=False))
    assert COOCCURS not in no_te.edge_types
    assert torch.equal(no_te[RELATED].edge_index, no_te[SEMANTIC].edge_index)
    no_gd = build_graph(data, GraphConfig(alpha=None, k_s=5, cooccurrence=False))
    # no threshold: every item keeps its full top-5 (self included)
    assert no_gd[RELATED].edge_index.size(1) == 5 * data["item"].num_nodes
    assert RELATED not in data.edge_types, "build_graph must not modify its input"


@pytest.mark.slow
def test_ablation_has_every_variant_with_sane_metrics_and_a_plot(settings, data):
    result = run_ablation(settings, data)
    rows = {r["variant"]: r for r in result["rows"]}
    assert list(rows) == [*ablation.VARIANTS, *ablation.ANCHORS]
    for row in rows.values():
        _metrics_in_range(row)
    configs = {r["variant"]: r["config"] for r in result["runs"]}
    assert configs["w/o RS"]["use_user_features"] is False
    assert configs["w/o GCN_II"]["item_conv"] is False
    assert configs["w/ GCN_UI"]["ui_layers"] == 2
    assert configs["MLLMRec"]["use_user_features"] and configs["MLLMRec"]["item_conv"]
    graphs = result["graphs"]
    assert graphs["w/o GD"]["graph"]["alpha"] is None
    assert graphs["w/o TE"]["graph"]["cooccurrence"] is False
    assert graphs["w/o TE"]["edges"] < graphs["MLLMRec"]["edges"]
    folder = settings.experiment_dir("ablation")
    _png(folder / "ablation.png")
    with open(folder / "results.csv") as fh:
        assert [r["variant"] for r in csv.DictReader(fh)] == list(rows)
    stored = json.loads((folder / "results.json").read_text())
    assert stored["command"].startswith("mllmrec experiment ablation --dataset synthetic")
    assert set(stored["findings"]) >= {"every_removal_hurts", "largest_drop", "drop"}


@pytest.mark.slow
def test_finished_runs_are_reused_and_stale_ones_retrained(settings, data, monkeypatch):
    run_ablation(settings, data, variants=["MLLMRec"], anchors=False)
    from mllmrec_pyg import train

    def no_training(self):
        raise AssertionError("a stored run was trained again")

    monkeypatch.setattr(train.Trainer, "fit", no_training)
    again = run_ablation(settings, data, variants=["MLLMRec"], anchors=False)
    assert again["rows"][0]["variant"] == "MLLMRec"
    # the same run in another experiment (the leakage audit's honest row) is the same record
    store = settings.store("leakage", "")
    assert store.load(RunSpec(leakage.TRAIN, "mllmrec", {}, 0), data) is not None
    monkeypatch.undo()
    # other data (another graph) or other training settings make another run
    other = RunSpec("MLLMRec", "mllmrec", {}, 0, graph=GraphConfig(alpha=0.4))
    assert store.load(other, data) is None
    masked = replace(settings, train=replace(settings.train, mask_valid_at_test=True))
    assert masked.store("ablation", "").load(RunSpec("MLLMRec", "mllmrec", {}, 0), data) is None
    stored = json.loads((settings.experiment_dir("ablation") / "results.json").read_text())
    record = store.load(RunSpec("MLLMRec", "mllmrec", {}, 0), data)
    assert stored["runs"][0]["key"] == record["key"]
    # the record names the command that made it (the first experiment to need it)
    assert record["command"].startswith("mllmrec experiment ablation --dataset synthetic")


@pytest.mark.slow
def test_sensitivity_grid_heatmap_and_dimension_curve(settings, data):
    result = run_sensitivity(settings, data, alphas=(0.5, 0.7), k_cs=(5, 10), dims=(16, 32))
    for metric in ("recall@20", "ndcg@20"):
        grid = result["grid"][metric]
        assert len(grid) == 2 and all(len(row) == 2 for row in grid)
        assert all(0.0 <= v <= 1.0 for row in grid for v in row)
        assert len(result["dim_curves"][f"test {metric}"]["mean"]) == 2
    labels = [r["variant"] for r in result["rows"]]
    assert labels == ["alpha=0.5, K_c=5", "alpha=0.5, K_c=10", "alpha=0.7, K_c=5",
                      "alpha=0.7, K_c=10", "d=16", "d=32"]  # fmt: skip
    dims = {
        r["extra"]["d"]: r["config"]["embedding_dim"] for r in result["runs"] if "d" in r["extra"]
    }
    assert dims == {16: 16, 32: 32}
    folder = settings.experiment_dir("sensitivity")
    _png(folder / "alpha_kc_heatmap.png")
    _png(folder / "dimension.png")
    assert (folder / "grid.csv").is_file() and (folder / "dims.csv").is_file()
    assert "--alphas 0.5 0.7" in result["command"]
    f = result["findings"]
    assert f["best_alpha"] in (0.5, 0.7) and f["best_k_c"] in (5, 10)


def test_uniformity_and_cosine_by_hand():
    e = torch.eye(3)
    # three orthonormal vectors: every squared distance is 2 -> log exp(-4) = -4
    assert uniformity(e) == pytest.approx(-4.0)
    assert mean_cosine(e) == pytest.approx(0.0)
    same = torch.ones(4, 2)
    assert uniformity(same) == pytest.approx(0.0)
    assert mean_cosine(same) == pytest.approx(1.0)
    two = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])  # antipodal: squared distance 4
    assert uniformity(two) == pytest.approx(-8.0)


@pytest.mark.slow
def test_tsne_plot_and_uniformity_of_both_models(settings, data):
    result = run_tsne(settings, data, baseline="BPR-MF", num_users=100)
    rows = {r["model"]: r for r in result["rows"]}
    assert set(rows) == {"MLLMRec", "BPR-MF"}
    for r in rows.values():
        assert r["users"] == 100
        assert -8.0 <= r["uniformity"] <= 0.0
        assert -1.0 <= r["mean cosine"] <= 1.0
    assert len(set(result["sampled_users"])) == 100
    assert result["colour"] == "dominant item category"
    _png(settings.experiment_dir("tsne") / "tsne_users.png")


@pytest.mark.slow
def test_leakage_switch_changes_the_behaviour_lists_and_the_preferences(settings):
    raw = load_raw(settings)
    result = run_leakage(settings, raw=raw)
    exp = result["exposure"]
    store = raw[INTERACTS]
    n_test, n_val = store.test_edge_index.size(1), store.val_edge_index.size(1)
    # default: no held-out pair reaches a behaviour list or a prompt
    assert exp["train"]["test_in_list"] == 0 and exp["train"]["valid_in_list"] == 0
    assert exp["train"]["test_in_prompt"] == 0
    # audit switch: every held-out pair is in its user's list, and reaches the prompts
    assert exp["full"]["test_in_list"] == n_test and exp["full"]["valid_in_list"] == n_val
    assert exp["full"]["test_in_prompt"] > 0
    held_users = torch.cat([store.val_edge_index[0], store.test_edge_index[0]]).unique().numel()
    assert exp["users_with_changed_list"]["count"] == held_users
    assert exp["full"]["mean_list_length"] > exp["train"]["mean_list_length"]
    assert result["text_changed"]["count"] > 0
    rows = {r["variant"]: r for r in result["rows"]}
    assert list(rows) == [leakage.TRAIN, leakage.FULL, leakage.NO_PREFS]
    for r in rows.values():
        _metrics_in_range(r)
    cache = Path(settings.cache_dir())
    honest = torch.from_numpy(np.load(cache / "user_feat_none_train_history.npy"))
    leaky = torch.from_numpy(np.load(cache / "user_feat_none_full_history.npy"))
    assert not torch.equal(honest, leaky), "the two modes trained on the same user features"
    gap = result["findings"]["gap"]["test recall@20"]
    assert gap["gap"] == pytest.approx(gap["full"] - gap["train"])
    _png(settings.experiment_dir("leakage") / "leakage.png")


@pytest.mark.slow
@pytest.mark.parametrize("host", ["lattice", "smore"])
def test_plug_and_play_takes_other_host_models(settings, data, host, tmp_path):
    result = run_plug_and_play(settings, data, with_gd=False, model=host)
    label = plug_and_play.HOSTS[host]
    rows = {r["variant"]: r for r in result["rows"]}
    assert list(rows) == [label, f"{label} + GR"]
    runs = {r["variant"]: r for r in result["runs"]}
    assert runs[label]["model"] == host and runs[label]["config"]["item_graph"] is None
    assert runs[f"{label} + GR"]["config"]["item_graph"] == list(RELATED)
    assert result["host"] == host and "plug-and-play" in result["command"]
    assert f"--model {host}" in result["command"]
    folder = settings.experiment_dir(f"plug_and_play_{host}")
    assert (folder / "results.json").is_file()
    text = build_report(Path(settings.out), tmp_path / "r.md")
    assert f"{label} + graph refinement" in text and f"{label} + GR vs {label}" in text


@pytest.mark.slow
def test_plug_and_play_reads_the_transform_graphs(settings, data):
    result = run_plug_and_play(settings, data, host_config={"dropout": 0.5})
    rows = {r["variant"]: r for r in result["rows"]}
    assert list(rows) == [plug_and_play.VANILLA, plug_and_play.GD, plug_and_play.GR]
    for r in rows.values():
        _metrics_in_range(r)
    configs = {r["variant"]: r["config"] for r in result["runs"]}
    assert configs[plug_and_play.VANILLA]["item_graph"] is None
    assert configs[plug_and_play.GR]["item_graph"] == list(RELATED)
    assert all(c["dropout"] == 0.5 for c in configs.values())
    gr = build_graph(data, settings.graph)
    assert result["graphs"][plug_and_play.GR]["edges"] == gr[RELATED].edge_index.size(1)
    assert result["graphs"][plug_and_play.VANILLA]["edges"] == 10 * data["item"].num_nodes
    imp = result["findings"]["relative_improvement"][plug_and_play.GR]["recall@20"]
    want = (
        rows[plug_and_play.GR]["test recall@20"] / rows[plug_and_play.VANILLA]["test recall@20"] - 1
    )
    assert imp == pytest.approx(want)
    assert "--host-set dropout=0.5" in result["command"]
    _png(settings.experiment_dir("plug_and_play") / "plug_and_play.png")


@pytest.mark.slow
def test_report_renders_every_experiment_with_its_command_and_figures(settings, data, tmp_path):
    # the runs exist from the tests above (or are trained here)
    run_ablation(settings, data)
    run_plug_and_play(settings, data, host_config={"dropout": 0.5})
    md = tmp_path / "docs" / "results.md"
    write_report(settings.out, md)
    text = md.read_text()
    for heading in ("Ablation (RQ2)", "Plug-and-play", "## synthetic-150x80"):
        assert heading in text
    claims = [line for line in text.splitlines() if line.startswith("| RQ")]
    assert any("removing RS lowers it most" in line for line in claims)
    assert any("refined graph improves FREEDOM" in line for line in claims)
    assert all(line.split(" | ")[2] in ("yes", "no") for line in claims)
    assert "mllmrec experiment ablation --dataset synthetic --num-users 150" in text
    assert "mllmrec experiment plug-and-play" in text
    links = [line[line.index("](") + 2 : -1] for line in text.splitlines() if line.startswith("![")]
    assert links
    for link in links:
        _png((md.parent / link).resolve())
    assert "nan" not in text.lower().split()
    assert build_report(Path(settings.out), md) == text


@pytest.mark.slow
def test_command_line_runs_an_experiment_and_the_report(settings, tmp_path, capsys):
    from mllmrec_pyg.cli import main

    out = tmp_path / "cli"
    args = [
        "experiment", "ablation", "--dataset", "synthetic", "--num-users", "150",
        "--num-items", "80", "--epochs", "1", "--patience", "1", "--variants", "MLLMRec",
        "w/o TE", "--no-anchors", "--out", str(out), "--cache", settings.cache, "--no-progress",
    ]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "w/o TE" in printed
    stored = json.loads((out / "synthetic-150x80" / "ablation" / "results.json").read_text())
    assert [r["variant"] for r in stored["rows"]] == ["MLLMRec", "w/o TE"]
    assert stored["command"].endswith("--variants MLLMRec 'w/o TE' --no-anchors")
    md = tmp_path / "results.md"
    assert main(["experiment", "report", "--out", str(out), "--report-out", str(md)]) == 0
    assert "w/o TE" in md.read_text()


def _row(name, r, n=None, seeds=3, std=0.001, r_std=None):
    """A table row with test R@20 ``r`` and N@20 ``n`` (means over ``seeds``)."""
    n = r / 2 if n is None else n
    return {"variant": name, "seeds": seeds, "valid recall@20": r, "valid ndcg@20": n,
            "test recall@20": r, "test ndcg@20": n, "test recall@20 std": r_std or std,
            "test ndcg@20 std": std, "epochs": 10.0, "seconds": 1.0}  # fmt: skip


def test_findings_read_the_tables_correctly():
    rows = [
        _row("MLLMRec", 0.30),
        _row("w/o RS", 0.20),
        _row("w/o GD", 0.31),
        _row("w/o TE", 0.29),
        _row("w/o GCN_II", 0.25),
        _row("w/ GCN_UI", 0.33),
        _row("MostPop", 0.10),
        _row("LightGCN", 0.32),
    ]
    f = ablation.findings({"rows": rows, "settings": {"backend": "none"}})
    assert f["drop"] == pytest.approx(
        {"w/o RS": 0.10, "w/o GD": -0.01, "w/o TE": 0.01, "w/o GCN_II": 0.05}
    )
    assert f["variants_better_than_full"] == ["w/o GD"]
    assert not f["every_removal_hurts"]
    assert f["largest_drop"] == "w/o RS" and f["rs_largest_drop"]
    assert f["best_anchor"] == "LightGCN" and f["full_beats_anchors"] is False
    claims = {c["claim"]: c for c in f["claims"]}
    assert claims["RQ2: removing RS lowers it most"]["holds"] is True
    assert claims["RQ1: MLLMRec beats the ID-based baselines"]["evidence"] == (
        "MLLMRec 0.3000 vs LightGCN 0.3200 test R@20"
    )
    assert f["text_rows"] == [
        {"model": "MLLMRec", "variant": "w/o RS", "text": "no text (w/o RS)"},
        {"model": "MLLMRec", "variant": "MLLMRec", "text": "`none` backend"},
    ]

    from mllmrec_pyg.experiments import sensitivity

    obj = {  # grid rows: alpha, columns: K_c
        "rows": [_row("x", 0.1)],
        "alphas": [0.4, 0.6],
        "k_cs": [5, 10, 15],
        "dims": [16, 32, 64, 128],
        "grid": {"recall@20": [[0.1, 0.1, 0.1], [0.3, 0.3, 0.2]]},
        "dim_curves": {"test recall@20": {"mean": [0.1, 0.2, 0.2, 0.15], "std": [0.0] * 4}},
    }
    s = sensitivity.findings(obj)
    assert (s["best_alpha"], s["best_k_c"], s["best_value"]) == (0.6, 5, 0.3)
    # along alpha: columns spread 0.2, 0.2, 0.1 -> 0.5 / 3; along K_c: rows 0.0, 0.1 -> 0.05
    assert s["mean_spread_over_alpha"] == pytest.approx(0.5 / 3)
    assert s["mean_spread_over_k_c"] == pytest.approx(0.05)
    assert s["less_sensitive_to_k_c"]
    assert s["best_d"] == 32 and not s["monotone_in_d"] and s["rises_to_64"]


def _result(dataset, experiment, folder, rows, text_rows, tag=None):
    """A results.json object as the report reads it, with the ``text_rows`` of its findings."""
    return {
        "dataset": dataset,
        "experiment": experiment,
        "tag": tag,
        "_folder": folder,
        "rows": rows,
        "findings": {"metrics": ["recall@20", "ndcg@20"], "text_rows": text_rows},
    }


def test_text_sources_are_discovered_in_every_results_group():
    """The rows come from the findings of whatever groups exist (no folder is named in the
    report): here a dataset ``shop`` with a tagged comparison and a second text source."""
    from mllmrec_pyg.experiments.report import text_sources_section

    def t(model, variant, text):
        return {"model": model, "variant": variant, "text": text}

    results = {
        "shop": {
            "ablation": _result(
                "shop",
                "ablation",
                "shop/ablation",
                [_row("MLLMRec", 0.18, 0.16), _row("w/o RS", 0.20, 0.18)],
                [
                    t("MLLMRec", "w/o RS", "no text (w/o RS)"),
                    t("MLLMRec", "MLLMRec", "`none` backend"),
                ],
            ),  # fmt: skip
            "compare": _result(
                "shop",
                "compare",
                "shop/compare",
                [_row("langgcn", 0.26, 0.24)],
                [t("LangGCN", "langgcn", "no text")],
            ),  # fmt: skip
        },
        "shop+my-llm": {
            "ablation": _result(
                "shop",
                "ablation",
                "shop/ablation+my-llm",
                [_row("MLLMRec", 0.19, 0.17, std=0.02), _row("w/o RS", 0.5)],
                [t("MLLMRec", "w/o RS", "no text (w/o RS)"), t("MLLMRec", "MLLMRec", "MyLLM")],
            ),  # fmt: skip
        },
    }
    text = "\n".join(text_sources_section(results))
    assert "## Does a language model's preference text help? (shop)" in text
    assert "or text written by MyLLM from the training history" in text
    # LangGCN has only its no-text row: nothing to compare, so it is left out
    assert "| LangGCN" not in text
    # the first group in name order gives a row: w/o RS of shop, not of shop+my-llm
    assert "| MLLMRec | no text (w/o RS) | 3 | 0.2000 ± 0.0010 |" in text
    assert "`shop/ablation+my-llm` MLLMRec" in text and "0.5000" not in text
    assert "MLLMRec, `none` backend against no text (w/o RS): test R@20 -0.0200 (-10.00%)" in text
    # a difference below the larger seed std is called so
    assert (
        "MyLLM against no text (w/o RS): test R@20 -0.0100 (-5.00%), N@20 -0.0100 "
        "(smaller than the seed standard deviation)." in text
    )
    assert text_sources_section({}) == []


def test_compare_findings_compare_an_ablation_on_the_seeds_both_were_trained_with():
    from mllmrec_pyg.experiments import compare
    from mllmrec_pyg.experiments.report import compare_section

    def run(variant, seed, r):
        return {"variant": variant, "seed": seed, "model": "langgcn", "config": {},
                "test": {"recall@20": r, "ndcg@20": r / 2}}  # fmt: skip

    obj = {
        "budget": 6,
        "settings": {"seeds": [0], "backend": "none"},
        "proposed": "langgcn",
        "rows": [_row("langgcn", 0.25, seeds=1), _row("langgcn-ablate-preference-text", 0.27)],
        # the proposed model has seed 0 only, the ablation seeds 0, 1 and 2
        "runs": [
            run("langgcn", 0, 0.25),
            *(
                run("langgcn-ablate-preference-text", s, v)
                for s, v in ((0, 0.26), (1, 0.3), (2, 0.3))
            ),
        ],
    }
    obj["runs"][1]["config"] = {"user_init": "mean+preference"}
    f = compare.findings(obj)
    (a,) = f["ablations"]
    assert a["name"] == "preference-text" and a["seeds"] == [0]
    assert a["delta"] == pytest.approx({"recall@20": 0.01, "ndcg@20": 0.005})
    # the ablation that adds the preference text is the model's text row
    assert [(t["variant"], t["text"]) for t in f["text_rows"]] == [
        ("langgcn", "no text"),
        ("langgcn-ablate-preference-text", "`none` backend"),
    ]
    text = "\n".join(compare_section({**obj, "findings": f}))
    assert "Ablation `preference-text` (seed(s) 0;" in text
    assert "test R@20 +0.0100, N@20 +0.0050 against langgcn" in text


def test_report_carries_the_language_model_measurements(tmp_path):
    from mllmrec_pyg.experiments.report import llm_sections

    llm = tmp_path / "results" / "movielens" / "llm"
    llm.mkdir(parents=True)
    (llm / "README.md").write_text(
        "# Title\n\n## Reproduce\n\nsteps\n\n## Throughput on CPU\n\n| a |\n|---|\n| 1 |\n\n"
        "## NF4 against fp32\n\n```bash\ncmd\n```\n\n## Files\n\nlist\n"
    )
    text = "\n".join(llm_sections(tmp_path / "results", tmp_path))
    assert "## Language model on CPU (movielens)" in text
    assert "(results/movielens/llm/README.md)" in text
    assert "### Throughput on CPU\n\n| a |\n|---|\n| 1 |" in text
    assert "### NF4 against fp32\n\n```bash\ncmd\n```" in text
    assert "Reproduce" not in text and "Files" not in text
    assert llm_sections(tmp_path / "nothing", tmp_path) == []


def test_paper_order_lists_the_pairs_ranked_the_other_way():
    from mllmrec_pyg.experiments.compare import PAPER_BABY_R20, kendall_tau, paper_order
    from mllmrec_pyg.experiments.report import paper_order_lines

    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    # paper: lgmrec > freedom > lightgcn; here freedom falls below lightgcn
    rows = [
        {"variant": "lightgcn", "test recall@20": 0.20},
        {"variant": "freedom", "test recall@20": 0.18},
        {"variant": "lgmrec", "test recall@20": 0.25},
        {"variant": "langgcn", "test recall@20": 0.30},  # not in the paper: left out
    ]
    assert PAPER_BABY_R20["lgmrec"] > PAPER_BABY_R20["freedom"] > PAPER_BABY_R20["lightgcn"]
    order = paper_order(rows, "recall@20")
    assert order["tau"] == pytest.approx(1 / 3) and order["swapped"] == ["freedom / lightgcn"]
    text = "\n".join(paper_order_lines(order))
    assert "langgcn" not in text
    assert "+0.33 over 3 models" in text
    assert "freedom / lightgcn" in text and "lgmrec / freedom" not in text
    assert "| freedom | 0.0992 | 2 | 0.1800 | 3 |" in text
    assert paper_order(rows[:2], "recall@20") is None  # too few models to order
    assert paper_order_lines(None) == []


def _pnp(host, r20, n20):
    """A plug-and-play result of ``host`` whose refined graph changes R@20 by ``r20`` and N@20
    by ``n20`` (relative)."""
    label = {"freedom": "FREEDOM", "smore": "SMORE", "lattice": "LATTICE"}[host]
    rows = [_row(label, 0.2, 0.1), _row(f"{label} + GR", 0.2 * (1 + r20), 0.1 * (1 + n20))]
    obj = {"host": host, "rows": rows, "experiment": f"plug_and_play_{host}"}
    return {**obj, "findings": plug_and_play.findings(obj)}


def test_claims_average_the_refined_graph_gain_over_hosts():
    from mllmrec_pyg.experiments.report import _claims

    exps = {
        "plug_and_play": _pnp("freedom", 0.04, -0.01),
        "plug_and_play_smore": _pnp("smore", 0.02, -0.03),
    }
    assert exps["plug_and_play"]["findings"]["claims"][0]["evidence"] == (
        "R@20 +4.00%, N@20 -1.00%"
    )
    # the paper's hosts come from the registrations (and the one not implemented here)
    assert exps["plug_and_play"]["findings"]["paper_hosts"] == [
        "FREEDOM", "SOIL", "GUME", "SMORE", "DOGE"
    ]  # fmt: skip
    rows = {r["claim"]: r for r in _claims("x", exps)}
    avg = next(r for c, r in rows.items() if c.startswith("RQ3: on average"))
    assert avg["here"] == "no"  # N@20 falls on average
    assert "FREEDOM, SMORE: R@20 +3.00%, N@20 -2.00%" in avg["evidence"]
    one = _claims("x", {"plug_and_play": _pnp("freedom", 0.04, 0.01)})
    assert not any(r["claim"].startswith("RQ3: on average") for r in one)  # one host: no mean


def test_claims_check_the_tuned_refined_pairs_of_the_comparison():
    from mllmrec_pyg.experiments import compare
    from mllmrec_pyg.experiments.report import _claims

    rows = [_row("smore", 0.20, 0.10), _row("smore-refined", 0.22, 0.11), _row("bpr", 0.1, 0.1)]
    rows += [_row("gume", 0.25, 0.20), _row("gume-refined", 0.25, 0.21)]  # R@20 unchanged

    def claims(rows):
        obj = {"rows": rows, "proposed": "langgcn", "settings": {}}
        return _claims("x", {"compare": {**obj, "findings": compare.findings(obj)}})

    claim = next(r for r in claims(rows) if "tuned separately" in r["claim"])
    assert claim["here"] == "no"  # GUME gains nothing on R@20
    assert claim["evidence"] == (
        "mean over 2 hosts: R@20 +5.00%, N@20 +7.50%; no gain for gume (R@20)"
    )
    rows[-1] = _row("gume-refined", 0.26, 0.21)
    claim = next(r for r in claims(rows) if "tuned separately" in r["claim"])
    assert claim["here"] == "yes" and "no gain" not in claim["evidence"]
    # one host: no claim about every host
    assert not any("tuned separately" in r["claim"] for r in claims(rows[:3]))


def test_report_says_which_runs_trained_on_a_gpu():
    from mllmrec_pyg.experiments.report import _cap_note

    settings = {"lr": 0.001, "batch_size": 2048, "patience": 20, "epochs": 200, "seeds": [0, 1]}
    runs = [
        {"variant": "GUME", "device": "cuda", "stopped_early": True},
        {"variant": "GUME", "device": "cuda", "stopped_early": True},
        {"variant": "FREEDOM", "device": "cpu", "stopped_early": True},
        {"variant": "LightGCN", "stopped_early": True},  # stored before runs named a device
    ]
    note = _cap_note({"runs": runs, "settings": settings})
    assert "Trained on a GPU, the rest on the CPU: GUME (cuda) x2 " in note
    assert "FREEDOM" not in note and "LightGCN" not in note
    cpu_only = _cap_note({"runs": runs[2:], "settings": settings})
    assert "GPU" not in cpu_only
    # a run trained again on the CPU in place of a GPU run names both test numbers
    again = {
        "variant": "GUME",
        "device": "cpu",
        "stopped_early": True,
        "test": {"recall@20": 0.25},
        "replaces": {"device": "cuda", "test": {"recall@20": 0.2546}},
    }
    note = _cap_note({"runs": [again, runs[2]], "settings": settings})
    assert "GPU" not in note
    assert "(test Recall@20, old -> new): GUME (from cuda): 0.2546 -> 0.2500." in note


def test_tuned_refined_pairs_and_their_mean():
    from mllmrec_pyg.experiments.compare import tuned_refined
    from mllmrec_pyg.experiments.report import tuned_refined_lines

    rows = [
        _row("lattice", 0.20, 0.10),
        _row("lattice-refined", 0.22, 0.09),  # +10% R@20, -10% N@20
        _row("gume", 0.25, 0.20),
        _row("gume-refined", 0.2505, 0.21, r_std=0.01),  # +0.2% R@20, inside the noise
        _row("bpr", 0.1, 0.1),
    ]
    metrics = ("recall@20", "ndcg@20")
    text = "\n".join(tuned_refined_lines(tuned_refined(rows, metrics)))
    assert "- lattice-refined vs lattice: test R@20 +10.00%, N@20 -10.00%." in text
    assert (
        "gume-refined vs gume: test R@20 +0.20% (smaller than the seed standard deviation)" in text
    )
    assert "Mean over the 2 hosts: R@20 +5.10%, N@20 -2.50%" in text
    assert "bpr" not in text
    assert tuned_refined_lines(tuned_refined([_row("bpr", 0.1, 0.1)], metrics)) == []


@pytest.mark.slow
def test_every_experiment_runs_with_other_cutoffs(settings, tmp_path):
    """``--ks 5 10``: every experiment monitors and reports Recall@10 and NDCG@10."""
    from mllmrec_pyg.cli import main

    out = tmp_path / "ks"
    common = ["--dataset", "synthetic", "--num-users", "150", "--num-items", "80", "--epochs", "1"]
    common += ["--patience", "1", "--ks", "5", "10", "--out", str(out), "--cache", settings.cache]
    common += ["--no-progress"]
    per = {
        "ablation": ["--variants", "MLLMRec", "--no-anchors"],
        "plug-and-play": ["--no-gd"],
        "sensitivity": ["--alphas", "0.7", "--k-cs", "10", "--dims", "16"],
        "tsne": ["--sample-users", "40", "--baseline", "BPR-MF"],
        "leakage": [],
        "compare": ["--models", "pop", "bpr", "--proposed", "bpr", "--trials", "1"],
    }
    for name, extra in per.items():
        assert main(["experiment", name, *common, *extra]) == 0, name
    for path in out.glob("*/*/results.json"):
        obj = json.loads(path.read_text())
        text = json.dumps({k: obj[k] for k in ("rows", "findings")})
        assert "@10" in text and "@20" not in text, path
        assert "--ks 5 10" in obj["command"]
    compare = json.loads((out / "synthetic-150x80" / "compare" / "results.json").read_text())
    assert set(compare["significance"]) >= {"recall@10", "ndcg@10"}
    # the report renders every one of them at the cut-off they monitored
    md = tmp_path / "results.md"
    assert main(["experiment", "report", "--out", str(out), "--report-out", str(md)]) == 0
    text = md.read_text()
    claims = [line for line in text.splitlines() if line.startswith(("| RQ", "| A"))]
    assert len(claims) >= 5 and all("@20" not in c.split(" | ")[3] for c in claims), claims
    assert "| Audit: full-history preferences inflate test R@10 |" in text
    assert "early stopping on valid Recall@10" in text
    for heading in ("Ablation (RQ2)", "Plug-and-play", "Sensitivity", "t-SNE", "Leakage", "tuned"):
        assert heading in text


#: for each experiment (and the report), an option that only another experiment takes
FOREIGN = {
    "ablation": ["--trials", "2"],
    "plug-and-play": ["--variants", "MLLMRec"],
    "sensitivity": ["--no-gd"],
    "tsne": ["--ablation-seeds", "0"],
    "leakage": ["--baseline", "BPR-MF"],
    "compare": ["--alphas", "0.5"],
    "all": ["--models", "pop"],
    "report": ["--no-anchors"],
}


@pytest.mark.parametrize("name", FOREIGN)
def test_an_option_of_another_experiment_is_refused_in_one_line(name, tmp_path, capsys):
    from mllmrec_pyg.cli import main
    from mllmrec_pyg.experiments import EXPERIMENTS

    assert set(FOREIGN) == {*EXPERIMENTS, "all", "report"}
    out = tmp_path / "out"
    argv = ["experiment", name, "--dataset", "synthetic", "--out", str(out), *FOREIGN[name]]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"does not take {FOREIGN[name][0]}" in err, err
    assert not out.exists()  # refused before any work
    # --report-out belongs to the report alone
    with pytest.raises(SystemExit):
        main(["experiment", "tsne", "--out", str(out), "--report-out", "x.md"])
    assert "--report-out is an option of `experiment report`" in capsys.readouterr().err
    # t-SNE trains once: several seeds are refused, not silently cut to the first
    with pytest.raises(SystemExit):
        main(["experiment", "tsne", "--out", str(out), "--seeds", "0", "1"])
    assert "tsne trains with one seed" in capsys.readouterr().err
    assert not out.exists()


def _stored(tmp_path, *folders):
    """A copy of stored results folders of docs/experiments (results.json and figures)."""
    import shutil

    docs = Path(__file__).resolve().parent.parent / "docs" / "experiments"
    for folder in folders:
        shutil.copytree(docs / folder, tmp_path / "results" / folder)
    return tmp_path / "results"


def test_the_report_renders_the_findings_of_results_json_and_computes_none(tmp_path):
    from mllmrec_pyg.commands.experiment import refresh_results

    root = _stored(tmp_path, "synthetic/ablation", "synthetic/plug_and_play")
    md = tmp_path / "results.md"
    text = build_report(root, md)
    assert "| RQ2: removing RS lowers it most | synthetic | yes |" in text
    assert len(refresh_results(root)) == 2  # findings written into results.json
    path = root / "synthetic" / "ablation" / "results.json"
    obj = json.loads(path.read_text())
    assert obj["format"] == "mllmrec-pyg/experiment/2" and obj["findings"]["claims"]
    # what the findings say is what the report says, even when the rows say otherwise
    obj["findings"]["claims"][1].update(holds=False, evidence="written by the experiment")
    obj["findings"]["drop"]["w/o RS"] = 0.5
    path.write_text(json.dumps(obj))
    text = build_report(root, md)
    assert (
        "| RQ2: removing RS lowers it most | synthetic | no | written by the experiment |" in text
    )
    assert "w/o RS -0.5000" in text


def test_results_of_the_older_format_get_their_findings_from_their_runs(tmp_path, monkeypatch):
    """A results.json written before the findings were complete is refreshed from its rows and
    runs alone: in memory by the report, on disk by ``experiment refresh``; nothing trains."""
    from mllmrec_pyg import runs
    from mllmrec_pyg.cli import main

    def no_training(*args, **kwargs):
        raise AssertionError("refreshing trained a model")

    monkeypatch.setattr(runs, "train_model", no_training)
    folders = ("synthetic/compare", "synthetic/sensitivity", "synthetic/tsne", "synthetic/leakage")
    root = _stored(tmp_path, *folders)
    md = tmp_path / "results.md"
    current = build_report(root, md)
    for folder in folders:
        path = root / folder / "results.json"
        obj = json.loads(path.read_text())
        obj.update(format="mllmrec-pyg/experiment/1", findings={})
        path.write_text(json.dumps(obj))
    assert build_report(root, md) == current
    assert main(["experiment", "refresh", "--out", str(root)]) == 0
    for folder in folders:
        obj = json.loads((root / folder / "results.json").read_text())
        assert obj["format"] == "mllmrec-pyg/experiment/2" and obj["findings"]["claims"]
    assert build_report(root, md) == current


def test_docs_results_md_is_the_report_of_the_stored_results():
    """docs/results.md is what ``mllmrec experiment report --out docs/experiments`` writes."""
    docs = Path(__file__).resolve().parent.parent / "docs"
    assert build_report(docs / "experiments", docs / "results.md") == (
        docs / "results.md"
    ).read_text(encoding="utf-8")


def test_no_module_above_nn_names_a_multimodal_model_but_the_default_picks():
    package = Path(__file__).resolve().parent.parent / "mllmrec_pyg"
    names = re.compile(r"\b(freedom|lattice|smore|soil|gume|lgmrec|slmrec|vbpr|langgcn)\b", re.I)
    hits = {
        path.relative_to(package).as_posix(): [m.group(0) for m in names.finditer(path.read_text())]
        for path in package.rglob("*.py")
        if "nn" not in path.relative_to(package).parts[:1]
    }
    hits = {p: h for p, h in hits.items() if h}
    assert hits == {"experiments/common.py": ["langgcn", "freedom"]}, hits


@pytest.mark.slow
def test_masking_valid_items_at_test_is_a_run_of_its_own(settings, tmp_path, capsys):
    """The same command with --mask-valid-at-test trains its runs: it reuses no run made
    without it (its search trials, which read no test metric, are reused)."""
    from mllmrec_pyg import runs
    from mllmrec_pyg.cli import main

    argv = ["experiment", "compare", "--dataset", "synthetic", "--num-users", "150"]
    argv += ["--num-items", "80", "--models", "pop", "bpr", "--trials", "1", "--epochs", "2"]
    argv += ["--seeds", "0", "--out", str(tmp_path), "--cache", settings.cache, "--no-progress"]
    assert main(argv) == 0
    trained = []
    real = runs.train_model

    def counting(name, data, cfg, values):
        trained.append((name, cfg.evaluate_test, cfg.mask_valid_at_test))
        return real(name, data, cfg, values)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runs, "train_model", counting)
        assert main(argv) == 0
        assert trained == []
        assert main([*argv, "--mask-valid-at-test"]) == 0
    assert sorted(trained) == [("bpr", True, True), ("pop", True, True)]
    stored = json.loads((tmp_path / "synthetic-150x80" / "compare" / "results.json").read_text())
    assert stored["command"].endswith("--epochs 2 --mask-valid-at-test --models pop bpr --trials 1")
