"""Move the committed results of docs/experiments/ into the run store (mllmrec_pyg.runs), once.

The results were written by the per-experiment run cache (``<exp>/runs/<variant>-seed<n>.json``,
keyed without cut-offs, masking, monitor or text source) and the search files
(``tuned/<tag>/<key>.json``, trials inside). Every run was made with the default
cut-offs (5 10 20 50), monitoring valid Recall@20, without --mask-valid-at-test,
with test evaluated for experiment runs and not for trials, and with the text
source that its results.json ``settings`` names. This script

1. rebuilds each run's spec from its experiment's definition, checks that the model
   config it resolves to is the one the run recorded, prepares the data the run read
   (features in --cache; SmolLM2 texts imported from the committed exports) and writes
   the run as a record of ``<dataset>/runs/`` (trials: ``tuned/<dataset>/runs/``);
2. rewrites each results.json (run keys, text tag, tag) into its folder in the new
   layout: ``movielens-smollm2/<exp>`` -> ``movielens/<exp>+<text tag>``,
   ``movielens-none-text/compare`` -> ``movielens/compare+none-text`` (``--tag none-text``);
3. rewrites every search file by running ``tune`` over the migrated trials with training
   switched off, so each trial is proven to be found in the store.

Run from the repository root:  python scripts/migrate_run_store.py --cache /tmp/mig/cache
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from dataclasses import replace
from pathlib import Path

from mllmrec_pyg import train as train_module
from mllmrec_pyg.config import DataConfig, GraphConfig, TextConfig
from mllmrec_pyg.data.schema import RELATED
from mllmrec_pyg.experiments import ablation, leakage, tsne
from mllmrec_pyg.experiments.common import ExperimentSettings, load_raw, prepare_data
from mllmrec_pyg.experiments.compare import ABLATIONS
from mllmrec_pyg.experiments.sensitivity import dim_label, grid_label
from mllmrec_pyg.io import jsonable, read_json, write_json
from mllmrec_pyg.pipeline import cache_dir, store_path
from mllmrec_pyg.reasoning import GenerationStore
from mllmrec_pyg.runs import RUN_FORMAT, RunSpec, RunStore, summary
from mllmrec_pyg.train import TrainConfig
from mllmrec_pyg.tuning import CANDIDATES, draw, read_tuned, split_point, tune

ROOT = Path("docs/experiments")
#: old top folder -> (tag given to its results, old --out in its commands)
OLD = {
    "movielens": None,
    "synthetic": None,
    "movielens-smollm2": None,
    "movielens-none-text": "none-text",
}
SMOLLM2 = ROOT / "movielens" / "llm"


def settings_of(obj: dict, cache: str, tag: str | None) -> ExperimentSettings:
    s = obj["settings"]
    text = TextConfig(
        user_text=s.get("user_text", "preferences"),
        backend=s["backend"],
        backend_model=s["backend_model"],
        backend_url=s["backend_url"],
        backend_options=tuple(sorted((s.get("backend_options") or {}).items())),
        token_budget=s["token_budget"],
        encoder=s["encoder"],
    )
    graph = GraphConfig(
        **{k: s[k] for k in ("k_s", "alpha", "k_c", "cooccurrence", "loop", "knn_backend") if k in s}
    )
    train = TrainConfig(
        epochs=s["epochs"], patience=s["patience"], batch_size=s["batch_size"], lr=s["lr"],
        device=s["device"], show_progress=False,
    )  # fmt: skip
    data = DataConfig(
        s["dataset"], root=s["movielens_root"], seed=s["data_seed"],
        num_users=s["num_users"], num_items=s["num_items"],
    )  # fmt: skip
    return ExperimentSettings(
        data, text, graph, train, tuple(s["seeds"]), out=str(ROOT), cache=cache, tag=tag
    )


def spec_of(exp: str, run: dict, obj: dict, graph: GraphConfig) -> RunSpec:
    """The spec the runner of ``exp`` gave ``run`` (as the runners build them now)."""
    variant, seed = run["variant"], run["seed"]
    if exp == "compare":
        base = variant.split("-ablate-")[0]
        point = obj["tuned"][base]["point"]
        g = replace(graph, **{k[6:]: v for k, v in point.items() if k.startswith("graph.")})
        if "-ablate-" in variant:
            g = replace(g, **ABLATIONS[variant.split("-ablate-")[1]][0])
        config = {k: v for k, v in run["config"].items() if k != "seed"}
        return RunSpec(variant, run["model"], config, seed, run["train"], g)
    if exp == "ablation":
        if variant in ablation.VARIANTS:
            change, config = ablation.VARIANTS[variant]
            return RunSpec(variant, "mllmrec", dict(config), seed, graph=replace(graph, **change))
        model, config = ablation.ANCHORS[variant]
        return RunSpec(variant, model, dict(config), seed)
    if exp.startswith("plug_and_play"):
        host = obj.get("host", "freedom")
        if " + " not in variant:
            return RunSpec(variant, host, {}, seed)
        g = replace(graph, cooccurrence=False) if variant.endswith("GD") else graph
        return RunSpec(variant, host, {"item_graph": list(RELATED)}, seed, graph=g)
    if exp == "sensitivity":
        e = run["extra"]
        if "d" in e:
            assert variant == dim_label(e["d"])
            return RunSpec(variant, "mllmrec", {"embedding_dim": e["d"]}, seed, extra=e)
        assert variant == grid_label(e["alpha"], e["k_c"])
        g = replace(graph, alpha=e["alpha"], k_c=e["k_c"])
        return RunSpec(variant, "mllmrec", {}, seed, graph=g, extra=e)
    if exp == "tsne":
        model, config = ("mllmrec", {}) if variant == "MLLMRec" else tsne.BASELINES[variant]
        return RunSpec(variant, model, dict(config), seed)
    if exp == "leakage":
        config = {"use_user_features": False} if variant == leakage.NO_PREFS else {}
        return RunSpec(variant, "mllmrec", config, seed, full_history=variant == leakage.FULL)
    raise ValueError(f"no spec rule for {exp}")


def import_smollm2(settings: ExperimentSettings) -> None:
    """The SmolLM2 texts of the committed exports into the data's generation store."""
    store = GenerationStore(store_path(settings.data, cache_dir(settings.data, settings.cache)))
    try:
        for name in ("smollm2_preferences.jsonl.gz", "smollm2_preferences_full_history.jsonl.gz"):
            print(name, "added/present", store.import_jsonl(SMOLLM2 / name))
    finally:
        store.close()


def same(a: dict, b: dict) -> bool:
    keys = ("valid", "test", "best_epoch", "epochs")
    return all(a.get(k) == b.get(k) for k in keys)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", required=True, help="feature cache root for the migration")
    args = p.parse_args()
    data_cache: dict = {}
    written: dict[Path, tuple[dict, tuple]] = {}
    notes: list[str] = []
    old_folders = [d for d in OLD if (ROOT / d).is_dir()]

    def data_for(settings: ExperimentSettings, full_history: bool):
        key = (settings.data, settings.text, full_history)
        if key not in data_cache:
            if settings.text.backend == "transformers":
                import_smollm2(settings)
            raw = load_raw(settings)
            data_cache[key] = prepare_data(settings, full_history=full_history, raw=raw)
        return data_cache[key]

    for old in old_folders:
        tag = OLD[old]
        for res_path in sorted((ROOT / old).glob("*/results.json")):
            obj = read_json(res_path)
            exp = res_path.parent.name
            settings = settings_of(obj, args.cache, tag)
            command = obj["command"].replace(f"--out {obj['settings']['out']}", f"--out {ROOT}")
            if tag:
                command += f" --tag {tag}"
            store = settings.store(exp, command)
            new_runs = []
            for run in obj["runs"]:
                spec = spec_of(exp, run, obj, settings.graph)
                slug = re.sub(r"[^A-Za-z0-9]+", "_", spec.variant).strip("_").lower()
                old_file = res_path.parent / "runs" / f"{slug or 'run'}-seed{spec.seed}.json"
                full = read_json(old_file) if old_file.is_file() else dict(run)
                assert full.get("key") == run.get("key"), old_file
                data = data_for(settings, spec.full_history)
                resolved = store.settings(spec, data)
                if resolved["config"] != jsonable(full["config"]):
                    raise SystemExit(f"{old_file}: config {full['config']} != {resolved['config']}")
                record = {
                    "format": RUN_FORMAT,
                    "key": store.key(spec, data),
                    "variant": spec.variant,
                    "train": spec.train,
                    "device": full.get("device") or "cpu",
                    "extra": spec.extra,
                    **{k: full[k] for k in ("valid", "test", "best_epoch", "epochs", "seconds")},
                    "stopped_early": full.get("stopped_early", full["epochs"] < settings.train.epochs),
                    "history": full.get("history", []),
                    **{k: full[k] for k in ("replaces", "per_user_test") if k in full},
                    "settings": resolved,
                    "command": command,
                    "migrated": {
                        "from": str(old_file if old_file.is_file() else res_path),
                        "old_key": full.get("key"),
                    },
                }
                path = store.path(spec, data)
                # the same run made by two experiments is one record: the fuller one is kept
                # (a run file's, with history and per-user metrics, over a results.json line)
                rank = (old_file.is_file(), len(record["history"]), "per_user_test" in record)
                if path in written:
                    first, first_rank = written[path]
                    if not same(first, record):
                        notes.append(
                            f"{path.name}: {record['migrated']['from']} ({spec.variant} seed "
                            f"{spec.seed}) has the key of {first['migrated']['from']} with other "
                            "numbers; the store keeps the latter"
                        )
                    elif rank > first_rank:
                        written[path] = (record, rank)
                else:
                    written[path] = (record, rank)
                new_runs.append(summary(record, spec))
            new_obj = {
                **{k: v for k, v in obj.items() if k not in ("runs", "command", "settings")},
                "text_tag": settings.text.tag(),
                "tag": tag,
                "command": command,
                "settings": {**obj["settings"], **settings.as_dict(), "cache": obj["settings"]["cache"]},
                "runs": new_runs,
            }
            order = ["format", "experiment", "dataset", "text_tag", "tag", "command", "settings"]
            new_obj = {
                **{k: new_obj[k] for k in order},
                **{k: v for k, v in new_obj.items() if k not in order},
            }
            folder = settings.experiment_dir(exp)
            folder.mkdir(parents=True, exist_ok=True)
            for f in res_path.parent.iterdir():
                if f.is_file() and f.name != "results.json" and folder != res_path.parent:
                    shutil.copy2(f, folder / f.name)
            written_results = folder / "results.json"
            write_json(written_results, jsonable(new_obj))
            print(f"{res_path} -> {written_results} ({len(new_runs)} runs)")

    for path, (record, _) in written.items():
        write_json(path, jsonable(record), indent=None)
    print(f"{len(written)} run records")

    # the searches: every trial a record of tuned/<tag>/runs, then the search files from them
    def no_training(self):
        raise AssertionError("a migrated trial was not found in the store")

    for search in sorted((ROOT / "tuned").glob("*/*.json")):
        old = read_json(search)
        results = read_json(ROOT / old["dataset"] / "compare" / "results.json")
        settings = settings_of(results, args.cache, None)
        settings = replace(
            settings, train=replace(settings.train, epochs=old["epoch_cap"], patience=old["patience"])
        )
        cand = CANDIDATES[old["key"]]
        assert jsonable({k: list(v) for k, v in cand.space.items()}) == old["search_space"], search
        points = draw(cand, old["budget"], old["seed"])
        assert [t["point"] for t in old["trials"]] == jsonable(points), search
        data = data_for(settings, False)
        store = RunStore(
            search.parent / "runs",
            settings.cache_dir() / "runs",
            replace(settings.train, evaluate_test=False),
            settings.text,
            settings.graph,
            results["command"],
        )
        for trial in old["trials"]:
            parts = split_point(trial["point"])
            g = replace(settings.graph, **parts["graph"])
            spec = RunSpec(
                cand.key, cand.model, {**cand.fixed, **parts["model"]}, old["seed"],
                parts["train"], g, extra={"point": trial["point"]},
            )  # fmt: skip
            resolved = store.settings(spec, data)
            if resolved["config"] != jsonable(trial["settings"]["model"]):
                raise SystemExit(f"{search}: trial config differs: {trial['point']}")
            record = {
                "format": RUN_FORMAT,
                "key": store.key(spec, data),
                "variant": cand.key,
                "train": spec.train,
                "device": None,  # the search file did not record it
                "extra": spec.extra,
                "valid": trial["valid"],
                "test": {},
                **{k: trial[k] for k in ("best_epoch", "epochs", "seconds")},
                "stopped_early": trial["epochs"] < old["epoch_cap"],
                "history": [],
                "settings": resolved,
                "command": results["command"],
                "migrated": {"from": str(search), "point": trial["point"]},
            }
            write_json(store.path(spec, data), jsonable(record), indent=None)
        train_module.Trainer.fit = no_training
        again = tune(
            cand.key, settings.data, settings.text, settings.graph, settings.train,
            trials=old["budget"], seed=old["seed"], out=ROOT / "tuned", cache=args.cache,
            data=data, command=results["command"],
        )  # fmt: skip
        assert jsonable(again.best["point"]) == old["best"]["point"], search
        assert read_tuned(search)["settings"]["train"] == old["best"]["settings"]["train"]
        print(f"{search}: {len(again.trials)} trials in the store, best {again.best['point']}")

    for old in old_folders:
        for runs in (ROOT / old).glob("*/runs"):
            shutil.rmtree(runs)
        if OLD[old] is not None or old == "movielens-smollm2":
            shutil.rmtree(ROOT / old)
    for note in notes:
        print("NOTE", note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
