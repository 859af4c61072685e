"""ScriptedResponder, its rules format and the shipped demo script."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from voicecall.agent import (
    OpenAICompatResponder,
    ResponseRequest,
    ScriptedResponder,
    Turn,
    make_responder,
)
from voicecall.agent.scripted import Script
from voicecall.errors import ConfigError

MakeRequest = Callable[..., ResponseRequest]


async def test_demo_conversation(make_request: MakeRequest) -> None:
    bot = ScriptedResponder()
    assert bot.greeting and "good time" in bot.greeting
    history: list[Turn] = [Turn("bot", bot.greeting)]
    replies = []
    for said in ["Hi, yes, this is a good time.", "Could you tell me the opening hours?",
                 "Great, thank you. Goodbye."]:
        result = await bot.respond(make_request(said, history=history))
        assert result.text
        replies.append((result.text, result.end_call))
        history += [Turn("user", said), Turn("bot", result.text)]
    assert "What would you like to know?" in replies[0][0] and not replies[0][1]
    assert replies[1] == ("Of course. We're open from 9 a.m. to 5 p.m., Monday to Friday.", False)
    assert "Goodbye" in replies[2][0] and replies[2][1] is True


@pytest.mark.parametrize(("said", "expected", "end"), [
    ("Sorry, it's not a good time.", "No problem at all", True),
    ("Are you open on Saturday?", "closed on weekends", False),
    ("Where are you located?", "100 Main Street", False),
    ("How much does it cost?", "Prices depend", False),
    ("Who is this?", "voicecall demo assistant", False),
    ("Thanks!", "You're welcome", False),
    ("Blue elephants.", "didn't quite catch that", False),
])
async def test_demo_script_other_turns(make_request: MakeRequest, said: str, expected: str,
                                       end: bool) -> None:
    result = await ScriptedResponder().respond(make_request(said))
    assert result.text and expected in result.text
    assert result.end_call is end


async def test_reply_travels_as_contract_json(make_request: MakeRequest) -> None:
    bot = ScriptedResponder({"rules": [{"match": "hi", "reply": 'Say "hi" \u2014 café'}]})
    result = await bot.respond(make_request("hi"))
    assert result.payloads == [{"text": json.dumps({"spoken": 'Say "hi" — café'},
                                                   ensure_ascii=False)}]
    assert result.text == 'Say "hi" — café'
    assert result.first_token_ms is not None and result.total_ms >= 0


async def test_first_hit_wins_case_insensitive(make_request: MakeRequest) -> None:
    bot = ScriptedResponder({"rules": [
        {"match": "^HOURS", "reply": "first"},
        {"keywords": ["hours"], "reply": "second"},
    ], "fallback": "none"})
    assert (await bot.respond(make_request("hours please"))).text == "first"
    assert (await bot.respond(make_request("your hours?"))).text == "second"
    assert (await bot.respond(make_request("hello"))).text == "none"


async def test_keywords_match_whole_words(make_request: MakeRequest) -> None:
    bot = ScriptedResponder({"rules": [{"keywords": ["hi", "good time"], "reply": "hit"}],
                             "fallback": "miss"})
    assert (await bot.respond(make_request("Oh HI there"))).text == "hit"
    assert (await bot.respond(make_request("a good\n time"))).text == "hit"
    assert (await bot.respond(make_request("this is it"))).text == "miss"
    assert (await bot.respond(make_request("goodtimes"))).text == "miss"


async def test_placeholders(make_request: MakeRequest) -> None:
    bot = ScriptedResponder({"rules": [
        {"match": ".", "reply": "Turn {turn} from {caller}: you said {text}. {unknown}"}]})
    history = [Turn("bot", "Hello"), Turn("user", "one"), Turn("bot", "ok"), Turn("user", "two")]
    result = await bot.respond(make_request("two", history=history))
    # The current utterance already at the end of the history is not counted twice.
    assert result.text == "Turn 2 from +15550001111: you said two. {unknown}"
    result = await bot.respond(make_request("{caller}", caller_number=None))
    assert result.text == "Turn 1 from unknown: you said {caller}. {unknown}"


async def test_empty_reply_means_silence(make_request: MakeRequest) -> None:
    bot = ScriptedResponder({"rules": [{"match": "shh", "reply": "", "end": True}]})
    result = await bot.respond(make_request("shh"))
    assert result.text is None and result.end_call is True


async def test_load_from_json5_file(tmp_path: Path, make_request: MakeRequest) -> None:
    path = tmp_path / "script.json5"
    path.write_text("// comment\n{rules: [{keywords: ['ping'], reply: 'pong',},], "
                    "greeting: 'yo'}", encoding="utf-8")
    bot = ScriptedResponder(path)
    assert bot.greeting == "yo"
    assert (await bot.respond(make_request("ping"))).text == "pong"
    assert (await ScriptedResponder(str(path)).respond(make_request("x"))).text


@pytest.mark.parametrize(("script", "message"), [
    ([], "script must be an object"),
    ({"rules": {}}, "rules: must be a list"),
    ({"rules": [], "extra": 1}, "extra: unknown key"),
    ({"rules": [], "fallback": 3}, "fallback: must be a string"),
    ({"rules": [], "greeting": []}, "greeting: must be a string"),
    ({"rules": ["hi"]}, "rules[0]: must be an object"),
    ({"rules": [{"match": "a", "reply": "b"}, {"match": "(", "reply": "b"}]},
     "rules[1].match: invalid regular expression"),
    ({"rules": [{"match": "", "reply": "b"}]}, "rules[0].match: must be a non-empty string"),
    ({"rules": [{"match": "a"}]}, "rules[0].reply: must be a string"),
    ({"rules": [{"match": "a", "reply": 1}]}, "rules[0].reply: must be a string"),
    ({"rules": [{"keywords": "hi", "reply": "b"}]}, "rules[0].keywords: must be a list"),
    ({"rules": [{"keywords": ["hi", ""], "reply": "b"}]}, "rules[0].keywords: must be a list"),
    ({"rules": [{"match": "a", "reply": "b", "end": "yes"}]}, "rules[0].end: must be true"),
    ({"rules": [{"match": "a", "reply": "b", "goto": 2}]}, "rules[0].goto: unknown key"),
    ({"rules": [{"reply": "b"}]}, "rules[0]: needs 'match' or 'keywords'"),
])
def test_malformed_script_names_rule_and_field(script: object, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Script.from_mapping(script)
    assert str(caught.value).startswith(message)


def test_malformed_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json5"
    bad.write_text("{rules: [", encoding="utf-8")
    with pytest.raises(ConfigError, match="cannot parse"):
        ScriptedResponder(bad)
    with pytest.raises(ConfigError, match="cannot read script"):
        ScriptedResponder(tmp_path / "missing.json5")
    wrong = tmp_path / "wrong.json5"
    wrong.write_text("{rules: [{match: 'a', reply: 'b'}, {match: 'a', replay: 'b'}]}")
    with pytest.raises(ConfigError, match=r"rules\[1\]\.replay: unknown key in wrong.json5"):
        ScriptedResponder(wrong)


async def test_make_responder() -> None:
    scripted = make_responder("scripted")
    assert scripted.name == "scripted"
    assert isinstance(make_responder("offline", script={"rules": []}), ScriptedResponder)
    ollama = make_responder("ollama", model="llama3.1")
    assert isinstance(ollama, OpenAICompatResponder)
    assert ollama.base_url == "http://localhost:11434/v1" and ollama.model == "llama3.1"
    openai = make_responder("openai-compat", base_url="http://127.0.0.1:9/v1/", api_key="k")
    assert isinstance(openai, OpenAICompatResponder)
    assert openai.base_url == "http://127.0.0.1:9/v1" and openai.model == "gpt-4o-mini"
    for responder in (ollama, openai):
        await responder.aclose()
    with pytest.raises(ConfigError, match="responseModel"):
        make_responder("vllm")
    with pytest.raises(ConfigError, match="unknown responder kind 'gpt'") as caught:
        make_responder("gpt")
    assert caught.value.allowed and "scripted" in caught.value.allowed
