"""The worked example in docs/ARCHITECTURE.md ("How to add a method") is real code: it passes the contract."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

from sslzoo.config import ConfigError
from sslzoo.registry import METHODS
from tests.harness import check_method_contract

DOC = Path(__file__).resolve().parents[1] / "docs" / "ARCHITECTURE.md"
NAME = "denoising_autoencoder"


def example_source() -> str:
    text = DOC.read_text()
    section = text[text.index("## How to add a method"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture(scope="module")
def example():
    source = example_source()
    module = types.ModuleType("sslzoo_docs_example")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, str(DOC), "exec"), module.__dict__)
    yield module
    METHODS._builders.pop(NAME, None)  # registered by the example; other tests list the registry
    sys.modules.pop(module.__name__, None)


def test_the_example_is_short(example):
    assert len(example_source().splitlines()) <= 120


def test_the_example_passes_the_method_contract(example, tmp_path):
    check_method_contract(NAME, {"decoder_width": 16}, tmp_path)


@pytest.mark.parametrize("options, fragment", [
    ({"corruption": 1.5}, "corruption 1.5: must be < 1"),
    ({"decoder_width": 12}, "multiple of 8"),
    ({"noise": 0.1}, "allowed: corruption: float = 0.25"),
])
def test_the_example_options_are_checked_before_work(example, options, fragment):
    from sslzoo.backbones import build_encoder
    from sslzoo.methods import build_method

    with pytest.raises(ConfigError, match=re.escape(fragment)):
        build_method(NAME, options, build_encoder("convnet_small", 32, width=0.25))
