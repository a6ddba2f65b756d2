"""Validation-only search: same budget per model, no test metric read, resumable, read by train."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from mllmrec_pyg import train as train_module
from mllmrec_pyg.cli import main
from mllmrec_pyg.config import DataConfig
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
    from pathlib import Path

    from mllmrec_pyg.experiments import ExperimentSettings, run_compare
    from mllmrec_pyg.experiments.compare import sign_flip_test
    from mllmrec_pyg.experiments.report import build_report
    from mllmrec_pyg.runs import PER_USER

    settings = ExperimentSettings(
        data=DATA,
        train=QUICK,
        seeds=(0, 1),
        out=str(tmp_path / "results"),
        cache=str(tmp_path / "cache"),
    )

    def compare():
        return run_compare(settings, models=["pop", "bpr"], proposed="bpr", trials=2)

    result = compare()
    rows = {r["variant"]: r for r in result["rows"]}
    assert set(rows) == {"pop", "bpr"} and rows["bpr"]["seeds"] == 2
    assert result["tuned"]["bpr"]["trials"] == 2
    # the searches live under <out>/tuned, their trials in its run store
    assert (tmp_path / "results" / "tuned" / DATA.tag() / "bpr.json").is_file()
    sig = result["significance"]
    assert sig["against"] == "pop" and 0 < sig["recall@20"]["p (paired sign-flip, per user)"] <= 1
    gain = result["findings"]["relative_gain"]["recall@20"]
    assert gain == pytest.approx(
        (rows["bpr"]["test recall@20"] - rows["pop"]["test recall@20"])
        / rows["pop"]["test recall@20"]
    )
    text = build_report(Path(settings.out), tmp_path / "results.md")
    assert "the honest comparison" in text and "paired sign-flip p =" in text
    assert "beats the best tuned baseline by 3%" in text
    store = Path(settings.out) / DATA.tag() / "runs"

    def record(run):
        return store / f"{run['key'][:16]}.json"

    # every run stores its per-user test metrics, whose means are its test metrics ...
    for run in result["runs"]:
        pu = json.loads(record(run).read_text())[PER_USER]
        assert len(pu["users"]) == len(pu["recall@20"]) == sig["users"]
        for m in ("recall@20", "ndcg@20"):
            assert sum(pu[m]) / len(pu[m]) == pytest.approx(run["test"][m], abs=1e-6)
    # ... so a second compare tests the win again from them: no checkpoint, no training
    import shutil

    shutil.rmtree(Path(settings.cache))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_module.Trainer, "fit", lambda self: pytest.fail("trained again"))
        again = compare()
    sig2 = again["significance"]
    assert (sig2["against"], sig2["users"]) == (sig["against"], sig["users"])
    for m in ("recall@20", "ndcg@20"):
        a, b = sig2[m], sig[m]
        assert (a["users better"], a["users worse"]) == (b["users better"], b["users worse"])
        assert a["mean difference"] == pytest.approx(b["mean difference"], abs=1e-6)
        key = "p (paired sign-flip, per user)"
        assert a[key] == pytest.approx(b[key], abs=1e-3)
    # a baseline run trained elsewhere (another device: other numbers), stored without
    # per-user metrics and without its checkpoint, is trained again here for the test; the
    # new run takes its place, says what it replaced, and the table row is the new run's
    runs = {(r["variant"], r["seed"]): r for r in result["runs"]}
    pop0 = record(runs["pop", 0])
    cpu = json.loads(pop0.read_text())
    elsewhere = {k: v for k, v in cpu.items() if k != PER_USER}
    elsewhere["test"] = {**cpu["test"], "recall@20": 0.987}
    elsewhere["device"] = "cuda"
    pop0.write_text(json.dumps(elsewhere))
    fourth = compare()
    now = json.loads(pop0.read_text())
    assert now["replaces"]["device"] == "cuda" and now["replaces"]["test"]["recall@20"] == 0.987
    assert now["device"] == "cpu" and now["test"]["recall@20"] == cpu["test"]["recall@20"]
    assert now[PER_USER] == cpu[PER_USER]
    row = {r["variant"]: r for r in fourth["rows"]}["pop"]
    mean = (cpu["test"]["recall@20"] + runs["pop", 1]["test"]["recall@20"]) / 2
    assert row["test recall@20"] == pytest.approx(mean, abs=1e-9)
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

    model = dataclasses.asdict(
        LangGCNConfig(
            item_graph=None,
            num_negatives=0,
            item_graph_mode="both",
            input_propagation=True,
            hidden_dim=0,
            edge_dropout=0.8,
        )
    )
    chosen = {"model": model, "train": {"lr": 0.003, "batch_size": 2048}, "graph": None}
    specs = ablation_jobs("langgcn", chosen, GraphConfig(), [0, 1])
    names = [s.variant.removeprefix("langgcn-ablate-") for s in specs[::2]]
    # the chosen point has no item graph and a full softmax: those switches are skipped;
    # no IDs with pruned edges and propagated inputs is refused by the model: skipped too;
    # the point reads no head view and has no co-purchase prior, popularity term nor
    # history readout, so dropping any of them is no switch
    assert set(names) == set(ABLATIONS) - {
        "no-item-graph",
        "full-softmax",
        "no-ids",
        "no-item-head",
        "no-cooccurrence",
        "no-popularity",
        "no-history",
    }
    by = {s.variant: s for s in specs}
    for name in names:
        spec = by[f"langgcn-ablate-{name}"]
        # the seed is the run's, not a switch: the spec leaves it to the run
        assert "seed" not in spec.config
        changed = {
            k for k in model if spec.config.get(k) != model[k] and k not in ("item_graph", "seed")
        }
        changed |= {"item_graph"} if spec.config["item_graph"] is not None else set()
        assert changed == {k for k in ABLATIONS[name][1] if spec.config[k] != model[k]}
        assert spec.train == {"lr": 0.003, "batch_size": 2048}
    # the plain kNN variant reads a graph without threshold and co-occurrence
    assert by["langgcn-ablate-plain-knn"].graph == GraphConfig(alpha=None, cooccurrence=False)
    assert by["langgcn-ablate-refined-graph"].graph == GraphConfig()
    assert {s.seed for s in specs} == {0, 1}
    some = ablation_jobs("langgcn", chosen, GraphConfig(), [0], ["bpr", "id-users"])
    assert [s.variant for s in some] == ["langgcn-ablate-id-users", "langgcn-ablate-bpr"]
    with pytest.raises(ValueError, match="unknown ablation"):
        ablation_jobs("langgcn", chosen, GraphConfig(), [0], ["nope"])


def test_two_workers_share_one_search_without_training_a_point_twice(tmp_path, monkeypatch):
    import threading

    from mllmrec_pyg import runs

    trained = []
    real = runs.train_model

    def counting(*args, **kwargs):
        trained.append(threading.get_ident())
        return real(*args, **kwargs)

    monkeypatch.setattr(runs, "train_model", counting)
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
    assert len(list((tmp_path / "t" / DATA.tag() / "runs").glob("*.json"))) == 4


def test_a_search_is_redone_when_a_setting_changes_and_names_its_command(tmp_path):
    """A stored search is reused only under the same settings: other cut-offs or another
    text source train new trials (the trials' keys hold every setting)."""
    from mllmrec_pyg import runs
    from mllmrec_pyg.config import TextConfig

    out = tmp_path / "t"
    first = tune("mllmrec", DATA, train=QUICK, trials=1, out=out, cache=tmp_path / "c")
    trained = []
    real = runs.train_model

    def counting(*args, **kwargs):
        trained.append(args[0])
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runs, "train_model", counting)
        same = tune("mllmrec", DATA, train=QUICK, trials=1, out=out, cache=tmp_path / "c")
        assert trained == [] and same.best == first.best
        ks = dataclasses.replace(QUICK, ks=(5, 10), monitor="recall@10")
        other = tune("mllmrec", DATA, train=ks, trials=1, out=out, cache=tmp_path / "c")
        assert trained == ["mllmrec"] and other.best["monitor"] == "recall@10"
        text = TextConfig(user_text="history")
        tune("mllmrec", DATA, text, train=QUICK, trials=1, out=out, cache=tmp_path / "c")
        assert trained == ["mllmrec", "mllmrec"]
    record = json.loads(next((out / DATA.tag() / "runs").glob("*.json")).read_text())
    assert record["command"].startswith("mllmrec tune mllmrec --dataset synthetic --num-users 150")
    assert "--out" in record["command"] and record["test"] == {}


def test_compare_can_take_the_chosen_settings_of_searches_made_elsewhere(tmp_path):
    from mllmrec_pyg.experiments import ExperimentSettings, run_compare
    from mllmrec_pyg.experiments import compare as compare_module
    from mllmrec_pyg.experiments.report import build_report

    settings = ExperimentSettings(
        data=DATA, train=QUICK, seeds=(0,), out=str(tmp_path / "a"), cache=str(tmp_path / "c")
    )
    first = run_compare(settings, models=["pop", "bpr"], proposed="bpr", trials=2)
    searches = tmp_path / "a" / "tuned"
    # another results root: nothing of the first one's run store is there, and no search runs
    other = ExperimentSettings(
        data=DATA, train=QUICK, seeds=(0,), out=str(tmp_path / "b"), cache=str(tmp_path / "d")
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(compare_module, "tune", lambda *a, **k: pytest.fail("searched again"))
        again = run_compare(
            other, models=["pop", "bpr"], proposed="bpr", trials=2, chosen_dir=str(searches)
        )
        assert "--chosen-dir" in again["command"]
        for key in ("pop", "bpr"):
            assert again["tuned"][key]["point"] == first["tuned"][key]["point"]
            assert again["tuned"][key]["searched in"] == str(searches / DATA.tag() / f"{key}.json")
        # the same settings, seed and data: the same test numbers, trained in the new root
        rows = {r["variant"]: r["test recall@20"] for r in again["rows"]}
        assert rows == {r["variant"]: r["test recall@20"] for r in first["rows"]}
        assert list((tmp_path / "b" / DATA.tag() / "runs").glob("*.json"))
        text = build_report(Path(other.out), tmp_path / "b.md")
        assert "were taken as stored" in text
        # another budget is refused, naming the file
        with pytest.raises(ValueError, match=r"bpr\.json: searched with a budget of 2"):
            run_compare(other, models=["bpr"], trials=3, chosen_dir=str(searches))
        with pytest.raises(ValueError, match="no stored search of 'lightgcn'"):
            run_compare(other, models=["lightgcn"], trials=2, chosen_dir=str(searches))


def test_settings_searched_together_share_one_key(tmp_path, monkeypatch):
    """A joint key ("train.lr+model.reg_weight") is one dimension of the grid whose values
    set both settings; the search trains exactly those pairs."""
    from mllmrec_pyg.nn.registry import point_text

    space = {"train.lr+model.reg_weight": ((1e-3, 0.0), (1e-2, 1e-4)), "train.batch_size": (256,)}
    cand = Candidate("bpr-joint", "bpr", space=space)
    grid = cand.grid()
    assert len(grid) == 2  # two separate keys would make four points
    assert split_point(grid[1]) == {
        "train": {"batch_size": 256, "lr": 1e-2},
        "model": {"reg_weight": 1e-4},
        "graph": {},
    }
    assert point_text(grid[1]) == "train.batch_size=256 train.lr=0.01 model.reg_weight=0.0001"
    with pytest.raises(ValueError, match="takes 2 values"):
        split_point({"train.lr+model.reg_weight": (1e-3,)})
    with pytest.raises(ValueError, match="set twice"):
        split_point({"train.lr+train.lr": (1e-3, 1e-2)})
    with pytest.raises(ValueError, match="must be .<train.model.graph>"):
        split_point({"train.lr+reg_weight": (1e-3, 0.0)})
    split_point(dict.fromkeys(space))  # the keys alone, as registration checks them
    monkeypatch.setitem(CANDIDATES, cand.key, cand)
    result = tune(cand.key, DATA, train=QUICK, trials=6, out=tmp_path)
    pairs = {
        (t["settings"]["train"]["lr"], t["settings"]["model"]["reg_weight"]) for t in result.trials
    }
    assert pairs == {(1e-3, 0.0), (1e-2, 1e-4)}
    stored = json.loads((tmp_path / DATA.tag() / "bpr-joint.json").read_text())
    assert stored["search_space"]["train.lr+model.reg_weight"] == [[1e-3, 0.0], [1e-2, 1e-4]]
