"""MovieLens (ml-latest-small layout): 5-core, per-user split, item text without leaked tags."""

from __future__ import annotations

import pytest
import torch

from mllmrec_pyg.data import load_movielens
from mllmrec_pyg.data.movielens import MovieLensFormatError
from mllmrec_pyg.data.schema import INTERACTS, validate
from mllmrec_pyg.paths import movielens_root


def write_ml(root, ratings, movies, tags=None):
    root.mkdir(parents=True, exist_ok=True)
    (root / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n"
        + "".join(f"{u},{m},{r},{t}\n" for u, m, r, t in ratings)
    )
    (root / "movies.csv").write_text("movieId,title,genres\n" + "".join(movies))
    if tags is not None:
        (root / "tags.csv").write_text(
            "userId,movieId,tag,timestamp\n" + "".join(f"{u},{m},{t},1\n" for u, m, t in tags)
        )
    return root


def tiny(tmp_path, tags=None):
    # users 1..6 rate movies 10..15 (6 each); user 7 rates two movies only (dropped by 5-core);
    # movie 99 is rated once (dropped by 5-core)
    ratings = [(u, m, 0.5 + (u + m) % 5, 1000 * u + m) for u in range(1, 7) for m in range(10, 16)]
    ratings += [(7, 10, 4.0, 1), (7, 11, 1.0, 2), (1, 99, 5.0, 3)]
    movies = [f'{m},"Movie {m}, The (1999)",Drama|Comedy\n' for m in range(10, 16)]
    movies.append("99,Rare (2000),(no genres listed)\n")
    return write_ml(tmp_path / "ml", ratings, movies, tags)


def test_core_split_and_text(tmp_path):
    data = load_movielens(tiny(tmp_path), seed=0)
    validate(data, require=["held_out"])
    store = data[INTERACTS]
    assert data["user"].num_nodes == 6 and data["item"].num_nodes == 6
    assert data["user"].user_id.tolist() == [1, 2, 3, 4, 5, 6]
    assert data["item"].movie_id.tolist() == [10, 11, 12, 13, 14, 15]
    # every rating counts (values 0.5 .. 4.5), 6 per user: 4 train, 1 valid, 1 test
    assert store.edge_index.size(1) == 24
    assert store.val_edge_index.size(1) == 6 and store.test_edge_index.size(1) == 6
    for u in range(6):
        assert (store.edge_index[0] == u).sum() == 4
    all_pairs = torch.cat([store.edge_index, store.val_edge_index, store.test_edge_index], 1)
    assert torch.unique(all_pairs, dim=1).size(1) == 36
    assert data["item"].text[0] == "Movie 10, The (1999). Genres: Drama, Comedy."


def test_tags_from_held_out_pairs_are_left_out(tmp_path):
    root = tiny(tmp_path)
    data = load_movielens(root, seed=0)
    store = data[INTERACTS]
    vu, vi = store.val_edge_index[:, 0].tolist()
    tu, ti = store.edge_index[:, 0].tolist()
    uid = data["user"].user_id
    mid = data["item"].movie_id
    tags = [
        (int(uid[vu]), int(mid[vi]), "leaky tag"),  # a held-out pair: must not show
        (int(uid[tu]), int(mid[ti]), "Visually Stunning"),  # a training pair: kept
        (int(uid[tu]), int(mid[ti]), "visually stunning"),  # same tag, other case: once
        (42, int(mid[ti]), "cult"),  # a user who never rated it: kept
    ]
    (root / "tags.csv").write_text(
        "userId,movieId,tag,timestamp\n" + "".join(f"{u},{m},{t},1\n" for u, m, t in tags)
    )
    data = load_movielens(root, seed=0)  # the split depends on ratings and seed only
    texts = data["item"].text
    assert not any("leaky tag" in t for t in texts)
    assert texts[ti].endswith("Tags: Visually Stunning, cult.")


def test_bad_rows_name_the_line(tmp_path):
    root = tiny(tmp_path)
    with open(root / "ratings.csv", "a") as fh:
        fh.write("3,abc,4.0,5\n")
    with pytest.raises(
        MovieLensFormatError,
        match=r"ratings.csv:41: column 'movieId' must be an integer, got 'abc'",
    ):
        load_movielens(root)


def test_unknown_movie_is_an_error(tmp_path):
    root = tiny(tmp_path)
    with open(root / "ratings.csv", "a") as fh:
        fh.write("3,12345,4.0,5\n")
    with pytest.raises(MovieLensFormatError, match=r"movieId\(s\) \[12345\] are not in movies.csv"):
        load_movielens(root)


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="MLLMREC_MOVIELENS"):
        load_movielens(tmp_path / "nowhere")


@pytest.mark.skipif(not (movielens_root() / "ratings.csv").is_file(), reason="no MovieLens copy")
def test_real_ml_latest_small():
    data = load_movielens()
    store = data[INTERACTS]
    assert data["user"].num_nodes == 610
    assert data["item"].num_nodes == 3650
    total = store.edge_index.size(1) + store.val_edge_index.size(1) + store.test_edge_index.size(1)
    assert total == 90274
    deg = torch.bincount(
        torch.cat([store.edge_index[1], store.val_edge_index[1], store.test_edge_index[1]])
    )
    assert deg.min() >= 5
    assert data["item"].text[0].startswith("Toy Story (1995). Genres: Adventure, Animation")
