import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The suite runs one pytest worker per core (make test: -n 2). With TensorFlow's default pools each worker,
# and every train.py it starts (they inherit this environment), spreads its ops over both cores and the two
# workers contend for them: one thread each ran the BYOL and SimSiam learning tests in 124.7 s instead of
# 138.0 s, both passing. A user who sets these keeps theirs.
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Longest files first. `make test` hands whole files to the two workers in collection order
# (--dist loadfile --no-loadscope-reorder); a long file drawn last leaves the other worker idle for its
# whole length, so the files that took longest in the last full run go first and the short ones fill the
# end. Files not listed keep their order after these; tests within a file keep theirs.
LONGEST_FIRST = (
    "test_mae.py", "test_training.py", "test_relpatch.py", "test_dino.py", "test_distributed.py",
    "test_select.py", "test_moco.py", "test_barlow_twins.py", "test_moco_v3.py", "test_splitbrain.py",
    "test_video_colorization.py", "test_cpc.py", "test_simsiam.py", "test_context_encoder.py",
    "test_learning.py", "test_vicreg.py", "test_colorization.py", "test_own_data.py", "test_byol.py",
    "test_image_sizes.py", "test_jigsaw.py", "test_supervised.py", "test_simclr.py", "test_video_davis.py",
    "test_package.py", "test_benchmark.py", "test_claims.py", "test_vit.py", "test_shipped.py",
    "test_rotnet.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order kept otherwise
