"""Validation-only search: same budget per model, no test metric read, resumable, read by train."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from mllmrec_pyg import train as train_module
from mllmrec_pyg.cli import main
from mllmrec_pyg.config import DataConfig
from mllmrec_pyg.pipeline import load_data
from mllmrec_pyg.train import TrainConfig
from mllmrec_pyg.tuning import CANDIDATES, Candidate, draw, read_tuned, split_point, tune

DATA = DataConfig("synthetic", num_users=150, num_items=80)
QUICK = TrainConfig(epochs=2, patience=2, show_progress=False)


def test_draw_gives_the_whole_small_grid_and_a_seeded_sample_of_a_large_one():
    small = Candidate("x", "bpr", space={"train.lr": (1e-3, 1e-2)})
    assert draw(small, 8) == [{"train.lr": 1e-3}, {"train.lr": 1e-2}]
    big = CANDIDATES["lightgcn"]
    a, b = draw(big, 5, seed=0), draw(big, 5, seed=0)
    assert a == b and len(a) == 5 and len({repr(p) for p in a}) == 5
    assert draw(big, 5, seed=1) != a
    assert draw(CANDIDATES["pop"], 8) == [{}]
    assert split_point({"train.lr": 1, "model.d": 2}) == {
        "train": {"lr": 1},
        "model": {"d": 2},
        "graph": {},
    }
    with pytest.raises(ValueError, match="must be .<train.model.graph>"):
        split_point({"lr": 1})


def test_search_reads_no_test_metric_resumes_and_feeds_train(tmp_path, monkeypatch, capsys):
    real_evaluate = train_module.Trainer.evaluate

    def valid_only(self, split="valid"):
        assert split != "test", "the search read a test metric"
        return real_evaluate(self, split)

    monkeypatch.setattr(train_module.Trainer, "evaluate", valid_only)
    result = tune("bpr", DATA, train=QUICK, trials=3, out=tmp_path / "tuned")
    assert len(result.trials) == 3
    best_valid = max(t["valid"]["recall@20"] for t in result.trials)
    assert result.best["valid"]["recall@20"] == best_valid
    path = tmp_path / "tuned" / DATA.tag() / "bpr.json"
    stored = json.loads(path.read_text())
    assert stored["budget"] == 3 and len(stored["trials"]) == 3
    assert all("test" not in t for t in stored["trials"])

    def no_training(self):
        raise AssertionError("a finished trial was trained again")

    monkeypatch.setattr(train_module.Trainer, "fit", no_training)
    again = tune("bpr", DATA, train=QUICK, trials=3, out=tmp_path / "tuned")
    assert again.best == result.best
    monkeypatch.undo()

    chosen = read_tuned(path)["settings"]
    out = tmp_path / "train.json"
    argv = ["train", "--tuned", str(path), "--dataset", "synthetic", "--num-users", "150"]
    argv += ["--num-items", "80", "--json", str(out), "--no-progress"]
    assert main(argv) == 0
    trained = json.loads(out.read_text())
    assert trained["model"] == "bpr"
    assert trained["config"]["train"]["lr"] == chosen["train"]["lr"]
    assert trained["config"]["model"]["reg_weight"] == chosen["model"]["reg_weight"]
    assert trained["epochs"] <= chosen["train"]["epochs"]
    # an explicit flag wins over the file
    assert main([*argv, "--lr", "0.0123"]) == 0
    assert json.loads(out.read_text())["config"]["train"]["lr"] == 0.0123


def test_tuned_file_of_another_model_is_refused(tmp_path, capsys):
    tune("pop", DATA, train=QUICK, trials=2, out=tmp_path)
    path = tmp_path / DATA.tag() / "pop.json"
    with pytest.raises(SystemExit) as exc:
        main(["train", "--model", "bpr", "--tuned", str(path), "--dataset", "synthetic"])
    assert exc.value.code == 2
    assert "holds settings of --model pop" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown model"):
        tune("nope", DATA)


def test_compare_tunes_each_model_tests_once_and_tests_the_win(tmp_path):
    from mllmrec_pyg.experiments import ExperimentSettings, run_compare
    from mllmrec_pyg.experiments.compare import per_user_metrics, sign_flip_test

    settings = ExperimentSettings(
        data=DATA,
        train=QUICK,
        seeds=(0, 1),
        out=str(tmp_path / "results"),
        cache=str(tmp_path / "cache"),
    )
    result = run_compare(
        settings, models=["pop", "bpr"], proposed="bpr", trials=2, tuned_dir=str(tmp_path / "t")
    )
    rows = {r["variant"]: r for r in result["rows"]}
    assert set(rows) == {"pop", "bpr"} and rows["bpr"]["seeds"] == 2
    assert result["tuned"]["bpr"]["trials"] == 2
    sig = result["significance"]
    assert sig["against"] == "pop" and 0 < sig["recall@20"]["p (paired sign-flip, per user)"] <= 1
    gain = result["findings"]["relative_gain"]["recall@20"]
    assert gain == pytest.approx(
        (rows["bpr"]["test recall@20"] - rows["pop"]["test recall@20"])
        / rows["pop"]["test recall@20"]
    )
    from pathlib import Path

    from mllmrec_pyg.experiments.report import build_report

    text = build_report(Path(settings.out), tmp_path / "results.md")
    assert "the honest comparison" in text and "paired sign-flip p =" in text
    assert "beats the best tuned baseline by 3%" in text
    # every run stores its per-user test metrics, whose means are its test metrics ...
    import json
    import shutil

    from mllmrec_pyg import train as train_module
    from mllmrec_pyg.experiments.compare import PER_USER

    for run in result["runs"]:
        stored = json.loads(
            (Path(settings.out) / DATA.tag() / "compare" / "runs" /
             f"{run['variant']}-seed{run['seed']}.json").read_text()
        )  # fmt: skip
        pu = stored[PER_USER]
        assert len(pu["users"]) == len(pu["recall@20"]) == sig["users"]
        for m in ("recall@20", "ndcg@20"):
            assert sum(pu[m]) / len(pu[m]) == pytest.approx(run["test"][m], abs=1e-6)
    # ... so a second compare tests the win again from them: no checkpoint, no training
    shutil.rmtree(Path(settings.cache))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_module.Trainer, "fit", lambda self: pytest.fail("trained again"))
        again = run_compare(
            settings, models=["pop", "bpr"], proposed="bpr", trials=2,
            tuned_dir=str(tmp_path / "t"),
        )  # fmt: skip
    sig2 = again["significance"]
    assert (sig2["against"], sig2["users"]) == (sig["against"], sig["users"])
    for m in ("recall@20", "ndcg@20"):
        a, b = sig2[m], sig[m]
        assert (a["users better"], a["users worse"]) == (b["users better"], b["users worse"])
        assert a["mean difference"] == pytest.approx(b["mean difference"], abs=1e-6)
        key = "p (paired sign-flip, per user)"
        assert a[key] == pytest.approx(b[key], abs=1e-3)
    # a run stored before runs held them gets them once, here by training it again (its
    # checkpoint is gone), and keeps them in its JSON
    path = Path(settings.out) / DATA.tag() / "compare" / "runs" / "bpr-seed0.json"
    before = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in before.items() if k != PER_USER}))
    third = run_compare(
        settings, models=["pop", "bpr"], proposed="bpr", trials=2, tuned_dir=str(tmp_path / "t")
    )
    assert json.loads(path.read_text())[PER_USER]["users"] == before[PER_USER]["users"]
    assert third["significance"]["recall@20"]["users better"] == sig["recall@20"]["users better"]
    # a baseline run trained elsewhere (another device: other numbers), stored without
    # per-user metrics and without its checkpoint, is trained again here for the test; the
    # new run takes its place, says what it replaced, and the table row is the new run's
    pop0 = Path(settings.out) / DATA.tag() / "compare" / "runs" / "pop-seed0.json"
    cpu = json.loads(pop0.read_text())
    elsewhere = {k: v for k, v in cpu.items() if k != PER_USER}
    elsewhere["test"] = {**cpu["test"], "recall@20": 0.987}
    elsewhere["device"] = "cuda"
    pop0.write_text(json.dumps(elsewhere))
    fourth = run_compare(
        settings, models=["pop", "bpr"], proposed="bpr", trials=2, tuned_dir=str(tmp_path / "t")
    )
    now = json.loads(pop0.read_text())
    assert now["replaces"]["device"] == "cuda" and now["replaces"]["test"]["recall@20"] == 0.987
    assert now["device"] == "cpu" and now["test"]["recall@20"] == cpu["test"]["recall@20"]
    row = {r["variant"]: r for r in fourth["rows"]}["pop"]
    pop1 = json.loads(pop0.with_name("pop-seed1.json").read_text())
    mean = (cpu["test"]["recall@20"] + pop1["test"]["recall@20"]) / 2
    assert row["test recall@20"] == pytest.approx(mean, abs=1e-9)
    # per-user metrics average to the trainer's test metric; a constant shift is significant
    import torch

    from mllmrec_pyg.nn import MostPop
    from mllmrec_pyg.pipeline import load_data
    from mllmrec_pyg.train import Trainer

    data = load_data(DATA)
    model = MostPop.from_data(data)
    per_user = per_user_metrics(model, data)
    test = Trainer(model, data, QUICK).evaluate("test")
    assert per_user["recall@20"].mean().item() == pytest.approx(test["recall@20"], abs=1e-6)
    assert per_user["ndcg@20"].mean().item() == pytest.approx(test["ndcg@20"], abs=1e-6)
    assert sign_flip_test(torch.full((50,), 0.1)) < 0.01
    assert sign_flip_test(torch.tensor([0.1, -0.1] * 25)) > 0.5


def test_tune_and_train_on_another_movielens_folder_without_tags(tmp_path):
    """A MovieLens-format folder that is not ml-latest-small: other genres, an empty tags.csv."""
    import numpy as np

    rng = np.random.default_rng(0)
    root = tmp_path / "other-ml"
    root.mkdir()
    genres = ["Space", "Jazz", "Heist", "Cooking", "Sports", "Noir", "Opera"]
    rows = [
        f"{u},{m},{rng.integers(1, 6)}.0,{1000 * u + k}\n"
        for u in range(1, 61)
        for k, m in enumerate(rng.choice(np.arange(1, 41), 12, replace=False))
    ]
    (root / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "".join(rows))
    movies = [
        f"{m},Picture {m} ({1950 + m}),{'|'.join(rng.choice(genres, 2, replace=False))}\n"
        for m in range(1, 41)
    ]
    (root / "movies.csv").write_text("movieId,title,genres\n" + "".join(movies))
    (root / "tags.csv").write_text("")
    data_cfg = DataConfig("movielens", root=str(root))
    assert data_cfg.tag() == "movielens-other-ml"
    result = tune(
        "langgcn", data_cfg, train=QUICK, trials=2, out=tmp_path / "tuned", cache=tmp_path / "c"
    )
    assert len(result.trials) == 2
    path = tmp_path / "tuned" / "movielens-other-ml" / "langgcn.json"
    out = tmp_path / "r.json"
    argv = ["train", "--tuned", str(path), "--dataset", "movielens", "--root", str(root)]
    argv += ["--cache-dir", str(tmp_path / "c"), "--json", str(out), "--no-progress"]
    assert main(argv) == 0
    assert json.loads(out.read_text())["model"] == "langgcn"


def test_ablation_changes_one_switch_of_the_chosen_settings():
    from mllmrec_pyg.config import GraphConfig
    from mllmrec_pyg.experiments.compare import ABLATIONS, ablation_jobs
    from mllmrec_pyg.nn.langgcn import LangGCNConfig

    data = load_data(DATA)
    data["item"].x = torch.randn(data["item"].num_nodes, 8)
    model = dataclasses.asdict(LangGCNConfig(item_graph=None, num_negatives=0))
    chosen = {"model": model, "train": {"lr": 0.003, "batch_size": 2048}, "graph": None}
    graphs: dict = {}
    jobs = ablation_jobs("langgcn", chosen, data, GraphConfig(), graphs, [0, 1])
    names = [s.variant.removeprefix("langgcn-ablate-") for s, _ in jobs[::2]]
    # the chosen point has no item graph and a full softmax: those switches are skipped
    assert "no-item-graph" not in names and "full-softmax" not in names
    assert set(names) == set(ABLATIONS) - {"no-item-graph", "full-softmax"}
    by = {s.variant: s for s, _ in jobs}
    for name in names:
        spec = by[f"langgcn-ablate-{name}"]
        changed = {k for k in model if spec.config.get(k) != model[k] and k != "item_graph"}
        changed |= {"item_graph"} if spec.config["item_graph"] is not None else set()
        assert changed == {k for k in ABLATIONS[name][1] if spec.config[k] != model[k]}
        assert spec.train == {"lr": 0.003, "batch_size": 2048}
    # the plain kNN variant reads a graph without threshold and co-occurrence
    plain = [d for s, d in jobs if s.variant.endswith("plain-knn")][0]
    refined = [d for s, d in jobs if s.variant.endswith("refined-graph")][0]
    assert plain is not refined
    assert GraphConfig(alpha=None, cooccurrence=False) in graphs and GraphConfig() in graphs
    assert {s.seed for s, _ in jobs} == {0, 1}
    some = ablation_jobs("langgcn", chosen, data, GraphConfig(), graphs, [0], ["bpr", "id-users"])
    assert [s.variant for s, _ in some] == ["langgcn-ablate-id-users", "langgcn-ablate-bpr"]
    with pytest.raises(ValueError, match="unknown ablation"):
        ablation_jobs("langgcn", chosen, data, GraphConfig(), graphs, [0], ["nope"])


def test_two_workers_share_one_search_without_training_a_point_twice(tmp_path, monkeypatch):
    import threading

    import mllmrec_pyg.tuning as tuning

    trained = []
    real = tuning.train_model

    def counting(*args, **kwargs):
        trained.append(threading.get_ident())
        return real(*args, **kwargs)

    monkeypatch.setattr(tuning, "train_model", counting)
    kwargs = dict(train=QUICK, trials=4, out=tmp_path / "t", cache=tmp_path / "c")
    results = []
    workers = [
        threading.Thread(target=lambda: results.append(tune("lightgcn", DATA, **kwargs)))
        for _ in range(2)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(trained) == 4  # every point once, whichever worker took it
    a, b = results
    assert [t["point"] for t in a.trials] == [t["point"] for t in b.trials]
    assert len(a.trials) == 4 and a.best == b.best
    stored = json.loads((tmp_path / "t" / DATA.tag() / "lightgcn.json").read_text())
    assert len(stored["trials"]) == 4
    assert not list((tmp_path / "t" / DATA.tag() / "lightgcn.json.claims").iterdir())
