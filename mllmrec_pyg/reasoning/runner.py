"""Drive a backend over many requests: skip what the store has, commit each result."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from tqdm.auto import tqdm

from mllmrec_pyg.reasoning.backends._common import BackendError
from mllmrec_pyg.reasoning.backends.base import Backend, GenerationRequest
from mllmrec_pyg.reasoning.store import GenerationStore, request_hash

log = logging.getLogger(__name__)


def run_requests(
    task: str,
    requests: Sequence[GenerationRequest],
    backend: Backend,
    store: GenerationStore | None = None,
    *,
    batch_size: int | None = None,
    metas: Sequence[dict[str, Any]] | None = None,
    show_progress: bool = True,
    unit: str = "req",
) -> list[str]:
    """Generate one text per request, resuming from ``store``.

    Requests whose ``(task, key, hash)`` is already stored are not sent again.
    The others go to ``backend.generate`` in batches of ``batch_size``; each
    returned text is committed to the store before the next batch starts, so a
    killed run loses at most the batch in flight. When a backend fails part-way
    through a batch (:class:`~mllmrec_pyg.reasoning.backends.BackendError`), the
    texts it did finish are committed before the error propagates.

    Args:
        task: store task name (e.g. ``"user_preference"``).
        requests: what to generate; ``request.key`` is the entity id.
        backend: any :class:`~mllmrec_pyg.reasoning.backends.base.Backend`.
        store: where finished texts live; ``None`` keeps them in memory only.
        batch_size: requests per ``generate`` call; default: the backend's
            ``parallelism`` hint (its batch size or concurrency) when it has one, else 8.
        metas: optional metadata per request, stored with its text.
        show_progress: tqdm bar with throughput and ETA.
        unit: unit shown by the bar.

    Returns:
        The texts, in request order.
    """
    if batch_size is None:
        batch_size = int(getattr(backend, "parallelism", 8) or 8)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if metas is not None and len(metas) != len(requests):
        raise ValueError(f"{len(metas)} metadata entries for {len(requests)} requests")
    fingerprint = backend.fingerprint()
    hashes = [request_hash(r.prompt, r.images, fingerprint) for r in requests]
    texts: list[str | None] = [None] * len(requests)
    pending: list[int] = []
    for i, (req, h) in enumerate(zip(requests, hashes)):
        stored = store.get(task, req.key, h) if store is not None else None
        if stored is None:
            pending.append(i)
        else:
            texts[i] = stored
    n_done = len(requests) - len(pending)
    if n_done:
        log.info(
            "%s: %d of %d already in %s, generating %d",
            task,
            n_done,
            len(requests),
            store,
            len(pending),
        )

    def commit(i: int, text: str) -> None:
        if not isinstance(text, str):
            raise RuntimeError(
                f"backend {backend.name!r} returned {type(text).__name__} "
                f"for {task}/{requests[i].key}"
            )
        if store is not None:
            meta = metas[i] if metas is not None else None
            store.put(task, requests[i].key, hashes[i], text, meta, fingerprint)
        texts[i] = text

    bar = tqdm(
        total=len(requests),
        initial=n_done,
        desc=f"{task} [{backend.name}]",
        unit=unit,
        disable=not show_progress,
        dynamic_ncols=True,
    )
    try:
        for start in range(0, len(pending), batch_size):
            idx = pending[start : start + batch_size]
            try:
                out = backend.generate([requests[i] for i in idx])
            except BackendError as err:
                kept = {idx[j]: t for j, t in err.partial.items() if 0 <= j < len(idx)}
                for i, text in sorted(kept.items()):
                    commit(i, text)
                if kept:
                    log.warning("%s: kept %d finished text(s) of the failed batch", task, len(kept))
                raise
            if len(out) != len(idx):
                raise RuntimeError(
                    f"backend {backend.name!r} returned {len(out)} texts for {len(idx)} requests"
                )
            for i, text in zip(idx, out):
                commit(i, text)
            bar.update(len(idx))
    finally:
        bar.close()
    return [t if t is not None else "" for t in texts]


__all__ = ["run_requests"]
