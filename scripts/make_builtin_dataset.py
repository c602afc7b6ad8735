"""Generate the preference dataset shipped as `builtin:prefs` (sweep/assets/prefs/).

Each pair answers one small task with one right answer, kept in the column `answer` so a
verifiable scorer (`builtin:verifiable`) can grade what a model says:

- larger/smaller: "Which is larger, 33 or 43?" -> 43
- animal/fruit:   "Which one is an animal: pear or fox?" -> fox
- first/last:     "Say the last word of: owl fig cat" -> cat

The chosen answer is correct and concise; the rejected one has a systematic flaw:

- `wrong` (60%):    the other option (the smaller number, the fruit, the first word);
- `rambling` (40%): the right answer followed by hedging ("cat, I think, but I am not sure."),
  the way the SFT model (builtin.py) answers some tasks.

Deterministic: `python scripts/make_builtin_dataset.py [OUT_DIR]` writes the same files
(default: the shipped ones).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from sweep.builtin import FILLERS  # noqa: E402  (the SFT model's own hedging)

OUT = REPO / "sweep" / "assets" / "prefs"
SEED = 1234
N_TRAIN, N_EVAL = 2000, 400
RAMBLING_SHARE = 0.4
ANIMALS = "cat dog cow pig fox owl bee ant bat hen eel yak emu ape elk ram".split()
FRUITS = "apple pear plum fig lime kiwi date peach melon grape mango lemon cherry berry olive guava".split()
KINDS = ("larger", "smaller", "animal", "fruit", "first", "last")


def task(rng: random.Random) -> tuple[str, str, str, str]:
    """Return (kind, prompt, correct answer, wrong answer)."""
    kind = rng.choice(KINDS)
    if kind in ("larger", "smaller"):
        a, b = rng.sample(range(10, 100), 2)
        good, bad = (max(a, b), min(a, b)) if kind == "larger" else (min(a, b), max(a, b))
        return kind, f"Which is {kind}, {a} or {b}?", str(good), str(bad)
    if kind in ("animal", "fruit"):
        animal, fruit = rng.choice(ANIMALS), rng.choice(FRUITS)
        x, y = (animal, fruit) if rng.random() < 0.5 else (fruit, animal)
        good, bad = (animal, fruit) if kind == "animal" else (fruit, animal)
        return kind, f"Which one is {'an animal' if kind == 'animal' else 'a fruit'}: {x} or {y}?", good, bad
    words = rng.sample(ANIMALS + FRUITS, 3)
    good, bad = (words[0], words[2]) if kind == "first" else (words[2], words[0])
    return kind, f"Say the {kind} word of: {' '.join(words)}", good, bad


def pair(rng: random.Random) -> dict:
    kind, prompt, good, bad = task(rng)
    flaw = "rambling" if rng.random() < RAMBLING_SHARE else "wrong"
    rejected = bad if flaw == "wrong" else good + rng.choice(FILLERS)
    return {
        "prompt": [{"role": "user", "content": prompt}],
        "chosen": [{"role": "assistant", "content": good}],
        "rejected": [{"role": "assistant", "content": rejected}],
        "answer": good,
        "task": kind,
        "flaw": flaw,
    }


def main(out: Path = OUT) -> None:
    rng = random.Random(SEED)
    rows, seen = [], set()
    while len(rows) < N_TRAIN + N_EVAL:
        row = pair(rng)
        key = row["prompt"][0]["content"]
        if key in seen:  # no prompt appears in both splits
            continue
        seen.add(key)
        rows.append(row)
    out.mkdir(parents=True, exist_ok=True)
    for split, part in (("train", rows[:N_TRAIN]), ("test", rows[N_TRAIN:])):
        with open(out / f"{split}.jsonl", "w") as f:
            for row in part:
                f.write(json.dumps(row) + "\n")
    print(f"wrote {N_TRAIN} train and {N_EVAL} test pairs to {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
