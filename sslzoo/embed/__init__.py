"""Embed a folder of images with a zoo encoder, view the map in TensorBoard, search its neighbours.

    python -m sslzoo.embed embed simclr_convnet_small_cifar10 photos/ --output photos_embedded/
    tensorboard --logdir photos_embedded/                      # Projector tab: the map, with thumbnails
    python -m sslzoo.embed neighbors photos_embedded/ --query photos/cat.jpg -k 10
    python -m sslzoo.embed neighbors photos_embedded/ --duplicates 0.98

From Python: `embed_folder(model, images, output, ...)`, `top_k(embeddings, queries, k)`,
`duplicates(embeddings, threshold)`; `embed_main(argv)` and `neighbors_main(argv)` are the commands.

Modules: `model.py` (resolve, verify and load the encoder; its record and preprocessing), `job.py` (the
resumable, chunked embedding and the atomic output), `projector.py` (TensorBoard projector files),
`search.py` (exact cosine top-k and duplicate pairs: chunked NumPy, faiss above a measured size),
`cli.py` (the two commands), `bench.py` (the measurements in docs/embed.md). Docs: docs/embed.md.
"""

from sslzoo.embed.cli import embed_main, neighbors_main

__all__ = ["embed_main", "neighbors_main", "embed_folder", "top_k", "duplicates"]


def __getattr__(name):
    # Lazy, so that `from sslzoo.embed import embed_main` (a CLI's start) does not import TensorFlow.
    if name == "embed_folder":
        from sslzoo.embed.job import embed_folder

        return embed_folder
    if name in ("top_k", "duplicates"):
        from sslzoo.embed import search

        return getattr(search, name)
    raise AttributeError(f"module 'sslzoo.embed' has no attribute '{name}'")
