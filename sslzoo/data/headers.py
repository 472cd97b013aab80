"""Image format and size from the first bytes of a file, without decoding and without TensorFlow.

    image_header("cat.jpg")            # ("jpeg", 640, 480)
    check_pixels("huge.png", 64_000_000)  # BadImageError before any decoder allocates 23000x23000x3 bytes

Only the header is read: one read of at most 64 KiB, plus, for a JPEG whose frame header (SOF) lies beyond
that (big EXIF thumbnails, ICC profiles), a few bytes per marker found by seeking from segment length to
segment length. A garbled, truncated or unknown file raises `BadImageError`, whose `kind` lets callers count
bad files by cause.
"""

from __future__ import annotations

import os
import struct
import zlib
from typing import BinaryIO, Optional, Tuple, Union

from sslzoo.errors import DataError

HEAD_BYTES = 64 * 1024
# Real JPEGs reach their SOF within a few dozen markers; the cap keeps a crafted file of millions of tiny
# segments from turning a header check into a full read.
MAX_JPEG_MARKERS = 1024

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# SOF0..SOF15 carry the frame size; C4 (DHT), C8 (JPG, reserved) and CC (DAC) share the range but do not.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field: TEM, RST0..7, SOI (EOI and SOS end the search and are handled apart).
_JPEG_STANDALONE = frozenset([0x01, *range(0xD0, 0xD9)])
# Signatures a file cut short inside its first 12 bytes may have started with ("BM" is too short to tell).
_TRUNCATABLE = (_PNG_SIGNATURE, b"\xff\xd8", b"GIF87a", b"GIF89a", b"RIFF")
_BMP_CORE_HEADER = 12
# OS/2 2.x (16, 64), BITMAPINFOHEADER (40), its Adobe variants (52, 56), V4 (108), V5 (124): all start with
# int32 width and height at offset 18 and 22.
_BMP_INFO_HEADERS = frozenset([16, 40, 52, 56, 64, 108, 124])

# Formats sslzoo does not decode, named so the message says what the file is instead of "unknown".
_OTHER_SIGNATURES = (
    (b"II*\x00", "a TIFF image, which is not read; convert it to PNG or JPEG"),
    (b"MM\x00*", "a TIFF image, which is not read; convert it to PNG or JPEG"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"\x1f\x8b", "a gzip archive"),
)

Source = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]


class BadImageError(DataError):
    """A file is not a readable image of a supported format, or is too large to decode.

    Attributes:
        path: the file (or "<N bytes>" for in-memory data).
        kind: "unreadable", "zero_byte", "unknown", "truncated", "garbled" or "too_large".
        reason: the message without the path.
    """

    def __init__(self, path: str, kind: str, reason: str):
        super().__init__(f"'{path}': {reason}")
        self.path, self.kind, self.reason = path, kind, reason

    def __reduce__(self):
        # The default pickling replays args=(message,) into __init__; worker processes need all three.
        return type(self), (self.path, self.kind, self.reason)


class _Reader:
    """Bytes at any offset: from the head already read, else by seeking the open file (if any)."""

    def __init__(self, head: bytes, file: Optional[BinaryIO], name: str, base: int = 0):
        self.head, self.file, self.name, self.base = head, file, name, base

    def read(self, offset: int, size: int) -> bytes:
        if offset + size <= len(self.head) or self.file is None:
            return self.head[offset:offset + size]
        self.file.seek(self.base + offset)
        return self.file.read(size)

    def need(self, offset: int, size: int, what: str) -> bytes:
        data = self.read(offset, size)
        if len(data) < size:
            raise BadImageError(self.name, "truncated", f"truncated header: the file ends inside the {what}")
        return data


def image_header(source: Source, name: Optional[str] = None) -> Tuple[str, int, int]:
    """The format and pixel size a file declares, reading only its header.

    Args:
        source: a path, the file's bytes, or a readable binary file object (read from its current
            position; seeked only when a JPEG's SOF lies beyond the first 64 KiB).
        name: how messages name the file; defaults to the path, or "<N bytes>" for bytes.
    Returns:
        (format, width, height), format one of "png", "jpeg", "gif", "bmp", "webp"; width, height >= 1.
    Raises:
        BadImageError: the file cannot be opened, is empty, truncated, garbled, or of no supported format.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        return _parse(_Reader(data, None, name or f"<{len(data)} bytes>"))
    if hasattr(source, "read"):
        label = name or str(getattr(source, "name", "<file object>"))
        try:
            base = source.tell()
        except (OSError, AttributeError):  # a pipe or socket: only the head can be read
            return _parse(_Reader(source.read(HEAD_BYTES), None, label))
        return _parse(_Reader(source.read(HEAD_BYTES), source, label, base))
    label = name or os.fspath(source)
    try:
        with open(source, "rb") as file:
            return _parse(_Reader(file.read(HEAD_BYTES), file, label))
    except OSError as error:
        # A missing or unreadable file is one more bad file to count, not a crash mid-listing.
        raise BadImageError(label, "unreadable", f"cannot be read ({error.strerror or error})") from None


def check_pixels(source: Source, max_pixels: int, name: Optional[str] = None) -> Tuple[str, int, int]:
    """`image_header`, refusing images of more than `max_pixels` pixels before anything decodes them.

    A small file can declare a huge image (a decompression bomb): decoding 23000x23000 RGB takes 1.6 GB.
    `max_pixels` <= 0 disables the limit.
    """
    fmt, width, height = image_header(source, name)
    pixels = width * height
    if 0 < max_pixels < pixels:
        label = name or (os.fspath(source) if isinstance(source, (str, os.PathLike)) else f"<{fmt} image>")
        raise BadImageError(
            label, "too_large",
            f"{width}x{height} = {pixels / 1e6:.4g} MP is above data.max_pixels={max_pixels} "
            f"(a decompression bomb guard); raise data.max_pixels if the image is genuine")
    return fmt, width, height


def _parse(reader: _Reader) -> Tuple[str, int, int]:
    head = reader.head
    if not head:
        raise BadImageError(reader.name, "zero_byte", "zero-byte file")
    if head.startswith(_PNG_SIGNATURE[:4]):
        return _checked(reader, "png", *_png(reader))
    if head.startswith(b"\xff\xd8"):
        return _checked(reader, "jpeg", *_jpeg(reader))
    if head.startswith((b"GIF87a", b"GIF89a")):
        width, height = struct.unpack("<HH", reader.need(6, 4, "GIF logical screen descriptor"))
        return _checked(reader, "gif", width, height)
    if head.startswith(b"BM"):
        return _checked(reader, "bmp", *_bmp(reader))
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return _checked(reader, "webp", *_webp(reader))
    if len(head) < 12 and any(sig.startswith(head[:len(sig)]) for sig in _TRUNCATABLE):
        raise BadImageError(reader.name, "truncated", "truncated header: the file ends inside the signature")
    raise BadImageError(reader.name, "unknown", f"not an image: unknown signature ({_describe(head)})")


def _checked(reader: _Reader, fmt: str, width: int, height: int) -> Tuple[str, int, int]:
    if width <= 0 or height <= 0:
        raise BadImageError(reader.name, "garbled", f"{fmt} header declares a {width}x{height} image")
    return fmt, width, height


def _png(reader: _Reader) -> Tuple[int, int]:
    data = reader.need(0, 33, "PNG IHDR chunk")
    if data[:8] != _PNG_SIGNATURE:
        # The 4-byte prefix matched but the line-ending bytes did not: the classic text-mode transfer damage.
        raise BadImageError(reader.name, "garbled", "garbled PNG signature (transferred in text mode?)")
    length, chunk = struct.unpack(">I4s", data[8:16])
    if chunk != b"IHDR" or length != 13:
        raise BadImageError(reader.name, "garbled", "garbled PNG header: the first chunk is not IHDR")
    (crc,) = struct.unpack(">I", data[29:33])
    if zlib.crc32(data[12:29]) != crc:
        raise BadImageError(reader.name, "garbled", "garbled PNG header: IHDR checksum mismatch")
    return struct.unpack(">II", data[16:24])


def _jpeg(reader: _Reader) -> Tuple[int, int]:
    pos = 2
    for _ in range(MAX_JPEG_MARKERS):
        window = reader.read(pos, 64)
        # libjpeg skips stray bytes and 0xFF fill before a marker; so do we, within one small window.
        start = 0
        while start < len(window) and window[start] != 0xFF:
            start += 1
        while start + 1 < len(window) and window[start + 1] == 0xFF:
            start += 1
        if start + 1 >= len(window):
            if len(window) < 64:
                raise BadImageError(reader.name, "truncated",
                                    "truncated header: the JPEG ends before its frame header (SOF)")
            raise BadImageError(reader.name, "garbled", "garbled JPEG: no marker where one should be")
        marker = window[start + 1]
        pos += start + 2
        if marker in (0xD9, 0xDA):
            raise BadImageError(reader.name, "garbled", "garbled JPEG: image data starts before a frame header")
        if marker in _JPEG_STANDALONE or marker == 0x00:
            continue
        (length,) = struct.unpack(">H", reader.need(pos, 2, "JPEG segment length"))
        if length < 2:
            raise BadImageError(reader.name, "garbled", f"garbled JPEG: segment length {length}")
        if marker in _JPEG_SOF:
            height, width = struct.unpack(">HH", reader.need(pos + 3, 4, "JPEG frame header"))
            return width, height
        pos += length
    raise BadImageError(reader.name, "garbled", f"garbled JPEG: no frame header in {MAX_JPEG_MARKERS} markers")


def _bmp(reader: _Reader) -> Tuple[int, int]:
    (size,) = struct.unpack("<I", reader.need(14, 4, "BMP header"))
    if size == _BMP_CORE_HEADER:
        return struct.unpack("<HH", reader.need(18, 4, "BMP core header"))
    if size in _BMP_INFO_HEADERS:
        width, height = struct.unpack("<ii", reader.need(18, 8, "BMP info header"))
        # A negative height marks rows stored top-down; the image is |height| rows either way.
        return width, abs(height)
    raise BadImageError(reader.name, "garbled", f"garbled BMP: unknown header size {size}")


def _webp(reader: _Reader) -> Tuple[int, int]:
    chunk = reader.need(12, 4, "WebP chunk header")
    if chunk == b"VP8 ":
        data = reader.need(20, 10, "WebP VP8 frame header")
        if data[3:6] != b"\x9d\x01\x2a":
            raise BadImageError(reader.name, "garbled", "garbled WebP: VP8 start code missing")
        width, height = struct.unpack("<HH", data[6:10])
        # The top two bits of each are an upscaling hint, not part of the size.
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":
        data = reader.need(20, 5, "WebP VP8L header")
        if data[0] != 0x2F:
            raise BadImageError(reader.name, "garbled", "garbled WebP: VP8L signature missing")
        (bits,) = struct.unpack("<I", data[1:5])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        data = reader.need(24, 6, "WebP VP8X canvas size")
        return int.from_bytes(data[0:3], "little") + 1, int.from_bytes(data[3:6], "little") + 1
    raise BadImageError(reader.name, "garbled", f"garbled WebP: unknown first chunk {_describe(chunk)}")


def _describe(head: bytes) -> str:
    for signature, what in _OTHER_SIGNATURES:
        if head.startswith(signature):
            return f"looks like {what}"
    if head[4:8] == b"ftyp":
        return f"looks like a '{head[8:12].decode('latin-1').strip()}' HEIF/AVIF/MP4 file, which is not read"
    if head.startswith(b"RIFF"):
        return f"looks like a RIFF '{head[8:12].decode('latin-1')}' file, not WebP"
    text = head[:256].lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<?xml", b"<svg")):
        # The usual result of a failed download: an error page saved under the image's name.
        return "looks like an HTML/XML page, e.g. a download error page saved under an image name"
    return f"starts with {head[:8]!r}"
