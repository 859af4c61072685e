"""``voicecall doctor --fix``: rewrite legacy keys in the config file itself.

Safety: nothing is written when nothing changes; otherwise a timestamped
backup is made first, and the new file replaces the old one atomically
(temp file in the same directory + ``os.replace``) with the same mode bits,
so a 0600 file holding secrets stays 0600.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from voicecall.errors import ConfigError

from .document import read_document
from .migrate import migrate_legacy


@dataclass(frozen=True)
class DoctorResult:
    changed: bool
    changes: list[str] = field(default_factory=list)
    backup: Path | None = None


def backup_path(path: Path, now: datetime | None = None) -> Path:
    """``<file>.bak-<UTC yyyymmddHHMMSS>``, with ``-N`` added if that name is taken."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S")
    candidate = path.with_name(f"{path.name}.bak-{stamp}")
    n = 1
    while candidate.exists():
        candidate = path.with_name(f"{path.name}.bak-{stamp}-{n}")
        n += 1
    return candidate


def _write_atomically(path: Path, text: str, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def doctor_fix(path: str | Path) -> DoctorResult:
    """Migrate legacy keys of the plugin config in ``path`` (either file shape)."""
    # Write through a symlink to its target rather than replacing the link.
    target = Path(path).expanduser().resolve()
    doc = read_document(target)
    if not isinstance(doc, dict):
        raise ConfigError(f"{target}: the config file must hold a JSON5 object")
    migrated, changes = migrate_legacy(doc)
    if not changes:
        return DoctorResult(changed=False)

    mode = stat.S_IMODE(target.stat().st_mode)
    backup = backup_path(target)
    shutil.copy2(target, backup)  # copy2 keeps the mode bits of the original
    # Plain JSON is valid JSON5; NaN/Infinity elsewhere stay as JSON5 literals.
    _write_atomically(target, json.dumps(migrated, indent=2, ensure_ascii=False) + "\n", mode)
    changes.append(
        f"Rewrote {target} as JSON: JSON5 comments and formatting were not preserved "
        f"(the original is in {backup.name})."
    )
    return DoctorResult(changed=True, changes=changes, backup=backup)
