"""Spoken text out of a streaming agent reply, sentence by sentence.

The agent answers in the spoken-output contract (``{"spoken":"..."}``) or,
despite it, in plain text. To start speaking after the first sentence rather
than the whole reply, ``SpokenStream`` decodes the ``spoken`` string value
incrementally as the JSON streams in, and in plain text holds back only the
first paragraph until it is known not to be a planning preamble. Sentences
are cut on ``.!?`` followed by whitespace (or ``。！？``), as the reference's
early sentence delivery does. Pure: feed deltas, get sentences.

The final text of the turn still goes through ``extract_spoken`` (the same
rules as the non-streaming path); the stream only decides *when* speech can
start, and ``finish()`` returns anything the incremental pass held back.
"""

from __future__ import annotations

import json
import re

from voicecall.agent.spoken import collapse_whitespace, is_meta_paragraph

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])")
_SPOKEN_KEY = re.compile(r'^\s*(?:```(?:json)?\s*)?\{\s*"spoken"\s*:\s*"', re.IGNORECASE)
_MIN_SENTENCE_CHARS = 12  # merge very short fragments ("Hi.") with what follows
# A period after these is not a sentence end ("9 a.m. to 5", "Dr. Lee").
_ABBREVIATIONS = frozenset({"a.m.", "p.m.", "mr.", "mrs.", "ms.", "dr.", "st.", "e.g.",
                            "i.e.", "etc.", "vs.", "no.", "jr.", "sr.", "approx.", "u.s."})
_INITIAL = re.compile(r"[a-z]\.")  # "J. Smith"


class SpokenStream:
    def __init__(self) -> None:
        self._raw = ""
        self._mode: str | None = None      # "json" | "plain" | None (undecided)
        self._json_pos = 0                 # index in _raw where the string value starts
        self._json_done = False
        self._plain_released = 0           # chars of plain text already considered
        self._first_para_checked = False
        self._pending = ""                 # text not yet cut into a sentence
        self._emitted = ""                 # everything handed out

    # -- input -----------------------------------------------------------------
    def feed(self, delta: str) -> list[str]:
        """Add a chunk of the reply; returns sentences ready to speak (maybe none)."""
        self._raw += delta
        if self._mode is None:
            self._decide()
        if self._mode == "json":
            new = self._decode_json()
        elif self._mode == "plain":
            new = self._release_plain(final=False)
        else:
            new = ""
        return self._cut(new, final=False)

    def finish(self) -> list[str]:
        """The reply is complete: flush what is left (the caller re-checks with extract_spoken)."""
        if self._mode is None:
            self._mode = "plain"
        new = self._release_plain(final=True) if self._mode == "plain" else self._decode_json()
        return self._cut(new, final=True)

    @property
    def spoken_so_far(self) -> str:
        return self._emitted

    # -- modes -----------------------------------------------------------------
    def _decide(self) -> None:
        stripped = self._raw.lstrip()
        if not stripped:
            return
        match = _SPOKEN_KEY.match(self._raw)
        if match:
            self._mode = "json"
            self._json_pos = match.end()
            return
        # Could still become a JSON prefix ('{', '{"sp', '```'): wait for more input.
        if stripped.startswith(("{", "`")) and len(stripped) < 40 and not self._raw.endswith("\n"):
            if not _could_be_spoken_prefix(stripped):
                self._mode = "plain"
            return
        self._mode = "plain"

    def _decode_json(self) -> str:
        if self._json_done:
            return ""
        body = self._raw[self._json_pos:]
        out = []
        i = 0
        while i < len(body):
            ch = body[i]
            if ch == '"':
                self._json_done = True
                break
            if ch == "\\":
                if i + 1 >= len(body):
                    break  # escape split across chunks
                nxt = body[i + 1]
                if nxt == "u":
                    if i + 6 > len(body):
                        break
                    try:
                        out.append(json.loads('"' + body[i:i + 6] + '"'))
                    except ValueError:
                        pass
                    i += 6
                    continue
                out.append({"n": " ", "t": " ", "r": " ", "b": "", "f": ""}.get(nxt, nxt))
                i += 2
                continue
            out.append(ch)
            i += 1
        self._json_pos += i
        return "".join(out)

    def _release_plain(self, *, final: bool) -> str:
        text = self._raw
        if not self._first_para_checked:
            # Hold the first paragraph until we know whether it is a planning preamble.
            cut = re.search(r"\n\s*\n", text)
            if cut is None and not final:
                return ""
            self._first_para_checked = True
            if cut is not None:
                first = text[: cut.start()]
                if is_meta_paragraph(first):
                    self._plain_released = cut.end()
                # else: release from the start
        new = text[self._plain_released:]
        self._plain_released = len(text)
        return new

    # -- sentences ---------------------------------------------------------------
    def _boundary(self, start: int = 0) -> re.Match[str] | None:
        """The next sentence end at or after ``start``, skipping abbreviations."""
        pos = start
        while (m := _SENTENCE_END.search(self._pending, pos)) is not None:
            before = self._pending[: m.start()].rstrip()
            word = before.rsplit(None, 1)[-1].lower() if before else ""
            if word not in _ABBREVIATIONS and not _INITIAL.fullmatch(word):
                return m
            pos = m.end()
        return None

    def _cut(self, new: str, *, final: bool) -> list[str]:
        self._pending += new
        out: list[str] = []
        while True:
            m = self._boundary()
            if m is None:
                break
            sentence = self._pending[: m.start()].strip()
            if len(sentence) < _MIN_SENTENCE_CHARS:
                # Too short to be worth a TTS round trip; look for the next boundary
                # (at the end of the reply, the rest of the text is that boundary).
                nxt = self._boundary(m.end())
                if nxt is None:
                    break
                sentence = self._pending[: nxt.start()].strip()
                self._pending = self._pending[nxt.end():]
            else:
                self._pending = self._pending[m.end():]
            if sentence:
                out.append(collapse_whitespace(sentence))
        if final and self._pending.strip():
            out.append(collapse_whitespace(self._pending.strip()))
            self._pending = ""
        self._emitted += "".join(s + " " for s in out)
        return out


def _could_be_spoken_prefix(text: str) -> bool:
    target = '{"spoken":"'
    squeezed = re.sub(r"\s+", "", text.removeprefix("```json").removeprefix("```"))
    return target.startswith(squeezed[: len(target)]) or squeezed.startswith(target)
