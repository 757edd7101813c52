#!/usr/bin/env bash
# Runs our benches and Python's multiprocessing on the same workloads, one after the other in one
# run, and prints: case | ours | Python | ratio (how many times better ours is) | target | met.
#   bash benches/compare.sh [--quick]
# (MP_SHARED=path names the shared/ directory holding bench/bench_mp.py; default ../shared)
set -euo pipefail
cd "$(dirname "$0")/.."
quick=${1:-}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
shared=${MP_SHARED:-../shared}
cargo bench --no-run -q --bench spawn --bench pool --bench queue --bench pipe --bench manager --bench shm --bench actor --bench sync --bench codec --bench scaling
cargo bench --no-run -q --bench broker
echo "machine: $(nproc) vCPU, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(date -u '+%Y-%m-%d %H:%M UTC')"
cargo bench -q --bench spawn -- $quick > "$out/ours.jsonl"
cargo bench -q --bench pool -- $quick >> "$out/ours.jsonl"
cargo bench -q --bench queue -- $quick >> "$out/ours.jsonl"
cargo bench -q --bench pipe -- $quick >> "$out/ours.jsonl"
cargo bench -q --bench manager -- $quick >> "$out/ours.jsonl"
cargo bench -q --bench shm -- $quick >> "$out/ours.jsonl"
cargo bench -q --bench actor -- $quick >> "$out/ours.jsonl"
cargo bench -q --bench sync -- $quick >> "$out/ours.jsonl"
cargo bench -q --bench codec -- $quick >> "$out/ours.jsonl"
cargo bench -q --bench scaling -- $quick >> "$out/ours.jsonl"
cargo bench -q --bench broker -- $quick >> "$out/ours.jsonl"
# Celery on a Redis of its own, for the broker rows (its case names are the broker bench's).
bash "$shared/bench/celery/run.sh" $quick > "$out/celery.jsonl" || echo "the Celery bench failed: broker rows without a peer"
python3 "$shared/bench/bench_mp.py" --only spawn,pool_startup,pool_map,pool_apply_latency,large_payload,queue,queue_c2c,pipe,manager,lock,actor_proxy,pool_scaling $quick > "$out/python.jsonl"
python3 benches/sync_mp.py $quick >> "$out/python.jsonl"
cat "$out/celery.jsonl" >> "$out/python.jsonl"
# Pinned to one CPU: on this VM a wake-up across the two vCPUs costs ~70 us whatever the software.
taskset -c 0 cargo bench -q --bench spawn -- $quick > "$out/ours_pinned.jsonl"
taskset -c 0 cargo bench -q --bench pool -- $quick >> "$out/ours_pinned.jsonl"
taskset -c 0 cargo bench -q --bench pipe -- $quick >> "$out/ours_pinned.jsonl"
taskset -c 0 cargo bench -q --bench actor -- $quick >> "$out/ours_pinned.jsonl"
PEER_BENCH_VARIANT=pinned-cpu0 taskset -c 0 python3 "$shared/bench/bench_mp.py" --only spawn,pool_apply_latency,pipe,actor_proxy $quick > "$out/python_pinned.jsonl"
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
# (ours, python, target as "x times better", label)
pairs = [
    ("spawn_latency[default]", "spawn_latency[spawn]", 25, "spawn+join (default method) vs Python spawn"),
    ("spawn_latency[default]", "spawn_latency[fork]", 1, "spawn+join (default method) vs Python fork"),
    ("spawn_latency[spawn]", "spawn_latency[spawn]", None, "spawn+join with Spawn (re-exec) vs Python spawn"),
    ("spawn_latency[spawn]", "spawn_latency[fork]", None, "spawn+join with Spawn (re-exec) vs Python fork"),
    ("spawn_latency[forkserver]", "spawn_latency[fork]", None, "ForkServer spawn+join vs Python fork (target <= 0.5 ms)"),
    ("spawn_latency[forkserver]", "spawn_latency[forkserver]", None, "ForkServer spawn+join vs Python forkserver"),
    ("pool2_startup_shutdown[default]", "pool2_startup_shutdown[fork]", 1 / 0.7, "Pool(2) start+close+join vs fork"),
    ("pool2_map_default_chunksize", "pool2_map_default_chunksize", 5, "map 1M tiny, default chunks"),
    ("pool2_map_chunksize1", "pool2_map_chunksize1", 5, "map 50k, chunksize 1"),
    ("pool2_imap_unordered_chunksize1", "pool2_imap_unordered_chunksize1", 5, "imap_unordered 50k, chunksize 1"),
    ("pool2_apply_async_10k_concurrent", "pool2_apply_async_10k_concurrent", 5, "10k apply_async in flight"),
    ("pool2_apply_async_get_sequential_latency", "pool2_apply_async_get_sequential_latency", 1 / 0.6, "sequential apply round trip"),
    ("pool_apply_len_100MiB", "pool_apply_len_100MiB", 2, "100 MiB bytes to a pool worker"),
    ("pool_apply_len_100MiB_vec", "pool_apply_len_100MiB", 1.5, "100 MiB plain Vec<u8> to a pool worker (no serde_bytes)"),
    ("process_len_100MiB", "pool_apply_len_100MiB", None, "100 MiB bytes to a fresh Process"),
    ("process_roundtrip_64MiB", None, None, "64 MiB to a Process and back"),
    ("queue_small_msgs_throughput", "queue_small_msgs_throughput", 5, "queue small msgs, child -> parent"),
    ("queue_bytes_1MiB_throughput", "queue_bytes_1MiB_throughput", 3, "queue 1 MiB msgs, child -> parent"),
    ("queue_child_to_child_small_msgs", "queue_c2c_small_msgs_throughput", 3, "queue small msgs, child -> child (root lends batches)"),
    ("idle_pool_worker_rss", None, None, "idle pool worker RSS (Python 12-16 MB; target <= 4 MB)"),
    ("pipe_pingpong_rtt", "pipe_pingpong_rtt", None, "pipe ping-pong round trip"),
    ("pipe_bytes_1MiB_throughput", "pipe_bytes_1MiB_throughput", 1, "pipe 500 x 1 MiB send_bytes"),
    ("pipe_small_msgs_throughput", "pipe_small_msgs_throughput", 10, "pipe 200k small messages"),
    ("pipe_child_to_child_small_msgs", None, None, "pipe small msgs, child -> child (direct)"),
    ("manager_dict_set_get", "manager_dict_set_get", 5, "manager dict set+get from a child"),
    ("manager_dict_insert_get", "manager_dict_set_get", None, "manager dict insert (answered)+get from a child"),
    ("manager_dict_get_pipelined", None, None, "manager dict gets, 256 in flight from one child"),
    ("manager_lock_acquire_release", None, None, "manager lock acquire+release from a child"),
    ("lock_contended_counter", "lock_contended_counter", 3, "2 procs x 100k locked counter increments"),
    ("value_fetch_add_counter", "lock_contended_counter", 20, "2 procs x 100k Value::fetch_add vs Python's locked counter"),
    ("lock_uncontended", "lock_uncontended", 2, "uncontended Lock acquire+release pairs"),
    ("event_set_wake_latency", "event_set_wake_latency", 1, "Event set -> wake across 2 processes"),
    ("semaphore_uncontended", "semaphore_uncontended", 2, "uncontended Semaphore acquire+release pairs"),
    ("condition_pingpong", "condition_pingpong", 1, "Condition ping-pong between 2 processes"),
    ("pool_apply_len_100MiB_shared_bytes", "pool_apply_len_100MiB", 4, "100 MiB as SharedBytes to a pool worker"),
    ("actor_calls_sequential", "actor_proxy_calls_1thread", 2, "actor sequential calls vs BaseManager proxy (round trip <= 0.5x)"),
    ("actor_calls_sequential_grandchild", "actor_proxy_calls_1thread", 2, "actor sequential calls from a grandchild (direct)"),
    ("actor_calls_pipelined", "actor_proxy_calls_4thread", 25, "actor 10k calls in flight vs proxy, 4 client threads"),
    ("broker_single_tasks", "broker_single_tasks", 10, "Redis pool: 100k map chunksize 1 vs Celery delay() x 5k"),
    ("broker_chunked_map", "broker_chunked_map", 10, "Redis pool: 100k map, chunks of 1000, vs Celery chunks"),
    ("broker_map_default_chunksize", None, None, "Redis pool: 100k map, default chunks"),
    ("local_chunked_map", None, None, "local Pool(2): 100k map, chunks of 1000 (broker target: within 3x)"),
    ("broker_apply_roundtrip", "broker_apply_roundtrip", None, "Redis pool: sequential apply vs Celery delay().get()"),
]
for label, ours_f, py_f in (("unpinned", "ours.jsonl", "python.jsonl"), ("pinned to cpu0", "ours_pinned.jsonl", "python_pinned.jsonl")):
    ours, py = load(ours_f), load(py_f)
    print(f"\n{label}")
    print("| case | ours (median) | Python (median) | ours is x better | target | met |")
    print("|---|---|---|---|---|---|")
    for o, p, target, note in pairs:
        if o not in ours:
            continue
        r = ours[o]
        pv = py.get(p) if p else None
        if pv:
            better = pv["median"] / r["median"] if r["better"] == "lower" else r["median"] / pv["median"]
            ratio = f"{better:.2f}x"
            met = "-" if target is None else ("yes" if better >= target else "NO")
            pvs = f"{pv['median']:.4g} {pv['unit']} ({p})"
        else:
            ratio, met, pvs = "-", "-", "-"
        tgt = "-" if target is None else f">= {target:.2f}x"
        print(f"| {note} | {r['median']:.4g} {r['unit']} | {pvs} | {ratio} | {tgt} | {met} |")

# The codec of user values against postcard's own encoder, both in our bench run.
ours = load("ours.jsonl")
print("\ncodec (GB/s of the value's memory; output allocated per run)")
print("| case | ours (median) | postcard (median) | ours is x better |")
print("|---|---|---|---|")
for value in ("vec_u8", "vec_f64"):
    for what in ("encode", "decode"):
        o, p = ours.get(f"codec_{what}_{value}_100MiB"), ours.get(f"postcard_{what}_{value}_100MiB")
        if o and p:
            print(f"| {what} 100 MiB {value} | {o['median']:.3g} GB/s | {p['median']:.3g} GB/s | {o['median'] / p['median']:.2f}x |")

# Scaling of a CPU-bound map: efficiency = speed-up over one worker / workers. Targets at the
# largest worker count: >= 95% for 10 ms tasks, >= Python's for 1 ms tasks.
py = load("python.jsonl")
print("\nscaling (Pool.map of tasks spinning 1 or 10 ms; default chunksize)")
print("| tasks | workers | ours items/s | Python items/s | ours efficiency | Python efficiency | target | met |")
print("|---|---|---|---|---|---|---|---|")
cases = sorted({(r["params"]["task_ms"], r["params"]["processes"]) for k, r in ours.items() if k.startswith("pool_scaling_")})
top = max((n for _, n in cases), default=0)
for ms, n in sorted(cases, key=lambda c: (-c[0], c[1])):
    o, p = ours[f"pool_scaling_{ms}ms[{n}]"], py.get(f"pool_scaling_{ms}ms[{n}]")
    pe = p.get("efficiency") if p else None
    tgt, met = "-", "-"
    if n == top and n > 1:
        if ms == 10:
            tgt, met = ">= 95%", "yes" if o["efficiency"] >= 0.95 else "NO"
        elif pe is not None:
            tgt, met = ">= Python's", "yes" if o["efficiency"] >= pe else "NO"
    pr = f"{p['median']:.4g}" if p else "-"
    pes = f"{pe:.1%}" if pe is not None else "-"
    print(f"| {ms} ms x {o['params']['items']} | {n} | {o['median']:.4g} | {pr} | {o['efficiency']:.1%} | {pes} | {tgt} | {met} |")
PY
