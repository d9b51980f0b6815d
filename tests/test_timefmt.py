"""One truth for timestamps: every place that writes a time (record ``ts``, data fields,
command envelopes, OTA records) formats it with the same integer-millisecond rounding, and
the one parser reads back what was written."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.ota.campaign import iso
from agent.records.chain import format_ts
from agent.timefmt import LATEST, iso_ms, parse_iso, to_ms
from agent.uplink.commands import sign_command

instants = st.floats(min_value=0, max_value=LATEST - 1, allow_nan=False)


@settings(max_examples=2000, deadline=None)
@given(instants)
def test_every_formatter_writes_the_same_text(t: float) -> None:
    assert format_ts(t) == iso_ms(t) == iso(t)


@settings(max_examples=2000, deadline=None)
@given(instants)
def test_the_parser_reads_back_the_millisecond_written(t: float) -> None:
    assert round(parse_iso(iso_ms(t)) * 1000) == to_ms(t)


def test_the_instant_that_used_to_differ() -> None:
    t = 1750156965.2945        # .295Z in one formatter, .294Z in another
    assert format_ts(t) == iso_ms(t) == iso(t)


def test_command_envelopes_carry_the_same_format() -> None:
    import json

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    env = json.loads(sign_command(Ed25519PrivateKey.generate(), "LSJWH4098PN000001",
                                  "config.get", {}, 300.0, now=1750156965.2945))
    assert env["issued"] == iso_ms(1750156965.2945)
    assert env["expires"] == iso_ms(1750156965.2945 + 300.0)
