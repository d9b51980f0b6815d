"""ECU config model: typed loading through agent.settings_loader and semantic checks."""

from __future__ import annotations

import pytest

from agent.ota.settings import EcuConfig, check_ecu, load_ecu
from agent.settings_loader import ConfigError, Problems, build


def problems_of(table: dict) -> list[str]:
    problems = Problems()
    ecu = build(EcuConfig, table, "agent.toml", problems, "ecu[0]")
    check_ecu(ecu, "agent.toml", problems, "ecu[0]")
    return problems.lines()


GOOD = {"name": "eps", "role": "steering", "bus": "chassis", "txid": 0x7E0, "rxid": 0x7E8,
        "security_secret": "0011", "memory_size": 0x10000}


def test_good_table_has_no_problems_and_defaults():
    problems = Problems()
    ecu = build(EcuConfig, GOOD, "agent.toml", problems)
    check_ecu(ecu, "agent.toml", problems)
    assert problems.lines() == []
    assert ecu.addressing == "normal_11bit"
    assert ecu.security_level == 0x11 and ecu.key_algorithm == "xor"
    assert ecu.dids == [0xF187, 0xF188, 0xF189, 0xF18C, 0xF191, 0xF195, 0xF190]
    assert ecu.secret() == b"\x00\x11"


def test_unknown_keys_and_wrong_types_name_the_key_path():
    table = dict(GOOD, txid="0x7E0", colour="red", budget={"erase_s": "long", "nap_s": 1})
    lines = problems_of(table)
    assert "agent.toml: ecu[0].txid: expected an integer, got str '0x7E0'" in lines
    assert "agent.toml: ecu[0].colour: unknown key" in lines
    assert "agent.toml: ecu[0].budget.erase_s: expected a number, got str 'long'" in lines
    assert "agent.toml: ecu[0].budget.nap_s: unknown key" in lines


@pytest.mark.parametrize("change, expected", [
    ({"role": "radio"}, "ecu[0].role: unknown role 'radio'"),
    ({"addressing": "extended"}, "ecu[0].addressing: unknown addressing 'extended'"),
    ({"rxid": 0x7E0}, "ecu[0].rxid: must differ from txid"),
    ({"txid": 0x800}, "ecu[0].txid: must be 0x1..0x7FF for normal_11bit"),
    ({"tx_data_length": 64}, "ecu[0].tx_data_length: must be one of (8,) (set can_fd"),
    ({"security_level": 0x12}, "ecu[0].security_level: must be an odd seed level"),
    ({"key_algorithm": "rot13"}, "ecu[0].key_algorithm: unknown algorithm 'rot13'"),
    ({"security_secret": "xyz"}, "ecu[0].security_secret: must be hex"),
    ({"memory_size": 0}, "ecu[0].memory_size: must be > 0"),
    ({"version_dids": ["F189", "G1"]}, "ecu[0].version_dids[1]: not a 16-bit hex DID"),
    ({"budget": {"erase_s": 0}}, "ecu[0].budget.erase_s: must be > 0"),
    ({"security_secret_env": "X"}, "ecu[0].security_secret_env: give only one of"),
])
def test_semantic_problems(change, expected):
    lines = problems_of(dict(GOOD, **change))
    assert any(expected in line for line in lines), lines


def test_missing_name_is_reported():
    table = dict(GOOD)
    del table["name"]
    assert "agent.toml: ecu[0].name: missing required key" in problems_of(table)


def test_load_ecu_raises_with_every_problem(tmp_path):
    path = tmp_path / "ecu.toml"
    path.write_text('[ecu]\nname = "eps"\ntxid = 0x7E0\nrxid = true\nmemory_size = -1\n')
    with pytest.raises(ConfigError) as info:
        load_ecu(path)
    text = str(info.value)
    assert f"{path}: ecu.rxid: expected an integer, got bool True" in text
    assert f"{path}: ecu.memory_size: must be > 0" in text


def test_secret_from_environment(monkeypatch):
    ecu = EcuConfig(name="eps", security_secret_env="ICV_TEST_ECU_SECRET")
    monkeypatch.setenv("ICV_TEST_ECU_SECRET", "a1b2")
    assert ecu.secret() == b"\xa1\xb2"
    monkeypatch.delenv("ICV_TEST_ECU_SECRET")
    with pytest.raises(ValueError, match="ICV_TEST_ECU_SECRET is not set"):
        ecu.secret()
