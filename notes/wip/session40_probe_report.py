#!/usr/bin/env python3
"""Session 40 diagnostic: per-phase timeline of the streamed decode GEMVs of one batch-1 step,
from the GYRE_GEMV_STREAM_PROBE dump (notes/wip/session40_probe.patch). Usage: PREFIX LAYERS."""
import sys
import numpy as np

prefix, layers = sys.argv[1], int(sys.argv[2])
meta = {}
for line in open(prefix + ".txt"):
    f = line.split()
    meta[int(f[0])] = (f[1], int(f[2]), int(f[3]), int(f[4]), int(f[5]), int(f[6]))
a = np.fromfile(prefix + ".bin", dtype=np.uint64).reshape(1024, 528, 8).astype(np.int64)
launches = []
for seq, (name, grid, M, N, K, ring) in meta.items():
    b = a[seq, :grid]
    if M != 1 or (b[:, 6] == 0).any():
        continue
    launches.append((int(b[:, 0].min()), seq, name, grid, N, K, ring, b))
launches.sort()
last = launches[-4 * layers:]
t_ref = last[0][0]
d = np.diff(np.sort(a[a[:, :, 0] > 0][:, 0]))
print("globaltimer: smallest nonzero step between block starts %d ns" % d[d > 0].min())
print("launch names of the last step:", " ".join(l[2].replace("gemv_stream_", "") for l in last[:4]))
rows = {}
prev_end = None
for i, (t0, seq, name, grid, N, K, ring, b) in enumerate(last):
    kind = ["qkv", "o_proj", "gate_up", "down"][i % 4]
    start, end = b[:, 0].min(), b[:, 6].max()
    rel = (lambda t: (t - prev_end) / 1000.0) if prev_end is not None else None
    r = dict(
        dur=(end - start) / 1e3,
        start_rel=rel(start) if rel else np.nan,
        last_start_rel=rel(b[:, 0].max()) if rel else np.nan,
        wait_first=rel(b[:, 2].min()) if rel else np.nan,
        wait_med=rel(np.median(b[:, 2])) if rel else np.nan,
        wait_last=rel(b[:, 2].max()) if rel else np.nan,
        rstd_med=np.median(b[:, 3] - b[:, 2]) / 1e3,
        stage_med=np.median(b[:, 4] - b[:, 3]) / 1e3,
        data_wait_med=np.median(b[:, 5] - b[:, 4]) / 1e3,
        compute_med=np.median(b[:, 6] - b[:, 5]) / 1e3,
        compute_max=(b[:, 6] - b[:, 5]).max() / 1e3,
        end_rel=rel(end) if rel else np.nan,
        late_blocks=int((b[:, 0] > prev_end).sum()) if prev_end is not None else 0,
        grid=grid, ring=ring, NK="%dx%d" % (N, K))
    rows.setdefault(kind, []).append(r)
    prev_end = end
print("step span of the %d GEMVs: %.1f us" % (len(last), (last[-1][7][:, 6].max() - t_ref) / 1e3))
print("us; *_rel = since the previous GEMV's last block ended (q/k/v: since down of the layer before;")
print("o_proj: since q/k/v ended, the attention and combine lie between)")
keys = ["start_rel", "last_start_rel", "wait_first", "wait_med", "wait_last", "rstd_med",
        "stage_med", "data_wait_med", "compute_med", "compute_max", "end_rel", "dur", "late_blocks"]
print("%-8s %s" % ("kind", " ".join("%14s" % k for k in keys)))
for kind in ["qkv", "o_proj", "gate_up", "down"]:
    rs = rows.get(kind, [])[1:]  # skip layer 0 (no predecessor GEMV for q/k/v)
    if not rs:
        continue
    print("%-8s %s   grid %d ring %d %s" % (kind, " ".join(
        "%14.2f" % np.nanmedian([r[k] for r in rs]) for k in keys), rs[0]["grid"], rs[0]["ring"],
        rs[0]["NK"]))
