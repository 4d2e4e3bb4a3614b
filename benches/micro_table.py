#!/usr/bin/env python3
"""Prints the results of `cargo bench --bench hot_paths` as Markdown tables.

    python3 benches/micro_table.py [CRITERION_DIR...]    # default: target/criterion

One table per group and parameter: the median time per iteration (criterion's median of
the per-sample means, from <bench>/new/estimates.json), the throughput at that median, and
the time relative to the reference row (the corestream primitive; > 1 means slower than it).
Given several directories (one per run, e.g. CRITERION_HOME=/tmp/run1 cargo bench ...), it
takes the median over the runs and also shows the spread of the runs' medians.
"""

import json
import os
import sys

# Group -> reference benchmark (the corestream primitive the others are compared with).
REFERENCE = {
    "frame_decode": "header+body/ProduceRequest::decode",
    "batch_validate": "split_and_validate",
    "append": None,  # per row pair, see PAIRS
    "index_lookup": "OffsetIndex::lookup",
    "fetch_read": "corestream_disk_dma",
}
# In the append group each std baseline is compared with its corestream counterpart.
PAIRS = {
    "std_write": "corestream_queued(acks=1)",
    "std_write_sustained": "corestream_queued_sustained",
    "std_write+fdatasync_each": "corestream_synced(acks=all)",
    "std_prealloc_write+fdatasync_each": "corestream_synced(acks=all)",
}
ORDER = ["frame_decode", "batch_validate", "append", "index_lookup", "fetch_read"]
# Row order inside a table: as defined in benches/hot_paths.rs.
ROWS = [
    "header_only/parse_request",
    "header+body/ProduceRequest::decode",
    "handler_path/decode+split_and_validate",
    "materialise/decode+RecordBatchDecoder",
    "split_and_validate",
    "crc32c_only",
    "RecordBatchDecoder",
    "corestream_queued(acks=1)",
    "std_write",
    "corestream_queued_sustained",
    "std_write_sustained",
    "corestream_synced(acks=all)",
    "std_write+fdatasync_each",
    "std_prealloc_write+fdatasync_each",
    "OffsetIndex::lookup",
    "linear_scan",
    "BTreeMap::range",
    "corestream_tail_cache",
    "corestream_disk_dma",
    "std_pread_page_cache",
]


def fmt_time(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"


def fmt_thrpt(kind, amount, ns):
    per_s = amount / (ns / 1e9)
    if kind == "Elements":
        if per_s >= 1e6:
            return f"{per_s / 1e6:.3g} M lookups/s"
        return f"{per_s / 1e3:.3g} K lookups/s"
    for unit, scale in (("GiB/s", 1 << 30), ("MiB/s", 1 << 20), ("KiB/s", 1 << 10)):
        if per_s >= scale:
            return f"{per_s / scale:.3g} {unit}"
    return f"{per_s:.3g} B/s"


def load(root):
    rows = {}
    for dirpath, _, files in os.walk(root):
        if "benchmark.json" not in files or not dirpath.endswith("new"):
            continue
        with open(os.path.join(dirpath, "benchmark.json")) as f:
            b = json.load(f)
        with open(os.path.join(dirpath, "estimates.json")) as f:
            e = json.load(f)
        thr = b.get("throughput") or {}
        kind, amount = next(iter(thr.items())) if thr else ("Bytes", 0)
        rows.setdefault((b["group_id"], b["value_str"]), []).append(
            (b["function_id"], e["median"]["point_estimate"], kind, amount)
        )
    return rows


def reference_of(group, name):
    return PAIRS.get(name) if group == "append" else REFERENCE.get(group)


def merge(runs):
    """Per benchmark: the median over runs of its median time, the (min, max) of those, and
    the median over runs of its time relative to the reference measured in the same run
    (ratios within a run are steadier than times across runs on a noisy machine)."""
    merged = {}
    for k in set().union(*runs):
        group = k[0]
        by_name = {}
        for run in runs:
            medians = {name: ns for name, ns, _, _ in run.get(k, [])}
            for name, ns, kind, amount in run.get(k, []):
                entry = by_name.setdefault(name, ([], [], kind, amount))
                entry[0].append(ns)
                ref = reference_of(group, name)
                if ref in medians and ref != name:
                    entry[1].append(ns / medians[ref])
        merged[k] = [
            (name, mid(v), kind, amount, (min(v), max(v)) if len(v) > 1 else None, mid(r) if r else None)
            for name, (v, r, kind, amount) in by_name.items()
        ]
    return merged


def mid(v):
    v = sorted(v)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def main():
    roots = sys.argv[1:] or ["target/criterion"]
    rows = merge([load(r) for r in roots])

    def key(k):
        group, param = k
        digits = "".join(c for c in param if c.isdigit())
        return (ORDER.index(group) if group in ORDER else 99, int(digits or 0), param)

    for group, param in sorted(rows, key=key):
        benches = sorted(rows[(group, param)], key=lambda r: (ROWS.index(r[0]) if r[0] in ROWS else 99, r[0]))
        spread = len(roots) > 1
        print(f"\n**{group} / {param}**\n")
        print("| benchmark | median | throughput | time vs reference |" + (" runs' medians |" if spread else ""))
        print("|---|---:|---:|---:|" + ("---:|" if spread else ""))
        for name, ns, kind, amount, minmax, rel in benches:
            ref = reference_of(group, name)
            if rel is None:
                ratio = "reference" if ref is None or ref == name else "-"
            else:
                ratio = f"{rel:.2f}× ({ref})" if group == "append" else f"{rel:.2f}×"
            extra = f" {fmt_time(minmax[0])} – {fmt_time(minmax[1])} |" if spread and minmax else (" |" if spread else "")
            print(f"| {name} | {fmt_time(ns)} | {fmt_thrpt(kind, amount, ns)} | {ratio} |" + extra)


if __name__ == "__main__":
    main()
