"""Generated code and keys do not change under refactors: every zoo model, both targets.

``tests/pins.py`` says what is pinned and how to regenerate the pins on purpose.
"""
from __future__ import annotations

import json

import pytest

from tests.pins import PIN_CASES, PINS, compute


@pytest.fixture(scope="module")
def pinned() -> dict:
    return json.loads(PINS.read_text())


@pytest.mark.parametrize("name", sorted(PIN_CASES))
def test_generated_code_and_keys_are_pinned(name, pinned):
    assert name in pinned, f"{name} has no pin: run python -m tests.pins --write"
    got = compute({name})[name]
    want = pinned[name]
    assert got.keys() == want.keys()
    for label in want:   # one assert per part, so a failure names what moved
        assert got[label] == want[label], f"{name} [{label}] changed"


def test_every_pin_is_a_zoo_model(pinned):
    assert set(pinned) == set(PIN_CASES)
