"""Vehicle state: the latest value and freshness of every canonical signal."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent.ingest.mapping import Binding
from agent.vehicle.history import SignalHistory


class Slot:
    __slots__ = ("name", "value", "changed_at", "stale", "last_seen", "ranks")

    def __init__(self, name: str, n_ranks: int):
        self.name = name
        self.value: Any = None
        self.changed_at: float | None = None
        self.stale = False
        self.last_seen: float | None = None
        self.ranks: list[Any] = [None] * n_ranks


class VehicleState:
    """Latest canonical values. ``None`` means unknown: unmapped, never seen, stale, or a
    raw value the mapping calls invalid. A stale signal is never its last value."""

    def __init__(self, ranks: dict[str, int], history: SignalHistory,
                 on_freshness: Callable[[str, bool, float, float | None], None] | None = None):
        self.slots: dict[str, Slot] = {name: Slot(name, n) for name, n in ranks.items()}
        self.history = history
        # on_freshness(name, stale, t, last_seen): a signal went stale / came back.
        self.on_freshness = on_freshness

    def mapped(self, name: str) -> bool:
        return name in self.slots

    def value(self, name: str, default: Any = None) -> Any:
        slot = self.slots.get(name)
        if slot is None or slot.value is None:
            return default
        return slot.value

    def since(self, name: str) -> float | None:
        slot = self.slots.get(name)
        return None if slot is None else slot.changed_at

    def apply(self, binding: Binding, value: Any, t: float) -> Slot | None:
        """Record one source value; return the slot if the canonical value changed."""
        slot = self.slots[binding.canonical]
        last_seen = slot.last_seen
        slot.last_seen = t
        ranks = slot.ranks
        ranks[binding.rank] = value
        if len(ranks) > 1:  # first known source in mapping order wins
            value = next((v for v in ranks if v is not None), None)
        restored = slot.stale
        if restored:
            slot.stale = False
            if self.on_freshness is not None:
                self.on_freshness(slot.name, False, t, last_seen)
        if value == slot.value and type(value) is type(slot.value) and not restored:
            return None
        slot.value = value
        slot.changed_at = t
        self.history.add(slot.name, t, value)
        return slot

    def expire(self, binding: Binding, t: float, seen: float | None = None) -> Slot | None:
        """A source went stale (its message was last seen at ``seen``): its value is unknown
        now. Return the slot if the canonical signal as a whole became stale (no other
        source still knows it)."""
        slot = self.slots[binding.canonical]
        if seen is not None:
            slot.last_seen = seen
        slot.ranks[binding.rank] = None
        value = next((v for v in slot.ranks if v is not None), None)
        if value is not None:
            if value != slot.value:
                slot.value = value
                slot.changed_at = t
                self.history.add(slot.name, t, value)
            return None
        if slot.stale:
            return None
        slot.stale = True
        slot.value = None
        slot.changed_at = t
        self.history.add(slot.name, t, None)
        if self.on_freshness is not None:
            self.on_freshness(slot.name, True, t, slot.last_seen)
        return slot

    def snapshot(self) -> dict[str, Any]:
        return {name: s.value for name, s in self.slots.items() if s.value is not None}
