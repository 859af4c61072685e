"""Fast-context search: the local embedding index against the TF-IDF scorer it replaces.

Builds one caller's history (200 past calls of 40 transcript entries = 2,000
windows of 4) in a SQLite call store plus a workspace of memory notes, with 20
labelled facts planted among them: 10 in memory files, 10 inside call windows
(next to unrelated filler lines, as in real calls). Each labelled question is
a paraphrase that shares no content word with its fact. Prints:

- cold index: embedding every chunk once (chunks/s), and a restarted index
  reading the same vectors back from its SQLite cache;
- warm search latency p50/p90 over 50 questions, for ``ContextIndex.search``
  with the model and with the lexical fallback (same chunk gathering), plus
  the gathering alone;
- recall@3 for both on the labelled questions, and on the same facts asked
  with their own words (where TF-IDF should do well).

Figures depend on the machine and its load; nothing here asserts a time.
Run: ``.venv/bin/python bench/bench_fast_context.py`` (``make bench-context``).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from voicecall.calls.model import Call, CallState, Speaker, TranscriptEntry
from voicecall.memory import ContextIndex, MiniLMEmbedder, Snippet
from voicecall.store import SqliteCallStore

SESSION = "bench-caller"

# Filler: templated small talk with an assistant, varied enough that nearly every
# transcript line is distinct (as in real calls), so caching does not flatter the
# cold-index figure.
NAMES = ["Sam", "Priya", "Lucas", "Mei", "Omar", "Julia", "Ken", "Fatima", "Leo", "Nora"]
ITEMS = ["milk", "eggs", "coffee filters", "batteries", "rice", "apples", "dish soap",
         "light bulbs", "bread", "tomatoes", "olive oil", "paper towels"]
WHEN = ["tomorrow", "tonight", "on Monday", "next week", "this afternoon", "on Friday",
        "after lunch", "before the weekend", "at eight", "in the morning"]
PLACES = ["the office", "the city centre", "the library", "the station", "the park",
          "the museum", "the stadium", "the farmers market", "the post office"]
TOPICS = ["the budget", "the garden", "the new phone", "the holiday photos", "the book club",
          "the marathon", "the quarterly report", "the kitchen tiles", "a podcast"]
USER_T = [
    "Can you remind me to buy {item} {when}?", "Please add {item} to the shopping list.",
    "What's the weather going to be like {when}?", "Did {name} call while I was out?",
    "How long does it take to get to {place}?", "Set an alarm for {n} thirty.",
    "Book a table for {n} {when}.", "What's on my calendar {when}?",
    "Send {name} a message about {topic}.", "Play something relaxing {when}.",
    "Can you read me the last email from {name}?", "Remind me to talk to {name} about {topic}.",
    "When does {place} close {when}?", "I want to hear more about {topic}.",
    "Cancel my meeting with {name} {when}.", "How many steps did I walk {when}?",
]
BOT_T = [
    "Sure, {item} is on the list.", "Done, I'll remind you {when}.",
    "It should be sunny with a light breeze {when}.", "{name} did not call.",
    "About {n}0 minutes to {place} right now.", "Your alarm is set.",
    "Your table for {n} is confirmed {when}.", "You have a call with {name} {when}.",
    "I've sent {name} a note about {topic}.", "Okay, playing calm music.",
    "{name} wrote about {topic} and asked for a reply {when}.",
    "{place} closes at {n} pm.", "Here is a short summary of {topic}.",
    "I cancelled it and told {name}.", "You walked {n} thousand steps.",
]


def line(rng: random.Random, templates: list[str]) -> str:
    return rng.choice(templates).format(
        name=rng.choice(NAMES), item=rng.choice(ITEMS), when=rng.choice(WHEN),
        place=rng.choice(PLACES), topic=rng.choice(TOPICS), n=rng.randint(2, 9))


# (question, fact). The question shares no content word with the fact.
LABELLED = [
    ("When is my dentist appointment?", "Dr. Patel will check your teeth on Tuesday at 3 pm."),
    ("How do I call my sister?", "Your sibling Anna's mobile is 555 0199; she prefers texts."),
    ("What's the wifi password?", "Network key for the home router: bluefish42."),
    ("Has my package arrived?", "The courier dropped the parcel at the front door this morning."),
    ("Where did I leave the car?", "You parked on level 3 of the airport garage, spot B12."),
    ("What is my son allergic to?", "Tom cannot eat peanuts and reacts badly to penicillin."),
    ("How much is the electricity bill?", "The power company charged 84 dollars for March."),
    ("When does my flight leave?", "Your plane to Denver departs Friday at 9 am from gate 22."),
    ("Who is looking after the dog while I'm away?",
     "Maria will feed your puppy Rex and walk him until Sunday."),
    ("What did the doctor say about my blood pressure?",
     "Dr. Kim said the readings look healthy; keep taking the pills."),
    ("Is the plumber coming this week?", "The pipe repair man will show up Wednesday morning."),
    ("What's my gym membership number?", "Fitness club card ID: 77-4410."),
    ("When is mom's birthday?", "Mother turns 70 on May 4; the party is at her house."),
    ("How do I get to the restaurant?", "Take bus 12 to Elm Street to reach the bistro for dinner."),
    ("Did the landlord fix the heating?", "The property owner repaired the radiator on Monday."),
    ("What time is the school pickup?", "The kids finish classes at 3:15; collect them at the gate."),
    ("Who handles my insurance?", "Greg Miller at Acme Cover deals with your policy and claims."),
    ("Which pharmacy has my prescription?", "Your medicine is ready at the CVS drugstore on Oak Avenue."),
    ("What car did I rent?", "They gave you a blue Toyota Corolla, plate XYZ 123."),
    ("When do the bins go out?", "Put the trash cans at the curb every Thursday before 7 am."),
]
# The same facts asked with their own words: where TF-IDF is at home.
KEYWORD = [
    "When will Dr. Patel see me?", "What is Anna's mobile?", "What is the network key?",
    "Did the courier bring the parcel?", "Which level of the airport garage did I park on?",
    "Can Tom eat peanuts?", "What did the power company charge?",
    "When does the plane to Denver depart?", "Is Maria walking Rex?", "What did Dr. Kim say?",
    "When is the pipe repair man coming?", "What's my fitness club card ID?",
    "When does mother turn 70?", "Which bus goes to Elm Street?",
    "Did the property owner repair the radiator?", "When do the kids finish classes?",
    "Who is Greg Miller?", "Is my medicine ready at the CVS?",
    "What plate is the Toyota Corolla?", "When do the trash cans go to the curb?",
]
OTHER_QUESTIONS = [
    "What did we talk about last time?", "Do I have anything planned for the weekend?",
    "Did I order the printer paper?", "What was the basketball score?", "Is my haircut booked?",
    "What recipe did you find?", "When does the train leave?", "Did the bank transfer work?",
    "What is the capital of France?", "How do I reset my voicemail PIN?",
    "Is there milk on the shopping list?", "What time is my alarm?",
    "Which books did the library renew?", "Will it snow this weekend?",
    "Did the neighbours get my note?", "How far is the office?",
    "What's my favourite music?", "Did anyone call me?", "Where is my umbrella?",
    "What did I donate to?", "Who won the election?", "How tall is Mount Everest?",
    "Can you summarise my last call?", "What's for dinner?", "Do I owe anyone money?",
    "When is the next holiday?", "What's my account balance?", "Did I water the plants?",
    "What did the supermarket say?", "Where did I book the table?",
]


def build(root: Path, rng: random.Random, calls: int, entries: int) -> tuple[Path, Path]:
    """A workspace and a call store; returns (workspace, store dir). Facts get known places."""
    ws = root / "workspace"
    (ws / "memory").mkdir(parents=True)
    notes = [f"## Note {i}\n{line(rng, BOT_T)} {line(rng, BOT_T)}" for i in range(160)]
    for i, (_, fact) in enumerate(LABELLED[:10]):
        notes.insert(rng.randrange(len(notes)), f"## Note {160 + i}\n{fact}")
    for day in range(10):
        part = notes[day * 16:(day + 1) * 16]
        (ws / "memory" / f"2024-06-{day + 1:02d}.md").write_text("\n\n".join(part) + "\n")
    (ws / "MEMORY.md").write_text("\n\n".join(notes[160:]) + "\n")

    store = SqliteCallStore(root / "store")
    planted = {rng.randrange(calls): fact for _, fact in LABELLED[10:]}
    while len(planted) < 10:  # distinct calls for the session facts
        planted = {rng.randrange(calls): fact for _, fact in LABELLED[10:]}
    for c in range(calls):
        lines: list[tuple[Speaker, str]] = [
            ("user", line(rng, USER_T)) if i % 2 == 0 else ("bot", line(rng, BOT_T))
            for i in range(entries)]
        if c in planted:
            at = rng.randrange(entries // 4) * 4 + rng.choice((0, 2))
            lines[at + 1] = ("bot", planted[c])
        started = 1_700_000_000.0 + c * 600
        store.save(Call(call_id=f"call-{c:04d}", provider="mock", direction="inbound",
                        state=CallState.COMPLETED, from_number="+15550001111",
                        to_number="+15550002222", started_at=started, session_key=SESSION,
                        transcript=tuple(TranscriptEntry(started + i, who, text)
                                         for i, (who, text) in enumerate(lines))))
    store.close()
    return ws, root / "store"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def timed(fn: Callable[[], object], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def recall(idx: ContextIndex, pairs: list[tuple[str, str]], k: int = 3) -> tuple[int, list[str]]:
    hits, misses = 0, []
    for question, fact in pairs:
        found: list[Snippet] = idx.search(question, session_key=SESSION, max_results=k)
        if any(fact in s.text for s in found):
            hits += 1
        else:
            misses.append(question)
    return hits, misses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--entries", type=int, default=40, help="transcript entries per call")
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--blas-threads", type=int, default=1,
                    help="OpenBLAS threads (0: numpy's default); the gateway uses 1")
    args = ap.parse_args()
    rng = random.Random(7)
    logging.getLogger("voicecall.memory").setLevel(logging.ERROR)  # the peer's fallback warning
    model = MiniLMEmbedder(blas_threads=args.blas_threads or None)
    t = time.perf_counter()
    model.warm()
    load_ms = (time.perf_counter() - t) * 1000
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}; BLAS threads: {args.blas_threads or 'default'}")
    print(f"model load {load_ms:.0f} ms ({model.model_id})")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ws, store_dir = build(root, rng, args.calls, args.entries)
        store = SqliteCallStore(store_dir)
        cache = root / "memory-index.sqlite"
        emb = ContextIndex(workspace=ws, store=store, cache_path=cache, embedder=model,
                           max_calls=args.calls)
        lex = ContextIndex(workspace=ws, store=store, embedder=MiniLMEmbedder(root / "none"),
                           max_calls=args.calls)
        chunks = emb.chunks(session_key=SESSION)
        n_mem = sum(c.source == "memory" for c in chunks)
        print(f"corpus: {len(chunks)} chunks ({len(chunks) - n_mem} transcript windows, "
              f"{n_mem} memory chunks)")

        texts = {t for c in chunks for t in (c.text, *c.parts)}
        t = time.perf_counter()
        emb.embed_chunks(chunks)
        cold = time.perf_counter() - t
        print(f"cold index:   {cold:.2f} s for {len(chunks)} chunks = {len(chunks) / cold:.0f} "
              f"chunks/s ({len(texts)} distinct texts incl. window entries, "
              f"{len(texts) / cold:.0f} texts/s)")
        emb.close()
        emb = ContextIndex(workspace=ws, store=store, cache_path=cache, embedder=model,
                           max_calls=args.calls)
        t = time.perf_counter()
        emb.search("warm-up question", session_key=SESSION)
        print(f"restart:      first search {(time.perf_counter() - t) * 1000:.0f} ms "
              "(vectors read back from SQLite, nothing re-embedded)")

        questions = ([q for q, _ in LABELLED] + OTHER_QUESTIONS)[:args.queries]
        it = iter(questions * 2)
        rows = [
            ("gather chunks only", timed(lambda: emb.chunks(session_key=SESSION),
                                         len(questions))),
            ("embed question only", timed(lambda: model.embed([next(it)]), len(questions))),
        ]
        it = iter(questions)
        rows.append(("search, embedding", timed(
            lambda: emb.search(next(it), session_key=SESSION), len(questions))))
        it = iter(questions)
        rows.append(("search, TF-IDF (peer)", timed(
            lambda: lex.search(next(it), session_key=SESSION), len(questions))))
        print(f"\nwarm latency over {len(questions)} questions (ms):")
        print(f"  {'':24} {'p50':>7} {'p90':>7} {'mean':>7}")
        for name, ms in rows:
            print(f"  {name:24} {pct(ms, 50):7.1f} {pct(ms, 90):7.1f} "
                  f"{statistics.fmean(ms):7.1f}")

        keyword = [(q, fact) for q, (_, fact) in zip(KEYWORD, LABELLED, strict=True)]
        for title, pairs in (("paraphrased questions (answer shares no content word)", LABELLED),
                             ("keyword questions (answer shares words)", keyword)):
            print(f"\nrecall@3 on {len(pairs)} {title}:")
            for name, idx in (("embedding", emb), ("TF-IDF (peer)", lex)):
                hits, misses = recall(idx, pairs)
                print(f"  {name:14} {hits}/{len(pairs)} = {hits / len(pairs):.2f}"
                      + (f"   missed: {'; '.join(misses)}" if misses else ""))
        emb.close()
        store.close()


if __name__ == "__main__":
    main()
