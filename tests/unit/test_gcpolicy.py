"""volantd's collector policy: applied once, freezes the startup heap, widens thresholds."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from volant import gcpolicy


@pytest.fixture
def restore_gc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(gcpolicy, "_settled", False)
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


@pytest.mark.usefixtures("restore_gc")
def test_settle_heap_freezes_survivors_and_widens_thresholds() -> None:
    class Node:
        def __init__(self) -> None:
            self.me = self  # a cycle: only the cyclic collector frees it

    survivor = Node()
    garbage = Node()
    gone = weakref.ref(garbage)
    del garbage
    frozen_before = gc.get_freeze_count()
    assert gcpolicy.settle_heap() is True
    assert gone() is None  # collected before freezing, not frozen forever
    assert gc.get_freeze_count() > frozen_before
    assert survivor.me is survivor
    assert gc.get_threshold() == (gcpolicy.YOUNG_THRESHOLD, *gcpolicy.OLDER_THRESHOLDS)
    assert gcpolicy.settle_heap() is False  # once per process
    cycle = Node()
    del cycle
    assert gc.collect() >= 1  # cycles made after the freeze are still collected
