"""The per-run report: `report.md` in the run folder, linking a few small PNGs beside it.

    build_report(run_dir, metrics, encoder=encoder, splits=splits)   # the trainer calls this
    python -m sslzoo.evaluation.report runs/<name>                              # rebuild a finished run's report

The report holds the run's header and metrics table, `curves.png` (history.csv), `embedding_map.png` (PCA
of L2-normalised validation features, coloured by class), `retrieval.png` (nearest training images of a
few validation queries by cosine similarity) and the method's own pretext pictures. Links are relative,
so the folder can be moved. The figures use capped, fixed subsets (one feature pass over at most
`VAL_POINTS` + `GALLERY` images) because the report runs after every training run, tests included.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from sslzoo.errors import ReportError  # noqa: F401  (raised here)


REPORT = "report.md"
CURVES = "curves.png"
EMBEDDING_MAP = "embedding_map.png"
RETRIEVAL = "retrieval.png"
VAL_POINTS = 2000  # validation images in the 2-D map (and the pool the queries come from)
GALLERY = 5000  # training images searched for neighbours (the report runs after every run: keep it cheap)
QUERIES = 8
NEIGHBOURS = 8


def atomic_write(path, write, suffix=""):
    # Imported on use, so the CLI's error path stays instant.
    from sslzoo.files import atomic_write as write_atomically

    return write_atomically(path, write, suffix)


def atomic_write_text(path, text: str):
    return atomic_write(path, lambda tmp: tmp.write_text(text))


# ---------------------------------------------------------------------------------------------- maths


def spread_subset(count: int, cap: int) -> np.ndarray:
    """At most `cap` indices into `count` items, evenly spread and increasing (the same in every run).

    Evenly spread rather than the first `cap`, so a split stored in class order still shows every class.
    """
    if count <= cap:
        return np.arange(count)
    return (np.arange(cap, dtype=np.int64) * count) // cap


def pca_2d(points: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Projects `points` [N, D] onto their first two principal axes.

    Each axis's sign is fixed so that its largest-magnitude loading is positive, which makes the map the
    same from run to run (an eigenvector's sign is otherwise arbitrary).

    Returns:
        (coordinates float64 [N, 2], explained variance ratio [2]); axes beyond the data's rank are zero.
    """
    points = np.asarray(points, np.float64)
    if points.ndim != 2 or len(points) == 0:
        raise ValueError(f"pca_2d: expected points [N, D] with N > 0, got shape {points.shape}")
    centred = points - points.mean(axis=0)
    # Eigen-decomposition of the D x D covariance: D (a few hundred) is far below N, so this is cheaper
    # than an SVD of the data matrix.
    covariance = centred.T @ centred / max(len(points) - 1, 1)
    values, vectors = np.linalg.eigh(covariance)
    order = np.argsort(values)[::-1][:2]
    values, vectors = np.clip(values[order], 0.0, None), vectors[:, order]
    if vectors.shape[1] < 2:  # one-dimensional features: the second axis carries nothing
        vectors = np.pad(vectors, ((0, 0), (0, 2 - vectors.shape[1])))
        values = np.pad(values, (0, 2 - len(values)))
    largest = np.argmax(np.abs(vectors), axis=0)
    signs = np.sign(vectors[largest, np.arange(2)])
    vectors = vectors * np.where(signs == 0, 1.0, signs)
    total = float(np.trace(covariance))
    ratio = values / total if total > 0 else np.zeros(2)
    return centred @ vectors, ratio


def l2_normalise(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, np.float32)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, 1e-12)


def nearest_neighbours(queries: np.ndarray, gallery: np.ndarray, k: int) -> np.ndarray:
    """Indices [Q, k] of the gallery rows most cosine-similar to each query row, most similar first.

    Ties keep the lower gallery index first, so the result is deterministic.
    """
    similarity = l2_normalise(queries) @ l2_normalise(gallery).T
    k = min(k, similarity.shape[1])
    return np.argsort(-similarity, axis=1, kind="stable")[:, :k]


def pick_queries(labels: np.ndarray, count: int) -> np.ndarray:
    """`count` fixed query indices: the first image of each class in turn, so the queries differ in class."""
    labels = np.asarray(labels)
    chosen: List[int] = []
    while len(chosen) < min(count, len(labels)):
        before = len(chosen)
        for label in np.unique(labels):
            remaining = [i for i in np.flatnonzero(labels == label) if i not in chosen]
            if remaining and len(chosen) < count:
                chosen.append(int(remaining[0]))
        if len(chosen) == before:
            break
    return np.array(sorted(chosen), dtype=np.int64)


# -------------------------------------------------------------------------------------------- history


def read_history(path: str | Path) -> Dict[str, np.ndarray]:
    """history.csv (Keras CSVLogger) -> {column: float array over epochs}, epoch first.

    A resumed run appends to the file, so an epoch can appear twice (trained again after a kill): the
    last row of each epoch wins. "NA" and empty cells become NaN.
    """
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return {}
    header, by_epoch = rows[0], {}
    for row in rows[1:]:
        if not row or row == header:
            continue
        values = dict(zip(header, row))
        try:
            epoch = int(float(values.get("epoch", "")))
        except ValueError:
            continue
        by_epoch[epoch] = values
    epochs = sorted(by_epoch)
    history = {"epoch": np.array(epochs, np.float64)}
    for name in header:
        if name != "epoch":
            history[name] = np.array([_to_float(by_epoch[e].get(name, "")) for e in epochs], np.float64)
    return history


def _to_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def curve_families(columns: Sequence[str]) -> Dict[str, List[str]]:
    """Groups logged quantities into panels: losses, accuracies, learning rate, anything else."""
    families: Dict[str, List[str]] = {"loss": [], "accuracy": [], "learning rate": [], "other": []}
    for name in columns:
        base = name[4:] if name.startswith("val_") else name
        if name == "epoch":
            continue
        if base.endswith("loss"):
            families["loss"].append(name)
        elif any(word in base for word in ("top1", "top5", "acc")):
            families["accuracy"].append(name)
        elif base in ("lr", "learning_rate"):
            families["learning rate"].append(name)
        else:
            families["other"].append(name)
    return {family: names for family, names in families.items() if names}


# -------------------------------------------------------------------------------------------- figures


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # headless; a no-op when already selected
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> str:
    plt = _pyplot()
    atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=90, format="png"), suffix=".png")
    plt.close(figure)
    return path.name


def plot_curves(history: Dict[str, np.ndarray], path: Path) -> Optional[str]:
    """One panel per family of logged quantities, x = epoch (1-based); None when nothing was logged."""
    epochs = history.get("epoch")
    families = {family: [n for n in names if np.isfinite(history[n]).any()]
                for family, names in curve_families(list(history)).items()}
    families = {family: names for family, names in families.items() if names}
    if epochs is None or len(epochs) == 0 or not families:
        return None
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(families), figsize=(3.3 * len(families), 2.6), squeeze=False)
    for axis, (family, names) in zip(axes[0], families.items()):
        for name in names:
            # Markers, so a one-epoch history still shows its point.
            axis.plot(epochs + 1, history[name], marker="o", markersize=3,
                      linestyle="--" if name.startswith("val_") else "-", label=name)
        axis.set_title(family, fontsize=9)
        axis.set_xlabel("epoch", fontsize=8)
        axis.tick_params(labelsize=7)
        axis.legend(fontsize=6)
        axis.xaxis.get_major_locator().set_params(integer=True)
    figure.tight_layout()
    return _save(figure, path)


def plot_embedding_map(coordinates: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                       ratio: np.ndarray, path: Path) -> str:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(5.6, 4.2))
    colours = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    for label in np.unique(labels):
        inside = labels == label
        name = "unlabelled" if label < 0 else class_names[label] if label < len(class_names) else str(label)
        axis.scatter(coordinates[inside, 0], coordinates[inside, 1], s=4, alpha=0.7,
                     color=colours(int(label) % colours.N), label=name)
    axis.set_xlabel(f"PC 1 ({100 * ratio[0]:.1f}% of variance)", fontsize=8)
    axis.set_ylabel(f"PC 2 ({100 * ratio[1]:.1f}% of variance)", fontsize=8)
    axis.set_title(f"PCA of L2-normalised validation features ({len(labels)} images)", fontsize=9)
    axis.tick_params(labelsize=7)
    if len(class_names) <= 20:
        axis.legend(fontsize=6, markerscale=2.5, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    figure.tight_layout()
    return _save(figure, path)


# "neighbour": unlabelled data, where no frame can say same or other class.
FRAME_COLOURS = {"query": (0, 0, 0), "same": (44, 160, 44), "other": (214, 39, 40), "neighbour": (150, 150, 150)}


def retrieval_canvas(query_images: np.ndarray, neighbour_images: np.ndarray, same: np.ndarray,
                     border: int = 2, gap: int = 3, labelled: bool = True) -> np.ndarray:
    """uint8 [H, W, 3]: a row per query, the query then its neighbours, each in a coloured frame.

    Drawn as one array (and shown with one imshow) because a matplotlib axis per cell costs seconds.
    """
    rows, k = same.shape
    size = query_images.shape[1]
    cell = size + 2 * border
    canvas = np.full((rows * cell + (rows - 1) * gap, (k + 1) * cell + k * gap, 3), 255, np.uint8)
    for r in range(rows):
        cells = [(query_images[r], "query")] + [
            (neighbour_images[r, c], ("same" if same[r, c] else "other") if labelled else "neighbour")
            for c in range(k)]
        for c, (image, kind) in enumerate(cells):
            top, left = r * (cell + gap), c * (cell + gap)
            canvas[top:top + cell, left:left + cell] = FRAME_COLOURS[kind]
            image = np.asarray(image)
            if image.shape[-1] == 1:
                image = np.repeat(image, 3, axis=-1)
            canvas[top + border:top + border + size, left + border:left + border + size] = image
    return canvas


def plot_retrieval(query_images: np.ndarray, query_labels: np.ndarray, neighbour_images: np.ndarray,
                   neighbour_labels: np.ndarray, class_names: Sequence[str], path: Path) -> str:
    """Row per query: the query (black frame), then its neighbours framed green (same class) or red."""
    plt = _pyplot()
    rows, k = neighbour_labels.shape
    same = neighbour_labels == query_labels[:, None]
    labelled = bool(np.all(query_labels >= 0))
    canvas = retrieval_canvas(query_images, neighbour_images, same, labelled=labelled)
    figure, axis = plt.subplots(figsize=(0.62 * (k + 1) + 1.3, 0.62 * rows + 0.5))
    axis.imshow(canvas, interpolation="nearest")
    pitch_y, pitch_x = canvas.shape[0] / rows, canvas.shape[1] / (k + 1)
    axis.set_yticks((np.arange(rows) + 0.5) * pitch_y)
    axis.set_yticklabels([f"{class_names[q] if q < len(class_names) else q}\n{int(s.sum())}/{k} same" if labelled
                          else f"query {i + 1}" for i, (q, s) in enumerate(zip(query_labels, same))], fontsize=6)
    axis.set_xticks((np.arange(k + 1) + 0.5) * pitch_x)
    axis.set_xticklabels(["query"] + [str(i + 1) for i in range(k)], fontsize=6)
    axis.xaxis.tick_top()
    axis.tick_params(length=0)
    for spine in axis.spines.values():
        spine.set_visible(False)
    figure.tight_layout(pad=0.3)
    return _save(figure, path)


# --------------------------------------------------------------------------------------- features part


def feature_figures(run_dir: Path, encoder, splits, split_features=None) -> Dict[str, Any]:
    """The embedding map and retrieval grid of capped, fixed subsets: rows of `split_features` (the
    evaluation's) when given, else one feature pass over the subsets.

    Returns {"embedding_map", "retrieval", "retrieval_precision" (% same-class among all shown
    neighbours), "val_points", "gallery"}.
    """
    from sslzoo.evaluation.features import extract_features

    val_index = spread_subset(len(splits.val.labels), VAL_POINTS)
    gallery_index = spread_subset(len(splits.train.labels), GALLERY)
    val_labels = np.asarray(splits.val.labels)[val_index]
    gallery_labels = np.asarray(splits.train.labels)[gallery_index]
    if split_features is not None:
        val_features, gallery_features = split_features.val[val_index], split_features.train[gallery_index]
    else:
        # One pass (one trace of the encoder) over both subsets.
        features = extract_features(encoder, np.concatenate([splits.val.take(val_index),
                                                             splits.train.take(gallery_index)]))
        val_features, gallery_features = features[:len(val_index)], features[len(val_index):]

    coordinates, ratio = pca_2d(l2_normalise(val_features))
    names = list(splits.class_names)
    result: Dict[str, Any] = {
        "embedding_map": plot_embedding_map(coordinates, val_labels, names, ratio, run_dir / EMBEDDING_MAP),
        "val_points": int(len(val_index)),
        "gallery": int(len(gallery_index)),
    }
    queries = pick_queries(val_labels, QUERIES)
    neighbours = nearest_neighbours(val_features[queries], gallery_features, NEIGHBOURS)
    neighbour_labels = gallery_labels[neighbours]
    result["retrieval"] = plot_retrieval(
        splits.val.take(val_index[queries]), val_labels[queries],
        splits.train.take(gallery_index[neighbours]), neighbour_labels, names, run_dir / RETRIEVAL)
    if np.all(val_labels >= 0):  # unlabelled data has no same-class precision to report
        result["retrieval_precision"] = round(100.0 * float(np.mean(neighbour_labels == val_labels[queries, None])), 1)
    return result


# -------------------------------------------------------------------------------------------- markdown


def _number(value, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, (int, float)):
        return f"{value:.{digits}f}"
    return str(value)


def metrics_table(metrics: Dict[str, Any]) -> List[str]:
    if isinstance(metrics.get("evaluation"), str):  # e.g. "skipped: no labelled data"
        return [f"Evaluation {metrics['evaluation']} (set eval.data_path to a labelled folder to measure)."]
    baseline = metrics.get("random_init") or {}
    lines = ["| top-1 (%) | trained | random init | gain |", "|---|---:|---:|---:|"]
    for key, label in (("knn_top1", "kNN"), ("linear_top1", "linear probe"), ("finetune_top1", "fine-tune")):
        if key not in metrics:
            continue
        trained, initial = metrics[key], baseline.get(key)
        gain = trained - initial if isinstance(trained, (int, float)) and isinstance(initial, (int, float)) else None
        lines.append(f"| {label} | {_number(trained)} | {_number(initial)} | {_number(gain)} |")
    return lines


def render(run_dir: Path, metrics: Dict[str, Any], curves: Optional[str], features: Dict[str, Any],
           features_note: str = "") -> str:
    """The markdown text; every image link is relative to the run folder."""
    config = _read_config(run_dir)
    method_options = (config.get("method") or {}).get("options") or {}
    encoder_options = (config.get("encoder") or {}).get("options") or {}
    lines = [f"# {metrics.get('method', '?')} · {metrics.get('encoder', '?')} · {metrics.get('dataset', '?')}", ""]
    data = metrics.get("data") or {}
    facts = [
        ("method", f"{metrics.get('method', '?')} {_options(method_options)}"),
        ("encoder", f"{metrics.get('encoder', '?')} {_options(encoder_options)}"),
        ("dataset", f"{metrics.get('dataset', '?')} ({data.get('num_train', '?')} train / "
                    f"{data.get('num_val', '?')} val images, {len(data.get('class_names', []))} classes)"),
        ("epochs", f"{metrics.get('epochs', '?')} × {metrics.get('steps_per_epoch', '?')} steps, "
                   f"batch {metrics.get('batch_size', '?')}"),
        ("training", f"{_number(metrics.get('train_seconds'), 1)} s, "
                     f"{_number(metrics.get('images_per_second'), 1)} images/s"),
        ("reproduce", "`python train.py --config <this folder>/config.yaml --output <new folder>` "
                      "(config.yaml is the complete config; the same --output resumes this run)"),
        ("rebuild this report", "`python -m sslzoo.evaluation.report <this folder>`"),
    ]
    lines += [f"- **{name}**: {text.strip()}" for name, text in facts] + ["", "## Evaluation", ""]
    lines += metrics_table(metrics)
    pretext = metrics.get("pretext_val") or {}
    if pretext:
        lines += ["", "Pretext task on the validation split: "
                  + ", ".join(f"{name} {_number(value, 4)}" for name, value in pretext.items())]
    lines += ["", "## Training curves", ""]
    lines.append(f"![training curves]({curves})" if curves else "(history.csv is missing or empty)")
    lines += ["", "## Validation embeddings", ""]
    if features:
        lines += [f"PCA (NumPy) of the L2-normalised encoder features of {features['val_points']} fixed "
                  "validation images, coloured by class.", "", f"![embedding map]({features['embedding_map']})",
                  "", "## Nearest-neighbour retrieval", "",
                  f"{QUERIES} fixed validation queries (left) and their {NEIGHBOURS} nearest of "
                  f"{features['gallery']} training images by cosine similarity; "
                  + (f"green = same class, red = other. Same-class share over the grid: "
                     f"{features['retrieval_precision']}%." if "retrieval_precision" in features
                     else "the images are unlabelled, so the frames say nothing of class."), "",
                  f"![retrieval]({features['retrieval']})"]
    else:
        lines.append(f"(not drawn: {features_note or 'no encoder or data'})")
    lines += ["", "## Pretext pictures", ""]
    pictures = list(metrics.get("pictures") or [])
    for name in pictures:
        lines += [f"### {name}", "", f"![{name}]({name})" if (run_dir / name).exists() else "(file missing)", ""]
    if not pictures:
        lines.append("(this method saves none)")
    return "\n".join(lines).rstrip() + "\n"


def _options(options: Dict[str, Any]) -> str:
    return "(" + ", ".join(f"{k}={v}" for k, v in options.items()) + ")" if options else ""


def _read_config(run_dir: Path) -> Dict[str, Any]:
    path = run_dir / "config.yaml"
    if not path.exists():
        return {}
    import yaml

    return yaml.safe_load(path.read_text()) or {}


def build_report(run_dir: str | Path, metrics: Dict[str, Any], encoder=None, splits=None,
                 features_note: str = "", features=None) -> str:
    """Writes report.md and its figures into `run_dir`; returns the report's file name.

    Args:
        metrics: the run's metrics (what metrics.json holds).
        encoder, splits: the trained encoder and the run's `DataSplits`; without them the embedding map
            and retrieval grid are left out (`features_note` says why).
        features: the evaluation's `SplitFeatures` of `splits`, reused instead of running the encoder.
    """
    run_dir = Path(run_dir)
    history_path = run_dir / "history.csv"
    curves = plot_curves(read_history(history_path), run_dir / CURVES) if history_path.exists() else None
    given, features = features, {}
    if encoder is not None and splits is not None:
        if len(splits.val.labels) and len(splits.train.labels):
            features = feature_figures(run_dir, encoder, splits, split_features=given)
        else:
            features_note = "the run has no validation or no training images"
    atomic_write_text(run_dir / REPORT, render(run_dir, metrics, curves, features, features_note))
    return REPORT


def rebuild(run_dir: str | Path) -> Path:
    """Rebuilds a finished run's report from its folder (metrics.json, config.yaml, encoder.keras, data)."""
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        raise ReportError(f"'{run_dir}' has no metrics.json, so it is not a finished run; train it first "
                          f"(python train.py --config ... --output {run_dir}) or pass a finished run folder")
    metrics = json.loads(metrics_path.read_text())
    encoder, splits, note = None, None, ""
    config = _read_config(run_dir)
    if str((config.get("data") or {}).get("source", "")).startswith("video_"):
        note = "a video run: see its tracking pictures"
    elif not (run_dir / "encoder.keras").is_file() or not config:
        note = "encoder.keras or config.yaml is missing"
    else:
        import keras

        from sslzoo.config import load
        from sslzoo.data import DataError, load_splits

        encoder = keras.saving.load_model(run_dir / "encoder.keras", safe_mode=True)
        try:
            splits = load_splits(load(run_dir / "config.yaml").data)
        except DataError as error:
            encoder, note = None, f"the run's data could not be loaded ({error})"
    return run_dir / build_report(run_dir, metrics, encoder, splits, features_note=note)


def main(argv: Optional[Sequence[str]] = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Rebuild a finished run's report.md and its figures.")
    parser.add_argument("run_dir", help="a finished run folder, e.g. runs/<name>")
    args = parser.parse_args(argv)
    try:
        path = rebuild(args.run_dir)
    except ReportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
