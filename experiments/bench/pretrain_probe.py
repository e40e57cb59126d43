"""The pretraining probe of experiments/models/t5-tiny/README.md (stages 3-5): continue
pretraining t5-tiny in transformers + PyTorch on a GPU with a given recipe, watch the
denoising ("copy") loss on 256 validation descriptions, then fine-tune a copy of the model
for one epoch on 8,000 debsum pairs (batch 32, lr 1e-3, as the lora-vs-full preset) and
score greedy outputs on the 500 test examples with `lorabench rouge --stem`. It only
chooses a recipe in minutes of GPU time; the bundled weights are trained by lorabench.

  LB=build/lorabench python3 experiments/bench/pretrain_probe.py STEPS,LR,DENOISE,BATCH,INIT[,BIAS_RATIO] ...

INIT is `base` (the shipped weights) or `rand` (lorabench's initialisation); BIAS_RATIO is
train.position_bias_lr_ratio. EVAL_AT=1000,2000 also fine-tunes copies at those steps.
FTS lists the fine-tunes, each N:EPOCHS:LR:LORA_R (LORA_R 0: a full fine-tune; otherwise
PEFT LoRA on q,v with alpha 16, or LORA_ALPHA), e.g. FTS=8000:1:1e-3:0,20000:2:1e-3:8; the default is
8000:1:1e-3:0. FT_SEED (42) seeds their shuffling; LORAPLUS=16 gives LoRA's B matrices 16
times the rate (LoRA+); GSG=0.5 makes half of the pretraining examples PEGASUS's gap
sentences. MAXSRC (128) cuts the fine-tunes' inputs to that many tokens; FT_DROPOUT sets
the dropout of the fine-tunes; GEN_MIN=0,6 scores greedy outputs held to at least that many
new tokens, on the validation and the test split; GEN_NR=3 blocks repeated 3-grams; PKG=1
puts the package name before the description; DESCS=FILE pretrains on other descriptions
(pretraining_text()). Run from the repository root; predictions go to $OUT (or /tmp)/pred_*.jsonl.
"""
import json, math, os, random, re, subprocess, sys, time
import numpy as np, torch
from tokenizers import Tokenizer
from transformers import T5ForConditionalGeneration

M = "experiments/models/t5-tiny"; D = "experiments/data/debsum"
dev = "cuda"
tok = Tokenizer.from_file(f"{M}/tokenizer.json")
def enc(t, n):
    ids = tok.encode(t).ids
    if ids and ids[-1] == 1: ids = ids[:-1]
    return ids[: n - 1] + [1]
def rd(s): return [json.loads(l) for l in open(f"{D}/{s}.jsonl")]
train, test, val = rd("train"), rd("test"), rd("validation")
def pretraining_text():
    """The descriptions to pretrain on: the training split's, or DESCS=FILE (.jsonl, or
    .jsonl.xz) of rows with a "description", e.g. a larger train split that
    `lorabench data build-debsum --train N` writes from the same families."""
    f = os.environ.get("DESCS")
    if not f: return [r["description"] for r in train]
    import lzma
    with (lzma.open(f, "rt") if f.endswith(".xz") else open(f)) as fh:
        return [json.loads(l)["description"] for l in fh]
texts = pretraining_text()
descs = [enc(d, 128) for d in texts]
print(f"pretraining text: {len(descs)} descriptions")
vdescs = [enc(r["description"], 128) for r in val[:256]]
# ids 8000..8099 are <extra_id_99>..<extra_id_0>
def sent(i): return 8099 - i

def noise_mask(n, rng, dens=0.15, mspan=3.0):
    nn = max(1, min(n - 1, round(n * dens))); ns = max(1, round(nn / mspan)); nk = n - nn
    def seg(total, k):
        cuts = np.sort(rng.choice(np.arange(1, total), k - 1, replace=False)) if k > 1 else np.array([], int)
        return np.diff(np.concatenate([[0], cuts, [total]]))
    ns = min(ns, nn, nk)
    nl, kl = seg(nn, ns), seg(nk, ns)
    m = []
    for a, b in zip(kl, nl): m += [0] * a + [1] * b
    return np.array(m, bool)

def corrupt(ids, rng, denoise):
    body = ids[:-1]; n = len(body)
    if n < 2: return ids, ids
    m = noise_mask(n, rng)
    inp, tgt, s, prev = [], [], 0, False
    for t, x in zip(body, m):
        if x:
            if not prev: inp.append(sent(s)); tgt.append(sent(s)); s += 1
            tgt.append(t)
        else: inp.append(t)
        prev = x
    inp.append(1); tgt.append(1)
    return inp, (ids if denoise else tgt)

def words(t): return re.findall(r"\w+", t.lower())

def sentences(text): return [x for x in re.split(r"(?<=[.!?])\s+", text.strip()) if x]

def gap_sentence(text):
    """PEGASUS's gap-sentence objective on one description: the sentence with the best
    unigram F1 against the rest is replaced by <extra_id_0> in the input and becomes the
    target. None for a description of one sentence."""
    ss = sentences(text)
    if len(ss) < 2: return None
    def f1(i):
        a = set(words(ss[i])); b = set(w for k, x in enumerate(ss) if k != i for w in words(x))
        c = len(a & b); return 0.0 if not c else 2 * c / (len(a) + len(b))
    i = max(range(len(ss)), key=f1)
    part = lambda t: enc(t, 200)[:-1] if t else []
    inp = part(" ".join(ss[:i])) + [sent(0)] + part(" ".join(ss[i + 1:]))
    return inp[:127] + [1], enc(ss[i], 48)

GSG = float(os.environ.get("GSG", "0"))
gsgs = [gap_sentence(d) for d in texts] if GSG else []
if GSG:
    ok = [g for g in gsgs if g]
    first = sum(1 for d, g in zip(texts, gsgs) if g and g[1] == enc(sentences(d)[0], 48))
    print(f"gap sentences: {len(ok)} of {len(gsgs)} descriptions; the first sentence in {first}")

def pad(seqs, v=0):
    L = max(len(s) for s in seqs); return torch.tensor([s + [v] * (L - len(s)) for s in seqs])

def step_batch(model, srcs, tgts):
    x = pad(srcs).to(dev); y = pad(tgts, -100).to(dev)
    return model(input_ids=x, attention_mask=(x != 0).long(), labels=y).loss

def sched(opt, lr, warm, total, i):
    f = min(1.0, (i + 1) / max(1, warm)) if i < warm else max(0.0, (total - i) / max(1, total - warm))
    for g in opt.param_groups: g["lr"] = lr * f * g.get("mult", 1.0)

def groups(model, mult):
    rb = [p for n, p in model.named_parameters() if "relative_attention_bias" in n]
    rest = [p for n, p in model.named_parameters() if "relative_attention_bias" not in n]
    return [{"params": rest, "mult": 1.0}, {"params": rb, "mult": mult}]

def pretrain(model, steps, lr, denoise, bs, seed, mult):
    rng = np.random.default_rng(seed); random.seed(seed)
    opt = torch.optim.AdamW(groups(model, mult), lr=lr, weight_decay=0.0)
    model.train(); order = list(range(len(descs))); pos = len(order); acc = []
    for i in range(steps):
        sched(opt, lr, min(100, steps // 10), steps, i)
        if pos + bs > len(order): random.shuffle(order); pos = 0
        idx = order[pos:pos + bs]; pos += bs
        pairs = [gsgs[j] if GSG and gsgs[j] and rng.random() < GSG else
                 corrupt(descs[j], rng, rng.random() < denoise) for j in idx]
        loss = step_batch(model, [p[0] for p in pairs], [p[1] for p in pairs])
        opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step()
        acc.append(loss.item())
        if (i + 1) in EVAL_AT:
            fine_tunes(model, f"at{i+1}"); model.train()
        if (i + 1) % max(1, steps // 8) == 0:
            print(f"  pt step {i+1} loss {np.mean(acc):.3f} copy-loss {copy_loss(model):.3f}", flush=True); acc = []
            model.train()

@torch.no_grad()
def copy_loss(model):
    model.eval(); rng = np.random.default_rng(7)
    pairs = [corrupt(d, rng, True) for d in vdescs]
    return float(np.mean([step_batch(model, [p[0] for p in pairs[k:k+64]], [p[1] for p in pairs[k:k+64]]).item() for k in range(0, 256, 64)]))

def finetune_eval(model, tag, n=8000, epochs=1, lr=1e-3, bs=32, mult=1.0, lora_r=0):
    seed = int(os.environ.get("FT_SEED", "42")); random.seed(seed); torch.manual_seed(seed)
    if lora_r:  # PEFT LoRA on q,v, alpha 16 (LORA_ALPHA), dropout 0.05, as the rank-sweep preset
        from peft import LoraConfig, get_peft_model
        alpha = int(os.environ.get("LORA_ALPHA", "16"))
        model = get_peft_model(model, LoraConfig(r=lora_r, lora_alpha=alpha, lora_dropout=0.05,
                                                 target_modules=["q", "v"]))
    src_len = int(os.environ.get("MAXSRC", "128"))
    src = [enc(source(r), src_len) for r in train[:n]]
    tgt = [enc(r["synopsis"], 32) for r in train[:n]]
    drop = os.environ.get("FT_DROPOUT")
    if drop is not None:
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout): m.p = float(drop)
    plus = float(os.environ.get("LORAPLUS", "1"))  # LoRA+: B learns at this multiple of A's rate
    params = [{"params": [p for n, p in model.named_parameters() if p.requires_grad and "lora_B" not in n], "mult": 1.0},
              {"params": [p for n, p in model.named_parameters() if p.requires_grad and "lora_B" in n], "mult": plus}]
    opt = torch.optim.AdamW(params if lora_r else groups(model, mult), lr=lr, weight_decay=0.0)
    total = epochs * (n // bs); model.train(); i = 0; acc = []
    for e in range(epochs):
        order = list(range(n)); random.shuffle(order)
        for k in range(0, n - bs + 1, bs):
            sched(opt, lr, int(0.06 * total), total, i); i += 1
            b = order[k:k + bs]
            loss = step_batch(model, [src[j] for j in b], [tgt[j] for j in b])
            opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step()
            acc.append(loss.item())
    tag = f"{tag}_{n}x{epochs}_lr{lr}_r{lora_r}"
    per = n // bs  # the mean loss of each epoch, as `lorabench show` prints it
    means = " ".join(f"{np.mean(acc[e * per:(e + 1) * per]):.3f}" for e in range(epochs))
    print(f"  [{tag}] ft loss(last 50) {np.mean(acc[-50:]):.3f}  per epoch {means}", flush=True)
    for m in GEN_MIN:
        for split, rows in (("validation", val), ("test", test)):
            score(model, rows, src_len, m, f"{tag}_{split}_min{m}")

def source(r):
    """The fine-tune's input: the description, or with PKG=1 the package name before it."""
    return f"summarize: {r['package']}: {r['description']}" if PKG else "summarize: " + r["description"]

@torch.no_grad()
def score(model, rows, src_len, min_new, tag):
    """Greedy outputs for 500 rows, scored with `lorabench rouge --stem`; min_new > 0 holds
    back the end of sequence for that many tokens (transformers' min_new_tokens)."""
    model.eval(); preds = []
    for k in range(0, 500, 100):
        xs = pad([enc(source(r), src_len) for r in rows[k:k+100]]).to(dev)
        out = model.generate(input_ids=xs, attention_mask=(xs != 0).long(), max_new_tokens=32,
                             min_new_tokens=min_new, no_repeat_ngram_size=GEN_NR,
                             num_beams=1, do_sample=False)
        preds += [tok.decode([t for t in o.tolist() if t > 2]) for o in out]
    fn = f"{os.environ.get('OUT', '/tmp')}/pred_{tag}.jsonl"
    with open(fn, "w") as f:
        for p, r in zip(preds, rows[:500]): f.write(json.dumps({"prediction": p, "target": r["synopsis"]}) + "\n")
    res = subprocess.run([os.environ["LB"], "rouge", "--jsonl", fn, "--stem", "--resamples", "200"], capture_output=True, text=True).stdout.strip().splitlines()[-1]
    r1 = json.loads(res)["aggregate"]["rouge1"]["mean"][2]
    ratio = np.mean([len(p.split()) for p in preds]) / np.mean([len(r["synopsis"].split()) for r in rows[:500]])
    print(f"    {tag}: ROUGE-1 {r1:.4f}  words/reference {ratio:.2f}  e.g. {preds[0]!r} | {preds[1]!r}", flush=True)

def fine_tunes(model, tag):
    import copy
    for v in os.environ.get("FTS", "8000:1:1e-3:0").split(","):
        n, ep, lr, r = v.split(":")
        finetune_eval(copy.deepcopy(model), tag, n=int(n), epochs=int(ep), lr=float(lr), lora_r=int(r))


GEN_NR = int(os.environ.get("GEN_NR", "0"))
PKG = os.environ.get("PKG", "0") == "1"
GEN_MIN = [int(x) for x in os.environ.get("GEN_MIN", "0").split(",")]
EVAL_AT = {int(x) for x in os.environ.get("EVAL_AT", "").split(",") if x}
for cfg in sys.argv[1:]:
    steps, lr, den, bs, init, mult = (cfg.split(",") + ["1"])[:6]; mult = float(mult)
    steps, lr, den, bs = int(steps), float(lr), float(den), int(bs)
    torch.manual_seed(0); t0 = time.time()
    model = T5ForConditionalGeneration.from_pretrained(M, torch_dtype=torch.float32).to(dev)
    if init == "rand":
        model = T5ForConditionalGeneration(model.config).to(dev)
        with torch.no_grad():  # lorabench's init (Mesh TF T5 v1.1), not transformers' head std 1
            model.lm_head.weight.normal_(0, model.config.d_model ** -0.5)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "relative_attention_bias" in n:
                print(f"  {n}: max |b| {p.abs().max().item():.3f}  std over buckets {p.std(0).mean().item():.3f}")
    print(f"== {cfg}: copy-loss at start {copy_loss(model):.3f}", flush=True)
    if steps: pretrain(model, steps, lr, den, bs, 3, mult)
    fine_tunes(model, cfg.replace(",", "_"))
    print(f"  ({time.time()-t0:.0f} s)", flush=True)
