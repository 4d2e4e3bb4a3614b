#!/usr/bin/env python3
"""Prints the results of `cargo bench --bench hot_paths` as Markdown tables.

    python3 benches/micro_table.py [CRITERION_DIR]    # default: target/criterion

One table per group and parameter: the median time per iteration (criterion's median of
the per-sample means, from <bench>/new/estimates.json), the throughput at that median, and
the time relative to the reference row (the corestream primitive; > 1 means slower than it).
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


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "target/criterion"
    rows = load(root)

    def key(k):
        group, param = k
        digits = "".join(c for c in param if c.isdigit())
        return (ORDER.index(group) if group in ORDER else 99, int(digits or 0), param)

    for group, param in sorted(rows, key=key):
        benches = sorted(rows[(group, param)], key=lambda r: (ROWS.index(r[0]) if r[0] in ROWS else 99, r[0]))
        medians = {name: ns for name, ns, _, _ in benches}
        print(f"\n**{group} / {param}**\n")
        print("| benchmark | median | throughput | time vs reference |")
        print("|---|---:|---:|---:|")
        for name, ns, kind, amount in benches:
            ref = PAIRS.get(name) if group == "append" else REFERENCE.get(group)
            if ref is None or ref == name or ref not in medians:
                ratio = "reference" if ref is None or ref == name else "-"
            else:
                ratio = f"{ns / medians[ref]:.2f}× ({ref})" if group == "append" else f"{ns / medians[ref]:.2f}×"
            print(f"| {name} | {fmt_time(ns)} | {fmt_thrpt(kind, amount, ns)} | {ratio} |")


if __name__ == "__main__":
    main()
