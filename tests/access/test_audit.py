import json
import stat
from pathlib import Path

from imagegate.access.audit import AuditLog, AuditRecord


def record(**changes: object) -> AuditRecord:
    values: dict[str, object] = {
        "time": 1_800_000_000.0,
        "subject": "token:ci-bot",
        "tool": "generate_image",
        "relay": "placeholder",
        "outcome": "ok",
        "images": 2,
        "estimated_cost": None,
        "duration_ms": 12.5,
    }
    values.update(changes)
    return AuditRecord(**values)  # type: ignore[arg-type]


def test_lines_are_json_and_file_is_0640(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "audit.jsonl"
    log = AuditLog(str(path))
    log.write(record())
    log.write(record(outcome="denied", detail="forbidden: needs scope images:delete"))
    log.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    first, second = (json.loads(line) for line in path.read_text().splitlines())
    assert first["time"] == "2027-01-15T08:00:00.000+00:00"
    assert first["subject"] == "token:ci-bot"
    assert "prompt" not in first
    assert second["outcome"] == "denied"


def test_prompt_only_when_given(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(str(path))
    log.write(record(prompt="a red fox"))
    log.close()
    assert json.loads(path.read_text())["prompt"] == "a red fox"


def test_off_writes_nothing(tmp_path: Path) -> None:
    AuditLog("off").write(record())
    assert list(tmp_path.iterdir()) == []
