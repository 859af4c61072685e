"""An offline responder that answers from a rules file.

Used by the demo and by tests that need a deterministic agent. A script is

    {
      greeting?: "Hello!",                 // for the runtime's opening line
      fallback?: "Sorry, say again?",      // when no rule hits
      rules: [{match?: "regex", keywords?: ["..."], reply: "...", end?: true}],
    }

The first rule whose ``match`` (a case-insensitive Python regular expression)
or any of whose ``keywords`` (whole words, case-insensitive) hits the caller's
words wins. ``end: true`` asks the runtime to hang up after the reply.
Replies may use ``{caller}``, ``{turn}`` (1-based count of caller turns) and
``{text}`` (the caller's words).

Replies travel as the contract's ``{"spoken": "..."}`` payload so the demo
exercises the same extraction path as a real model.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import json5

from voicecall.agent.base import ResponseRequest, ResponseResult, TextSink
from voicecall.agent.spoken import extract_spoken
from voicecall.errors import ConfigError

__all__ = ["DEFAULT_FALLBACK", "Script", "ScriptRule", "ScriptedResponder"]

DEFAULT_FALLBACK = "Sorry, I didn't catch that. Could you say it again?"
_DEFAULT_SCRIPT = "default_script.json5"
_TOP_KEYS = frozenset({"rules", "fallback", "greeting"})
_RULE_KEYS = frozenset({"match", "keywords", "reply", "end"})
_PLACEHOLDER = re.compile(r"\{(caller|turn|text)\}")


@dataclass(frozen=True)
class ScriptRule:
    reply: str
    patterns: tuple[re.Pattern[str], ...]
    end: bool = False

    def matches(self, text: str) -> bool:
        return any(p.search(text) for p in self.patterns)


@dataclass(frozen=True)
class Script:
    rules: tuple[ScriptRule, ...]
    fallback: str = DEFAULT_FALLBACK
    greeting: str | None = None

    def pick(self, text: str) -> ScriptRule | None:
        return next((rule for rule in self.rules if rule.matches(text)), None)

    @classmethod
    def from_mapping(cls, data: object, source: str = "script") -> Script:
        """Validate a parsed script; errors name the rule index and field."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source} must be an object with a 'rules' list")
        unknown = sorted(set(data) - _TOP_KEYS)
        if unknown:
            raise ConfigError(f"unknown key in {source}", path=str(unknown[0]),
                              allowed=sorted(_TOP_KEYS))
        raw_rules = data.get("rules")
        if not isinstance(raw_rules, list):
            raise ConfigError(f"must be a list in {source}", path="rules")
        fallback = data.get("fallback", DEFAULT_FALLBACK)
        if not isinstance(fallback, str):
            raise ConfigError(f"must be a string in {source}", path="fallback")
        greeting = data.get("greeting")
        if greeting is not None and not isinstance(greeting, str):
            raise ConfigError(f"must be a string in {source}", path="greeting")
        rules = tuple(_parse_rule(i, raw, source) for i, raw in enumerate(raw_rules))
        return cls(rules=rules, fallback=fallback, greeting=greeting)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Script:
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read script {file}: {exc.strerror or exc}") from None
        return cls.from_mapping(_parse_json5(text, str(file)), source=file.name)

    @classmethod
    def default(cls) -> Script:
        """The demo script shipped with the package."""
        text = resources.files(__package__).joinpath(_DEFAULT_SCRIPT).read_text("utf-8")
        return cls.from_mapping(_parse_json5(text, _DEFAULT_SCRIPT), source=_DEFAULT_SCRIPT)


def _parse_json5(text: str, source: str) -> object:
    try:
        return json5.loads(text)
    except ValueError as exc:
        raise ConfigError(f"cannot parse {source}: {exc}") from None


def _keyword_pattern(keyword: str) -> re.Pattern[str]:
    # Whole words, any run of whitespace between them: "good time" must not
    # hit "goodtimes", nor "hi" hit "this".
    body = r"\s+".join(re.escape(word) for word in keyword.split())
    return re.compile(rf"(?<!\w){body}(?!\w)", re.IGNORECASE)


def _parse_rule(index: int, raw: object, source: str) -> ScriptRule:
    where = f"rules[{index}]"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"must be an object in {source}", path=where)
    unknown = sorted(set(raw) - _RULE_KEYS)
    if unknown:
        raise ConfigError(f"unknown key in {source}", path=f"{where}.{unknown[0]}",
                          allowed=sorted(_RULE_KEYS))
    reply = raw.get("reply")
    if not isinstance(reply, str):
        raise ConfigError(f"must be a string in {source}", path=f"{where}.reply")
    end = raw.get("end", False)
    if not isinstance(end, bool):
        raise ConfigError(f"must be true or false in {source}", path=f"{where}.end")
    patterns: list[re.Pattern[str]] = []
    match = raw.get("match")
    if match is not None:
        if not isinstance(match, str) or not match.strip():
            raise ConfigError(f"must be a non-empty string in {source}", path=f"{where}.match")
        try:
            patterns.append(re.compile(match, re.IGNORECASE))
        except re.error as exc:
            raise ConfigError(f"invalid regular expression ({exc}) in {source}",
                              path=f"{where}.match") from None
    keywords = raw.get("keywords")
    if keywords is not None:
        if not isinstance(keywords, list) or not all(
            isinstance(k, str) and k.strip() for k in keywords
        ):
            raise ConfigError(f"must be a list of non-empty strings in {source}",
                              path=f"{where}.keywords")
        patterns.extend(_keyword_pattern(k) for k in keywords)
    if not patterns:
        raise ConfigError(f"needs 'match' or 'keywords' in {source}", path=where)
    return ScriptRule(reply=reply, patterns=tuple(patterns), end=end)


_STREAM_CHUNK = 8


class ScriptedResponder:
    """``Responder`` that answers from a ``Script``; no network, no model."""

    name = "scripted"

    def __init__(self, script: Script | Mapping[str, object] | str | os.PathLike[str] | None = None
                 ) -> None:
        if script is None:
            self.script = Script.default()
        elif isinstance(script, Script):
            self.script = script
        elif isinstance(script, Mapping):
            self.script = Script.from_mapping(script)
        else:
            self.script = Script.load(script)

    @property
    def greeting(self) -> str | None:
        return self.script.greeting

    async def respond(self, req: ResponseRequest,
                      on_text: TextSink | None = None) -> ResponseResult:
        started = time.perf_counter()
        rule = self.script.pick(req.user_text)
        template = rule.reply if rule else self.script.fallback
        turn = 1 + sum(1 for t in req.history if t.role == "user")
        # The runtime may already have appended the current utterance.
        if req.history and req.history[-1].role == "user" and (
            req.history[-1].text.strip() == req.user_text.strip()
        ):
            turn -= 1
        values = {"caller": req.caller_number or "unknown", "turn": str(turn),
                  "text": req.user_text.strip()}
        reply = _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)
        text = json.dumps({"spoken": reply}, ensure_ascii=False)
        payloads: list[dict[str, object]] = [{"text": text}]
        elapsed = (time.perf_counter() - started) * 1000
        if on_text is not None:
            # Stream it in token-sized pieces, as a model would, so the same sentence
            # pipeline runs offline as with a real back end.
            for i in range(0, len(text), _STREAM_CHUNK):
                await on_text(text[i:i + _STREAM_CHUNK])
        return ResponseResult(text=extract_spoken(payloads), payloads=payloads,
                              first_token_ms=elapsed, total_ms=elapsed,
                              end_call=rule.end if rule else False)

    async def aclose(self) -> None:
        return None
