#!/usr/bin/env bash
# Runs our benches and Python's multiprocessing on the same workloads, one after the other in one
# run, and prints: case | ours | Python | ratio (Python / ours for "lower is better" cases).
#   bash benches/compare.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
quick=${1:-}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cargo bench --bench spawn --no-run -q 2>/dev/null || cargo bench --bench spawn --no-run
echo "machine: $(nproc) vCPU, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(date -u +%Y-%m-%d)"
cargo bench -q --bench spawn -- $quick > "$out/ours.jsonl"
python3 ../shared/bench/bench_mp.py --only spawn,large_payload $quick > "$out/python.jsonl"
# Pinned to one CPU: on this VM a wake-up across the two vCPUs costs ~70 us whatever the software.
taskset -c 0 cargo bench -q --bench spawn -- $quick > "$out/ours_pinned.jsonl"
PEER_BENCH_VARIANT=pinned-cpu0 taskset -c 0 python3 ../shared/bench/bench_mp.py --only spawn $quick > "$out/python_pinned.jsonl"
python3 - "$out" <<'PY'
import json, sys, os
d = sys.argv[1]
def load(name):
    recs = {}
    for line in open(os.path.join(d, name)):
        line = line.strip()
        if line.startswith("{"):
            r = json.loads(line)
            if "median" in r:
                recs[r["case"]] = r
    return recs
pairs = [
    ("spawn_latency[spawn]", "spawn_latency[spawn]", "vs Python spawn"),
    ("spawn_latency[spawn]", "spawn_latency[forkserver]", "vs Python forkserver"),
    ("spawn_latency[spawn]", "spawn_latency[fork]", "vs Python fork"),
    ("process_len_100MiB", "pool_apply_len_100MiB", "fresh child vs Python pool worker"),
    ("process_roundtrip_64MiB", None, "no Python peer"),
]
for label, ours_f, py_f in (("unpinned", "ours.jsonl", "python.jsonl"), ("pinned cpu0", "ours_pinned.jsonl", "python_pinned.jsonl")):
    ours, py = load(ours_f), load(py_f)
    print(f"\n{label}")
    print(f"| case | ours (median) | Python (median) | ratio Python/ours | note |")
    print(f"|---|---|---|---|---|")
    for o, p, note in pairs:
        if o not in ours:
            continue
        r = ours[o]
        pv = py.get(p) if p else None
        ratio = f"{pv['median'] / r['median']:.1f}x" if pv else "-"
        pvs = f"{pv['median']:.3f} {pv['unit']} ({p})" if pv else "-"
        print(f"| {o} | {r['median']:.3f} {r['unit']} | {pvs} | {ratio} | {note} |")
PY
