"""``icv-agent ota consent|history|status`` and ``icv-agent ecu versions`` on real state
databases left by the campaign manager; ``icv-hil backend campaign init``."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from campaign_bench import EPS_V2, Bench, make_bench

from hil.backend.campaign import campaign_args

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, module: str = "agent.cli") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def completed_campaign(bench: Bench) -> Path:
    """One campaign accepted through the CLI (the bench consent channel)."""
    bench.release("eps", EPS_V2, 2)
    bench.start_manager()
    bench.manager.submit(campaign_args("OTA-CLI", "2.0"))
    bench.records.wait("ota.consent_requested", "OTA-CLI")
    config = str(bench.cfg.path)
    wrong = cli("ota", "consent", "OTA-OTHER", "--accept", "--config", config)
    assert wrong.returncode == 1 and "the open activity is OTA-CLI" in wrong.stderr
    status = cli("ota", "status", "--config", config)
    assert "in progress: OTA-CLI version 2.0 phase awaiting_consent" in status.stdout
    done = cli("ota", "consent", "OTA-CLI", "--accept", "--config", config)
    assert done.returncode == 0, done.stderr
    kind, _ = bench.records.terminal("OTA-CLI")
    assert kind == "ota.completed"
    assert bench.records.of("ota.consent", "OTA-CLI")[0]["channel"] == "cli"
    bench.stop_manager()
    return bench.cfg.path


def test_consent_history_status_and_versions_table(tmp_path: Path):
    with make_bench(tmp_path) as bench:
        config = str(completed_campaign(bench))
        history = cli("ota", "history", "--config", config)
        assert history.returncode == 0, history.stderr
        assert "OTA-CLI" in history.stdout and "consent accepted via cli" in history.stdout
        assert "eps        1.0.0 -> 2.0.0  ok" in history.stdout
        assert "1 entries, chain OK" in history.stdout
        data = json.loads(cli("ota", "history", "--json", "--config", config).stdout)
        assert data["chain_ok"] and data["entries"][0]["result"] == "completed"
        status = cli("ota", "status", "--config", config)
        assert "no OTA activity in progress" in status.stdout
        assert "last: OTA-CLI completed" in status.stdout
        table = cli("ecu", "versions", "--config", config)
        assert table.returncode == 0, table.stderr
        lines = table.stdout.splitlines()
        assert "#35 steering ECU software version: eps initial 1.0.0 current 2.0.0" in lines
        assert "#37 EDR software version: no ECU with this role configured" in lines
        eps_row = next(line for line in lines if line.strip().startswith("eps "))
        assert "HW-EPS-03" in eps_row and "SW-EPS-0200" in eps_row and "2.0.0" in eps_row
        live = json.loads(cli("ecu", "versions", "--read", "--json", "--config",
                              config).stdout)
        dvr = next(e for e in live["ota_ecus"]["ecus"] if e["ecu"] == "dvr")
        assert dvr["hardware_number"] == "HW-DVR-1" and dvr["tamper"] is None


def test_history_with_a_changed_entry_fails_verification(tmp_path: Path):
    with make_bench(tmp_path) as bench:
        config = str(completed_campaign(bench))
        con = sqlite3.connect(bench.cfg.state_dir / "state.db")
        row = con.execute("SELECT n, entry FROM ota_history").fetchone()
        entry = json.loads(row[1])
        entry["result"] = "failed"                # someone rewrites history
        con.execute("UPDATE ota_history SET entry=? WHERE n=?", (json.dumps(entry), row[0]))
        con.commit()
        con.close()
        history = cli("ota", "history", "--config", config)
        assert history.returncode == 1
        assert "chain BROKEN: entry 1: hash does not match its content" in history.stdout


def test_cli_errors_are_clear(tmp_path: Path):
    missing = cli("ota", "history", "--config", str(tmp_path / "nope.toml"))
    assert missing.returncode == 2 and "file not found" in missing.stderr
    with make_bench(tmp_path) as bench:
        fresh = cli("ota", "status", "--config", str(bench.cfg.path))
        assert fresh.returncode == 1 and "no state database" in fresh.stderr


def test_backend_campaign_init_prints_the_agent_section(tmp_path: Path):
    out = cli("backend", "campaign", "init", "--ota-dir", str(tmp_path / "ota"), "--url",
              "http://127.0.0.1:9999", module="hil.cli")
    assert out.returncode == 0, out.stderr
    assert 'director_url = "http://127.0.0.1:9999/director"' in out.stdout
    root = tmp_path / "ota" / "repo" / "director" / "_root" / "metadata" / "root.json"
    assert f'director_root = "{root}"' in out.stdout and root.exists()
    again = cli("backend", "campaign", "init", "--ota-dir", str(tmp_path / "ota"),
                module="hil.cli")
    assert again.returncode == 0 and str(root) in again.stdout    # same keys, not new ones
