"""Pack an image folder into TFRecord shards of encoded bytes plus a manifest, for object stores and many machines.

    python -m sslzoo.prepare FOLDER --output SHARDS/ [--labels subfolders|none] [--shard-size-mb 100] [--force]

--labels subfolders (default) reads FOLDER/<class>/<image>; --labels none takes every image at any depth,
unlabelled. SHARDS/ may be local or, where TensorFlow has the file system, gs://... or s3://....
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import List, Optional

from sslzoo.data.listing import LABEL_MODES, list_images
from sslzoo.data.tfrecord import check_output, write_shards
from sslzoo.errors import SslzooError

_PROGRESS_SECONDS = 5.0


def _progress_printer():
    started = time.monotonic()
    last = [started]

    def _report(done: int, total: int, written: int) -> None:
        now = time.monotonic()
        if now - last[0] < _PROGRESS_SECONDS:
            return  # the summary reports the end
        last[0] = now
        rate = done / max(now - started, 1e-9)
        print(f"  {done}/{total} files, {written / 1e6:.1f} MB of shards, {rate:.0f} files/s", flush=True)

    return _report


def prepare(folder: str, output: str, *, labels: str = "subfolders", shard_size_mb: float = 100,
            force: bool = False) -> dict:
    """Lists `folder`, writes its images as shards into `output` and prints progress and a summary.

    Args:
        folder: the image folder.
        output: the shard folder to create (local or a TF file system URL).
        labels: "subfolders" (one subfolder per class) or "none" (every image at any depth, unlabelled).
        shard_size_mb: target shard size in MiB.
        force: replace an existing folder of prepared shards.
    Returns:
        The manifest dict.
    """
    started = time.monotonic()
    check_output(output, force=force, source_root=folder)  # fail before listing a large folder
    listing = list_images(folder, labels)
    passed_over = [(path, "unreadable (broken link or special file)") for path in listing.skipped["unreadable"]]
    print(f"preparing {len(listing)} images from '{folder}'"
          f"{f' in {len(listing.class_names)} classes' if listing.class_names else ' (unlabelled)'} "
          f"into '{output}'", flush=True)
    manifest = write_shards(listing.paths, listing.labels if listing.class_names else None, listing.class_names,
                            output, shard_size_mb=shard_size_mb, force=force, root=folder,
                            progress=_progress_printer(), skipped=passed_over)
    seconds = time.monotonic() - started
    print(f"wrote {manifest['count']} images in {len(manifest['shards'])} shards, "
          f"{manifest['bytes'] / 1e6:.1f} MB, in {seconds:.1f} s to '{output}'")
    if manifest["skipped"]:
        examples = ", ".join(f"{s['path']} ({s['reason']})" for s in manifest["skipped"][:3])
        print(f"skipped {len(manifest['skipped'])} unreadable files (listed in manifest.json), e.g. {examples}")
    return manifest


def main(argv: Optional[List[str]] = None) -> int:
    """Command line entry point.

    Args:
        argv: the arguments (default sys.argv[1:]).
    Returns:
        The exit code: 0 on success, 2 on a user error (one line on stderr).
    """
    parser = argparse.ArgumentParser(prog="python -m sslzoo.prepare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="the image folder")
    parser.add_argument("--output", required=True, help="the shard folder to create")
    parser.add_argument("--labels", choices=LABEL_MODES, default="subfolders",
                        help="subfolders: FOLDER/<class>/<image>; none: every image at any depth, unlabelled")
    parser.add_argument("--shard-size-mb", type=float, default=100.0, help="target shard size in MiB")
    parser.add_argument("--force", action="store_true", help="replace an existing folder of prepared shards")
    args = parser.parse_args(argv)
    try:
        prepare(args.folder, args.output, labels=args.labels, shard_size_mb=args.shard_size_mb, force=args.force)
    except SslzooError as error:
        print(f"prepare: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
