#!/usr/bin/env python3
"""Per-kernel summary of one decode step from an ncu CSV (bench/model_gpu_device_run.sh profile).

ncu --graph-profiling node --metrics gpu__time_duration.sum --csv --print-units base writes one
row per kernel launch (graph nodes included). A decode step ends with the sampler's last kernel,
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
    names = [r["Kernel Name"].split("(")[0] for r in rows]
    us = [float(r["Metric Value"].replace(",", "")) / 1000.0 for r in rows]
    ends = [i for i, n in enumerate(names) if a.step_end in n]
    if len(ends) < a.step + 1 or a.step < 1:
        sys.exit(f"{a.csv}: {len(ends)} kernels named like '{a.step_end}': cannot cut step "
                 f"{a.step} from the end")
    step = range(ends[-a.step - 1] + 1, ends[-a.step] + 1)
    agg = collections.OrderedDict()
    for i in step:
        e = agg.setdefault(names[i], [0, 0.0, rows[i]["Grid Size"] + " x " + rows[i]["Block Size"]])
        e[0] += 1
        e[1] += us[i]
    print(f"{len(step)} kernels, {sum(us[i] for i in step):.1f} us summed in isolation")
    for n, (c, t, g) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
        print(f"{t:9.1f} us {c:4d} x {t / c:7.2f} us  {n}  [{g}]")


if __name__ == "__main__":
    main()
