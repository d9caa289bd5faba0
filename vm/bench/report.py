#!/usr/bin/env python3
"""Results of the benchmark suite (vm/bench/suite.sh, ci/bench.sh suite|smoke).

  report.py summarize RECORDS.jsonl SUITE.json [KEY=VALUE...]
      (guest, standard library) medians and spread of the records, the
      targets of the design; KEY=VALUE pairs are added to "meta"
  report.py pristine RAW.jsonl RECORDS.jsonl
      (host) pairs of boots of vm/bench/raw.sh (tags fork-I, pristine-I)
      appended to the records
  report.py check SUITE.json
      every configuration and measurement is there with numbers > 0
  report.py render SUITE.json OUTDIR [--doc FILE --svg FILE]
      (host, matplotlib) OUTDIR/table.md and OUTDIR/ratios.svg; with --doc,
      the table replaces the part of FILE between the markers
      <!-- bench:begin --> and <!-- bench:end -->, and the plot is copied to
      the --svg file
"""
import json
import shutil
import statistics
import sys

CONFIGS = ["cbt", "snap-tmpfs", "snap-ext4", "dm-snap", "dm-thin", "dm-era"]
LABELS = {
    "cbt": "blksnap CBT only",
    "snap-tmpfs": "blksnap snapshot, storage on tmpfs",
    "snap-ext4": "blksnap snapshot, storage on ext4",
    "dm-snap": "dm-snapshot (transient)",
    "dm-thin": "dm-thin (create_snap)",
    "dm-era": "dm-era",
}
WORKLOADS = {
    "seq": "seq. first writes 1M qd4",
    "rand": "4K random first writes qd32",
    "over": "overwrites of copied chunks",
    "read": "seq. read of the snapshot (origin untouched)",
    "readcow": "seq. read of the snapshot (origin overwritten)",
}
# No snapshot to read: their read is of the origin, and readcow is skipped.
NO_IMAGE = {"cbt", "dm-era"}
STALL_LIMIT_MS = 20.0
TRACKING_LIMIT_MIB_PER_TIB = 2.0


def spread(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def summarize(records_path, out_path, extra):
    recs = [json.loads(line) for line in open(records_path) if line.strip()]
    meta = {}
    for r in recs:
        if r["type"] == "meta":
            meta = {k: v for k, v in r.items() if k != "type"}
    for kv in extra:
        k, _, v = kv.partition("=")
        meta[k] = v
    ratios = []
    for wl in WORKLOADS:
        for cfg in CONFIGS:
            pairs = [r for r in recs if r["type"] == "pair" and r["workload"] == wl
                     and r["config"] == cfg]
            if not pairs:
                continue
            ratios.append({"workload": wl, "config": cfg,
                           "ratio": spread([p["with"] / p["raw"] for p in pairs]),
                           "raw_mibs": statistics.median(p["raw"] for p in pairs),
                           "with_mibs": statistics.median(p["with"] for p in pairs)})
    stall = []
    for key in dict.fromkeys((r["config"], r["fs"]) for r in recs if r["type"] == "stall"):
        runs = [r for r in recs if r["type"] == "stall" and (r["config"], r["fs"]) == key]
        held = [r["held_us"] for r in runs if r["held_us"] is not None]
        stall.append({"config": key[0], "fs": key[1],
                      "with_ms": spread([r["with_ms"] for r in runs]),
                      "base_ms": spread([r["base_ms"] for r in runs]),
                      "take_ms": spread([r["take_ms"] for r in runs]),
                      "held_us": spread(held) if held else None})
    take = []
    for n in sorted({r["devices"] for r in recs if r["type"] == "take"}):
        runs = [r for r in recs if r["type"] == "take" and r["devices"] == n]
        take.append({"devices": n, "wall_ms": spread([r["wall_ms"] for r in runs]),
                     "held_us": spread([r["held_us"] for r in runs]),
                     "freeze_us": spread([r["freeze_us"] for r in runs])})
    pristine = []
    for wl in ("rand", "seq"):
        runs = [r for r in recs if r["type"] == "pristine" and r["workload"] == wl]
        if runs:
            pristine.append({"workload": wl,
                             "ratio": spread([r["fork"] / r["pristine"] for r in runs]),
                             "fork_mibs": statistics.median(r["fork"] for r in runs),
                             "pristine_mibs": statistics.median(r["pristine"] for r in runs)})
    memory = []
    for r in recs:
        if r["type"] != "memory":
            continue
        tib = r["devices"] * r["device_bytes"] / 2**40
        m = dict(r)
        del m["type"]
        m["expected_mib_per_tib"] = r["expected_bytes"] / 2**20 / tib
        # What tiny devices took (tracking only) is the cost per device
        # whatever its size; the rest is the cost per TiB.
        fixed = r.get("fixed_kib")
        if fixed is not None:
            m["fixed_kib_per_device"] = fixed / r["devices"]
        m["measured_mib_per_tib"] = (r["memfree_kib"] - (fixed or 0)) / 1024 / tib
        memory.append(m)

    def ratio_of(wl, cfg):
        return next((x["ratio"]["median"] for x in ratios
                     if x["workload"] == wl and x["config"] == cfg), None)

    targets = []

    def target(name, value, op, limit):
        if value is not None:
            met = value >= limit if op == ">=" else value < limit if op == "<" else value <= limit
            targets.append({"name": name, "value": value, "op": op, "limit": limit, "met": met})

    target("CBT only, 4K random writes, ratio vs raw", ratio_of("rand", "cbt"), ">=", 0.97)
    for cfg in ("snap-tmpfs", "snap-ext4"):
        first, dm = ratio_of("seq", cfg), ratio_of("seq", "dm-snap")
        target(f"{cfg}: seq. first writes, ratio vs raw", first, ">=", 0.45)
        target(f"{cfg}: seq. first writes, times dm-snapshot's",
               first / dm if first is not None and dm else None, ">=", 3.0)
        target(f"{cfg}: overwrites, ratio vs raw", ratio_of("over", cfg), ">=", 0.95)
        target(f"{cfg}: image seq. read, ratio vs origin", ratio_of("read", cfg), ">=", 0.9)
    for s in stall:
        if s["config"] == "blksnap":
            target(f"take stall, blksnap, fs {s['fs']} (median of the longest write, ms)",
                   s["with_ms"]["median"], "<", STALL_LIMIT_MS)
    for m in memory:
        if m["what"] == "tracking":
            # At the precision of the table: the map alone, a byte per
            # block, is the limit exactly.
            target("tracking memory per TiB, MiB (measured)", round(m["measured_mib_per_tib"], 2),
                   "<=", TRACKING_LIMIT_MIB_PER_TIB)
    out = {"meta": meta, "ratios": ratios, "stall": stall, "take": take, "memory": memory,
           "pristine": pristine, "targets": targets}
    with open(out_path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(table(out))


def pristine(raw_path, records_path):
    runs = {}
    for line in open(raw_path):
        r = json.loads(line)
        kind, _, boot = r["tag"].partition("-")
        runs.setdefault((r["workload"], int(boot)), {})[kind] = r["median"]
    with open(records_path, "a") as f:
        for (wl, boot), v in sorted(runs.items()):
            if "fork" in v and "pristine" in v:
                f.write(json.dumps({"type": "pristine", "workload": wl, "pair": boot,
                                    "fork": v["fork"], "pristine": v["pristine"]}) + "\n")


def check(path):
    s = json.load(open(path))
    bad = []
    for cfg in CONFIGS:
        for wl in WORKLOADS:
            if wl == "readcow" and cfg in NO_IMAGE:
                continue
            x = next((x for x in s["ratios"] if x["workload"] == wl and x["config"] == cfg), None)
            if x is None or not (x["raw_mibs"] > 0 and x["with_mibs"] > 0):
                bad.append(f"throughput {wl} {cfg}")
    for cfg, fs in (("blksnap", "none"), ("blksnap", "ext4"), ("dm-snap", "none"),
                    ("dm-snap", "ext4"), ("dm-thin", "none")):
        x = next((x for x in s["stall"] if (x["config"], x["fs"]) == (cfg, fs)), None)
        if x is None or not (x["with_ms"]["median"] > 0 and x["base_ms"]["median"] > 0):
            bad.append(f"stall {cfg} {fs}")
    if not s["take"] or any(not (t["wall_ms"]["median"] > 0 and t["held_us"]["median"] > 0)
                            for t in s["take"]):
        bad.append("take time")
    if {m["what"] for m in s["memory"] if m["expected_bytes"] > 0} != {"tracking", "snapshot"}:
        bad.append("memory")
    if bad:
        sys.exit("benchmark results missing or zero: " + ", ".join(bad))
    print(f"{path}: every configuration ran and gave numbers")


def fmt(x, digits=2):
    return f"{x['median']:.{digits}f} [{x['min']:.{digits}f}–{x['max']:.{digits}f}]"


def table(s):
    m = s["meta"]
    lines = []
    w = list(WORKLOADS)
    lines.append("Throughput with each configuration as a ratio of the raw device's, median of "
                 "the per-pair ratios [min–max]; raw in MiB/s (median).")
    lines.append("")
    lines.append("| configuration | " + " | ".join(WORKLOADS[x] for x in w) + " |")
    lines.append("|---|" + "---|" * len(w))

    def cell(wl, cfg):
        x = next((x for x in s["ratios"] if x["workload"] == wl and x["config"] == cfg), None)
        return fmt(x["ratio"]) if x else "–"

    raw = []
    for wl in w:
        xs = [x["raw_mibs"] for x in s["ratios"] if x["workload"] == wl]
        raw.append(f"{statistics.median(xs):.0f} MiB/s" if xs else "–")
    lines.append("| raw device | " + " | ".join(raw) + " |")
    for cfg in CONFIGS:
        lines.append(f"| {LABELS[cfg]} | " + " | ".join(cell(wl, cfg) for wl in w) + " |")
    pairs = max((x["ratio"]["n"] for x in s["ratios"]), default=0)
    lines.append("")
    lines.append(f"{pairs} pairs each; origin {m.get('size_mib', '?')} MiB, chunks of "
                 f"{int(m.get('chunk_sectors', 0)) * 512 // 1024} KiB, tracking blocks of "
                 f"{int(m.get('block_bytes', 0)) // 1024} KiB. CBT only and dm-era have no "
                 "snapshot: their reads are of the origin.")
    if s["stall"]:
        lines += ["", "Write stall of a take: the longest latency of 4 KiB writes at iodepth 1 "
                  "in a run across which the take happens, against the same run without a take "
                  "(median [min–max] in ms); the take's own time; blksnap's kernel log time "
                  "with writes held.", "",
                  "| configuration | file system | longest write, with take (ms) | "
                  "without take (ms) | take (ms) | writes held (µs) |", "|---|---|---|---|---|---|"]
        for x in s["stall"]:
            held = fmt(x["held_us"], 0) if x["held_us"] else "–"
            lines.append(f"| {x['config']} | {x['fs']} | {fmt(x['with_ms'])} | "
                         f"{fmt(x['base_ms'])} | {fmt(x['take_ms'], 1)} | {held} |")
    if s["take"]:
        lines += ["", "Take time of blksnap for N devices of 1 TiB (median [min–max]): the "
                  "command (allocations before the freeze included), the time writes are "
                  "held, and with freeze and thaw.", "",
                  "| devices | command (ms) | writes held (µs) | with freeze and thaw (µs) |",
                  "|---|---|---|---|"]
        for x in s["take"]:
            lines.append(f"| {x['devices']} | {fmt(x['wall_ms'], 1)} | {fmt(x['held_us'], 0)} | "
                         f"{fmt(x['freeze_us'], 0)} |")
    def per_device(x):
        return f"{x['fixed_kib_per_device']:.0f}" if "fixed_kib_per_device" in x else "–"

    if s["memory"]:
        lines += ["", "Kernel memory for devices of 1 TiB: expected from the structures, "
                  "measured as the drop of MemFree (caches dropped; slab and vmalloc deltas "
                  "for reference). Tracking: what as many devices of 1 MiB took is the cost per "
                  "device whatever its size, and the rest is the cost per TiB.", "",
                  "| what | unit | expected (MiB/TiB) | measured (MiB/TiB) | per device (KiB) | "
                  "slab Δ (KiB) | vmalloc Δ (KiB) |", "|---|---|---|---|---|---|---|"]
        for x in s["memory"]:
            unit = (f"blocks of {x['block_bytes'] // 1024} KiB, a map of 1 byte per block "
                    "and a pointer and a bit per 4096-block piece"
                    if x["what"] == "tracking" else
                    f"chunks of {x['chunk_bytes'] // 1024} KiB, 5 bytes per chunk")
            lines.append(f"| {x['what']} ({x['devices']} devices) | {unit} | "
                         f"{x['expected_mib_per_tib']:.2f} | {x['measured_mib_per_tib']:.2f} | "
                         f"{per_device(x)} | {x['slab_kib']} | {x['vmalloc_kib']} |")
    if s.get("pristine"):
        lines += ["", "Devices without a filter: the fork against the pristine base built with "
                  "the same config (blkfilter not compiled in), null_blk keeping no data, boots "
                  "of the two kernels in turn; ratio fork / pristine, median of the per-pair "
                  "ratios [min–max].", "",
                  "| workload | fork / pristine | fork (MiB/s) | pristine (MiB/s) |",
                  "|---|---|---|---|"]
        for x in s["pristine"]:
            label = {"rand": "4K random writes qd32", "seq": "seq. writes 1M qd4"}[x["workload"]]
            lines.append(f"| {label} | {fmt(x['ratio'], 3)} | "
                         f"{x['fork_mibs']:.0f} | {x['pristine_mibs']:.0f} |")
    if s["targets"]:
        lines += ["", "| target | value | limit | |", "|---|---|---|---|"]
        for t in s["targets"]:
            lines.append(f"| {t['name']} | {t['value']:.3f} | {t['op']} {t['limit']} | "
                         f"{'met' if t['met'] else '**missed**'} |")
    info = ", ".join(f"{k} {m[k]}" for k in ("mode", "kernel", "accel", "cpus", "host_load",
                                             "date", "duration_s") if k in m)
    lines += ["", f"Run: {info}."]
    return "\n".join(lines) + "\n"


def plot(s, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcParams["svg.hashsalt"] = "blksnap-bench"
    wls = list(WORKLOADS)
    fig, ax = plt.subplots(figsize=(11, 6))
    width = 0.8 / len(CONFIGS)
    for i, cfg in enumerate(CONFIGS):
        xs, ys, lo, hi = [], [], [], []
        for j, wl in enumerate(wls):
            x = next((x for x in s["ratios"] if x["workload"] == wl and x["config"] == cfg), None)
            if x is None:
                continue
            r = x["ratio"]
            xs.append(j - 0.4 + width * (i + 0.5))
            ys.append(r["median"])
            lo.append(r["median"] - r["min"])
            hi.append(r["max"] - r["median"])
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=LABELS[cfg])
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_ylim(0, max([1.1] + [x["ratio"]["max"] * 1.05 for x in s["ratios"]]))
    ax.set_xticks(range(len(wls)))
    ax.set_xticklabels([WORKLOADS[w].replace(" (", "\n(") for w in wls], fontsize=8)
    ax.set_ylabel("throughput / raw device (median, min–max)")
    m = s["meta"]
    ax.set_title(f"blksnap and device-mapper peers, ratio vs the raw device in the same boot "
                 f"({m.get('kernel', '?')}, {m.get('accel', '?')})", fontsize=10)
    ax.legend(fontsize=8, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    fig.tight_layout()
    fig.savefig(path, metadata={"Date": None})


def replace_section(doc, text):
    begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
    body = open(doc).read()
    if begin not in body or end not in body:
        sys.exit(f"{doc}: no {begin} ... {end} markers")
    head, rest = body.split(begin, 1)
    _, tail = rest.split(end, 1)
    with open(doc, "w") as f:
        f.write(head + begin + "\n" + text + end + tail)


def main(argv):
    if len(argv) >= 3 and argv[0] == "summarize":
        summarize(argv[1], argv[2], argv[3:])
    elif len(argv) == 3 and argv[0] == "pristine":
        pristine(argv[1], argv[2])
    elif len(argv) == 2 and argv[0] == "check":
        check(argv[1])
    elif len(argv) in (3, 7) and argv[0] == "render":
        s = json.load(open(argv[1]))
        with open(f"{argv[2]}/table.md", "w") as f:
            f.write(table(s))
        plot(s, f"{argv[2]}/ratios.svg")
        if len(argv) == 7 and argv[3] == "--doc" and argv[5] == "--svg":
            replace_section(argv[4], table(s))
            shutil.copyfile(f"{argv[2]}/ratios.svg", argv[6])
        print(f"{argv[2]}/table.md, {argv[2]}/ratios.svg")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
