"""The copy-task check of experiments/models/t5-tiny/README.md: can a model be fine-tuned
to copy 6 random words? Tells an engine problem from an undertrained base model.

  python3 experiments/bench/copy_check.py data DIR      # writes DIR/{train,validation,test}.jsonl
  build/lorabench train DIR/copy.json                   # ours (the spec is written too)
  python3 experiments/bench/copy_check.py hf DIR [STEPS] [LR]   # transformers + PyTorch

Run from the repository root. The words come from the debsum training descriptions
(lower-case, alphabetic, 3 to 8 letters, the first 2,000 in sorted order), seed 1.
"""
import json
import os
import random
import sys

MODEL = "experiments/models/t5-tiny"


def make_data(out):
    random.seed(1)
    words = []
    for line in open("experiments/data/debsum/train.jsonl"):
        words += json.loads(line)["description"].split()[:30]
        if len(words) > 200000:
            break
    vocab = sorted(set(w for w in words if w.isalpha() and w.islower() and 3 <= len(w) <= 8))[:2000]
    os.makedirs(out, exist_ok=True)
    for name, n in [("train", 4000), ("validation", 100), ("test", 100)]:
        with open(os.path.join(out, name + ".jsonl"), "w") as f:
            for _ in range(n):
                src = random.choices(vocab, k=random.randint(8, 16))[:6]
                text = " ".join(src)
                f.write(json.dumps({"description": text, "synopsis": text, "package": "x"}) + "\n")
    spec = {"name": "copy-check", "base_model": os.path.abspath(MODEL), "method": "full",
            "dataset": {"path": os.path.abspath(out), "prefix": "summarize: ",
                        "max_source_tokens": 64, "max_target_tokens": 24},
            "train": {"max_steps": 300, "batch_size": 32, "lr": 0.001, "warmup": 0.06,
                      "schedule": "linear", "seed": 42, "checkpoint_every": 0},
            "eval": {"split": "validation", "limit": 100, "beams": 1, "max_new_tokens": 24},
            "threads": 2}
    with open(os.path.join(out, "copy.json"), "w") as f:
        json.dump(spec, f, indent=1)


def train_hf(data, steps, lr):
    import torch
    from transformers import (PreTrainedTokenizerFast, T5ForConditionalGeneration,
                              get_linear_schedule_with_warmup)
    torch.manual_seed(42)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    tok = PreTrainedTokenizerFast(tokenizer_file=MODEL + "/tokenizer.json", pad_token="<pad>",
                                  eos_token="</s>", unk_token="<unk>")
    model = T5ForConditionalGeneration.from_pretrained(MODEL, torch_dtype=torch.float32).to(dev)
    tr = [json.loads(l) for l in open(os.path.join(data, "train.jsonl"))]
    va = [json.loads(l) for l in open(os.path.join(data, "validation.jsonl"))]
    bs = 32
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    sch = get_linear_schedule_with_warmup(opt, int(0.06 * steps), steps)
    g = torch.Generator().manual_seed(0)
    model.train()
    acc = 0.0
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(tr), (bs,), generator=g).tolist()
        enc = tok(["summarize: " + tr[i]["description"] for i in idx], return_tensors="pt",
                  padding=True, truncation=True, max_length=64).to(dev)
        lab = tok([tr[i]["synopsis"] for i in idx], return_tensors="pt", padding=True,
                  truncation=True, max_length=24).input_ids.to(dev)
        lab[lab == tok.pad_token_id] = -100
        out = model(**enc, labels=lab)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sch.step()
        opt.zero_grad()
        acc += out.loss.item()
        if step % 25 == 0:
            print(f"step {step} loss {acc / 25:.3f}", flush=True)
            acc = 0.0
    model.eval()
    enc = tok(["summarize: " + x["description"] for x in va[:6]], return_tensors="pt", padding=True).to(dev)
    with torch.no_grad():
        gen = model.generate(**enc, max_new_tokens=24, num_beams=1, do_sample=False)
    for x, text in zip(va[:6], tok.batch_decode(gen, skip_special_tokens=True)):
        print(repr(x["synopsis"]), "->", repr(text))


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("data", "hf"):
        sys.exit(__doc__)
    if sys.argv[1] == "data":
        make_data(sys.argv[2])
    else:
        train_hf(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 300,
                 float(sys.argv[4]) if len(sys.argv) > 4 else 1e-3)
