"""Export: SavedModel (TF Serving layout), float32 TFLite, `.keras` and a sha256-listing model card.

```python
from sslzoo.export import export_encoder
export_encoder(encoder, "exported/simclr_resnet18_cifar10", image_size=32, card={"method": "simclr", ...})
```
The TensorFlow-heavy parts load lazily, so `sslzoo.zoo.list_models()` (cards and hashes only) does not
pay for importing TensorFlow.
"""

from sslzoo.files import ExportExistsError, atomic_directory, sha256_file
from sslzoo.export.card import ArtifactIntegrityError, read_card, verify_files

_LAZY = {
    "export_encoder": "sslzoo.export.exporter",
    "ExportParityError": "sslzoo.export.exporter",
    "DisallowedOpsError": "sslzoo.export.saved_model",
    "ServingModule": "sslzoo.export.saved_model",
    "build_signatures": "sslzoo.export.saved_model",
    "graph_ops": "sslzoo.export.saved_model",
    "check_graph_ops": "sslzoo.export.saved_model",
    "check_saved_model": "sslzoo.export.saved_model",
    "load_saved_model": "sslzoo.export.saved_model",
}

__all__ = [
    "ExportExistsError",
    "ArtifactIntegrityError",
    "atomic_directory",
    "sha256_file",
    "read_card",
    "verify_files",
    *_LAZY,
]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sslzoo.export' has no attribute '{name}'")
