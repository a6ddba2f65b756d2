"""Items per second of the reasoning stage's MLLM backends, measured in one run.

The same tiny random Gemma 3 (4-bit NF4 on CPU, from
:func:`mllmrec_pyg.testing.build_tiny_gemma`) describes the same item images
with Prompt 1 in four ways:

* ``transformers``, batch 1: one request at a time, in-process;
* ``transformers``, batch B: left-padded batches of B prompts;
* ``openai`` -> ``transformers serve``, 1 in flight: one request at a time
  over HTTP, as the reference implementation drove Ollama;
* ``openai`` -> ``transformers serve``, C in flight: C concurrent requests.

Greedy decoding makes every route produce the same texts (checked and
printed), so the rows do the same work. Model loading and one warm-up pass per
route are excluded; the timed passes are interleaved across routes (median
reported), and torch runs single-threaded by default so that a shared CPU is
not oversubscribed. Absolute numbers say nothing about a
27B model on a GPU; the ratios show what batching and concurrency buy on this
machine. (``transformers serve`` runs multimodal models one request at a time,
so concurrency against it only overlaps HTTP and pre-processing; a batching
server such as vLLM is where concurrency pays.)

    python benchmarks/llm_throughput.py
    python benchmarks/llm_throughput.py --items 32 --batch-size 8 --concurrency 8 --json out.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from mllmrec_pyg.reasoning.backends import GenerationRequest  # noqa: E402
from mllmrec_pyg.reasoning.backends.hf import TransformersBackend  # noqa: E402
from mllmrec_pyg.reasoning.backends.openai_backend import OpenAIBackend  # noqa: E402
from mllmrec_pyg.reasoning.prompts import item_prompt  # noqa: E402
from mllmrec_pyg.testing import build_tiny_gemma, serve_transformers  # noqa: E402

logger = logging.getLogger("llm_throughput")


@dataclass
class BenchConfig:
    """What to measure.

    Args:
        items: item images to describe per route and repeat.
        batch_size: prompts per forward pass of the batched route.
        concurrency: requests in flight for the concurrent route.
        max_new_tokens: generation budget per item.
        repeats: timed passes per route, interleaved across routes so that a
            busy machine slows all of them alike; the median is reported.
        threads: torch threads for the model, in-process and in the server
            (1 keeps a shared CPU from being oversubscribed).
        workdir: where the model, images and server log go (temporary if None).
    """

    items: int = 16
    batch_size: int = 8
    concurrency: int = 8
    max_new_tokens: int = 24
    repeats: int = 3
    threads: int = 1
    workdir: str | None = None


@dataclass
class Route:
    name: str
    setting: str
    backend: object
    batch_size: int | None = None  # for the in-process backend, set before each pass
    seconds: list[float] = field(default_factory=list)
    texts: list[str] = field(default_factory=list, repr=False)

    def pass_(self, requests: list[GenerationRequest]) -> float:
        if self.batch_size is not None:
            self.backend.config.batch_size = self.batch_size
        start = time.perf_counter()
        self.texts = self.backend.generate(requests)
        return time.perf_counter() - start


def make_requests(folder: Path, n: int) -> list[GenerationRequest]:
    """``n`` Prompt 1 requests, each with its own PNG image on disk."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    prompt = item_prompt("Baby")
    requests = []
    for i in range(n):
        w, h = 48 + 8 * (i % 5), 40 + 6 * (i % 3)
        pixels = torch.randint(0, 256, (h, w, 3), generator=gen, dtype=torch.uint8)
        path = folder / f"item{i:04d}.png"
        Image.fromarray(pixels.numpy(), "RGB").save(path)
        requests.append(GenerationRequest(str(i), prompt, [path]))
    return requests


def run(cfg: BenchConfig) -> dict:
    torch.set_num_threads(cfg.threads)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # inherited by the server
        os.environ[var] = str(cfg.threads)
    workdir = Path(cfg.workdir or tempfile.mkdtemp(prefix="llm-throughput-"))
    model_dir = build_tiny_gemma(workdir / "tiny-gemma")
    requests = make_requests(workdir / "images", cfg.items)

    start = time.perf_counter()
    local = TransformersBackend(
        model=str(model_dir), max_new_tokens=cfg.max_new_tokens, progress=False
    ).load()
    load_s = time.perf_counter() - start
    with serve_transformers(model_dir, quantization="bnb-4bit", log_dir=workdir) as server:
        remote = {
            conc: OpenAIBackend(
                model=server.model,
                base_url=server.base_url,
                max_concurrency=conc,
                max_new_tokens=cfg.max_new_tokens,
                timeout=600,
                progress=False,
            )
            for conc in (1, cfg.concurrency)
        }
        routes = [
            Route("transformers", "batch 1", local, batch_size=1),
            Route("transformers", f"batch {cfg.batch_size}", local, batch_size=cfg.batch_size),
            Route("openai -> transformers serve", "1 in flight", remote[1]),
            Route(
                "openai -> transformers serve",
                f"{cfg.concurrency} in flight",
                remote[cfg.concurrency],
            ),
        ]
        for route in routes:  # warm-up: first-call allocations, connections
            route.pass_(requests[: max(2, cfg.concurrency)])
        for rep in range(cfg.repeats):
            for route in routes:
                route.seconds.append(route.pass_(requests))
                logger.info(
                    "pass %d, %s %s: %.2f s", rep + 1, route.name, route.setting, route.seconds[-1]
                )
        for backend in remote.values():
            backend.close()

    def rate(route: Route) -> float:
        return cfg.items / statistics.median(route.seconds)

    reference = routes[2]  # one request at a time over HTTP, like the reference with Ollama
    return {
        "config": asdict(cfg),
        "cpu_count": os.cpu_count(),
        "model_load_s": load_s,
        "rows": [
            {
                "route": r.name,
                "setting": r.setting,
                "items": cfg.items,
                "seconds": r.seconds,
                "median_s": statistics.median(r.seconds),
                "items_per_s": rate(r),
                "vs_one_at_a_time_http": rate(r) / rate(reference),
                "vs_one_at_a_time_in_process": rate(r) / rate(routes[0]),
            }
            for r in routes
        ],
        "same_texts_on_every_route": all(r.texts == routes[0].texts for r in routes),
    }


def print_table(result: dict) -> None:
    cfg = result["config"]
    print(
        f"\nTiny Gemma 3, 4-bit NF4 on CPU; {cfg['items']} items, Prompt 1 + one image each, "
        f"max_new_tokens={cfg['max_new_tokens']}, greedy; {cfg['threads']} torch thread(s) "
        f"of {result['cpu_count']} CPUs; median of {cfg['repeats']} interleaved passes; "
        f"model load {result['model_load_s']:.1f} s (not timed)\n"
    )
    head = f"{'route':<30} {'setting':<12} {'seconds':>8} {'items/s':>8} {'x HTTP 1':>9} {'x batch 1':>9}"
    print(head)
    print("-" * len(head))
    for r in result["rows"]:
        print(
            f"{r['route']:<30} {r['setting']:<12} {r['median_s']:>8.2f} {r['items_per_s']:>8.2f} "
            f"{r['vs_one_at_a_time_http']:>9.2f} {r['vs_one_at_a_time_in_process']:>9.2f}"
        )
    print(
        "\nx HTTP 1: items/s relative to one request at a time over HTTP (the reference's way);"
        "\nx batch 1: relative to one request at a time in-process."
    )
    print("identical texts on every route:", result["same_texts_on_every_route"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for f in fields(BenchConfig):  # --items, --batch-size, ... --threads
        if f.type == "int":
            parser.add_argument("--" + f.name.replace("_", "-"), type=int, default=f.default)
    parser.add_argument("--workdir", default=None, help="keep model, images and logs here")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpx2", "openai"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    result = run(BenchConfig(**{f.name: getattr(args, f.name) for f in fields(BenchConfig)}))
    print_table(result)
    if args.json is not None:
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=2))
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
