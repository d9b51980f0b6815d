"""From a ``[[bus]]`` config entry to what the decoder needs: DBCs, bindings, masks, filters.

All validation of DBC and mapping happens here, once, at config load; the decoder then
trusts its plan.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.ingest.dbc import load_dbc, mask_of, value_bits
from agent.ingest.mapping import (
    Binding,
    MappingFile,
    load_mapping,
    make_combiner,
    make_converter,
    make_splitter,
    resolution,
)
from agent.settings_loader import Problems
from agent.signals import CATALOGUE

if TYPE_CHECKING:
    from agent.ingest.settings import BusConfig, ConfigFiles

DEFAULT_TIMEOUT_S = 1.0


@dataclass
class MessagePlan:
    """Everything the decoder needs for one mapped CAN id."""

    message: Any                    # cantools Message
    length: int
    mask: int
    bindings: list[Binding]
    timeout: float
    cycle_s: float | None
    # What is decoded: the message with its mapped signals only (and their multiplexor),
    # so signals the agent does not read cannot break a decode (real DBCs overlap some).
    codec: Any = None
    # Multiplexed message: (multiplexor value bits, mask of the mapped bits of that value)
    # per mapped multiplexor value, and the multiplexor's own mask (kernel BCM filters).
    mux_filters: list[tuple[int, int]] = field(default_factory=list)
    mux_mask: int = 0


@dataclass
class BusSetup:
    config: BusConfig
    dbs: list[Any]
    mapping: MappingFile
    plans: dict[int, MessagePlan] = field(default_factory=dict)   # key: frame_key()
    warnings: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def canonical(self) -> set[str]:
        return {b.canonical for p in self.plans.values() for b in p.bindings}

    def can_filters(self) -> list[dict[str, Any]]:
        """python-can acceptance filters: exactly the mapped ids, so nothing else is read."""
        filters = []
        for plan in self.plans.values():
            ext = bool(plan.message.is_extended_frame)
            filters.append({"can_id": plan.message.frame_id,
                            "can_mask": 0x1FFFFFFF if ext else 0x7FF, "extended": ext})
        return filters


def frame_key(arbitration_id: int, is_extended: bool) -> int:
    return arbitration_id | 0x80000000 if is_extended else arbitration_id


def load_bus(cfg: ConfigFiles, bus: BusConfig, key: str, problems: Problems) -> BusSetup | None:
    file = cfg.path
    dbs = []
    warnings = []
    for j, dbc in enumerate(bus.dbc):
        path = cfg.resolve(dbc)
        if not path.is_file():
            problems.add(file, f"{key}.dbc[{j}]", f"DBC file not found: {path}")
            continue
        try:
            db, warning = load_dbc(path)
        except Exception as exc:
            problems.add(file, f"{key}.dbc[{j}]", f"cannot load DBC {path}: {exc}")
            continue
        dbs.append(db)
        if warning:
            warnings.append(warning)
    map_path = cfg.resolve(bus.mapping)
    if not map_path.is_file():
        problems.add(file, f"{key}.mapping", f"mapping file not found: {map_path}")
        return None
    mapping = load_mapping(map_path, problems)
    if mapping is None or len(dbs) != len(bus.dbc):
        return None
    setup = BusSetup(bus, dbs, mapping, warnings=warnings)
    _plan(setup, map_path, problems)
    _test_decode(setup, map_path, problems)
    unlisted = sorted(set(CATALOGUE) - setup.canonical - set(mapping.mapping.lacks))
    if unlisted:
        setup.warnings.append(
            f"{map_path}: {len(unlisted)} canonical signal(s) neither mapped nor listed "
            f"under [mapping.lacks]: {', '.join(unlisted)}")
    return setup


TEST_PAYLOADS = 8   # random payloads per mapped message (besides all-zero)


def _test_decode(setup: BusSetup, file: Path, problems: Problems) -> None:
    """Decode every mapped message once with an all-zero and with random payloads (each
    mapped multiplexor value): a message cantools cannot decode at all would silently
    never deliver its signals at run time."""
    rng = random.Random(0)
    entries = {e.message: i for i, e in reversed(list(enumerate(setup.mapping.signal)))}
    for plan in setup.plans.values():
        msg, n = plan.message, plan.length
        patterns = [(0, 0)] + (plan.mux_filters or [(0, 0)]) * TEST_PAYLOADS
        failures: list[str] = []
        for i, (value, _mask) in enumerate(patterns):
            raw = 0 if i == 0 else rng.getrandbits(8 * n)
            if plan.mux_filters:
                raw = (raw & ~plan.mux_mask) | value
            try:
                plan.codec.decode(raw.to_bytes(n, "big") if n else b"", decode_choices=False)
            except Exception as exc:  # cantools raises assorted errors
                failures.append(str(exc) or type(exc).__name__)
        if len(failures) == len(patterns):
            problems.add(file, f"signal[{entries.get(msg.name, 0)}].message",
                         f"message {msg.name} (0x{msg.frame_id:X}) cannot be decoded with "
                         f"this DBC ({failures[0]}): its signals would never arrive")


def _find_message(dbs: list[Any], name: str) -> Any | None:
    for db in dbs:
        try:
            return db.get_message_by_name(name)
        except KeyError:
            continue
    return None


def _plan(setup: BusSetup, file: Path, problems: Problems) -> None:
    ranks: dict[str, int] = {}
    by_msg: dict[int, tuple[Any, list[Binding], list[Any], list[float]]] = {}
    for i, entry in enumerate(setup.mapping.signal):
        key = f"signal[{i}]"
        spec = CATALOGUE.get(entry.name)
        if spec is None:
            continue  # reported by load_mapping
        msg = _find_message(setup.dbs, entry.message)
        if msg is None:
            problems.add(file, f"{key}.message", f"no message {entry.message!r} in the DBC")
            continue
        try:
            sig = msg.get_signal_by_name(entry.signal)
        except KeyError:
            problems.add(file, f"{key}.signal",
                         f"message {entry.message} has no signal {entry.signal!r}")
            continue
        convert = make_converter(entry, spec, sig, file, key, problems)
        if convert is None:
            continue
        combined = make_combiner(entry, spec, msg, sig, convert, file, key, problems)
        if combined is None and (entry.sign or entry.combine):
            continue
        rank = ranks.get(entry.name, 0)
        ranks[entry.name] = rank + 1
        k = frame_key(msg.frame_id, bool(msg.is_extended_frame))
        _, bindings, sigs, timeouts = by_msg.setdefault(k, (msg, [], [], []))
        binding = Binding(entry.name, rank, sig.name, convert, entry.timeout,
                          resolution=resolution(entry, spec, sig))
        bindings.append(binding)
        # the second signal of sign/combine is in the mask, so the BCM filter and the
        # unchanged-frame skip see its bits change too
        for s in (sig, *([combined[0]] if combined else [])):
            sigs.append(s)
            if s.multiplexer_signal:
                sigs.append(msg.get_signal_by_name(s.multiplexer_signal))
        if combined:
            binding.extra, binding.combine = combined[0].name, combined[1]
            binding.split = make_splitter(entry, spec, sig, combined[0])
        if entry.timeout > 0:
            timeouts.append(entry.timeout)
    for k, (msg, bindings, sigs, timeouts) in by_msg.items():
        cycle = msg.cycle_time / 1000.0 if msg.cycle_time else None
        timeout = max(timeouts) if timeouts else (3 * cycle if cycle else DEFAULT_TIMEOUT_S)
        timeout = max(timeout, setup.config.min_timeout_s)
        plan = MessagePlan(msg, msg.length, mask_of(sigs, msg.length), bindings, timeout,
                           cycle, codec=_mapped_only(msg, sigs))
        plan.mux_filters, plan.mux_mask = _mux_filters(msg, sigs)
        setup.plans[k] = plan


def _mapped_only(msg: Any, sigs: list[Any]) -> Any:
    """A cantools message of ``msg`` holding only ``sigs`` (mapped ones, multiplexors)."""
    from cantools.database.can import Message

    keep = list({id(sg): sg for sg in sigs}.values())
    if len(keep) == len(msg.signals):
        return msg
    try:
        return Message(msg.frame_id, msg.name, msg.length, keep,
                       is_extended_frame=msg.is_extended_frame, is_fd=msg.is_fd,
                       strict=False)
    except Exception:  # cantools refused the subset: decode the whole message as before
        return msg


MAX_MUX_VALUES = 255   # a BCM multiplex op holds 256 frames, the multiplexor mask first


def _mux_filters(msg: Any, sigs: list[Any]) -> tuple[list[tuple[int, int]], int]:
    """Per mapped multiplexor value: the value's bits and the mask of what is mapped in a
    frame with that value. One multiplexor only; anything else filters on the whole mask."""
    muxed = [s for s in sigs if s.multiplexer_ids]
    muxors = {s.multiplexer_signal for s in muxed}
    if not muxed or len(muxors) != 1:
        return [], 0
    muxor = msg.get_signal_by_name(muxors.pop())
    if muxor.multiplexer_ids:  # nested multiplexing
        return [], 0
    plain = [s for s in sigs if not s.multiplexer_ids and s is not muxor]
    values = sorted({v for s in muxed for v in s.multiplexer_ids})
    if len(values) > MAX_MUX_VALUES:
        return [], 0
    n = msg.length
    filters = [(value_bits(muxor, v, n),
                mask_of(plain + [s for s in muxed if v in s.multiplexer_ids], n))
               for v in values]
    return filters, mask_of([muxor], n)
