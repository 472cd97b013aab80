"""The commands' defaults, importable without TensorFlow (so `--help` is instant)."""

BATCH_SIZE = 64
CHUNK_SIZE = 2048  # images per resumable chunk: an interruption loses at most this many
MAX_PIXELS = 64_000_000  # as data.max_pixels: a decompression-bomb guard, checked before decoding
LABEL_MODES = ("auto", "subfolders", "none")
