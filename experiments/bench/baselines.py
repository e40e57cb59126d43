"""Extractive baselines for debsum: how far simple rules get without a model, so that a
fine-tune's ROUGE-1 has something to be read against (experiments/models/t5-tiny/README.md).

  python3 experiments/bench/baselines.py [build/lorabench] [test|validation]

lead-K: the first K words of the description (lead-8 is the baseline the README quotes).
clause-K: the first sentence without its opening "<name> is a" / "provides the" etc.,
first K words: the rule a person would write after reading a few synopses.
Scored with `lorabench rouge --stem` (stemmed ROUGE-1 F, 95% bootstrap interval).
"""
import json
import os
import re
import subprocess
import sys
import tempfile

LB = sys.argv[1] if len(sys.argv) > 1 else "build/lorabench"
SPLIT = sys.argv[2] if len(sys.argv) > 2 else "test"
ROWS = [json.loads(l) for l in open(f"experiments/data/debsum/{SPLIT}.jsonl")]
OPENING = re.compile(r"\b(is|are|provides|contains|offers|implements)\s+(an?|the)?\s*")


def lead(d, k):
    return " ".join(d.split()[:k])


def clause(d, k):
    first = re.split(r"(?<=[.!?])\s+", d.strip())[0]
    m = OPENING.search(first)
    if m and m.start() < 60:
        first = first[m.end():]
    return " ".join(first.rstrip(".").split()[:k])


def rouge1(rule):
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for r in ROWS:
            f.write(json.dumps({"prediction": rule(r["description"]), "target": r["synopsis"]}) + "\n")
    out = subprocess.run([LB, "rouge", "--jsonl", f.name, "--stem"], capture_output=True, text=True,
                         check=True).stdout.strip().splitlines()[-1]
    os.unlink(f.name)
    r1 = json.loads(out)["aggregate"]["rouge1"]
    return r1["mean"][2], r1["low"][2], r1["high"][2]


print(f"| rule ({SPLIT}, {len(ROWS)} examples) | ROUGE-1 (95% interval) |\n|---|---:|")
for name, fn, ks in [("lead", lead, (4, 6, 8, 10, 12)), ("clause", clause, (6, 8, 10, 12))]:
    for k in ks:
        m, lo, hi = rouge1(lambda d, k=k, fn=fn: fn(d, k))
        print(f"| {name}-{k} | {m:.4f} ({lo:.3f}–{hi:.3f}) |")
