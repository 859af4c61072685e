"""``create``: config keys, model directories, optional engines, honest capabilities."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pocketsphinx
import pytest

from voicecall.errors import ConfigError
from voicecall.speech.stt import local
from voicecall.speech.stt.local import STT, EngineSpec, WhisperEngine, create


def test_defaults() -> None:
    stt = create({})
    assert isinstance(stt, STT)
    assert stt.name == "local"
    assert stt.capabilities.interim_results is False     # finals only
    assert stt.capabilities.server_vad is True           # it emits speech-start itself
    assert stt.spec.kind == "pocketsphinx" and stt.spec.sample_rate == 16000
    assert stt.spec.hints == () and stt.spec.hints_mode == "prefer"
    assert stt.worker == "process"
    assert stt._settings.silence_ms == local.DEFAULT_SILENCE_MS == 600
    assert stt._settings.vad == "webrtc"


def test_keys_are_read() -> None:
    stt = create({"hints": ["Book a table", "yes"], "hintsMode": "only", "silenceMs": 800,
                  "vadAggressiveness": 3, "words": {"Zork": "z ao r k"}, "worker": "thread",
                  "workers": 2, "bandFill": False, "preRollMs": 200, "maxUtteranceMs": 9000})
    assert stt.spec.hints == ("Book a table", "yes")
    assert stt.spec.hints_mode == "only"
    assert stt.spec.words == (("zork", "Z AO R K"),)
    assert stt.spec.band_fill is False
    assert stt.worker == "thread"
    s = stt._settings
    assert (s.silence_ms, s.vad_aggressiveness, s.pre_roll_ms, s.max_utterance_ms) == \
        (800, 3, 200, 9000)


@pytest.mark.parametrize(("cfg", "key"), [
    ({"silenceMs": 50}, "silenceMs"),
    ({"silenceMs": "600"}, "silenceMs"),
    ({"vadAggressiveness": 4}, "vadAggressiveness"),
    ({"hintsMode": "always"}, "hintsMode"),
    ({"hints": [1, 2]}, "hints"),
    ({"words": ["zork"]}, "words"),
    ({"worker": "gpu"}, "worker"),
    ({"modelPath": "/nonexistent/model"}, "modelPath"),
])
def test_bad_values_name_the_key(cfg: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        create(cfg)
    assert err.value.path == f"streaming.providers.local.{key}"


def test_shipped_pocketsphinx_layout_is_recognised_as_a_user_model() -> None:
    root = Path(pocketsphinx.get_model_path()) / "en-us"
    stt = create({"modelPath": str(root)})
    assert stt.spec.kind == "pocketsphinx"
    assert stt.spec.hmm == str(root / "en-us")
    assert stt.spec.lm == str(root / "en-us.lm.bin")            # not the phone LM
    assert stt.spec.dictionary == str(root / "cmudict-en-us.dict")
    assert stt.spec.sample_rate == 16000


def test_8khz_pocketsphinx_model_gets_8khz_audio(tmp_path: Path) -> None:
    hmm = tmp_path / "am"
    hmm.mkdir()
    (hmm / "mdef").write_text("")
    (hmm / "feat.params").write_text("-lowerf 130\n-upperf 3500\n-nfilt 20\n")
    (tmp_path / "words.dict").write_text("yes Y EH S\n")
    stt = create({"modelPath": str(tmp_path)})
    assert stt.spec.sample_rate == 8000 and stt.spec.lm is None
    assert stt.spec.dictionary == str(tmp_path / "words.dict")


def test_unknown_directory_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(ConfigError, match="not a pocketsphinx or faster-whisper model"):
        create({"modelPath": str(tmp_path)})


def whisper_dir(tmp_path: Path) -> Path:
    (tmp_path / "model.bin").write_bytes(b"\0")
    (tmp_path / "config.json").write_text("{}")
    return tmp_path


def test_whisper_model_without_faster_whisper_is_a_config_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "_module_available", lambda name: name != "faster_whisper")
    with pytest.raises(ConfigError, match="faster_whisper is not installed"):
        create({"modelPath": str(whisper_dir(tmp_path))})


class FakeWhisperModel:
    calls: list[dict[str, Any]] = []

    def __init__(self, path: str, **kwargs: Any) -> None:
        self.path = path
        self.kwargs = kwargs

    def transcribe(self, audio: np.ndarray, **kwargs: Any) -> tuple[list[Any], None]:
        FakeWhisperModel.calls.append({"samples": audio.size, "dtype": audio.dtype, **kwargs})
        seg = types.SimpleNamespace(text=" Book a table for two. ")
        return [seg], None


def test_whisper_model_with_faster_whisper(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("faster_whisper")
    fake.WhisperModel = FakeWhisperModel  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "faster_whisper", fake)
    monkeypatch.setattr(local, "_module_available", lambda name: True)
    model = whisper_dir(tmp_path)
    stt = create({"modelPath": str(model), "hints": ["book a table"], "language": "en"})
    assert stt.spec.kind == "whisper" and stt.spec.model_dir == str(model)
    assert stt.worker == "thread"                  # CTranslate2 releases the GIL
    engine = WhisperEngine(stt.spec)
    result = engine.transcribe(np.zeros(16000, dtype="<i2").tobytes())
    assert result.text == "Book a table for two." and result.source == "whisper"
    call = FakeWhisperModel.calls[-1]
    assert call["samples"] == 16000 and call["dtype"] == np.float32
    assert call["initial_prompt"] == "book a table" and call["language"] == "en"


def test_energy_vad_when_webrtcvad_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "_module_available", lambda name: name != "webrtcvad")
    assert create({})._settings.vad == "energy"
    with pytest.raises(ConfigError):
        create({"vad": "webrtc"})


def test_registered_as_builtin() -> None:
    from voicecall.speech import registry
    from voicecall.speech.builtin import register_builtins

    register_builtins()
    stt = registry.resolve_stt("local", {"local": {"hints": ["yes"]}})
    assert isinstance(stt, STT) and stt.spec.hints == ("yes",)


def test_spec_is_picklable() -> None:
    import pickle

    spec = EngineSpec(hints=("yes",), words=(("zork", "Z AO R K"),))
    assert pickle.loads(pickle.dumps(spec)) == spec
