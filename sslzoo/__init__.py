"""sslzoo: self-supervised visual representation learning in Keras 3, trained, evaluated and exported."""

__version__ = "0.1.0"

__all__ = ["load", "list_models", "build", "__version__"]


def __getattr__(name):
    # Lazy so that `import sslzoo` stays cheap and the TF import happens only when needed.
    if name in ("load", "list_models"):
        from sslzoo import zoo

        return getattr(zoo, name)
    if name == "build":
        from sslzoo.methods import build_method

        return build_method
    raise AttributeError(f"module 'sslzoo' has no attribute '{name}'")
