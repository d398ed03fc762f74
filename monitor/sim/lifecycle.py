"""The `with` block of the simulator's servers: `start()` on entry, `stop()` on exit."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Self

__all__ = ["Started"]


class Started(ABC):
    """A server used as `with Server() as s:`: started on entry, stopped on exit whatever happened."""

    @abstractmethod
    def start(self) -> Self:
        """Start serving; returns the server."""

    @abstractmethod
    def stop(self) -> None:
        """Stop serving; safe to call twice."""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
