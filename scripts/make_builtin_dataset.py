"""Generate the preference dataset shipped as `builtin:prefs` (sweep/assets/prefs/).

Each pair answers one small task (arithmetic, string edits, counting, comparison). The
chosen answer is correct and concise; the rejected one has a systematic flaw:

- `wrong` (70%):    same format, wrong content (an off-by-some sum, an unreversed word, ...);
- `rambling` (30%): the right content buried in filler ("Hmm, let me think...").

Both are real, learnable preference signals of different difficulty: a tiny model picks
up "no filler" within a few dozen DPO steps, "correct content" much more slowly. That
spread is what makes a beta / loss sweep on this data show real differences.

Deterministic: `python scripts/make_builtin_dataset.py` rewrites the same files.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "sweep" / "assets" / "prefs"
SEED = 1234
N_TRAIN, N_EVAL = 2000, 400
RAMBLING_SHARE = 0.3  # the rest are `wrong`: the harder signal that separates configurations

CONSONANTS, VOWELS = "bcdfghklmnprstvz", "aeiou"
FILLERS = [
    "Hmm, let me think about that for a moment. I believe the answer is {a}, but I am not completely sure.",
    "Well, that is an interesting question! After some thought, I would say {a}, if I remember correctly.",
    "Okay, so basically, to be honest, the answer should probably be {a}, more or less, I think.",
    "Let me see... there are many ways to look at this. In the end, it is {a}, as far as I can tell.",
]


def word(rng: random.Random) -> str:
    return "".join(rng.choice(CONSONANTS) + rng.choice(VOWELS) for _ in range(rng.randint(2, 3)))


def task(rng: random.Random) -> tuple[str, str, str, str]:
    """Return (kind, prompt, correct answer, wrong answer)."""
    kind = rng.choice(["add", "reverse", "upper", "count", "max"])
    if kind == "add":
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        return kind, f"What is {a} + {b}?", str(a + b), str(a + b + rng.choice([-10, -2, -1, 1, 2, 10]))
    if kind == "reverse":
        w = word(rng)
        return kind, f"Reverse the word: {w}", w[::-1], w
    if kind == "upper":
        w = word(rng)
        return kind, f"Write in capitals: {w}", w.upper(), w
    if kind == "count":
        w = word(rng)
        return kind, f"How many letters are in {w}?", str(len(w)), str(len(w) + rng.choice([-1, 1, 2]))
    a, b = rng.sample(range(100), 2)
    return kind, f"Which is larger, {a} or {b}?", str(max(a, b)), str(min(a, b))


def pair(rng: random.Random) -> dict:
    kind, prompt, good, bad = task(rng)
    flaw = "rambling" if rng.random() < RAMBLING_SHARE else "wrong"
    rejected = bad if flaw == "wrong" else rng.choice(FILLERS).format(a=good)
    return {
        "prompt": [{"role": "user", "content": prompt}],
        "chosen": [{"role": "assistant", "content": good}],
        "rejected": [{"role": "assistant", "content": rejected}],
        "task": kind,
        "flaw": flaw,
    }


def main() -> None:
    rng = random.Random(SEED)
    rows, seen = [], set()
    while len(rows) < N_TRAIN + N_EVAL:
        row = pair(rng)
        key = row["prompt"][0]["content"]
        if key in seen:  # no prompt appears in both splits
            continue
        seen.add(key)
        rows.append(row)
    OUT.mkdir(parents=True, exist_ok=True)
    for split, part in (("train", rows[:N_TRAIN]), ("test", rows[N_TRAIN:])):
        with open(OUT / f"{split}.jsonl", "w") as f:
            for row in part:
                f.write(json.dumps(row) + "\n")
    print(f"wrote {N_TRAIN} train and {N_EVAL} test pairs to {OUT}")


if __name__ == "__main__":
    main()
