"""Walking a model's layers, nested models and blocks included."""


def all_layers(*models):
    """Every layer of `models`, nested models' and blocks' own layers included, depth first."""
    for model in models:
        for layer in model.layers:
            yield layer
            if hasattr(layer, "layers"):  # a nested model or block
                yield from all_layers(layer)
