#!/usr/bin/env python
"""Makes existing exports MediaPipe-ready without re-exporting them (needs `sslzoo[mediapipe]`).

    python scripts/add_mediapipe_metadata.py exported/*/

For each export folder: ImageEmbedder metadata into every float-io `encoder*.tflite` (the graph and weights
are checked unchanged, `mediapipe_metadata.same_graph`, and LiteRT gives bit-identical features before and
after), and, when the export has a head, `classifier.tflite` re-converted from the SavedModel's `classify`
signature with its `probabilities` output only and ImageClassifier metadata (labels.txt packed in),
parity-checked against encoder.keras + head.keras (an older export's `classifier_mediapipe.tflite` is
removed: the one classifier file is MediaPipe-ready). Then the card: the sha256 of every file,
`tflite.<variant>.size_bytes` and the int8 size-ratio check, `tflite.classifier` and `tflite.mediapipe`.
Files are verified against the card first; an export that already has the metadata is left alone.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sslzoo.export import mediapipe_metadata as mm  # noqa: E402
from sslzoo.export.card import CARD_NAME, file_hashes, verify_files, write_card  # noqa: E402
from sslzoo.export.tflite import interpreter  # noqa: E402

OLD_CLASSIFIER = "classifier_mediapipe.tflite"  # written by the first MediaPipe exports; now classifier.tflite


def features(blob: bytes, images: np.ndarray) -> np.ndarray:
    return interpreter(blob).get_signature_runner("serving_default")(images=images)["features"]


def stamp(export: Path) -> str:
    import keras

    from sslzoo.export.variants import CLASSIFIER_TFLITE, export_classifier
    from sslzoo.zoo.loader import saved_model_version_dir

    card = verify_files(export)
    old_classifier = export / OLD_CLASSIFIER
    classifier = export / CLASSIFIER_TFLITE
    has_head = (export / "head.keras").is_file()
    if ("mediapipe" in card.get("tflite", {}) and not old_classifier.exists()
            and (not has_head or mm.has_metadata(classifier.read_bytes()))):
        return "already MediaPipe-ready"
    size = card["input"]["shape"][1]
    images = np.random.default_rng(0).random((8, size, size, 3), dtype=np.float32)
    embedder_files, changed = [], []
    for path in sorted(export.glob("encoder*.tflite")):
        before = path.read_bytes()
        if mm.has_metadata(before):
            embedder_files.append(path.name)
            continue
        after = mm.embedder_model(before)  # raises if the graph changed
        if after is None:
            continue
        if not np.array_equal(features(before, images), features(after, images)):
            raise RuntimeError(f"{path}: features changed after writing metadata")
        path.write_bytes(after)
        embedder_files.append(path.name)
        changed.append(path.name)
        for entry in card["tflite"].values():
            if isinstance(entry, dict) and entry.get("file") == path.name and "size_bytes" in entry:
                entry["size_bytes"] = len(after)
    sizes = {v["file"]: v["size_bytes"] for v in card["tflite"].values() if isinstance(v, dict) and "size_bytes" in v}
    for entry in card["tflite"].values():
        for check in (entry.get("targets", {}).get("checks", []) if isinstance(entry, dict) else []):
            if check["name"] == "size_ratio":
                check["value"] = sizes[entry["file"]] / sizes["encoder.tflite"]
    classifier_file = None
    if has_head:
        if not mm.has_metadata(classifier.read_bytes()):
            encoder = keras.saving.load_model(export / "encoder.keras", safe_mode=True)
            head = keras.saving.load_model(export / "head.keras", safe_mode=True)
            reference = keras.ops.convert_to_numpy(head(encoder(images, training=False), training=False))
            names = (export / "labels.txt").read_text(encoding="utf-8").splitlines()
            card["tflite"]["classifier"] = export_classifier(export, saved_model_version_dir(export), reference,
                                                             images, names, mediapipe=True)
            changed.append(classifier.name)
        classifier_file = classifier.name
    if old_classifier.exists():
        old_classifier.unlink()
        changed.append(f"removed {OLD_CLASSIFIER}")
    card["tflite"]["mediapipe"] = mm.card_entry(embedder_files, classifier_file)
    card["files"] = file_hashes(export)
    write_card(export / CARD_NAME, card)
    verify_files(export)
    return ", ".join(changed) or "card updated"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("exports", nargs="+", type=Path)
    args = parser.parse_args(argv)
    for export in args.exports:
        print(f"{export}: {stamp(export)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
