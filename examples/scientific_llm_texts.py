"""LLM text for a whole Amazon category on CPU: item descriptions, then user preferences.

One resumable command over a ``mllmrec prepare-amazon`` folder (Amazon 2018
Industrial_and_Scientific by default: 4,344 items, 8,317 users)::

    mllmrec prepare-amazon --root ../shared/datasets/amazon-scientific \\
        --category Industrial_and_Scientific --out data/scientific
    python examples/scientific_llm_texts.py data/scientific --threads 2 \\
        --export docs/experiments/mmrec-scientific/llm

It runs the two reasoning steps the ``mllmrec`` commands run, with the
batched ``transformers`` backend (the faster CPU path measured in
``docs/results.md``; ``--backend llamacpp`` also works):

1. ``describe-items --from-text``: Prompt 1's text-only variant on every
   item's own text (the category has no images here); the fused texts
   ``D^m = D^t (+) D^s`` go to ``item_texts.jsonl``;
2. ``infer-preferences``: Prompt 2 on each user's TRAINING history of fused
   item texts, cut to ``--token-budget`` keeping the most recent items.

Every finished text is committed at once to ``<folder>/generations.sqlite``;
kill the command at any point and run it again to continue. Step 2 starts
only when step 1 is complete (its prompts are built from the fused texts).
``--export DIR`` writes both tasks' texts as compressed JSON lines
(``item_descriptions.jsonl.gz``, ``user_preferences.jsonl.gz``) that
``GenerationStore.import_jsonl`` reads back, so another machine reuses them
without generating again: every ``--export-every`` seconds while a step runs
and when it ends, and at the start the texts already exported there are
imported into the store, so a generation spread over several machines (or a
fresh checkout) continues where the committed files stop.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", help="a `mllmrec prepare-amazon` folder")
    p.add_argument("--dataset-name", default="Industrial and Scientific", help="fills Prompt 1")
    p.add_argument("--backend", default="transformers", choices=("llamacpp", "transformers"))
    p.add_argument("--model", default="smollm2", help="preset name or .gguf file")
    p.add_argument("--parallel", type=int, default=8, help="llamacpp: sequences decoded together")
    p.add_argument("--batch-size", type=int, default=8, help="transformers: prompts per batch")
    p.add_argument("--threads", default="2", help="CPU threads (a number or auto)")
    p.add_argument("--token-budget", type=int, default=1024, help="Prompt 2 budget (tokens)")
    p.add_argument("--max-new-tokens", type=int, help="default: the preset's (128)")
    p.add_argument("--items-only", action="store_true", help="stop after the item descriptions")
    p.add_argument(
        "--export", help="folder for the .jsonl.gz texts (read at the start, then kept current)"
    )
    p.add_argument(
        "--export-every", type=float, default=600.0, help="seconds between exports during a step"
    )
    args = p.parse_args(argv)

    from mllmrec_pyg.cli import main as mllmrec
    from mllmrec_pyg.data.folder import STORE_FILE
    from mllmrec_pyg.reasoning import GenerationStore
    from mllmrec_pyg.reasoning.items import TASK as ITEMS
    from mllmrec_pyg.reasoning.users import TASK as USERS

    folder = Path(args.folder)
    flags = ["--backend", args.backend, "--model", args.model, "--threads", str(args.threads)]
    if args.backend == "llamacpp":
        flags += ["--parallel", str(args.parallel)]
    else:
        flags += ["--batch-size", str(args.batch_size)]
    if args.max_new_tokens:
        flags += ["--max-new-tokens", str(args.max_new_tokens)]

    files = {ITEMS: "item_descriptions.jsonl.gz", USERS: "user_preferences.jsonl.gz"}

    def export(task: str) -> None:
        if args.export:
            with GenerationStore(folder / STORE_FILE) as store:
                n = store.export_jsonl(Path(args.export) / files[task], task=task)
            logging.info("exported %d %s texts to %s", n, task, Path(args.export) / files[task])

    def step(task: str, command: list[str]) -> int:
        """One reasoning command, its texts exported every --export-every seconds and at the end."""
        finished = threading.Event()

        def keep_exporting() -> None:
            while not finished.wait(args.export_every):
                export(task)

        thread = threading.Thread(target=keep_exporting, daemon=True)
        if args.export:
            thread.start()
        try:
            return mllmrec(command)
        finally:
            finished.set()
            if thread.is_alive():
                thread.join()
            export(task)

    if args.export:
        with GenerationStore(folder / STORE_FILE) as store:
            for name in files.values():
                if (Path(args.export) / name).exists():
                    added, present = store.import_jsonl(Path(args.export) / name)
                    logging.info("%s: %d texts imported, %d already stored", name, added, present)

    start = time.perf_counter()
    describe = ["describe-items", str(folder), "--from-text", "--dataset-name", args.dataset_name]
    code = step(ITEMS, [*describe, *flags])
    if code:
        return code
    if not args.items_only:
        infer = ["infer-preferences", str(folder), "--token-budget", str(args.token_budget)]
        code = step(USERS, [*infer, *flags])
        if code:
            return code
    logging.info("done in %.0f s", time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
