"""`sslzoo select`: which self-supervised method suits my images? Answered by measurement, within a budget.

    sslzoo select --data UNLABELLED --eval-data LABELLED --budget-minutes M [--methods a,b,c] [--output DIR]

Successive halving across the zoo's image methods (keras-tuner's Hyperband oracle, one bracket): every
method trains a short first rung on the unlabelled images, the best 1/eta continue from their
checkpoints, and the last one standing trains to the end of the budget. Scores come from the tuning part
of a small labelled set; its held-back part is read once, for the final report (docs/select.md).
"""

__all__ = ["Settings", "select"]


def __getattr__(name):
    # Lazily: `sslzoo select --help` must not import TensorFlow (the search module does).
    if name in __all__:
        from sslzoo.select import search

        return getattr(search, name)
    raise AttributeError(f"module 'sslzoo.select' has no attribute {name!r}")
