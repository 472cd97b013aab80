"""`sslzoo track`: propagate a first-frame mask through a folder of frames with an exported embedding.

    sslzoo track --model exported/video_colorization_davis --frames DAVIS/JPEGImages/480p/bear \
        --mask DAVIS/Annotations/480p/bear/00000.png --output masks/bear
    python -m sslzoo.video.track ...   (the same)

Writes one palette PNG per frame, named after the frame (index = object id, 0 background: the DAVIS-2017
layout, which `sslzoo.video.davis.read_mask` and the DAVIS tools read), at the first mask's resolution. The
tracker is the training run's: its similarity, propagation temperature and number of reference frames come
from the export's model card (flags override them); frames are resized to the card's data.track_size
(short side, aspect kept) unless --size says otherwise. The output folder is written whole or not at all.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

import numpy as np

USER_ERROR = 2
# DAVIS' palette for the first object ids; the rest of the 256 entries stay black.
_PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0, 0, 0, 128, 128, 0, 128, 0, 128, 128, 128, 128, 128]


def write_masks(folder: Path, names: List[str], masks: np.ndarray) -> None:
    from PIL import Image

    for name, mask in zip(names, masks):
        image = Image.fromarray(mask.astype(np.uint8), mode="P")
        image.putpalette(_PALETTE + [0] * (768 - len(_PALETTE)))
        image.save(folder / f"{Path(name).stem}.png")


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="sslzoo track", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="an export folder or zoo name (sslzoo.load)")
    parser.add_argument("--frames", required=True, help="a folder of one video's frames (file-name order)")
    parser.add_argument("--mask", required=True, help="the first frame's mask PNG (DAVIS-2016 0/255 or "
                                                      "DAVIS-2017 palette)")
    parser.add_argument("--output", required=True, help="folder for the propagated masks (must not exist "
                                                        "unless --force)")
    parser.add_argument("--size", type=int, default=0, help="short side of the frames the embedding sees "
                                                           "(default: the card's data.track_size or image_size)")
    parser.add_argument("--temperature", type=float, default=0.0, help="propagation temperature (default: card)")
    parser.add_argument("--references", type=int, default=0, help="reference frames: the first + the previous "
                                                                 "ones (default: card)")
    parser.add_argument("--force", action="store_true", help="replace an existing --output folder")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    from sslzoo.startup import quiet_tensorflow

    quiet_tensorflow()
    from sslzoo.errors import DataError
    from sslzoo.files import atomic_directory
    from sslzoo.video import davis, propagation
    from sslzoo.video.embedding import embedding_function, feature_map_model

    output = Path(args.output)
    if output.exists() and not args.force:
        print(f"error: --output '{output}' exists; choose a new folder or pass --force to replace it",
              file=sys.stderr)
        return USER_ERROR
    try:
        import sslzoo
        from sslzoo.export import read_card
        from sslzoo.zoo.loader import resolve

        encoder = sslzoo.load(args.model)
        card = read_card(resolve(args.model))
        config = card.get("config") or {}
        options = (config.get("method") or {}).get("options") or {}
        data = config.get("data") or {}
        size = args.size or int(data.get("track_size") or data.get("image_size") or 0)
        if size <= 0:
            raise ValueError("the model card gives no frame size; pass --size")
        temperature = args.temperature or float(options.get("propagation_temperature", 1.0))
        references = args.references or int(options.get("num_references", 3))
        cosine = options.get("similarity") == "cosine"
        features = embedding_function(feature_map_model(encoder), cosine)
        files = davis.frame_files(args.frames)
        if len(files) < 2:
            raise DataError(f"--frames '{args.frames}' holds {len(files)} frame(s); tracking needs at least 2")
        first = davis.read_mask(args.mask)
        if first.max() == 0:
            raise DataError(f"--mask '{args.mask}' marks no object (all background); nothing to track")
        frames = np.stack([davis.read_frame(f, size) for f in files])
        masks = propagation.track_video(frames, first, features, temperature, references,
                                        propagation.DOT)
    except (DataError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return USER_ERROR
    with atomic_directory(output, force=args.force) as staging:
        write_masks(staging, files, masks)
        (staging / "track.json").write_text(json.dumps({
            "model": str(args.model), "frames": str(args.frames), "first_mask": str(args.mask),
            "size": size, "temperature": temperature, "references": references,
            "similarity": "cosine" if cosine else "dot", "objects": int(first.max()), "masks": len(files)},
            indent=2))
    print(f"{len(files)} masks ({int(first.max())} object(s)) -> {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
