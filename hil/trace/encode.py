"""Canonical values -> CAN frames, through the same mapping the agent decodes with.

The inverse of ``agent.ingest``: for each mapped DBC signal, choose the raw value whose
decoding (by every binding that reads that DBC signal) best reproduces the wanted
canonical values. Priority sources work out: a higher-ranked source that cannot express
a value is set to something it decodes as "unknown", so the next source shows through.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from agent.ingest.mapping import Binding
from agent.ingest.setup import BusSetup, MessagePlan
from agent.signals import CATALOGUE, FLOAT

# Alive / rolling counters by their usual names (AliveCntr, AlvRC, AlvRlngCtr, ...Counter,
# MsgCntr, an upper-case RC token); not any name that merely contains "alv" or ends in
# "rc" (MG's LDWLKALVsulznReq is a display request, DMS_EyeClsrPerc a percentage).
COUNTER = re.compile(r"(?i:alive_?c(?:ou)?nt|alv_?rc|alvrlngctr|counter(?:$|_)|msgcntr|"
                     r"rollingcounter|_cnt$|cntr$)|RC(?=_|HSC|$)")
DEFAULT_CYCLE_S = 0.1


@dataclass
class MessageEncoder:
    plan: MessagePlan
    cycle_s: float
    counters: list[Any] = field(default_factory=list)
    mux_values: list[tuple[str, int]] = field(default_factory=list)
    base: dict[str, Any] = field(default_factory=dict)
    cache: dict[tuple, dict[str, Any]] = field(default_factory=dict)
    tick: int = 0


class EncodeError(Exception):
    """A frame that cannot be encoded (``str()`` names the message and the problem)."""


def carried_range(sig: Any) -> tuple[float, float]:
    """Physical values a DBC signal can carry: its ``[min|max]`` within what its bits hold
    (cantools raises on a raw value beyond the bits, even with ``strict=False``)."""
    if getattr(sig, "is_float", False):
        lo, hi = -3.4e38, 3.4e38
    else:
        n = sig.length
        raw_lo, raw_hi = (-(1 << (n - 1)), (1 << (n - 1)) - 1) if sig.is_signed else (
            0, (1 << n) - 1)
        lo, hi = sorted((raw_lo * sig.scale + sig.offset, raw_hi * sig.scale + sig.offset))
    if sig.minimum is not None:
        lo = max(lo, sig.minimum)
    if sig.maximum is not None:
        hi = min(hi, sig.maximum)
    return lo, hi


def _default_raw(sig: Any) -> float:
    lo = sig.minimum if sig.minimum is not None else None
    hi = sig.maximum if sig.maximum is not None else None
    v = 0.0
    if lo is not None and v < lo:
        v = lo
    if hi is not None and v > hi:
        v = hi
    return v


class TraceEncoder:
    """Frames of every mapped message of one bus for a given canonical state."""

    def __init__(self, setup: BusSetup):
        self.setup = setup
        self._sources: dict[tuple[str, str], int] = {}
        self._entries: dict[tuple[str, int], Any] = {}
        ranks: dict[str, int] = {}
        for e in setup.mapping.signal:
            r = ranks.get(e.name, 0)
            ranks[e.name] = r + 1
            self._entries[(e.name, r)] = e
        self.messages: list[MessageEncoder] = []
        # canonical name -> number of sources (ranks)
        self.ranks: dict[str, int] = {}
        for plan in setup.plans.values():
            for b in plan.bindings:
                self.ranks[b.canonical] = max(self.ranks.get(b.canonical, 0), b.rank + 1)
        # enum/bool/int signals: their sources are settled together (see _resolve_sources)
        self._discrete = {c for c in self.ranks if CATALOGUE[c].kind != FLOAT}
        self._settled: dict[tuple[tuple[str, str], ...], dict[tuple[str, str], int]] = {}
        self._groups: list[tuple[Any, list[Binding]]] = []     # (DBC signal, its bindings)
        # sign/combine entries: both of their DBC signals come from ``Binding.split``
        self._split = [b for plan in setup.plans.values() for b in plan.bindings if b.split]
        for plan in setup.plans.values():
            by_signal: dict[str, list[Binding]] = {}
            for b in plan.bindings:
                if b.split is None:
                    by_signal.setdefault(b.dbc_signal, []).append(b)
            self._groups += [(plan.message.get_signal_by_name(name), bs)
                             for name, bs in by_signal.items()]
        for plan in setup.plans.values():
            msg = plan.message
            enc = MessageEncoder(plan, plan.cycle_s or DEFAULT_CYCLE_S)
            mapped = {b.dbc_signal for b in plan.bindings}
            muxes: dict[str, set[int]] = {}
            for sig in msg.signals:
                enc.base[sig.name] = _default_raw(sig)
                if sig.name not in mapped and COUNTER.search(sig.name) and not sig.choices:
                    enc.counters.append(sig)
                if sig.name in mapped and sig.multiplexer_signal:
                    muxes.setdefault(sig.multiplexer_signal, set()).update(
                        sig.multiplexer_ids or ())
            enc.mux_values = [(m, v) for m, vs in muxes.items() for v in sorted(vs)]
            self.messages.append(enc)

    def _choose(self, bindings: list[Binding], sig: Any, wanted: dict[str, Any]) -> Any:
        """Physical value for one DBC signal that satisfies its bindings best."""
        candidates: list[float] = []
        lo, hi = carried_range(sig)
        for b in bindings:
            want = wanted.get(b.canonical)
            if want is None:
                continue
            direct = self._invert(b, sig, want)
            if direct is not None:
                candidates.append(direct)
                if not lo <= direct <= hi:   # out of range (a --lenient scenario): nearest
                    candidates.append(min(max(direct, lo), hi))
        if sig.choices:
            candidates.extend(sig.scale * int(k) + sig.offset for k in sig.choices)
        raw_max = (1 << sig.length) - 1
        candidates.extend(sig.scale * r + sig.offset for r in range(min(raw_max, 15) + 1))
        best, best_score = None, -1
        for phys in candidates:
            if not lo - 1e-9 <= phys <= hi + 1e-9:
                continue
            score = sum(self._score(b, b.convert(phys), wanted[b.canonical], sig.scale)
                        for b in bindings if wanted.get(b.canonical) is not None)
            if score > best_score:
                best, best_score = phys, score
        return best if best is not None else _default_raw(sig)

    def _score(self, b: Binding, got: Any, want: Any, scale: float) -> int:
        """How well one binding's decoded value serves the wanted canonical value: the
        source chosen to show it must decode to it (4); a higher-priority source must
        decode as unknown so the chosen one shows through (2); any other source preferably
        agrees (1)."""
        shown_by = self._source_for(b.canonical, want)
        if shown_by == b.rank:
            return 4 if _close(got, want, scale) else 0
        if shown_by is not None and b.rank < shown_by:
            return 2 if got is None else 0
        return 1 if got == want else 0

    def _source_for(self, canonical: str, want: Any) -> int | None:
        return self._sources.get((canonical, repr(want)))

    def range_problem(self, canonical: str, want: Any) -> str | None:
        """Why the number ``want`` cannot go on this bus (beyond what the DBC signal of the
        source that shows numbers, the first, carries), or None."""
        if isinstance(want, bool) or not isinstance(want, (int, float)):
            return None
        for plan in self.setup.plans.values():
            for b in plan.bindings:
                if b.canonical != canonical or b.rank != 0:
                    continue
                sig = plan.message.get_signal_by_name(b.dbc_signal)
                phys = b.split(want)[0] if b.split else self._invert(b, sig, want)
                lo, hi = carried_range(sig)
                if phys is None or lo - 1e-9 <= phys <= hi + 1e-9:
                    return None
                ends = [v for v in (b.convert(lo), b.convert(hi)) if v is not None]
                spec = CATALOGUE.get(canonical)
                unit = f" {spec.unit}" if spec is not None and spec.unit else ""
                shown = f" ({min(ends):.10g} .. {max(ends):.10g}{unit})" if len(ends) == 2 else ""
                return (f"{want!r} is outside what {plan.message.name}.{sig.name} can carry"
                        f"{shown}")
        return None

    def _invert(self, b: Binding, sig: Any, want: Any) -> float | None:
        if isinstance(want, float) and not isinstance(want, bool):
            entry = self._entries[(b.canonical, b.rank)]
            phys = (want - entry.offset) / entry.factor
            raw = round((phys - sig.offset) / sig.scale)
            return raw * sig.scale + sig.offset
        if isinstance(want, bool) and not sig.choices:
            entry = self._entries[(b.canonical, b.rank)]
            return float(want is not entry.invert) * sig.scale + sig.offset
        if isinstance(want, int) and not isinstance(want, bool):
            return float(want)
        return None

    def frames(self, wanted: dict[str, Any], due: list[MessageEncoder]
               ) -> list[tuple[int, bytes, bool, bool]]:
        """Encode the ``due`` messages for canonical values ``wanted``."""
        out = []
        for enc in due:
            msg = enc.plan.message
            key = tuple(repr(wanted.get(b.canonical)) for b in enc.plan.bindings)
            mapped = enc.cache.get(key)
            if mapped is None:
                self._sources = self._resolve_sources(wanted)
                by_signal: dict[str, list[Binding]] = {}
                for b in enc.plan.bindings:
                    if b.split is None:
                        by_signal.setdefault(b.dbc_signal, []).append(b)
                mapped = {name: self._choose(bs, msg.get_signal_by_name(name), wanted)
                          for name, bs in by_signal.items()}
                for b in enc.plan.bindings:
                    if b.split is not None and b.extra and wanted.get(b.canonical) is not None:
                        mapped[b.dbc_signal], mapped[b.extra] = b.split(wanted[b.canonical])
                enc.cache[key] = mapped
            values = dict(enc.base)
            values.update(mapped)
            for sig in enc.counters:
                values[sig.name] = (enc.tick % (1 << sig.length)) * sig.scale + sig.offset
            if enc.mux_values:
                mux, val = enc.mux_values[enc.tick % len(enc.mux_values)]
                values[mux] = val
                values = {k: v for k, v in values.items()
                          if _in_mux(msg.get_signal_by_name(k), values)}
            enc.tick += 1
            try:
                data = msg.encode(values, strict=False, padding=False)
            except Exception as exc:   # cantools: EncodeError, OverflowError, ValueError
                raise EncodeError(f"message {msg.name}: {exc}") from exc
            out.append((msg.frame_id, data, bool(msg.is_extended_frame), bool(msg.is_fd)))
        return out

    def _resolve_sources(self, wanted: dict[str, Any]) -> dict[tuple[str, str], int]:
        """For each wanted canonical value, the highest-priority source able to show it;
        then, for the enum/bool/int values together, a lower-priority source where the first
        choice of one signal hides another (MG: the TJA state showing State ACTIVE also
        shows Function LCC, so ACC active must come from the radar's frame). Settled once
        per discrete state."""
        result = self._first_sources(wanted)
        key = tuple(sorted((c, repr(wanted[c])) for c in self._discrete
                           if wanted.get(c) is not None))
        settled = self._settled.get(key)
        if settled is None:
            settled = self._settled[key] = self._settle(result, wanted)
        result.update(settled)
        return result

    def _settle(self, sources: dict[tuple[str, str], int], wanted: dict[str, Any]
                ) -> dict[tuple[str, str], int]:
        """Greedy: move one discrete value to another source while that shows more of the
        discrete values as wanted; the discrete part of the sources."""
        wants = {c: wanted[c] for c in self._discrete if wanted.get(c) is not None}
        current = dict(sources)
        bad = self._mismatches(current, wanted, wants)
        for _ in range(8):
            if not bad:
                break
            best: tuple[int, dict[tuple[str, str], int]] | None = None
            for c, w in wants.items():
                k = (c, repr(w))
                if k not in current:
                    continue
                for r in self._ranks_showing(c, w):
                    if r == current[k]:
                        continue
                    trial = {**current, k: r}
                    n = self._mismatches(trial, wanted, wants)
                    if n < (bad if best is None else best[0]):
                        best = (n, trial)
            if best is None:
                break
            bad, current = best
        return {k: r for k, r in current.items() if k[0] in self._discrete}

    def _ranks_showing(self, canonical: str, want: Any) -> list[int]:
        return sorted({b.rank for sig, bs in self._groups for b in bs
                       if b.canonical == canonical and self._can_show(b, sig, want)})

    def _mismatches(self, sources: dict[tuple[str, str], int], wanted: dict[str, Any],
                    wants: dict[str, Any]) -> int:
        """How many of ``wants`` a receiver would not see with these sources."""
        saved, self._sources = self._sources, sources
        try:
            shown = self._decode(wanted, {c for c in wants})
        finally:
            self._sources = saved
        return sum(1 for c, w in wants.items() if shown.get(c) != w)

    def _decode(self, wanted: dict[str, Any], names: set[str] | None = None
                ) -> dict[str, Any]:
        """The canonical values (of ``names``, default all) decoded from what ``_choose``
        puts in each DBC signal; the first known source wins as in ``VehicleState``."""
        by_rank: dict[str, dict[int, Any]] = {}
        for sig, bindings in self._groups:
            if names is not None and not any(b.canonical in names for b in bindings):
                continue
            phys = self._choose(bindings, sig, wanted)
            for b in bindings:
                by_rank.setdefault(b.canonical, {})[b.rank] = b.convert(phys)
        for b in self._split:
            want = wanted.get(b.canonical)
            if (names is None or b.canonical in names) and b.combine and want is not None:
                by_rank.setdefault(b.canonical, {})[b.rank] = b.combine(*b.split(want))
        return {c: next((v for _, v in sorted(ranks.items()) if v is not None), None)
                for c, ranks in by_rank.items()}

    def _first_sources(self, wanted: dict[str, Any]) -> dict[tuple[str, str], int]:
        result: dict[tuple[str, str], int] = {}
        for enc in self.messages:
            msg = enc.plan.message
            for b in enc.plan.bindings:
                want = wanted.get(b.canonical)
                if want is None:
                    continue
                key = (b.canonical, repr(want))
                if key in result and result[key] <= b.rank:
                    continue
                sig = msg.get_signal_by_name(b.dbc_signal)
                if self._can_show(b, sig, want):
                    result[key] = b.rank
        return result

    def shown(self, wanted: dict[str, Any]) -> dict[str, Any]:
        """What a receiver decodes from this bus's frames for ``wanted``: the physical value
        ``frames`` would choose for every mapped DBC signal, through every binding, the
        first known source winning as in ``VehicleState``. Tells a scenario what the
        mapping cannot express before the trace silently carries something else."""
        self._sources = self._resolve_sources(wanted)
        return self._decode(wanted)

    def expressible(self, canonical: str) -> list[Any]:
        """The values of an enum/bool/int canonical signal this bus's mapping can carry (the
        first 256 raw values of each source), for messages."""
        out: list[Any] = []
        for plan in self.setup.plans.values():
            for b in plan.bindings:
                if b.canonical != canonical:
                    continue
                sig = plan.message.get_signal_by_name(b.dbc_signal)
                raws = [int(k) for k in sig.choices] if sig.choices else range(
                    min((1 << sig.length) - 1, 255) + 1)
                for r in raws:
                    v = b.convert(r * sig.scale + sig.offset)
                    if v is not None and v not in out:
                        out.append(v)
        return out

    def _can_show(self, b: Binding, sig: Any, want: Any) -> bool:
        if self._invert(b, sig, want) is not None:
            return True
        raws = [int(k) for k in sig.choices] if sig.choices else range(
            min((1 << sig.length) - 1, 255) + 1)
        return any(b.convert(r * sig.scale + sig.offset) == want for r in raws)


def _in_mux(sig: Any, values: dict[str, Any]) -> bool:
    if not sig.multiplexer_signal:
        return True
    return values.get(sig.multiplexer_signal) in (sig.multiplexer_ids or ())


def _close(got: Any, want: Any, scale: float) -> bool:
    """Equal, or for numbers within one step of the DBC signal's resolution."""
    if got == want:
        return True
    return (isinstance(want, float) and isinstance(got, (int, float))
            and not isinstance(got, bool) and abs(got - want) <= abs(scale) * 1.01)
