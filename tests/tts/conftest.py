"""Shared fakes for the TTS tests: one server of each kind per session, reset per test."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from tts_helpers import ELEVEN_KEY, OPENAI_KEY

from voicecall.testing.fake_elevenlabs_tts import FakeElevenLabsTTS
from voicecall.testing.fake_openai_tts import FakeOpenAITTS


@pytest.fixture(scope="session")
def _openai_server() -> Iterator[FakeOpenAITTS]:
    with FakeOpenAITTS(api_key=OPENAI_KEY) as srv:
        yield srv


@pytest.fixture(scope="session")
def _eleven_server() -> Iterator[FakeElevenLabsTTS]:
    with FakeElevenLabsTTS(api_key=ELEVEN_KEY) as srv:
        yield srv


@pytest.fixture
def openai_fake(_openai_server: FakeOpenAITTS) -> FakeOpenAITTS:
    return _openai_server.reset(api_key=OPENAI_KEY)


@pytest.fixture
def eleven_fake(_eleven_server: FakeElevenLabsTTS) -> FakeElevenLabsTTS:
    return _eleven_server.reset(api_key=ELEVEN_KEY)


@pytest.fixture
def flite() -> str:
    path = shutil.which("flite")
    if path is None:
        pytest.fail("flite is not installed: apt-get install flite (the Makefile does this)")
    return path

