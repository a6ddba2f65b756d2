"""Where the package looks for shared data, overridable by environment variables."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def movielens_root() -> Path:
    """The ``ml-latest-small`` folder.

    ``MLLMREC_MOVIELENS`` wins; otherwise ``../shared/datasets/ml-latest-small``
    beside the repository checkout.
    """
    env = os.environ.get("MLLMREC_MOVIELENS")
    if env:
        return Path(env)
    return REPO_ROOT.parent / "shared" / "datasets" / "ml-latest-small"
