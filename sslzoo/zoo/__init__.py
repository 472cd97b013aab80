"""Loading: `load(name_or_path)` and `list_models()` over local exports, the cache and a verified index.

`loader.py` resolves names and loads safely; `remote.py` downloads, verifies and caches.
"""

from sslzoo.zoo.loader import *  # noqa: F401,F403
from sslzoo.zoo.loader import __all__  # noqa: F401
