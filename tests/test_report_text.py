"""The accident report draft reads as text: no Python list or dict repr in it."""

from __future__ import annotations

from agent.reports.accident import accident_text


def test_triggers_and_lists_read_as_text() -> None:
    report = {
        "accident_id": "A-1", "status": "complete",
        "report_deadline": "2026-07-02T08:00:33.006Z",
        "triggers": [{"trigger": "restraint", "at_s": 0.0, "ts": "2026-07-01T08:00:33.006Z"},
                     {"trigger": "delta_v", "at_s": 0.027, "ts": "2026-07-01T08:00:33.033Z"}],
        "vehicle": {"software_upgrade_records": [{"ecu": "eps", "to": "2.0"}],
                    "sensors": ["camera", "radar"]},
    }
    text = accident_text(report)
    assert ("triggers: restraint +0.000 s, delta_v +0.027 s "
            "(first at 2026-07-01T08:00:33.006Z)") in text
    assert "    - ecu=eps, to=2.0" in text
    assert "  sensors: camera, radar" in text
    assert "[" not in text and "{" not in text
