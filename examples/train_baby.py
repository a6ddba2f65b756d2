"""Train MLLMRec next to MostPop and BPR and print valid/test R@10, R@20, N@10, N@20.

With ``--data-dir`` pointing at a Baby folder in the MMRec format (the
authors' ``image_text_feat.npy`` and ``user_preferences_feat.npy`` included)
it trains there, as is. Without arguments it runs the whole pipeline offline
on the synthetic catalog:

1. the synthetic baby-store catalog (``make_synthetic``);
2. item text -> features with the bundled all-MiniLM-L6-v2 encoder;
3. user preference text from TRAINING interactions via the reasoning stage's
   offline ``none`` backend (``--user-text history`` uses a plain summary of
   each user's training items instead), encoded the same way;
4. the refined item-item graph (ThresholdKNN + JaccardCoOccurrence + MergeGraphs);
5. MLLMRec, BPR and MostPop trained with BPR / early stopping on valid R@20.

Encoded features and generated texts are cached under ``--cache-dir`` and
reused when unchanged, so a second run skips straight to training.

Usage::

    python examples/train_baby.py                       # synthetic, offline
    python examples/train_baby.py --data-dir data/baby  # the real Baby folder
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from mllmrec_pyg.threads import apply_thread_policy, configure_openmp  # noqa: E402

configure_openmp()  # before torch loads: idle OpenMP threads sleep instead of spinning

from mllmrec_pyg import pipeline  # noqa: E402
from mllmrec_pyg.config import DataConfig, GraphConfig, TextConfig, default_of  # noqa: E402
from mllmrec_pyg.io import write_json  # noqa: E402
from mllmrec_pyg.tables import format_table, result_row  # noqa: E402
from mllmrec_pyg.train import TrainConfig  # noqa: E402

log = logging.getLogger("train_baby")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, help="MMRec-format Baby folder (default: synthetic)")
    p.add_argument("--models", default="mllmrec,bpr,pop", help="comma-separated")
    p.add_argument("--num-users", type=int, help="synthetic catalog: users before 5-core")
    p.add_argument("--num-items", type=int, help="synthetic catalog: items before 5-core")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=default_of(TrainConfig, "epochs"))
    p.add_argument("--patience", type=int, default=default_of(TrainConfig, "patience"))
    p.add_argument(
        "--alpha",
        type=float,
        default=default_of(GraphConfig, "alpha"),
        help="similarity threshold (Baby: 0.7)",
    )
    p.add_argument(
        "--k-c", type=int, default=default_of(GraphConfig, "k_c"), help="co-occurrence top-K"
    )
    p.add_argument(
        "--user-text",
        choices=("preferences", "history"),
        default=default_of(TextConfig, "user_text"),
    )
    p.add_argument("--cache-dir", type=Path, help="cache root (default ./.cache/mllmrec)")
    p.add_argument("--json", type=Path, help="also write all results here")
    p.add_argument("--threads", help="a number or 'auto' (default; see mllmrec_pyg.threads)")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    apply_thread_policy(args.threads)
    show = not args.no_progress
    start = time.perf_counter()

    # 1-3. data, then features: given by an MMRec folder, else encoded from text
    data_cfg = DataConfig(
        str(args.data_dir) if args.data_dir else "synthetic",
        seed=args.seed,
        num_users=args.num_users,
        num_items=args.num_items,
    )
    data, info = pipeline.prepare(
        data_cfg, TextConfig(user_text=args.user_text), args.cache_dir, show_progress=show
    )
    prep_seconds = time.perf_counter() - start

    # 4. refined item-item graph S*
    data = pipeline.build_graph(data, GraphConfig(alpha=args.alpha, k_c=args.k_c))

    # 5. models on one trainer
    cfg = TrainConfig(
        epochs=args.epochs, patience=args.patience, seed=args.seed, show_progress=show
    )
    rows = []
    for model_name in [m.strip() for m in args.models.split(",") if m.strip()]:
        _, result = pipeline.train_model(model_name, data, cfg)
        rows.append((model_name, result))
    name = data_cfg.tag()
    user_source = info.get("user_text", "none")

    print()
    print(f"dataset: {name}  ({data['user'].num_nodes} users x {data['item'].num_nodes} items)")
    print(f"user text: {user_source}")
    print(f"data preparation (loading, text generation, encoding): {prep_seconds:.1f}s")
    print(format_table([result_row(m, r) for m, r in rows], style="plain"))
    if args.json:
        write_json(
            args.json,
            {
                "dataset": name,
                "user_text": user_source,
                "results": [r.to_json(model=m, dataset=name) for m, r in rows],
            },
        )


if __name__ == "__main__":
    main()
