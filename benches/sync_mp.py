#!/usr/bin/env python3
"""Python twins of benches/sync.rs, by the method of ../shared/bench/bench_mp.py (warm-up, then
5 repetitions, or 3 with --quick; median, min and max): an Event set -> wake latency across two
processes, uncontended Semaphore acquire+release pairs, and a two-process Condition ping-pong.

Usage: python3 benches/sync_mp.py [--quick]
"""
import json
import multiprocessing as mp
import statistics
import sys
import time

QUICK = "--quick" in sys.argv
REPS = 3 if QUICK else 5
perf = time.perf_counter


def emit(case, unit, values, better, note):
    rec = {"impl": "python-multiprocessing", "case": case, "unit": unit, "better": better,
           "median": statistics.median(values), "min": min(values), "max": max(values),
           "reps": len(values), "note": note}
    print(json.dumps(rec), flush=True)


def repeat(fn):
    fn()
    return [fn() for _ in range(REPS)]


def _event_echo(ping, pong, n):
    for _ in range(n):
        ping.wait()
        ping.clear()
        pong.set()


def event_latency(n=2000):
    ping, pong = mp.Event(), mp.Event()
    p = mp.Process(target=_event_echo, args=(ping, pong, n + 1))
    p.start()
    ping.set()
    pong.wait()
    pong.clear()
    t0 = perf()
    for _ in range(n):
        ping.set()
        pong.wait()
        pong.clear()
    dt = perf() - t0
    p.join()
    return dt * 1e6 / (2 * n)


def semaphore_pairs(sem, n=1_000_000):
    acq, rel = sem.acquire, sem.release
    t0 = perf()
    for _ in range(n):
        acq()
        rel()
    return n / (perf() - t0)


def _condition_echo(cond, turn, n):
    for _ in range(n):
        with cond:
            cond.wait_for(lambda: turn.value == 1)
            turn.value = 0
            cond.notify(1)


def condition_pingpong(n=2000):
    cond, turn = mp.Condition(), mp.Value("I", 0, lock=False)
    p = mp.Process(target=_condition_echo, args=(cond, turn, n + 1))
    p.start()
    t0 = perf()
    for i in range(n + 1):
        if i == 1:
            t0 = perf()
        with cond:
            turn.value = 1
            cond.notify(1)
            cond.wait_for(lambda: turn.value == 0)
    dt = perf() - t0
    p.join()
    return n / dt


def main():
    emit("event_set_wake_latency", "us", repeat(event_latency), "lower",
         "2 procs ping-pong 2000 rounds over two Events (wait, clear, set); per set -> wake = round trip / 2")
    sem = mp.Semaphore(1)
    emit("semaphore_uncontended", "pairs/s", repeat(lambda: semaphore_pairs(sem)), "higher",
         "acquire()+release() in one process, 1000000 per rep")
    emit("condition_pingpong", "round trips/s", repeat(condition_pingpong), "higher",
         "2 procs pass a turn in a Value 2000 times under one Condition (wait_for + notify(1))")


if __name__ == "__main__":
    main()
