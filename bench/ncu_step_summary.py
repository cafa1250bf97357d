#!/usr/bin/env python3
"""Per-kernel summary of one decode step from an ncu CSV (bench/model_gpu_device_run.sh profile).

ncu --graph-profiling node --metrics gpu__time_duration.sum[,dram__bytes_read.sum] --csv
--print-units base writes one row per kernel launch and metric (graph nodes included); with the
DRAM metric each kernel's read bytes and bandwidth are printed too. A decode step ends with the sampler's last kernel,
so the launches between the last two occurrences of `--step-end` (a substring of that kernel's
name) are one step. Prints, per kernel name, calls, total and mean microseconds and the grid, then
the step's sum — durations measured in isolation (ncu serialises launches), so the sum is an
upper bound on the step's GPU time without the launch gaps.

--step K picks the K-th step from the end (default 1: the last one; a batch run's last steps may
hold only the requests that finished last, so pick one from the middle there).

Usage: ncu_step_summary.py FILE.csv [--step-end pick_kernel] [--step K]
"""
import argparse
import collections
import csv
import io
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--step-end", default="pick_kernel")
    ap.add_argument("--step", type=int, default=1)
    a = ap.parse_args()
    lines = open(a.csv, errors="replace").read().splitlines()
    starts = [i for i, l in enumerate(lines) if l.startswith('"ID"')]
    if not starts:
        sys.exit(f"{a.csv}: no ncu CSV header (\"ID\",...) found")
    rows = list(csv.DictReader(io.StringIO("\n".join(lines[starts[0]:]))))
    # One row per (launch, metric): gather each launch's metrics by its ID, in launch order.
    launches = collections.OrderedDict()
    for r in rows:
        e = launches.setdefault(r["ID"], {"name": r["Kernel Name"].split("(")[0],
                                          "grid": r["Grid Size"] + " x " + r["Block Size"]})
        e[r["Metric Name"]] = float(r["Metric Value"].replace(",", ""))
    launches = list(launches.values())
    names = [e["name"] for e in launches]
    us = [e.get("gpu__time_duration.sum", 0.0) / 1000.0 for e in launches]
    dram = [e.get("dram__bytes_read.sum") for e in launches]
    ends = [i for i, n in enumerate(names) if a.step_end in n]
    if len(ends) < a.step + 1 or a.step < 1:
        sys.exit(f"{a.csv}: {len(ends)} kernels named like '{a.step_end}': cannot cut step "
                 f"{a.step} from the end")
    step = range(ends[-a.step - 1] + 1, ends[-a.step] + 1)
    agg = collections.OrderedDict()
    for i in step:
        e = agg.setdefault(names[i], [0, 0.0, launches[i]["grid"], 0.0])
        e[0] += 1
        e[1] += us[i]
        e[3] += dram[i] or 0.0
    with_dram = any(d is not None for d in dram)
    total_bytes = sum(dram[i] or 0.0 for i in step)
    print(f"{len(step)} kernels, {sum(us[i] for i in step):.1f} us summed in isolation"
          + (f", {total_bytes / 1e9:.3f} GB read from DRAM" if with_dram else ""))
    for n, (c, t, g, b) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
        # dram__bytes_read / time: the kernel's achieved read bandwidth (H200: ~4.2 TB/s copy).
        bw = f"  {b / c / 1e6:8.3f} MB {b / (t * 1e-6) / 1e12:5.2f} TB/s" if with_dram and t else ""
        print(f"{t:9.1f} us {c:4d} x {t / c:7.2f} us{bw}  {n}  [{g}]")

if __name__ == "__main__":
    main()
