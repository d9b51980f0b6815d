"""``[ota.uptane]``: typed loading with every problem named by key."""

from __future__ import annotations

from pathlib import Path

from agent.ota.uptane import UptaneConfig, load_uptane
from agent.settings_loader import Problems, read_toml


def load(tmp_path: Path, text: str) -> tuple[UptaneConfig, list[str]]:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    problems = Problems()
    table = read_toml(path, problems)
    cfg = load_uptane(table["ota"]["uptane"], path, problems)
    return cfg, problems.lines()


def test_valid_section_loads_with_defaults(tmp_path: Path):
    cfg, problems = load(tmp_path, """
[ota.uptane]
director_url = "https://director.example.net"
image_url = "https://images.example.net"
min_speed_bytes_s = 2048
time_attestation = "time.json"
time_public_keys = ["keys/time.pub.json"]
""")
    assert problems == []
    assert cfg.min_speed_bytes_s == 2048.0 and cfg.max_timestamp_bytes == 16 * 1024
    assert cfg.resolve(cfg.director_root, tmp_path) == tmp_path / "uptane/director-root.json"


def test_every_problem_is_named(tmp_path: Path):
    _, problems = load(tmp_path, """
[ota.uptane]
director_url = "ftp://x"
max_targets_bytes = 0
speed_window_s = 0
retries = -1
client_cert = "c.pem"
time_attestation = "t.json"
chunk_bytes = "big"
colour = "red"
""")
    text = "\n".join(problems)
    for key in ("ota.uptane.director_url: expected an http(s) URL",
                "ota.uptane.max_targets_bytes: must be > 0",
                "ota.uptane.speed_window_s: must be > 0",
                "ota.uptane.retries: must be >= 0",
                "ota.uptane.client_cert: client_cert and client_key go together",
                "ota.uptane.time_public_keys: a time attestation needs",
                "ota.uptane.chunk_bytes: expected an integer",
                "ota.uptane.colour: unknown key"):
        assert key in text, text


def test_time_step_must_be_positive_and_bounded(tmp_path: Path):
    for value in ("0", "-1", "4000"):
        _, problems = load(tmp_path, f"[ota.uptane]\nmax_time_step_days = {value}\n")
        assert any(p.endswith("ota.uptane.max_time_step_days: must be > 0 and <= 3650")
                   for p in problems), problems
    cfg, problems = load(tmp_path, "[ota.uptane]\nmax_time_step_days = 2\n")
    assert problems == [] and cfg.max_time_step_days == 2.0


def test_transfer_budget_is_validated(tmp_path: Path):
    _, problems = load(tmp_path, "[ota.uptane]\nmin_average_bytes_s = 0\n"
                                 "transfer_allowance_s = -1\n")
    text = "\n".join(problems)
    assert "ota.uptane.min_average_bytes_s: must be > 0" in text, text
    assert "ota.uptane.transfer_allowance_s: must be >= 0" in text, text
    cfg, problems = load(tmp_path, "[ota.uptane]\nmin_average_bytes_s = 65536\n")
    assert problems == [] and cfg.transfer_allowance_s == 120.0
