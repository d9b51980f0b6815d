"""The programming sequence of one ECU as data: ``[[ecu.flash]]``, ``[[ecu.after]]``,
``[[ecu.restore]]``.

Bootloaders differ per OEM and supplier: which session comes first, which routine checks
the preconditions, where the fingerprint goes and in which layout, whether the rest of the
bus is silenced (85 02, 28 03) and how, which routine checks the memory. None of that is
code: each ECU carries an ordered list of steps, checked once when the config loads, and
``FlashSession`` runs them. The defaults are the sequence of the bench ECUs; a strict ISO
14229-1 bootloader sequence is in ``config/ecu/bcm.toml`` and ``docs/ota.md``.

``flash`` runs in order; ``after`` runs once the flash ended, succeeded or failed (it
re-enables what ``flash`` switched off on the whole bus); ``restore`` runs on a failure
after the memory was touched, when the ECU can re-activate its previous image.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

# What a step does; the step name in errors, timings, retries and faults is ``name`` or
# this. Budgets: the ECU's ``budget.<key>`` unless the step sets ``budget_s``.
ACTIONS: dict[str, str] = {
    "session": "session_s",                 # 10 <session>
    "tester_present": "session_s",          # 3E 00 (80 when suppressed or functional)
    "dtc_setting": "session_s",             # 85 01 on / 85 02 off
    "communication_control": "session_s",   # 28 <control> <communication_type>
    "routine": "dependency_s",              # 31 01 <routine> <record>, e.g. preconditions
    "security": "security_s",               # 27 <level> seed, 27 <level+1> key
    "fingerprint": "fingerprint_s",         # 2E <did> <layout>
    "erase": "erase_s",                     # 31 01 <routine> <record>, memory is touched
    "download": "download_s",               # 34, 36 ..., 37 (transfer_block_s, exit_s)
    "check_memory": "dependency_s",         # 31 01 <routine> <record = crc32 of the data>
    "dependency_check": "dependency_s",     # 31 01 <routine>
    "reset": "reset_s",                     # 11 <reset>, then wait for the ECU to answer
    "verify": "reset_s",                    # read the DIDs back; they must be as signed
}
ROUTINE_ACTIONS = ("routine", "erase", "check_memory", "dependency_check")
FUNCTIONAL_ACTIONS = ("session", "tester_present", "dtc_setting", "communication_control")
# Option record layouts of a routine: "" (none), "memory" (addressAndLengthFormatIdentifier,
# address, size of the image), "crc32" (CRC-32 of the data sent, 4 bytes big-endian),
# "hex:<bytes>" (a constant).
RECORDS = ("", "memory", "crc32")
# Fingerprint fields, concatenated: "tester" (tester id, ASCII), "tester:<n>" (padded with
# spaces / cut to n bytes), "date:bcd4" (YYYYMMDD), "date:bcd3" (YYMMDD), "hex:<bytes>",
# "ascii:<text>".


@dataclass
class FlashStep:
    do: str
    name: str = ""                    # default: ``do``
    functional: bool = False          # to every ECU (functional_id), positive answer off
    suppress_response: bool = False   # suppressPosRspMsgIndicationBit on a physical request
    session: int = 0                  # session: 0x01 default, 0x02 programming, 0x03 ext.
    level: int = 0                    # security: odd seed level; 0 = the ECU's level
    algorithm: str = ""               # security: seed/key algorithm; "" = the ECU's
    setting: str = ""                 # dtc_setting: "on" or "off"
    control: int = -1                 # communication_control: controlType (0x00..0x7F)
    communication_type: int = 0x01    # communication_control: 0x01 normal messages
    routine: int = -1                 # routine, erase, check_memory, dependency_check
    record: str = ""                  # the routine's option record, see RECORDS
    ok_status: list[int] = field(default_factory=lambda: [0x00])  # accepted status byte
    did: int = -1                     # fingerprint
    layout: list[str] = field(default_factory=list)              # fingerprint fields
    reset: int = 0x01                 # reset: 0x01 hard, 0x02 key off/on, 0x03 soft
    budget_s: float = 0.0             # 0: the ECU's budget for this kind of step

    @property
    def label(self) -> str:
        return self.name or self.do

    @property
    def budget_key(self) -> str:
        return ACTIONS.get(self.do, "session_s")


def _step(do: str, **kw: object) -> FlashStep:
    return FlashStep(do=do, **kw)  # type: ignore[arg-type]


def default_flash() -> list[FlashStep]:
    """The bench ECUs' sequence (``config/ecu/*.toml`` without a ``[[ecu.flash]]``)."""
    return [
        _step("session", session=0x02),
        _step("security"),
        _step("fingerprint", did=0xF198, layout=["tester"]),
        _step("fingerprint", did=0xF199, layout=["date:bcd4"]),
        _step("erase", routine=0xFF00, record="memory"),
        _step("download"),
        _step("dependency_check", routine=0xFF01),
        _step("reset", reset=0x01),
        _step("verify"),
    ]


def default_restore() -> list[FlashStep]:
    """Activate the previous bank of a two-bank ECU (``can_restore``)."""
    return [
        _step("session", name="restore", session=0x02),
        _step("security", name="restore"),
        _step("routine", name="restore", routine=0xFF02),
        _step("reset", name="restore", reset=0x01),
        _step("verify", name="restore_verify"),
    ]


# -- checks -------------------------------------------------------------------------------

Add = Callable[[str, str], None]      # (key path below the list, message)


def check_steps(steps: list[FlashStep], key: str, add: Add, *, algorithms: set[str],
                kind: str) -> None:
    """Each step on its own, then the order ``kind`` ("flash", "after", "restore") needs."""
    for i, step in enumerate(steps):
        _check_step(step, f"{key}[{i}]", add, algorithms)
    actions = [s.do for s in steps]
    if kind == "after":
        for i, step in enumerate(steps):
            if step.do not in FUNCTIONAL_ACTIONS:
                add(f"{key}[{i}].do", f"{step.do!r} cannot run after the flash; only "
                                      f"{', '.join(FUNCTIONAL_ACTIONS)}")
        return
    if not steps:
        if kind == "flash":
            add(key, "must not be empty")
        return
    if actions[-1] != "verify" or actions.count("verify") != 1:
        add(key, "must end with the one 'verify' step (the new software is proven by its "
                 "versions)")
    if "reset" not in actions:
        add(key, "needs a 'reset' step before 'verify'")
    if kind == "flash":
        if actions.count("download") != 1:
            add(key, "needs exactly one 'download' step")
        else:
            at = actions.index("download")
            if "reset" in actions and actions.index("reset") < at:
                add(key, "'reset' must come after 'download'")
            for before in ("erase",):
                if before in actions and actions.index(before) > at:
                    add(key, f"'{before}' must come before 'download'")
            for after in ("check_memory", "dependency_check"):
                if after in actions and actions.index(after) < at:
                    add(key, f"'{after}' must come after 'download'")
    elif "download" in actions or "erase" in actions:
        add(key, "a restore must not erase or download")


def _check_step(step: FlashStep, key: str, add: Add, algorithms: set[str]) -> None:
    def bad(name: str, message: str) -> None:
        add(f"{key}.{name}", message)

    if step.do not in ACTIONS:
        bad("do", f"unknown step {step.do!r}, expected one of {', '.join(ACTIONS)}")
        return
    if step.functional and step.do not in FUNCTIONAL_ACTIONS:
        bad("functional", f"only {', '.join(FUNCTIONAL_ACTIONS)} can be sent functionally")
    if step.budget_s < 0:
        bad("budget_s", "must be >= 0")
    if step.do == "session" and not 0x01 <= step.session <= 0x7F:
        bad("session", "required: 0x01..0x7F (0x01 default, 0x02 programming, "
                       "0x03 extended)")
    if step.do == "security":
        if step.level and (not 1 <= step.level <= 0x7D or step.level % 2 == 0):
            bad("level", "must be an odd seed level 0x01..0x7D")
        if step.algorithm and step.algorithm not in algorithms:
            bad("algorithm", f"unknown algorithm {step.algorithm!r}, known: "
                             f"{', '.join(sorted(algorithms))}")
    if step.do == "dtc_setting" and step.setting not in ("on", "off"):
        bad("setting", "required: 'on' or 'off'")
    if step.do == "communication_control":
        if not 0 <= step.control <= 0x7F:
            bad("control", "required: controlType 0x00..0x7F (0x00 enable rx and tx, "
                           "0x03 disable rx and tx)")
        if not 0 <= step.communication_type <= 0xFF:
            bad("communication_type", "must be 0x00..0xFF")
    if step.do in ROUTINE_ACTIONS:
        if not 0 <= step.routine <= 0xFFFF:
            bad("routine", "required: a 16-bit routine identifier")
        if step.record not in RECORDS and not _is_hex_field(step.record):
            bad("record", f"unknown record {step.record!r}: '', 'memory', 'crc32' or "
                          f"'hex:<bytes>'")
        for j, status in enumerate(step.ok_status):
            if not 0 <= status <= 0xFF:
                bad(f"ok_status[{j}]", "must be 0x00..0xFF")
    if step.do == "fingerprint":
        if not 0 <= step.did <= 0xFFFF:
            bad("did", "required: a 16-bit data identifier")
        if not step.layout:
            bad("layout", "required: the fields written, e.g. ['date:bcd3', 'tester:6']")
        for j, item in enumerate(step.layout):
            problem = field_problem(item)
            if problem:
                bad(f"layout[{j}]", problem)
    if step.do == "reset" and not 0x01 <= step.reset <= 0x7F:
        bad("reset", "must be a resetType 0x01..0x7F")


def _is_hex_field(text: str) -> bool:
    if not text.startswith("hex:"):
        return False
    try:
        bytes.fromhex(text[4:])
    except ValueError:
        return False
    return True


def field_problem(item: str) -> str:
    """Why a fingerprint field is not valid, or "" when it is."""
    kind, _, arg = item.partition(":")
    if kind == "tester":
        if arg and not (arg.isdigit() and 1 <= int(arg) <= 64):
            return "tester:<n> needs a length 1..64"
        return ""
    if kind == "date":
        return "" if arg in ("bcd4", "bcd3") else "date needs :bcd4 (YYYYMMDD) or :bcd3"
    if kind == "hex":
        return "" if _is_hex_field(item) else "hex:<bytes> needs an even number of hex digits"
    if kind == "ascii":
        return "" if arg.isascii() else "ascii:<text> must be ASCII"
    return f"unknown field {item!r}: tester[:n], date:bcd4, date:bcd3, hex:.., ascii:.."


def fingerprint_bytes(layout: list[str], tester_id: str, day: object) -> bytes:
    """The bytes a fingerprint step writes (``day``: a ``datetime.date``)."""
    out = bytearray()
    for item in layout:
        kind, _, arg = item.partition(":")
        if kind == "tester":
            text = tester_id.encode("ascii", "replace")
            out += text.ljust(int(arg), b" ")[:int(arg)] if arg else text
        elif kind == "date":
            digits = day.strftime("%Y%m%d" if arg == "bcd4" else "%y%m%d")  # type: ignore[attr-defined]
            out += bytes.fromhex(digits)
        elif kind == "hex":
            out += bytes.fromhex(arg)
        elif kind == "ascii":
            out += arg.encode("ascii")
    return bytes(out)
