#!/usr/bin/env python3
"""Hugging Face transformers + PEFT side of `lorabench bench`: the same configurations on
the same shape (FLAN-T5-small by default, random weights), one JSON line per configuration.

Each configuration runs in its own subprocess so that peak RSS (resource.getrusage) is its
own. Needs only torch, transformers and peft.

  python3 experiments/bench/hf_bench.py --threads 2 --steps 3
  python3 experiments/bench/hf_bench.py --config lora-qv --threads 2   # one configuration

Configurations: forward (model.eval(), torch.no_grad()), lora-qv (r=8, alpha=16, q,v),
lora-all (r=8 on q,k,v,o,wi_0,wi_1,wo), full (AdamW on every parameter). Training runs in
model.train() (dropout 0.1 as FLAN-T5's config) with AdamW lr 1e-3 and gradient clipping at
1.0, the same work as lorabench's train_step.

--autocast bf16 runs the forward (and so the backward) under
torch.autocast("cpu", dtype=torch.bfloat16): PyTorch's mixed precision on the CPU, the
peer of lorabench's `--precision bf16` (parameters, gradients and optimizer stay fp32).
Its lines say "impl": "hf-bf16".
"""
import contextlib
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

CONFIGS = ["forward", "lora-qv", "lora-all", "full"]

SHAPES = {
    "flan-t5-small": dict(vocab_size=32128, d_model=512, d_kv=64, d_ff=1024, num_layers=8,
                          num_decoder_layers=8, num_heads=6),
    "flan-t5-base": dict(vocab_size=32128, d_model=768, d_kv=64, d_ff=2048, num_layers=12,
                         num_decoder_layers=12, num_heads=12),
}


def peak_rss_mb():
    # ru_maxrss is in kilobytes on Linux (bytes on macOS)
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024.0 * 1024.0) if sys.platform == "darwin" else r / 1024.0


def run_one(args):
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from transformers import T5Config, T5ForConditionalGeneration

    cfg = T5Config(**SHAPES[args.shape], relative_attention_num_buckets=32,
                   relative_attention_max_distance=128, feed_forward_proj="gated-gelu",
                   layer_norm_epsilon=1e-6, tie_word_embeddings=False, dropout_rate=0.1,
                   pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    model = T5ForConditionalGeneration(cfg)
    B, S, T = args.batch, args.src, args.tgt
    g = torch.Generator().manual_seed(12345)
    input_ids = torch.randint(3, cfg.vocab_size, (B, S), generator=g)
    attention_mask = torch.ones(B, S, dtype=torch.long)
    labels = torch.randint(3, cfg.vocab_size, (B, T), generator=g)
    trainable = 0
    opt = None
    if args.config.startswith("lora"):
        from peft import LoraConfig, get_peft_model

        targets = ["q", "v"] if args.config == "lora-qv" else ["q", "k", "v", "o", "wi_0", "wi_1", "wo"]
        lc = LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.0,
                        target_modules=targets, task_type="SEQ_2_SEQ_LM")
        model = get_peft_model(model, lc)
    if args.config != "forward":
        params = [p for p in model.parameters() if p.requires_grad]
        trainable = sum(p.numel() for p in params)
        opt = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
        model.train()
    else:
        model.eval()

    def amp():
        if args.autocast == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step():
        if opt is None:
            with torch.no_grad(), amp():
                return model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        with amp():
            out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        return out.loss.detach()

    times = []
    loss = None
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        loss = step()
        dt = time.perf_counter() - t0
        if i >= args.warmup:
            times.append(dt)
    s = statistics.median(times)
    print(json.dumps({
        "impl": "hf-bf16" if args.autocast == "bf16" else "hf", "config": args.config, "shape": args.shape, "batch": B, "src": S, "tgt": T,
        "threads": args.threads, "steps": args.steps, "s_per_step": round(s, 4),
        "tokens_per_s": round(B * (S + T) / s, 1), "peak_rss_mb": round(peak_rss_mb()),
        "trainable": trainable, "loss": round(float(loss), 4),
        "torch": torch.__version__, "transformers": __import__("transformers").__version__,
        "peft": __import__("peft").__version__ if args.config.startswith("lora") else None,
    }), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=CONFIGS, help="run one configuration in this process")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="flan-t5-small")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--src", type=int, default=256)
    ap.add_argument("--tgt", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--autocast", choices=["none", "bf16"], default="none",
                    help="bf16: torch.autocast(\"cpu\", dtype=torch.bfloat16) around the forward")
    args = ap.parse_args()
    if args.config:
        run_one(args)
        return 0
    rc = 0
    for c in CONFIGS:  # one subprocess each: peak RSS per configuration
        cmd = [sys.executable, os.path.abspath(__file__), "--config", c]
        for k in ("shape", "rank", "batch", "src", "tgt", "steps", "warmup", "threads", "autocast"):
            cmd += ["--" + k, str(getattr(args, k))]
        r = subprocess.run(cmd)
        if r.returncode:
            print(f"hf_bench: configuration {c} failed (exit {r.returncode})", file=sys.stderr)
            rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
