#!/usr/bin/env python3
"""PyTorch anchors for bench_cuda_ops, measured on the same GPU in the same device call.

Runs each workload of bench/cuda_ops.cc through PyTorch (bf16 matmul, scaled_dot_product_attention
causal forward/backward, log_softmax + gather over bf16 logits), prints one JSON line per figure,
and — given --ours FILE with bench_cuda_ops's JSON lines — a table of ours / anchor.

Timing: CUDA events around each call, median of 10 after 3 warm-ups; inputs random (never zeros).
Peak extra memory of the log-prob anchor: torch.cuda.max_memory_allocated() during the call minus
the memory held before it.
"""
import argparse
import json
import math
import sys

import torch
import torch.nn.functional as F


def time_ms(fn, warm=3, reps=10):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def emit(d):
    print(json.dumps(d), flush=True)
    return d


def gemm():
    n = 8192
    a = torch.rand(n, n, device="cuda", dtype=torch.bfloat16) * 2 - 1
    b = torch.rand(n, n, device="cuda", dtype=torch.bfloat16) * 2 - 1
    ms = time_ms(lambda: a @ b.t())
    return emit({"bench": "gemm_bf16", "anchor": "torch.matmul bf16", "ms": ms,
                 "tflops": 2 * n ** 3 / (ms * 1e-3) / 1e12})


def attention():
    B, L, H, D = 4, 4096, 16, 128
    q, k, v, do = (torch.rand(B, H, L, D, device="cuda", dtype=torch.bfloat16) - 0.5
                   for _ in range(4))
    flops = 4 * B * L * L * H * D / 2
    out = []
    ms = time_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))
    out.append(emit({"bench": "attn_fwd", "anchor": "torch sdpa (causal, bf16)", "ms": ms,
                     "tflops": flops / (ms * 1e-3) / 1e12,
                     "backend": str(torch.backends.cuda.preferred_sdp_backend()
                                    if hasattr(torch.backends.cuda, "preferred_sdp_backend")
                                    else "default")}))
    qg, kg, vg = (t.detach().requires_grad_() for t in (q, k, v))
    o = F.scaled_dot_product_attention(qg, kg, vg, is_causal=True)
    ms = time_ms(lambda: torch.autograd.grad(o, (qg, kg, vg), do, retain_graph=True))
    out.append(emit({"bench": "attn_bwd", "anchor": "torch sdpa backward", "ms": ms,
                     "tflops": 2.5 * flops / (ms * 1e-3) / 1e12}))
    return out


def logprob():
    T, V = 4 * 4096, 151936
    logits = (torch.rand(T, V, device="cuda", dtype=torch.bfloat16) * 2 - 1) * 8
    targets = torch.randint(0, V, (T,), device="cuda")

    def run():
        lp = torch.log_softmax(logits.float(), dim=-1)
        return lp.gather(-1, targets[:, None]).squeeze(-1)

    run()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    ms = time_ms(run)
    extra = torch.cuda.max_memory_allocated() - base
    return emit({"bench": "logprob_bf16", "anchor": "torch log_softmax(float) + gather", "ms": ms,
                 "tokens_per_s": T / (ms * 1e-3), "gb_per_s": T * V * 2 / (ms * 1e-3) / 1e9,
                 "peak_extra_bytes": extra, "extra_over_f32_logits": extra / (T * V * 4)})


def copy():
    n = 1 << 30
    a = torch.rand(n, device="cuda")
    b = torch.empty_like(a)
    ms = time_ms(lambda: b.copy_(a))
    return emit({"bench": "copy", "anchor": "torch copy_", "ms": ms,
                 "tb_per_s": n * 8 / (ms * 1e-3) / 1e12})


KEYS = {"gemm_bf16": "tflops", "attn_fwd": "tflops", "attn_bwd": "tflops",
        "logprob_bf16": "tokens_per_s", "copy": "tb_per_s"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ours", help="bench_cuda_ops JSON lines to compare against")
    args = ap.parse_args()
    print(json.dumps({"torch": torch.__version__, "device": torch.cuda.get_device_name()}),
          flush=True)
    anchors = {}
    for fn in (gemm, attention, logprob, copy):
        try:
            r = fn()
            for d in (r if isinstance(r, list) else [r]):
                anchors[d["bench"]] = d
        except Exception as e:  # report and keep measuring the rest
            print(json.dumps({"bench": fn.__name__, "error": str(e)}), flush=True)
        torch.cuda.empty_cache()
    if not args.ours:
        return
    ours = {}
    for line in open(args.ours):
        line = line.strip()
        if line.startswith("{"):
            d = json.loads(line)
            ours[d.get("bench")] = d
    print("\n| figure | gyre | PyTorch | gyre / PyTorch |")
    print("| --- | --- | --- | --- |")
    for name, key in KEYS.items():
        o, a = ours.get(name, {}).get(key), anchors.get(name, {}).get(key)
        ratio = f"{o / a:.2f}" if o and a else "n/a"
        fmt = (lambda x: "n/a" if x is None else f"{x:,.1f}")
        print(f"| {name} ({key}) | {fmt(o)} | {fmt(a)} | {ratio} |")
    if "logprob_bf16" in ours and "logprob_bf16" in anchors:
        print(f"| logprob peak extra / f32 [T,V] | "
              f"{ours['logprob_bf16'].get('extra_over_f32_logits', float('nan')):.2e} | "
              f"{anchors['logprob_bf16']['extra_over_f32_logits']:.2f} | goal <= 0.125 |")


if __name__ == "__main__":
    sys.exit(main())
