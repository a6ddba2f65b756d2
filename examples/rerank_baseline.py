"""Give any trained model LangGCN's two ranking terms, weights chosen on validation.

LangGCN adds a co-purchase prior and the items' log popularity to its ranking scores
(``cooccurrence_weight``, ``popularity_weight``). Both come from the TRAINING pairs only,
so any model's scores can take them. This script trains one model at its tuned settings,
then picks the two weights on VALIDATION (:func:`mllmrec_pyg.rerank.choose_reranking`: a
small grid in multiples of the model's mean per-user score spread, so the grid fits
dot-product and cosine scores alike), and reads the test split once, with and without
them. ``mllmrec experiment compare --rerank`` gives every compared model the same stage::

    python examples/rerank_baseline.py --data-dir data/scientific \\
        --tuned docs/experiments/tuned/mmrec-scientific/soil.json --seed 0

On Amazon Industrial_and_Scientific this took SOIL from test R@20 0.2087 to 0.2184 (mean
of seeds 0-2; the README's LangGCN section).
"""

from __future__ import annotations

import argparse

from mllmrec_pyg.config import DataConfig, GraphConfig, TextConfig
from mllmrec_pyg.data import INTERACTS
from mllmrec_pyg.nn.registry import build_model
from mllmrec_pyg.pipeline import build_graph, prepare
from mllmrec_pyg.rerank import RankingTerms, choose_reranking
from mllmrec_pyg.sampling import seed_everything
from mllmrec_pyg.threads import apply_thread_policy
from mllmrec_pyg.train import TrainConfig, Trainer
from mllmrec_pyg.tuning import read_tuned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, help="an MMRec folder (prepare-amazon)")
    parser.add_argument("--tuned", required=True, help="a tuned <model>.json")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=200, help="epoch cap (patience 20)")
    args = parser.parse_args()
    apply_thread_policy(args.threads)

    tuned = read_tuned(args.tuned)
    settings = tuned["settings"]
    data, _ = prepare(DataConfig(dataset=args.data_dir), TextConfig(), show_progress=False)
    data = build_graph(data, GraphConfig(**(settings.get("graph") or {})))
    seed_everything(args.seed)
    model = build_model(tuned["model"], data, **settings["model"])
    train = {k: v for k, v in settings["train"].items() if k in ("lr", "batch_size")}
    trainer = Trainer(
        model,
        data,
        TrainConfig(**train, epochs=args.epochs, patience=20, seed=args.seed, show_progress=False),
    )
    result = trainer.fit()
    print(
        f"{tuned['model']} seed {args.seed}: test R@20 {result.test['recall@20']:.4f}, "
        f"N@20 {result.test['ndcg@20']:.4f} (best epoch {result.best_epoch})"
    )

    model.eval()
    base = model.scorer()
    num_users, num_items = data["user"].num_nodes, data["item"].num_nodes
    terms = RankingTerms.of(data[INTERACTS].edge_index, num_users, num_items)
    alone = trainer.evaluator.evaluate(base, "valid")["recall@20"]
    # (0, 0), the model alone, is in the grid
    choice, valid = choose_reranking(base, trainer.evaluator, terms, "recall@20")
    print(f"valid R@20: {alone:.4f} alone, {valid['recall@20']:.4f} re-ranked")
    test = trainer.evaluator.evaluate(choice.apply(base, terms), "test")
    print(
        f"re-ranked (prior {choice.prior}, popularity {choice.popularity} x spread "
        f"{choice.spread:.3f}, chosen on valid): test R@20 {test['recall@20']:.4f}, "
        f"N@20 {test['ndcg@20']:.4f}"
    )


if __name__ == "__main__":
    main()
