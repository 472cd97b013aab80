import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The suite runs one pytest worker per core (make test: -n 2). With TensorFlow's default pools each worker,
# and every train.py it starts (they inherit this environment), spreads its ops over both cores and the two
# workers contend for them: one thread each ran the BYOL and SimSiam learning tests in 124.7 s instead of
# 138.0 s, with the same results. A user who sets these keeps theirs.
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
