"""extract_spoken: the reference gateway's cases, then our own edge cases."""

from __future__ import annotations

import pytest

from voicecall.agent import SPOKEN_OUTPUT_CONTRACT, extract_spoken


def speak(*texts: str) -> str | None:
    return extract_spoken([{"text": t} for t in texts])


# -- ported from response-generator.test.ts ---------------------------------

def test_reasoning_suppressed_and_structured_output_read() -> None:
    payloads: list[dict[str, object]] = [
        {"text": "Reasoning: hidden", "isReasoning": True},
        {"text": '{"spoken":"Hello from JSON."}'},
    ]
    assert extract_spoken(payloads) == "Hello from JSON."


def test_fenced_json() -> None:
    assert speak('```json\n{"spoken":"Fenced JSON works."}\n```') == "Fenced JSON works."


def test_explicit_empty_is_silence() -> None:
    assert speak('{"spoken":""}') is None


def test_planning_preamble_stripped() -> None:
    text = ("The user responded with short text. I should keep the response concise.\n\n"
            "Sounds good. I can help with the next step whenever you are ready.")
    assert speak(text) == "Sounds good. I can help with the next step whenever you are ready."


def test_plain_conversational_text_kept() -> None:
    text = "Absolutely. Tell me what you want to do next."
    assert speak(text) == text


def test_contract_text_is_verbatim() -> None:
    assert SPOKEN_OUTPUT_CONTRACT == (
        "Output format requirements:\n"
        '- Return only valid JSON in this exact shape: {"spoken":"..."}\n'
        "- Do not include markdown, code fences, planning text, or extra keys.\n"
        '- Put exactly what should be spoken to the caller into "spoken".\n'
        '- If there is nothing to say, return {"spoken":""}.'
    )


# -- structured output -------------------------------------------------------

@pytest.mark.parametrize("text", [
    '```\n{"spoken":"No tag."}\n```',
    '```JSON\n{"spoken":"No tag."}\n```',
    '   {"spoken": "No tag."}   ',
])
def test_fence_and_padding_variants(text: str) -> None:
    assert speak(text) == "No tag."


def test_prose_wrapped_json() -> None:
    text = 'Sure! Here you go: {"spoken": "We open at nine."} Hope that helps.'
    assert speak(text) == "We open at nine."


def test_json_array_recovered_through_outer_braces() -> None:
    assert speak('[{"spoken":"From a list."}]') == "From a list."


def test_escaped_quotes_and_newlines() -> None:
    assert speak(r'{"spoken":"She said \"hi\".\nThen left."}') == 'She said "hi". Then left.'


def test_unicode_literal_and_escaped() -> None:
    assert speak('{"spoken":"今天營業到五點。"}') == "今天營業到五點。"
    assert speak(r'{"spoken":"Caf\u00e9 au lait"}') == "Café au lait"


def test_whitespace_collapsed() -> None:
    assert speak('{"spoken":"  Hello\\n\\n   there\\t friend  "}') == "Hello there friend"


def test_whitespace_only_spoken_is_explicit_silence() -> None:
    # Structured and empty after collapsing: silence, not a plain-text fallback.
    assert speak('{"spoken":"   "}') is None


def test_extra_keys_ignored() -> None:
    assert speak('{"spoken":"Hi.","emotion":"happy"}') == "Hi."


def test_non_string_spoken_is_not_structured() -> None:
    # The reference only accepts a string; anything else falls through to
    # plain text, which is spoken as written.
    assert speak('{"spoken": 42}') == '{"spoken": 42}'


def test_nested_spoken_found_by_inline_key() -> None:
    assert speak('{"reply": {"spoken": "Nested."}}') == "Nested."


def test_malformed_json_with_inline_key() -> None:
    assert speak('{"spoken": "Hi there", "mood": }') == "Hi there"


def test_inline_key_decodes_escapes() -> None:
    assert speak(r'{"spoken": "Line\nTwo \"quoted\" \u263A", oops}') == 'Line Two "quoted" ☺'


def test_inline_key_is_case_insensitive() -> None:
    assert speak('{"SPOKEN":"Loud key."}') == "Loud key."


def test_inline_explicit_empty_is_silence() -> None:
    assert speak('{"spoken": "", broken}') is None


def test_inline_key_with_invalid_escape_falls_back_to_plain_text() -> None:
    text = r'{"spoken":"bad \x escape", }'
    assert speak(text) == text


# -- plain-text fallback -----------------------------------------------------

def test_code_fences_removed_from_plain_text() -> None:
    assert speak("Here it is:\n```python\nprint(1)\n```\nDone.") == "Here it is: Done."


def test_fence_only_reply_says_nothing() -> None:
    assert speak("```\nnot json\n```") is None


def test_several_meta_paragraphs_dropped() -> None:
    text = ("Thinking process: the caller wants hours.\n\n"
            "Analysis: answer briefly.\n\n"
            "We are open nine to five.")
    assert speak(text) == "We are open nine to five."


@pytest.mark.parametrize("meta", [
    "REASONING: be brief.",
    "The user asked about prices; I need to answer.",
    "The user said bye. I will say goodbye too.",
    "Okay, this is a natural continuation of the conversation.",
    "Reply warmly to keep the conversation flowing.",
])
def test_meta_paragraph_rules(meta: str) -> None:
    assert speak(f"{meta}\n\nSee you soon.") == "See you soon."


def test_the_user_without_intent_phrase_is_kept() -> None:
    text = "The user is always right, they say.\n\nWe open at nine."
    assert speak(text) == "The user is always right, they say. We open at nine."


def test_single_meta_paragraph_kept_because_it_is_the_only_one() -> None:
    text = "The user wants the hours. I should answer nine to five."
    assert speak(text) == text


def test_meta_paragraph_after_speech_is_kept() -> None:
    text = "Hello there.\n\nThe user said hi, I should wait."
    assert speak(text) == "Hello there. The user said hi, I should wait."


def test_paragraph_break_with_blank_line_whitespace() -> None:
    assert speak("Analysis: short.\n   \t\nHi!") == "Hi!"


# -- payload handling --------------------------------------------------------

def test_multiple_payloads_joined_with_spaces() -> None:
    assert speak('{"spoken":"One."}', "Two.", '```json\n{"spoken":"Three."}\n```') == (
        "One. Two. Three."
    )


def test_explicit_empty_does_not_silence_other_payloads() -> None:
    assert speak('{"spoken":""}', "Still here.") == "Still here."


def test_error_and_reasoning_payloads_skipped() -> None:
    payloads = [
        {"text": "Tool failed: boom", "isError": True},
        {"text": '{"spoken":"Secret plan"}', "isReasoning": True},
        {"text": "Visible.", "isReasoning": False, "isError": False},
    ]
    assert extract_spoken(payloads) == "Visible."


@pytest.mark.parametrize("payloads", [
    [],
    [{"text": ""}, {"text": "   \n "}],
    [{}, {"text": None}, {"text": 5}],
    [{"text": "thinking", "isReasoning": True}],
])
def test_nothing_to_say(payloads: list[dict[str, object]]) -> None:
    assert extract_spoken(payloads) is None
