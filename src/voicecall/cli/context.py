"""What every command needs: the loaded config (lazily) and the state dir."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from voicecall.config import LoadedConfig, home_dir, load_config
from voicecall.logging_setup import configure


@dataclass
class Context:
    config_path: str | None
    json: bool = False
    _loaded: LoadedConfig | None = field(default=None, init=False)

    @property
    def loaded(self) -> LoadedConfig:
        if self._loaded is None:
            self._loaded = load_config(self.config_path)
            log = self._loaded.config.log
            configure(log.level, log.include_pii)
        return self._loaded

    @property
    def home(self) -> Path:
        return home_dir(os.environ)
