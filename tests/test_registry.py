import pytest

from sslzoo.registry import Registry


def test_duplicate_names_fail_loudly():
    registry = Registry("method")
    registry.register("a")(lambda: 1)
    with pytest.raises(ValueError, match="'a' is already registered"):
        registry.register("a")(lambda: 2)


def test_unknown_name_lists_available():
    registry = Registry("encoder")
    registry.register("resnet18")(lambda: 1)
    registry.register("convnet_small")(lambda: 1)
    with pytest.raises(KeyError, match="available: convnet_small, resnet18"):
        registry.get("resnet19")


def test_builtin_registrations():
    import sslzoo.backbones  # noqa: F401
    import sslzoo.methods  # noqa: F401
    from sslzoo.registry import ENCODERS, METHODS

    assert "rotnet" in METHODS
    assert {"convnet_small", "nin", "resnet18", "resnet50"} <= set(ENCODERS.names())
