"""Which image files the own-data sources read: a class-per-subfolder tree, any folder tree, or a list file.

    listing = list_images("~/photos", labels="none")   # every image under ~/photos, recursively
    listing.paths, listing.labels, listing.skipped_counts()

Files are chosen by extension (so stray notes are not "bad images"); whether a listed file really is an
image is decided later, by its header (`sslzoo.data.headers`) and its decoder. Nothing here opens a file
or imports TensorFlow.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import numpy as np

from sslzoo.errors import DataError

# Listing is by extension (so stray notes or metadata files are not "bad images"); decoding is by content,
# so a PNG named .jpg still loads.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".webp")
LABEL_MODES = ("subfolders", "none")
SKIP_KINDS = ("hidden", "not_image", "symlink_loop", "unreadable", "duplicate")

_LAYOUT = "expected <root>/<class name>/<image files> (one subfolder per class, JPEG/PNG/BMP/GIF images)"
_LAYOUT_NONE = ("with data.labels=none, expected a folder holding image files at any depth "
                "(JPEG/PNG/BMP/GIF/WebP); point data.path at it")
_LIST_FORMAT = ("data.source=list expects a UTF-8 text file with one image path per line (relative paths "
                "are relative to the list file's folder; blank lines and lines starting with '#' are ignored)")
_LIST_SUFFIXES = (".txt", ".lst", ".list", ".csv", ".tsv")
# Windows reports a symlink cycle as ERROR_CANT_RESOLVE_FILENAME rather than ELOOP.
_WIN_CANT_RESOLVE = 1921


@dataclass
class Listing:
    """Image files in a fixed order, their labels, and what was passed over and why.

    Args:
        paths: N file paths. Folder listings are sorted (by class, then name; or by relative path, compared
            folder by folder); a list file keeps its own order.
        labels: int32 [N], indices into `class_names`; all -1 when there are no labels.
        class_names: the class subfolder names, [] without labels.
        skipped: SKIP_KINDS -> paths passed over: "hidden" (name starts with '.'; a hidden folder counts
            once), "not_image" (extension not in IMAGE_EXTENSIONS), "symlink_loop" (a folder link back to
            one of its ancestors, or a link that cannot be resolved), "unreadable" (a broken link, a missing
            listed file, a folder that cannot be opened), "duplicate" (a folder reached again through
            another link, a path listed twice).
    """

    paths: List[str]
    labels: np.ndarray
    class_names: List[str]
    skipped: Dict[str, List[str]] = field(default_factory=lambda: {kind: [] for kind in SKIP_KINDS})

    def __len__(self) -> int:
        return len(self.paths)

    def skipped_counts(self) -> Dict[str, int]:
        return {kind: len(paths) for kind, paths in self.skipped.items()}


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def list_images(root: str | Path, labels: str = "subfolders") -> Listing:
    """Lists the image files under `root`.

    Args:
        root: the folder (`~` is expanded).
        labels: "subfolders": root/<class>/<image>, one level, labels from the sorted subfolder names;
            "none": every image at any depth, unlabelled (-1). Symlinked folders are followed once.
    Raises:
        DataError: root is missing or not a folder, or holds no images in the layout `labels` names.
    """
    if labels not in LABEL_MODES:
        raise DataError(f"data.labels '{labels}' is not one of {', '.join(LABEL_MODES)}")
    root = Path(root).expanduser()
    if labels == "subfolders":
        return _list_class_folders(root)
    return _list_tree(root)


def _visible_entries(directory: Path, skipped: Dict[str, List[str]]) -> List[os.DirEntry]:
    with os.scandir(directory) as entries:
        entries = sorted(entries, key=lambda e: e.name)
    skipped["hidden"].extend(e.path for e in entries if e.name.startswith("."))
    return [e for e in entries if not e.name.startswith(".")]


def _scan_root(root: Path, layout: str) -> None:
    if not root.exists():
        raise DataError(f"image folder '{root}' does not exist; {layout}")
    if not root.is_dir():
        hint = ""
        if root.suffix.lower() in _LIST_SUFFIXES:
            hint = "; if it lists image paths, one per line, use --set data.source=list"
        raise DataError(f"'{root}' is not a folder; {layout}{hint}")


def _unreadable_folder(path, error: OSError) -> DataError:
    return DataError(f"folder '{path}' cannot be read ({error.strerror or error}); fix its permissions or "
                     "move it out of data.path")


def _list_class_folders(root: Path) -> Listing:
    """The `folder` source's original layout and messages (tests/test_data.py pins them)."""
    _scan_root(root, _LAYOUT)
    skipped = {kind: [] for kind in SKIP_KINDS}
    try:
        entries = _visible_entries(root, skipped)
    except OSError as error:
        raise _unreadable_folder(root, error) from None
    class_dirs = [e for e in entries if _is_dir(e)]
    skipped["symlink_loop"].extend(e.path for e in entries if not _is_dir(e) and not _is_file(e)
                                   and e.is_symlink() and _link_error(e.path) == "symlink_loop")
    if not class_dirs:
        loose = sum(1 for e in entries if _is_file(e) and is_image_name(e.name))
        found = f"it holds {loose} images directly but no class subfolders" if loose else "it is empty"
        if entries and not loose:
            found = f"it holds no class subfolders (only {len(entries)} other files)"
        hint = "; for unlabelled images use --set data.labels=none" if loose else ""
        raise DataError(f"image folder '{root}': {found}; {_LAYOUT}{hint}")

    paths: List[str] = []
    label_list: List[int] = []
    empty: List[str] = []
    folders = 0
    for label, class_dir in enumerate(class_dirs):
        try:
            class_entries = _visible_entries(Path(class_dir.path), skipped)
        except OSError as error:
            raise _unreadable_folder(class_dir.path, error) from None
        files = []
        for entry in class_entries:
            kind = _classify_file(entry, skipped)
            if kind == "image":
                files.append(entry.path)
            folders += kind == "folder"
        if not files:
            empty.append(class_dir.name)
        paths.extend(files)
        label_list.extend([label] * len(files))
    if not paths:
        loose = sum(1 for e in entries if _is_file(e) and is_image_name(e.name))
        hint = (f"; the {loose} images directly in '{root}' are not in a class subfolder: for unlabelled "
                "images use --set data.labels=none") if loose else ""
        names = ", ".join(d.name for d in class_dirs[:5])
        raise DataError(f"image folder '{root}' has class subfolders ({names}"
                        f"{', ...' if len(class_dirs) > 5 else ''}) but no image files in them "
                        f"(extensions {', '.join(IMAGE_EXTENSIONS)}); {_LAYOUT}; seen with data.labels=subfolders: "
                        f"{_seen_text(skipped, folders, 'nested folders (not searched)')}{hint}")
    if empty:
        # A class without examples would have no place in a stratified split or a probe's evaluation.
        raise DataError(f"image folder '{root}': class subfolder(s) {', '.join(empty[:10])} hold no image files; "
                        f"add images or remove those folders; {_LAYOUT}")
    return Listing(paths, np.asarray(label_list, np.int32), [d.name for d in class_dirs], skipped)


def _is_file(entry: os.DirEntry) -> bool:
    try:
        return entry.is_file()
    except OSError:  # DirEntry.is_file() raises, rather than returns False, on a symlink loop (ELOOP)
        return False


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # as in _is_file
        return False


def _classify_file(entry: os.DirEntry, skipped: Dict[str, List[str]]) -> str:
    """"image", "folder", or the skip kind the entry was recorded under (a visible entry)."""
    if _is_file(entry):
        if is_image_name(entry.name):
            return "image"
        skipped["not_image"].append(entry.path)
        return "not_image"
    if _is_dir(entry):
        return "folder"
    if entry.is_symlink() and _link_error(entry.path) == "symlink_loop":
        skipped["symlink_loop"].append(entry.path)
        return "symlink_loop"
    # A broken link or a device/pipe: unreadable if it was meant as an image (by its name), else not one.
    kind = "unreadable" if is_image_name(entry.name) else "not_image"
    skipped[kind].append(entry.path)
    return kind


def _link_error(path: str) -> str:
    try:
        os.stat(path)
    except OSError as error:
        if error.errno == errno.ELOOP or getattr(error, "winerror", None) == _WIN_CANT_RESOLVE:
            return "symlink_loop"
        return "unreadable"
    return ""


def _identity(path: str):
    """What makes two folder paths the same folder, whatever links or bind mounts lead there."""
    stat = os.stat(path)
    # Some file systems (FAT on Windows, a few FUSE mounts) report no inode numbers.
    return (stat.st_dev, stat.st_ino) if stat.st_ino else os.path.realpath(path)


def _list_tree(root: Path) -> Listing:
    _scan_root(root, _LAYOUT_NONE)
    skipped = {kind: [] for kind in SKIP_KINDS}
    paths: List[str] = []
    folders = 0
    root_id = _identity(str(root))
    visited = {root_id}
    # Depth first, entries in name order, so paths come out sorted folder by folder (independent of the
    # path separator) and, when two links reach one folder, the first in that order is the one listed.
    stack: List[Tuple[Iterator[os.DirEntry], Tuple]] = []
    try:
        stack.append((_sorted_entries(str(root)), (root_id,)))
    except OSError as error:
        raise _unreadable_folder(root, error) from None
    while stack:
        entries, ancestors = stack[-1]
        entry = next(entries, None)
        if entry is None:
            stack.pop()
            continue
        if entry.name.startswith("."):
            skipped["hidden"].append(entry.path)
            continue
        kind = _classify_file(entry, skipped)
        if kind == "image":
            paths.append(entry.path)
        elif kind == "folder":
            folders += 1
            try:
                folder_id = _identity(entry.path)
                if folder_id in ancestors:
                    skipped["symlink_loop"].append(entry.path)
                elif folder_id in visited:
                    skipped["duplicate"].append(entry.path)
                else:
                    visited.add(folder_id)
                    stack.append((_sorted_entries(entry.path), ancestors + (folder_id,)))
            except OSError:
                skipped["unreadable"].append(entry.path)
    if not paths:
        raise DataError(f"no image files under '{root}' (data.labels=none, all subfolders searched); seen: "
                        f"{_seen_text(skipped, folders, 'subfolders')}; images need one of the extensions "
                        f"{', '.join(IMAGE_EXTENSIONS)}; {_LAYOUT_NONE}")
    return Listing(paths, np.full(len(paths), -1, np.int32), [], skipped)


def _sorted_entries(directory: str) -> Iterator[os.DirEntry]:
    with os.scandir(directory) as entries:
        return iter(sorted(entries, key=lambda e: e.name))


def _seen_text(skipped: Dict[str, List[str]], folders: int, folder_words: str) -> str:
    """What a listing without images saw, so the message shows e.g. that the files are .tif or hidden."""
    parts = []
    others = skipped["not_image"]
    if others:
        by_ext: Dict[str, int] = {}
        for other in others:
            ext = os.path.splitext(other)[1].lower() or "no extension"
            by_ext[ext] = by_ext.get(ext, 0) + 1
        top = sorted(by_ext.items(), key=lambda item: (-item[1], item[0]))
        kinds = ", ".join(f"{count} {ext}" for ext, count in top[:5]) + (", ..." if len(top) > 5 else "")
        parts.append(f"{len(others)} files that are not images by extension ({kinds})")
    if folders:
        parts.append(f"{folders} {folder_words}")
    words = {"hidden": "hidden entries (skipped)", "symlink_loop": "symlink loops (skipped)",
             "unreadable": "unreadable entries, e.g. broken links", "duplicate": "folders reached twice (skipped)"}
    parts.extend(f"{len(skipped[kind])} {text}" for kind, text in words.items() if skipped[kind])
    return ", ".join(parts) if parts else "nothing (the folder is empty)"


def read_list_file(path: str | Path) -> Listing:
    """The `list` source: image paths, one per line, in the file's order, unlabelled.

    Any extension is accepted (the list is explicit; headers decide later what is an image). A listed file
    that does not exist, or is not a file, is recorded as "unreadable"; a path listed again as "duplicate"
    (it would otherwise land in train and val at once).

    Raises:
        DataError: the list file is missing, not UTF-8 text, or names no existing file.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"list file '{path}' does not exist; {_LIST_FORMAT}")
    if path.is_dir():
        raise DataError(f"list file '{path}' is a folder; for a folder of images use data.source=folder; "
                        f"{_LIST_FORMAT}")
    try:
        # utf-8-sig: lists saved by Windows editors often start with a byte-order mark.
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as error:
        raise DataError(f"list file '{path}' is not UTF-8 text ({error.reason} at byte {error.start}); "
                        f"{_LIST_FORMAT}") from None
    except OSError as error:
        raise DataError(f"list file '{path}' cannot be read ({error.strerror or error}); {_LIST_FORMAT}") from None

    base = path.parent
    skipped = {kind: [] for kind in SKIP_KINDS}
    paths: List[str] = []
    seen = set()
    entries = 0
    for line in lines:
        # Whole-line stripping: trailing blanks and \r from hand-edited lists are common, file names that
        # end in a blank are not.
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        entries += 1
        entry = os.path.join(base, os.path.expanduser(line))
        # normpath only to recognise "a.jpg" and "./a.jpg" as one entry; the path kept is the one listed.
        key = os.path.normpath(entry)
        if key in seen:
            skipped["duplicate"].append(entry)
        elif not os.path.isfile(entry):
            skipped["unreadable"].append(entry)
        else:
            paths.append(entry)
        seen.add(key)
    if not paths:
        if not entries:
            found = "no paths (only blank or comment lines)"
        else:
            missing = skipped["unreadable"]
            found = (f"{entries} paths but none is an existing file, e.g. {', '.join(missing[:3])}; relative "
                     f"paths are resolved against '{base}', not the working folder")
        raise DataError(f"list file '{path}' holds {found}; {_LIST_FORMAT}")
    return Listing(paths, np.full(len(paths), -1, np.int32), [], skipped)
