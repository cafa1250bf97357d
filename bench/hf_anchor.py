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


def attention_backends():
    """The same causal attention through each of PyTorch's SDPA backends (FlashAttention-2, cuDNN's
    fused attention, memory-efficient), to decide which design the CUDA backend should follow
    (issue 7: "FlashAttention-style tiling, or cuDNN's fused attention — measure both")."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    B, L, H, D = 4, 4096, 16, 128
    q, k, v, do = (torch.rand(B, H, L, D, device="cuda", dtype=torch.bfloat16) - 0.5
                   for _ in range(4))
    flops = 4 * B * L * L * H * D / 2
    out = []
    for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION,
                    SDPBackend.EFFICIENT_ATTENTION):
        name = str(backend).split(".")[-1].lower()
        try:
            with sdpa_kernel([backend]):
                ms = time_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))
                out.append(emit({"bench": f"attn_fwd_{name}", "ms": ms,
                                 "tflops": flops / (ms * 1e-3) / 1e12}))
                qg, kg, vg = (t.detach().requires_grad_() for t in (q, k, v))
                o = F.scaled_dot_product_attention(qg, kg, vg, is_causal=True)
                ms = time_ms(lambda: torch.autograd.grad(o, (qg, kg, vg), do, retain_graph=True))
                out.append(emit({"bench": f"attn_bwd_{name}", "ms": ms,
                                 "tflops": 2.5 * flops / (ms * 1e-3) / 1e12}))
        except Exception as e:  # a backend this build or GPU lacks: say so, measure the rest
            out.append(emit({"bench": f"attn_{name}", "error": str(e)[:200]}))
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


SHAPES = {  # config.json of Qwen/Qwen2.5-0.5B and -1.5B (bench/model_gpu.cc uses the same)
    "qwen2.5-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True),
    "qwen2.5-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                         num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=True),
}


def model_anchor(shape, seqs=4, length=4096, iters=3):
    """Whole-model anchors of bench_model_gpu: transformers Qwen2ForCausalLM with random weights,
    f32 masters under bf16 autocast, sdpa attention, fused AdamW; 4 x 4096 tokens per step.
    Training step = forward + per-token log-prob loss + backward + clip + AdamW step; log-prob =
    no-grad forward + log_softmax/gather + entropy."""
    from transformers import Qwen2Config, Qwen2ForCausalLM
    cfg = Qwen2Config(vocab_size=151936, max_position_embeddings=32768, rope_theta=1e6,
                      attn_implementation="sdpa", **SHAPES[shape])
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg).cuda().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6, fused=True)
    ids = torch.randint(0, cfg.vocab_size, (seqs, length), device="cuda")
    tokens = seqs * length
    params = sum(p.numel() for p in model.parameters())

    def logprobs(logits):
        lp = torch.log_softmax(logits[:, :-1].float(), -1)
        return lp.gather(-1, ids[:, 1:, None]).squeeze(-1)

    def train_step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(input_ids=ids).logits
        loss = -logprobs(logits).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    def logprob_step(entropy):
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(input_ids=ids).logits
            lp = logprobs(logits)
            if not entropy:
                return lp
            p = torch.softmax(logits.float(), -1)
            ent = -(p * torch.log(p.clamp_min(1e-30))).sum(-1)
        return lp, ent

    out = []
    for entropy in (False, True):
        ms = time_ms(lambda: logprob_step(entropy), warm=1, reps=iters)
        name = f"hf_logprob{'_entropy' if entropy else ''}_{shape}"
        out.append(emit({"bench": name, "tokens_per_s": tokens / ms * 1e3}))
    ms = time_ms(train_step, warm=1, reps=iters)
    out.append(emit({"bench": f"hf_train_{shape}", "tokens_per_s": tokens / ms * 1e3,
                     "params": params}))
    del model, opt
    torch.cuda.empty_cache()
    return out


def generate_anchor(shape, batch=256, prompt=128, new=256):
    """Rollout anchors of bench_rollout_gpu: transformers Qwen2ForCausalLM with random weights in
    bf16 on cuda, sdpa attention, model.generate with pure temperature-1 sampling over the full
    vocabulary (top_k=0, top_p=1) and min_new_tokens = max_new_tokens = new, so every row produces
    exactly `new` tokens (eos is a real id, masked until then). Timed with CUDA events after one
    small warm-up. Batch throughput: output tokens/s of batch x prompt -> new. Batch 1 (prompt 128,
    128 new): ms per output token end to end, and per decode step ((t(128 new) - t(1 new)) / 127)."""
    import transformers
    from transformers import Qwen2Config, Qwen2ForCausalLM
    V = 151936
    cfg = Qwen2Config(vocab_size=V, max_position_embeddings=32768, rope_theta=1e6,
                      attn_implementation="sdpa", bos_token_id=V - 3, eos_token_id=V - 1,
                      pad_token_id=V - 2, **SHAPES[shape])
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Qwen2ForCausalLM(cfg)
    model = model.to(dtype=torch.bfloat16).eval()
    gen = torch.Generator(device="cuda")
    gen.manual_seed(1)

    def run(b, p, n):
        ids = torch.randint(0, V - 3, (b, p), device="cuda", generator=gen)
        mask = torch.ones_like(ids)
        a = torch.cuda.Event(enable_timing=True)
        e = torch.cuda.Event(enable_timing=True)
        a.record()
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True,
                                 temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=n,
                                 min_new_tokens=n, eos_token_id=V - 1, pad_token_id=V - 2,
                                 use_cache=True)
        e.record()
        e.synchronize()
        produced = out.shape[1] - p
        if produced != n:
            raise RuntimeError(f"generate produced {produced} new tokens per row, asked {n}")
        return a.elapsed_time(e)

    out = []
    run(4, 16, 8)  # warm-up
    ms = run(batch, prompt, new)
    out.append(emit({"bench": f"hf_generate_{shape}", "batch": batch, "prompt": prompt,
                     "new": new, "seconds": ms / 1e3,
                     "output_tokens_per_s": batch * new / ms * 1e3,
                     "transformers": transformers.__version__}))
    run(1, 128, 8)  # warm-up at batch 1
    ms1 = run(1, 128, 1)
    ms128 = run(1, 128, 128)
    out.append(emit({"bench": f"hf_generate_b1_{shape}", "prompt": 128, "new": 128,
                     "ms_per_token": (ms128 - ms1) / 127, "ms_per_token_e2e": ms128 / 128,
                     "prefill_ms": ms1}))
    del model
    torch.cuda.empty_cache()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ours", help="bench_cuda_ops JSON lines to compare against")
    ap.add_argument("--models", nargs="*", default=None,
                    help="only the whole-model anchors of these shapes (qwen2.5-0.5b qwen2.5-1.5b)")
    ap.add_argument("--generate", nargs="*", default=None,
                    help="only the rollout (model.generate) anchors of these shapes")
    ap.add_argument("--attention-backends", action="store_true",
                    help="only causal attention through each SDPA backend (flash, cudnn, efficient)")
    args = ap.parse_args()
    if args.attention_backends:
        print(json.dumps({"torch": torch.__version__, "device": torch.cuda.get_device_name(),
                          "cudnn": torch.backends.cudnn.version()}), flush=True)
        attention_backends()
        return
    if args.generate is not None:
        print(json.dumps({"torch": torch.__version__, "device": torch.cuda.get_device_name()}),
              flush=True)
        for shape in args.generate or list(SHAPES):
            try:
                generate_anchor(shape)
            except Exception as e:
                print(json.dumps({"bench": f"hf_generate_{shape}", "error": str(e)}), flush=True)
            torch.cuda.empty_cache()
        return
    if args.models is not None:
        print(json.dumps({"torch": torch.__version__, "device": torch.cuda.get_device_name()}),
              flush=True)
        for shape in args.models or list(SHAPES):
            try:
                model_anchor(shape)
            except Exception as e:
                print(json.dumps({"bench": f"hf_model_{shape}", "error": str(e)}), flush=True)
        return
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
