"""Tests for sslzoo.data.headers (format and size from the first bytes) and sslzoo.data.listing (which files)."""

import ast
import io
import os
import pickle
import struct
import time
import tracemalloc
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sslzoo.data.headers import BadImageError, check_pixels, image_header
from sslzoo.data.listing import IMAGE_EXTENSIONS, Listing, list_images, read_list_file
from sslzoo.errors import DataError

DATA = Path(__file__).resolve().parents[1] / "sslzoo" / "data"
SIZE = (37, 21)  # odd, and not square, so a swapped width/height shows


def _picture(size=SIZE, mode="RGB"):
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    picture = Image.fromarray(pixels).convert(mode)
    if mode == "RGBA":
        picture.putalpha(128)  # translucent, so encoders cannot drop the alpha channel
    return picture


def _png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_declaring(width, height):
    """A PNG header (with a valid IHDR checksum) declaring width x height, and no pixel data to speak of."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IEND", b"")


# --- headers: every format against PIL -------------------------------------------------------------------

SAVES = {
    "png_rgb": ("png", "RGB", {}),
    "png_palette": ("png", "P", {}),
    "jpeg_baseline": ("jpeg", "RGB", {}),
    "jpeg_progressive": ("jpeg", "RGB", {"progressive": True}),
    "jpeg_gray": ("jpeg", "L", {}),
    "jpeg_cmyk": ("jpeg", "CMYK", {}),
    "gif": ("gif", "P", {}),
    "bmp": ("bmp", "RGB", {}),
    "bmp_1bit": ("bmp", "1", {}),
    "webp_lossy": ("webp", "RGB", {}),  # VP8
    "webp_lossless": ("webp", "RGB", {"lossless": True}),  # VP8L
    "webp_alpha": ("webp", "RGBA", {}),  # VP8X (+ ALPH)
}


@pytest.mark.parametrize("case", sorted(SAVES))
@pytest.mark.parametrize("size", [SIZE, (1, 1), (300, 7)])
def test_header_matches_pil(tmp_path, case, size):
    fmt, mode, options = SAVES[case]
    path = tmp_path / f"{case}.{fmt}"
    _picture(size, mode).save(path, format=fmt.upper(), **options)
    with Image.open(path) as reference:
        expected = reference.size
    assert image_header(path) == (fmt, *expected) == (fmt, *size)
    assert image_header(path.read_bytes()) == (fmt, *size)
    assert image_header(str(path)) == (fmt, *size)


def test_webp_chunk_kinds_are_the_ones_meant(tmp_path):
    """The three WebP cases above really cover the three headers, not one of them thrice."""
    kinds = set()
    for case in ("webp_lossy", "webp_lossless", "webp_alpha"):
        fmt, mode, options = SAVES[case]
        buffer = io.BytesIO()
        _picture(SIZE, mode).save(buffer, format="WEBP", **options)
        kinds.add(buffer.getvalue()[12:16])
    assert kinds == {b"VP8 ", b"VP8L", b"VP8X"}


def test_bmp_top_down_and_core_header(tmp_path):
    buffer = io.BytesIO()
    _picture().save(buffer, format="BMP")
    data = bytearray(buffer.getvalue())
    data[22:26] = struct.pack("<i", -SIZE[1])  # negative height: rows stored top-down
    top_down = tmp_path / "top_down.bmp"
    top_down.write_bytes(bytes(data))
    with Image.open(top_down) as reference:
        assert reference.size == SIZE
    assert image_header(top_down) == ("bmp", *SIZE)

    # BITMAPCOREHEADER (OS/2 1.x): 12-byte header, 16-bit sizes, 24-bit pixels in padded rows.
    width, height = SIZE
    row = (width * 3 + 3) // 4 * 4
    pixels = bytes(row * height)
    core = struct.pack("<IHHHH", 12, width, height, 1, 24)
    core_path = tmp_path / "core.bmp"
    core_path.write_bytes(b"BM" + struct.pack("<IHHI", 26 + len(pixels), 0, 0, 26) + core + pixels)
    with Image.open(core_path) as reference:
        assert reference.size == SIZE
    assert image_header(core_path) == ("bmp", *SIZE)


def test_jpeg_frame_header_far_into_the_file_is_found_by_seeking(tmp_path):
    """A 300 KB ICC profile (five APP2 segments) puts SOF beyond the 64 KiB head; only markers are read."""
    path = tmp_path / "big_icc.jpg"
    _picture().save(path, format="JPEG", icc_profile=bytes(300_000))
    data = path.read_bytes()
    assert data.index(b"\xff\xc0") > 64 * 1024 and len(data) > 300_000

    class Counting(io.BytesIO):
        read_bytes = 0

        def read(self, size=-1):
            chunk = super().read(size)
            Counting.read_bytes += len(chunk)
            return chunk

    with Image.open(path) as reference:
        assert reference.size == SIZE
    assert image_header(Counting(data)) == ("jpeg", *SIZE)
    assert Counting.read_bytes < 64 * 1024 + 2048
    assert image_header(path) == ("jpeg", *SIZE)


def test_jpeg_ends_before_its_frame_header(tmp_path):
    buffer = io.BytesIO()
    _picture().save(buffer, format="JPEG", icc_profile=bytes(100_000))
    cut = buffer.getvalue()[:80_000]
    with pytest.raises(BadImageError, match="truncated header") as info:
        image_header(cut)
    assert info.value.kind == "truncated"


def test_zero_byte_file(tmp_path):
    path = tmp_path / "zero.jpg"
    path.write_bytes(b"")
    with pytest.raises(BadImageError, match="zero-byte file") as info:
        image_header(path)
    assert str(path) in str(info.value) and info.value.kind == "zero_byte"
    assert isinstance(info.value, (DataError, ValueError))


def test_random_bytes_are_not_an_image(tmp_path):
    path = tmp_path / "random.png"
    path.write_bytes(np.random.default_rng(1).bytes(700).replace(b"\x89", b"\x00"))
    with pytest.raises(BadImageError, match="not an image: unknown signature") as info:
        image_header(path)
    assert str(path) in str(info.value) and info.value.kind == "unknown"


@pytest.mark.parametrize("cut", [3, 20, 30])
def test_truncated_png(tmp_path, cut):
    full = tmp_path / "full.png"
    _picture().save(full)
    path = tmp_path / "truncated.png"
    path.write_bytes(full.read_bytes()[:cut])
    with pytest.raises(BadImageError, match="truncated header") as info:
        image_header(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("head", [b"\xff", b"GIF8", b"GIF89a\x01", b"RIFF\x00\x00", b"RIFF\x10\x00\x00\x00WEBPVP8",
                                  b"BM\x00", b"\xff\xd8\xff\xe0\x00\x10JFIF"])
def test_short_heads_are_truncated(head):
    with pytest.raises(BadImageError, match="truncated header"):
        image_header(head)


def test_garbled_headers():
    with pytest.raises(BadImageError, match="checksum"):
        image_header(_png_declaring(40, 30)[:29] + b"\x00\x00\x00\x00")
    with pytest.raises(BadImageError, match="text mode"):
        image_header(b"\x89PNG\n\x1a\n" + bytes(40))
    with pytest.raises(BadImageError, match="0x30"):
        image_header(_png_declaring(0, 30))
    with pytest.raises(BadImageError, match="HTML"):
        image_header(b"<!DOCTYPE html><html><body>404 Not Found</body></html>")
    with pytest.raises(BadImageError, match="TIFF"):
        image_header(b"II*\x00" + bytes(60))


def test_bad_image_error_survives_pickling():
    error = pickle.loads(pickle.dumps(BadImageError("a.jpg", "zero_byte", "zero-byte file")))
    assert (error.path, error.kind, str(error)) == ("a.jpg", "zero_byte", "'a.jpg': zero-byte file")


def test_missing_file_is_a_bad_image_naming_it(tmp_path):
    with pytest.raises(BadImageError, match="cannot be read") as info:
        image_header(tmp_path / "gone.jpg")
    assert info.value.kind == "unreadable" and "gone.jpg" in str(info.value)


def test_check_pixels_refuses_a_bomb_without_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_declaring(10000, 10000))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as reference:  # PIL agrees about the declared size (it does not decode either)
            assert reference.size == (10000, 10000)
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(BadImageError) as info:
        check_pixels(path, 64_000_000)
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 0.5 and peak < 1_000_000  # 10000 x 10000 x 3 decoded would be 300 MB
    message = str(info.value)
    assert info.value.kind == "too_large" and str(path) in message
    assert "10000x10000 = 100 MP is above data.max_pixels=64000000 (a decompression bomb guard)" in message
    assert "raise data.max_pixels if the image is genuine" in message
    assert check_pixels(path, 100_000_000) == ("png", 10000, 10000)
    assert check_pixels(path, 0) == ("png", 10000, 10000)  # 0: no limit


# --- listing: the recursive, unlabelled tree ---------------------------------------------------------------


def _touch_image(path, fmt="PNG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    _picture((5, 4)).save(path, format=fmt)


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "photos"
    _touch_image(root / "b.png")
    _touch_image(root / "a" / "z.jpg", "JPEG")
    _touch_image(root / "a" / "deeper" / "x.PNG")
    _touch_image(root / "a-b" / "c.gif", "GIF")  # '-' sorts before '/': order must go folder by folder
    _touch_image(root / "sub" / "k.bmp", "BMP")
    _touch_image(root / ".hidden_dir" / "secret.png")
    _touch_image(root / "sub" / ".hidden.png")
    (root / "sub" / "notes.txt").write_text("not an image")
    (root / "README").write_text("no extension")
    (root / "sub" / "zero.jpg").write_bytes(b"")
    os.symlink(root, root / "sub" / "loop")  # back to an ancestor
    os.symlink(root / "sub" / "self", root / "sub" / "self")  # resolves to itself: ELOOP
    os.symlink(root / "nowhere.jpg", root / "sub" / "broken.jpg")
    elsewhere = tmp_path / "elsewhere"
    _touch_image(elsewhere / "linked.webp", "WEBP")
    os.symlink(elsewhere, root / "sub" / "outside")  # a symlinked folder outside root is followed
    return root


def test_unlabelled_tree_lists_every_image_recursively_in_sorted_order(tree):
    listing = list_images(tree, labels="none")
    relative = [os.path.relpath(p, tree) for p in listing.paths]
    assert relative == ["a/deeper/x.PNG", "a/z.jpg", "a-b/c.gif", "b.png", "sub/k.bmp",
                        "sub/outside/linked.webp", "sub/zero.jpg"]
    assert listing.labels.dtype == np.int32 and (listing.labels == -1).all() and len(listing.labels) == 7
    assert listing.class_names == []
    named = {kind: sorted(os.path.relpath(p, tree) for p in paths) for kind, paths in listing.skipped.items()}
    assert named["hidden"] == [".hidden_dir", "sub/.hidden.png"]
    assert named["not_image"] == ["README", "sub/notes.txt"]
    assert named["symlink_loop"] == ["sub/loop", "sub/self"]
    assert named["unreadable"] == ["sub/broken.jpg"]
    assert listing.skipped_counts() == {"hidden": 2, "not_image": 2, "symlink_loop": 2, "unreadable": 1,
                                        "duplicate": 0}
    # The zero-byte .jpg is listed (an image by extension); its header is what refuses it.
    with pytest.raises(BadImageError, match="zero-byte"):
        image_header(tree / "sub" / "zero.jpg")
    assert list_images(tree, labels="none").paths == listing.paths  # a fixed order, run after run


def test_a_folder_reached_through_two_links_is_listed_once(tmp_path):
    root = tmp_path / "root"
    _touch_image(root / "b" / "one.png")
    os.symlink(root / "b", root / "a")  # "a" sorts first, so the link is the path kept
    listing = list_images(root, labels="none")
    assert [os.path.relpath(p, root) for p in listing.paths] == ["a/one.png"]
    assert listing.skipped["duplicate"] == [str(root / "b")]


def test_unlabelled_errors_name_the_path_and_the_fix(tmp_path):
    with pytest.raises(DataError, match="does not exist.*data.labels=none"):
        list_images(tmp_path / "nowhere", labels="none")
    listed = tmp_path / "images.txt"
    listed.write_text("a.jpg\n")
    with pytest.raises(DataError, match="is not a folder.*data.source=list"):
        list_images(listed, labels="none")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no image files.*data.labels=none.*nothing"):
        list_images(empty, labels="none")
    (empty / "scan.tif").write_bytes(b"II*\x00")
    (empty / "scan2.tif").write_bytes(b"II*\x00")
    (empty / "notes.txt").write_text("x")
    (empty / ".thumb.png").write_bytes(b"")
    with pytest.raises(DataError) as info:
        list_images(empty, labels="none")
    message = str(info.value)
    assert f"no image files under '{empty}'" in message
    assert "3 files that are not images by extension (2 .tif, 1 .txt)" in message
    assert "1 hidden entries" in message and ".jpg" in message
    with pytest.raises(DataError, match="data.labels 'folders' is not one of subfolders, none"):
        list_images(empty, labels="folders")


# --- listing: class subfolders, as list_image_folder always did ------------------------------------------


def _old_list_image_folder(root):
    """list_image_folder as it was before listing.py (frozen copy): the reference for labels=subfolders."""
    layout = "expected <root>/<class name>/<image files> (one subfolder per class, JPEG/PNG/BMP/GIF images)"

    def visible(directory):
        with os.scandir(directory) as entries:
            return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)

    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"image folder '{root}' does not exist; {layout}")
    if not root.is_dir():
        raise DataError(f"'{root}' is not a folder; {layout}")
    entries = visible(root)
    class_dirs = [e for e in entries if e.is_dir()]
    if not class_dirs:
        loose = sum(1 for e in entries if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS))
        found = f"it holds {loose} images directly but no class subfolders" if loose else "it is empty"
        if entries and not loose:
            found = f"it holds no class subfolders (only {len(entries)} other files)"
        raise DataError(f"image folder '{root}': {found}; {layout}")
    paths, labels, empty = [], [], []
    for label, class_dir in enumerate(class_dirs):
        files = [e.path for e in visible(Path(class_dir.path))
                 if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)]
        if not files:
            empty.append(class_dir.name)
        paths.extend(files)
        labels.extend([label] * len(files))
    if not paths:
        raise DataError(f"image folder '{root}' has class subfolders ({', '.join(d.name for d in class_dirs[:5])}"
                        f"{', ...' if len(class_dirs) > 5 else ''}) but no image files in them "
                        f"(extensions {', '.join(IMAGE_EXTENSIONS)}); {layout}")
    if empty:
        raise DataError(f"image folder '{root}': class subfolder(s) {', '.join(empty[:10])} hold no image files; "
                        f"add images or remove those folders; {layout}")
    return paths, np.asarray(labels, np.int32), [d.name for d in class_dirs]


def test_subfolders_mode_equals_the_old_listing(tmp_path):
    root = tmp_path / "classes"
    for name, count in (("zebra", 3), ("ant", 2), ("moth", 4)):
        for i in range(count):
            _touch_image(root / name / f"{i:02d}.png")
    _touch_image(root / "ant" / ".hidden.png")
    _touch_image(root / "ant" / "nested" / "ignored.png")  # one level only, as before
    _touch_image(root / "loose.png")  # beside the class folders: not listed, as before
    (root / "moth" / "notes.txt").write_text("x")
    (root / ".cache").mkdir()
    os.symlink(root / "gone.jpg", root / "zebra" / "broken.jpg")

    listing = list_images(root, labels="subfolders")
    old_paths, old_labels, old_names = _old_list_image_folder(root)
    assert listing.paths == old_paths and listing.class_names == old_names == ["ant", "moth", "zebra"]
    np.testing.assert_array_equal(listing.labels, old_labels)
    assert listing.labels.dtype == np.int32
    assert sorted(Path(p).name for p in listing.skipped["hidden"]) == [".cache", ".hidden.png"]
    assert [Path(p).name for p in listing.skipped["not_image"]] == ["notes.txt"]
    assert [Path(p).name for p in listing.skipped["unreadable"]] == ["broken.jpg"]

    from sslzoo.data.folder import list_image_folder

    paths, labels, names = list_image_folder(root)
    assert paths == old_paths and names == old_names
    np.testing.assert_array_equal(labels, old_labels)


def _error(function, *args):
    with pytest.raises(DataError) as info:
        function(*args)
    return str(info.value)


@pytest.mark.parametrize("layout", ["missing", "file", "empty", "loose", "only_notes", "no_images", "empty_class"])
def test_subfolders_errors_keep_the_old_messages(tmp_path, layout):
    root = tmp_path / "root"
    if layout == "file":
        root.write_text("x")
    elif layout != "missing":
        root.mkdir()
    if layout == "loose":
        _touch_image(root / "loose.png")
    if layout == "only_notes":
        (root / "notes.txt").write_text("x")
    if layout in ("no_images", "empty_class"):
        (root / "cats").mkdir()
        (root / "cats" / "notes.txt").write_text("x")
    if layout == "empty_class":
        _touch_image(root / "dogs" / "d.png")
    old, new = _error(_old_list_image_folder, root), _error(list_images, root, "subfolders")
    # Unchanged, apart from hints appended at the end.
    assert new.startswith(old)
    if layout == "loose":
        assert new.endswith("use --set data.labels=none")
    if layout == "no_images":
        assert "seen with data.labels=subfolders: 1 files that are not images by extension (1 .txt)" in new


def test_subfolders_without_images_but_loose_ones_suggest_labels_none(tmp_path):
    (tmp_path / "empty_class").mkdir()
    _touch_image(tmp_path / "a.png")
    _touch_image(tmp_path / "b.png")
    message = _error(list_images, tmp_path, "subfolders")
    assert "the 2 images directly in" in message and message.endswith("--set data.labels=none")


# --- read_list_file ------------------------------------------------------------------------------------------


def test_list_file_relative_absolute_comments_and_missing(tmp_path):
    images = tmp_path / "lists" / "imgs"
    _touch_image(images / "one.png")
    _touch_image(images / "two.jpg", "JPEG")
    outside = tmp_path / "elsewhere" / "three.png"
    _touch_image(outside)
    list_file = tmp_path / "lists" / "train.txt"
    list_file.write_text(
        "# training images\n"
        "imgs/two.jpg\n"  # relative to the list file's folder, not the working folder
        "\n"
        f"   {outside}   \r\n"
        "imgs/missing.png\n"
        "  # an indented comment\n"
        "imgs/one.png\n"
        "./imgs/two.jpg\n",
        encoding="utf-8")
    listing = read_list_file(list_file)
    assert isinstance(listing, Listing)
    assert listing.paths == [str(images / "two.jpg"), str(outside), str(images / "one.png")]  # the file's order
    assert listing.labels.dtype == np.int32 and listing.labels.tolist() == [-1, -1, -1]
    assert listing.class_names == []
    assert listing.skipped["unreadable"] == [str(images / "missing.png")]
    assert [Path(p).name for p in listing.skipped["duplicate"]] == ["two.jpg"]


def test_list_file_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist.*one image path per line"):
        read_list_file(tmp_path / "nope.txt")
    with pytest.raises(DataError, match="is a folder"):
        read_list_file(tmp_path)
    only_comments = tmp_path / "comments.txt"
    only_comments.write_text("# nothing yet\n\n")
    with pytest.raises(DataError, match="no paths"):
        read_list_file(only_comments)
    all_missing = tmp_path / "missing.txt"
    all_missing.write_text("a.jpg\nb.jpg\n")
    with pytest.raises(DataError, match=f"none is an existing file.*resolved against '{tmp_path}'"):
        read_list_file(all_missing)
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(DataError, match="not UTF-8"):
        read_list_file(binary)


# --- both modules stay free of TensorFlow ----------------------------------------------------------------------


@pytest.mark.parametrize("module", ["headers.py", "listing.py"])
def test_modules_import_no_tensorflow(module):
    imported = set()
    for node in ast.walk(ast.parse((DATA / module).read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"tensorflow", "keras", "tensorflow_datasets"}
    # sslzoo imports only from the foundation: sslzoo.errors.
    sslzoo_imports = {n.module for n in ast.walk(ast.parse((DATA / module).read_text()))
                      if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("sslzoo")}
    assert sslzoo_imports <= {"sslzoo.errors"}


def test_subfolders_mode_skips_symlink_loops_the_old_listing_crashed_on(tmp_path):
    _touch_image(tmp_path / "cats" / "c.png")
    os.symlink(tmp_path / "cats" / "self", tmp_path / "cats" / "self")
    os.symlink(tmp_path / "top", tmp_path / "top")
    with pytest.raises(OSError):  # DirEntry.is_file() raises ELOOP
        _old_list_image_folder(tmp_path)
    listing = list_images(tmp_path, labels="subfolders")
    assert [Path(p).name for p in listing.paths] == ["c.png"] and listing.class_names == ["cats"]
    assert sorted(Path(p).name for p in listing.skipped["symlink_loop"]) == ["self", "top"]
