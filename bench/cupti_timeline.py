#!/usr/bin/env python3
"""Reads a GPU timeline written by bench/cupti_trace (LD_PRELOAD=libgyre_cupti_trace.so) and says
where a repeated step's wall time goes: GPU busy vs idle, the idle gaps (between which GPU ops,
and what the host was doing: a late launch, a synchronisation), time per kernel name, memsets and
copies, and the host's synchronising calls.

Steps are delimited by a marker: a regular expression matching the kernels that end each step
(e.g. the optimizer's, "adamw"); marker kernels less than --burst-ms apart form one burst, and a
step runs from the end of one burst to the end of the next. The last --steps complete steps are
reported.

Usage: python3 bench/cupti_timeline.py TRACE.csv --marker adamw [--steps 2] [--gap-us 4]
"""
import argparse
import bisect
import csv
import re
import subprocess
import sys
from collections import defaultdict

SYNC_APIS = re.compile(
    r"(StreamSynchronize|DeviceSynchronize|EventSynchronize|CtxSynchronize|"
    r"^cudaMemcpy$|^cudaMemcpy_v|^cuMemcpyDtoH|^cuMemcpyHtoD_v|^cudaMalloc|^cuMemAlloc|"
    r"^cudaFree|^cuMemFree)")


def demangle(names):
    names = sorted(set(names))
    try:
        out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True,
                             check=True).stdout.split("\n")
        return {n: d for n, d in zip(names, out)}
    except (OSError, subprocess.CalledProcessError):
        return {n: n for n in names}


def short(name, width=70):
    name = name.replace("(anonymous namespace)::", "")
    name = re.sub(r"\(.*", "", name)  # drop the argument list
    name = re.sub(r"^void ", "", name)
    return name if len(name) <= width else name[:width - 3] + "..."


def load(path):
    gpu, host = [], []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            rec = (int(row["start_ns"]), int(row["end_ns"]), row["name"], row["kind"],
                   int(row["correlation"] or 0))
            (gpu if row["kind"] in ("kernel", "memcpy", "memset") else host).append(rec)
    gpu.sort()
    host.sort()
    return gpu, host


def steps_from_marker(gpu, marker, burst_ns):
    ends = []
    for s, e, name, kind, _ in gpu:
        if kind == "kernel" and marker.search(name):
            if ends and s - ends[-1] < burst_ns:
                ends[-1] = max(ends[-1], e)
            else:
                ends.append(e)
    return list(zip(ends, ends[1:]))


def report(gpu, host, lo, hi, gap_ns, names, launch_of, top):
    inside = [g for g in gpu if g[1] > lo and g[0] < hi]
    busy, cursor, gaps = 0, lo, []
    prev_name = "(step start)"
    for s, e, name, kind, corr in inside:
        s, e = max(s, lo), min(e, hi)
        if s > cursor:
            if s - cursor >= gap_ns:
                gaps.append((s - cursor, cursor, s, prev_name, name, corr))
        if e > cursor:
            busy += e - max(s, cursor)
            cursor = e
            prev_name = name
    wall = hi - lo
    print(f"step {wall / 1e6:.3f} ms: GPU busy {busy / 1e6:.3f} ms, idle {(wall - busy) / 1e6:.3f} "
          f"ms ({100.0 * (wall - busy) / wall:.1f}%); {len(gaps)} gaps >= {gap_ns / 1e3:.0f} us "
          f"holding {sum(g[0] for g in gaps) / 1e6:.3f} ms")
    # A gap whose next GPU op was launched (host API call started) after the gap began: the GPU
    # waited for the host.
    late = 0
    for g in gaps:
        api = launch_of.get(g[5])
        if api and api[0] > g[1]:
            late += g[0]
    print(f"  of which the next op's launch call began after the GPU went idle (host late): "
          f"{late / 1e6:.3f} ms")
    by_next = defaultdict(lambda: [0, 0])
    for g in gaps:
        k = short(names.get(g[4], g[4]), 60)
        by_next[k][0] += 1
        by_next[k][1] += g[0]
    print("  idle before (next GPU op), summed:")
    for k, (n, t) in sorted(by_next.items(), key=lambda kv: -kv[1][1])[:top]:
        print(f"    {t / 1e3:9.1f} us  {n:4d} gaps  {k}")
    print(f"  largest gaps (us, after -> before; host calls overlapping the gap):")
    starts = [h[0] for h in host]
    for dur, s, e, pn, nn, corr in sorted(gaps, reverse=True)[:top]:
        i = bisect.bisect_left(starts, s - 50_000_000)
        calls = [h for h in host[i:] if h[0] < e and h[1] > s and h[0] < e][:200]
        calls.sort(key=lambda h: -(min(h[1], e) - max(h[0], s)))
        desc = ", ".join(f"{h[2]} {(min(h[1], e) - max(h[0], s)) / 1e3:.0f}" for h in calls[:3])
        api = launch_of.get(corr)
        lag = f"launch call +{(api[0] - s) / 1e3:.0f} us" if api else "launch call ?"
        print(f"    {dur / 1e3:8.1f}  {short(names.get(pn, pn), 45)} -> "
              f"{short(names.get(nn, nn), 45)}  [{lag}; {desc}]")
    per = defaultdict(lambda: [0, 0])
    for s, e, name, kind, _ in inside:
        k = short(names.get(name, name), 70) if kind == "kernel" else kind + " " + name
        per[k][0] += 1
        per[k][1] += min(e, hi) - max(s, lo)
    print("  GPU time per op (us, count):")
    for k, (n, t) in sorted(per.items(), key=lambda kv: -kv[1][1])[:top + 10]:
        print(f"    {t / 1e3:10.1f}  {n:5d}  {k}")
    syncs = defaultdict(lambda: [0, 0])
    for s, e, name, kind, _ in host:
        if s >= lo and s < hi and SYNC_APIS.search(name):
            syncs[name][0] += 1
            syncs[name][1] += e - s
    if syncs:
        print("  host synchronising / allocating calls in the step (count, host ms):")
        for k, (n, t) in sorted(syncs.items(), key=lambda kv: -kv[1][1]):
            print(f"    {n:5d}  {t / 1e6:8.3f}  {k}")


def critical(gpu, steps, names, top):
    """Where the steps' wall time goes when kernels overlap (PDL lets a kernel start, and load its
    weights, while its predecessor runs): walking the GPU ops in order of their end, each adds
    max(0, its end - the latest end before it) to the step, and idle time before an op whose start
    is past that latest end counts as a gap. The sums per name add up to the steps' wall time."""
    add = defaultdict(lambda: [0, 0, 0])  # name -> [count, added ns, own duration ns]
    idle, wall = 0, 0
    for lo, hi in steps:
        wall += hi - lo
        inside = sorted((g for g in gpu if g[1] > lo and g[1] <= hi), key=lambda g: g[1])
        latest = lo
        for s, e, name, kind, _ in inside:
            k = short(names.get(name, name), 70) if kind == "kernel" else kind
            if s > latest:
                idle += s - latest
                latest = s
            add[k][0] += 1
            add[k][1] += max(0, e - latest)
            add[k][2] += e - max(s, lo)
            latest = max(latest, e)
        idle += max(0, hi - latest)
    n = len(steps)
    print(f"critical path over {n} steps ({wall / n / 1e3:.1f} us a step): idle "
          f"{idle / n / 1e3:.1f} us a step; per op name, us a step added past the earlier ops' "
          f"end (own duration, calls a step):")
    for k, (c, t, d) in sorted(add.items(), key=lambda kv: -kv[1][1])[:top + 10]:
        print(f"    {t / n / 1e3:9.1f}  ({d / n / 1e3:8.1f}, {c / n:6.1f})  {k}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trace")
    ap.add_argument("--marker", required=True, help="regex of the kernels that end each step")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--burst-ms", type=float, default=5.0)
    ap.add_argument("--gap-us", type=float, default=4.0)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--intervals", action="store_true",
                    help="also print every step's length in order (ms), to find slow steps "
                         "that the last --steps do not show")
    ap.add_argument("--critical", action="store_true",
                    help="also print, summed over the last --steps steps, how much each kernel "
                         "name extends the step past every earlier kernel's end (kernels that "
                         "overlap under programmatic dependent launch count only what they add)")
    a = ap.parse_args()
    gpu, host = load(a.trace)
    if not gpu:
        sys.exit(f"{a.trace}: no GPU activity recorded (was the program run with "
                 f"LD_PRELOAD=libgyre_cupti_trace.so and GYRE_CUPTI_TRACE set?)")
    names = demangle(g[2] for g in gpu if g[3] == "kernel")
    marker = re.compile(a.marker)
    demangled_marker = [g for g in gpu if g[3] == "kernel" and marker.search(names[g[2]])]
    # Match the marker against demangled names too.
    gpu_m = [(s, e, names.get(n, n) if k == "kernel" else n, k, c) for s, e, n, k, c in gpu]
    steps = steps_from_marker(gpu_m, marker, a.burst_ms * 1e6)
    if not demangled_marker or not steps:
        sys.exit(f"{a.trace}: fewer than two bursts of kernels matching '{a.marker}'")
    launch_of = {}
    for s, e, name, kind, corr in host:
        if "Launch" in name or "Memset" in name or "Memcpy" in name or "GraphLaunch" in name:
            launch_of.setdefault(corr, (s, e, name))
    print(f"{a.trace}: {len(gpu)} GPU records, {len(host)} host API calls, {len(steps)} steps "
          f"between '{a.marker}' bursts; the last {min(a.steps, len(steps))}:")
    if a.intervals:
        lengths = [(hi - lo) / 1e6 for lo, hi in steps]
        srt = sorted(lengths)
        print(f"step lengths (ms), {len(lengths)} steps: median {srt[len(srt) // 2]:.3f}, "
              f"mean {sum(lengths) / len(lengths):.3f}, max {srt[-1]:.3f}")
        print("  " + " ".join(f"{x:.3f}" for x in lengths))
        slow = sorted(range(len(steps)), key=lambda i: -lengths[i])[:3]
        for i in sorted(slow):
            print(f"slow step {i} ({lengths[i]:.3f} ms):")
            report(gpu, host, steps[i][0], steps[i][1], a.gap_us * 1e3, names, launch_of, a.top)
    for lo, hi in steps[-a.steps:]:
        report(gpu, host, lo, hi, a.gap_us * 1e3, names, launch_of, a.top)
    if a.critical:
        # Decode steps only: a step holding a prefill or a request boundary (longer than 1.25x
        # the median) would put the prefill's kernels into the per-step sums.
        last = steps[-a.steps:]
        med = sorted(hi - lo for lo, hi in last)[len(last) // 2]
        kept = [(lo, hi) for lo, hi in last if hi - lo <= 1.25 * med]
        print(f"critical path: {len(last) - len(kept)} of the last {len(last)} steps left out "
              f"(longer than 1.25x their median {med / 1e6:.3f} ms)")
        critical(gpu, kept, names, a.top)


if __name__ == "__main__":
    main()
