"""Item descriptions (Prompt 1) and the fused item text ``D^m`` (Eq. 2)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from torch_geometric.data import HeteroData

from mllmrec_pyg.data.schema import ITEM, SchemaError
from mllmrec_pyg.reasoning.backends.base import Backend, GenerationRequest
from mllmrec_pyg.reasoning.prompts import fuse, item_prompt, item_text_prompt
from mllmrec_pyg.reasoning.runner import run_requests
from mllmrec_pyg.reasoning.store import GenerationStore

log = logging.getLogger(__name__)

TASK = "item_description"

ImageSpec = Sequence[str | os.PathLike | None] | Mapping[int, str | os.PathLike]


def _image_paths(data: HeteroData, images: ImageSpec | None, num_items: int) -> list[Path | None]:
    if images is None:
        images = data[ITEM].get("image_path")
    if images is None:
        return [None] * num_items
    if isinstance(images, Mapping):
        paths: list[Path | None] = [None] * num_items
        for i, p in images.items():
            if not 0 <= int(i) < num_items:
                raise SchemaError(f"image given for item {i}, but items are 0..{num_items - 1}")
            paths[int(i)] = Path(p) if p else None
    else:
        if len(images) != num_items:
            raise SchemaError(f"{len(images)} image entries for {num_items} items")
        paths = [Path(p) if p else None for p in images]
    for i, p in enumerate(paths):
        if p is not None and not p.is_file():
            raise FileNotFoundError(f"item {i}: image file {p} not found")
    return paths


def describe_items(
    data: HeteroData,
    backend: Backend,
    dataset_name: str,
    images: ImageSpec | None = None,
    store: GenerationStore | None = None,
    *,
    batch_size: int | None = None,
    show_progress: bool = True,
    from_text: bool = False,
) -> list[str]:
    """Describe item images with Prompt 1 and fuse them into the item texts.

    With ``from_text=True`` every item with a text is described instead from
    that text by Prompt 1's text-only variant
    (:func:`~mllmrec_pyg.reasoning.prompts.item_text_prompt`): the route for
    catalogues without images and for text-only models.

    Items with an image get ``D^m_i = D^t_i (+) D^s_i``; items without one (or
    whose backend returned no description, like the offline ``none``
    backend) keep ``D^t_i``. Both counts are logged. The original texts are
    kept in ``data["item"].base_text``, the descriptions in
    ``data["item"].image_description``, and ``data["item"].text`` becomes the
    fused text. Calling it again starts from ``base_text``, never fusing twice.

    Args:
        data: HeteroData with ``data["item"].text`` (the item texts ``D^t``).
        backend: any backend.
        dataset_name: fills Prompt 1 (e.g. ``"Baby"``).
        images: one path (or ``None``) per item, or ``{item: path}``; default
            ``data["item"].image_path`` when present.
        store: resumable generation store; ``None`` keeps results in memory.
        batch_size: requests per backend call; default: the backend's own
            batch size or concurrency (see :func:`~mllmrec_pyg.reasoning.runner.run_requests`).
        show_progress: tqdm bar with throughput and ETA.
        from_text: describe every item from its own text, not its image.

    Returns:
        The fused texts, one per item.
    """
    store_ = data[ITEM]
    base = store_.get("base_text")
    if base is None:
        base = store_.get("text")
    if base is None:
        raise SchemaError('data["item"].text is missing: describe_items fuses into item texts')
    num_items = int(store_.num_nodes)
    if len(base) != num_items:
        raise SchemaError(f'data["item"].text has {len(base)} entries for {num_items} items')
    base = [str(t) for t in base]
    if from_text:
        if images is not None:
            raise ValueError("from_text=True describes items from their text; drop images")
        with_image = [i for i, t in enumerate(base) if t.strip()]
        requests = [
            GenerationRequest(key=str(i), prompt=item_text_prompt(dataset_name, base[i]))
            for i in with_image
        ]
        metas = [{"dataset": dataset_name, "source": "text"} for _ in with_image]
    else:
        paths = _image_paths(data, images, num_items)
        prompt = item_prompt(dataset_name)
        with_image = [i for i, p in enumerate(paths) if p is not None]
        requests = [
            GenerationRequest(key=str(i), prompt=prompt, images=[paths[i]]) for i in with_image
        ]
        metas = [{"dataset": dataset_name, "image": str(paths[i])} for i in with_image]
    out = run_requests(
        TASK,
        requests,
        backend,
        store,
        batch_size=batch_size,
        metas=metas,
        show_progress=show_progress,
        unit="item",
    )
    descriptions = [""] * num_items
    for i, d in zip(with_image, out):
        descriptions[i] = d.strip()
    fused = [fuse(t, d) for t, d in zip(base, descriptions)]
    described = sum(1 for i in with_image if descriptions[i])
    log.info(
        "%d items: %d with an %s, %d described by %r; %d without one and %d whose "
        "backend gave no description keep their own text",
        num_items,
        len(with_image),
        "item text" if from_text else "image",
        described,
        backend.name,
        num_items - len(with_image),
        len(with_image) - described,
    )
    store_.base_text = base
    store_.image_description = descriptions
    store_.text = fused
    return fused


__all__ = ["describe_items"]
