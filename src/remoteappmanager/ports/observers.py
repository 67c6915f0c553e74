"""Observers of the use cases: where their measurements go (the web layer's metrics).

Contract (``StartObserver``): called on the event loop, synchronously, never awaited; an
observer must not raise and must not block (it counts, it does no I/O).
- ``step_finished(image, step, seconds)``: one step of a start of ``image`` ended, after
  ``seconds`` (a step that failed is reported by ``start_finished`` instead).
- ``start_finished(image, failed_step, reason)``: a start ended; ``failed_step`` and
  ``reason`` (a short, fixed word such as ``unable`` or ``cancelled``) are None when it
  succeeded.
"""

from __future__ import annotations

from typing import Protocol

from remoteappmanager.domain.sessions import StartStep


class StartObserver(Protocol):
    def step_finished(self, image: str, step: StartStep, seconds: float) -> None: ...

    def start_finished(
        self, image: str, failed_step: StartStep | None, reason: str | None
    ) -> None: ...
