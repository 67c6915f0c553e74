"""Unit-test hooks: the event loops a test module runs on (``EVENT_LOOPS``, default asyncio)."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Mapping

import pytest


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    names = getattr(getattr(item, "module", None), "EVENT_LOOPS", ("asyncio",))
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {}
    for name in names:
        if name == "asyncio":
            factories[name] = asyncio.new_event_loop
        else:
            # The service runs on uvloop when it is installed; so must its tests.
            factories[name] = importlib.import_module(name).new_event_loop
    return factories
