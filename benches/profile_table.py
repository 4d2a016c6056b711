#!/usr/bin/env python3
"""Tables of benches/profile.sh.

    profile_table.py NAME:JOBS:DUMP ...   instructions per job by part, from callgrind dumps
    profile_table.py --broker CLK_TCK     broker CPU per job, from broker rounds on stdin

Parts are assigned by the symbol (and source file, where known) that executed the instruction
itself (callgrind's self cost); the first matching rule wins. Inlined code counts for the
function it was inlined into: that is what "could not attribute" in BENCHMARKS.md is about."""
import re
import statistics
import subprocess
import sys

PARTS = [
    ("process spawn, pipes, group kill", r"std::process|std::sys::.*process|tokio::process|\bfork\b|_Fork|posix_spawn|__spawni|execv|waitid|waitpid|pidfd|\bkill\b|killpg|pipe2?\b|__clone|prctl|drover::io::handler::.*(spawn|kill|start)"),
    ("logging (tracing)", r"tracing"),
    ("JSON (serde) of handler protocol and events", r"serde"),
    ("headers: AMQP field tables, job envelope", r"amq_protocol_types|FieldTable|AMQPValue|drover::io::wire|drover::job::|drover_core::job::Job"),
    ("timestamps (rfc3339) for events and STATUS", r"rfc3339"),
    ("job events (building, queueing)", r"drover::events|Link::event|flush_events"),
    ("STATUS line / sd_notify", r"sd_notify|notify::status|std::env::|getenv"),
    ("lapin: framing, channels, IO loop", r"lapin|amq_protocol|async_rs|flume|event_listener|cookie_factory|\bnom::|backon|executor_trait|reactor_trait|async_trait|futures_(io|lite|util)"),
    ("tokio: scheduling, timers, IO driver", r"tokio|mio::|parking_lot|futex|epoll|pthread_"),
    ("clocks (Instant, SystemTime)", r"Timespec|Instant|SystemTime|clock_gettime"),
    ("string formatting (core::fmt)", r"core::fmt|fmt::Write|fmt::Display|fmt::Formatter"),
    ("allocator, memcpy, memcmp (libc, shared by all parts)", r"malloc|free|realloc|calloc|_int_|memcpy|memmove|memset|memcmp|tcache|strlen|alloc::|__rust_alloc|__rust_dealloc|__rust_realloc"),
    ("syscall wrappers (libc)", r"sysdeps/unix/sysv/linux|libc\.so"),
    ("drover: decisions, worker loop, other", r"drover(_core)?::"),
    ("Rust std, core (not inlined), other", r"std::|core::|hashbrown|profile_jobs|<"),
]
# Outer frames that were on the stack when the counters were zeroed: callgrind reports them with
# the cost of what ran beneath them, so they are left out (the parts add up to the total without
# them).
FRAMES = r"\(below main\)|:main \[|__libc_start_main|0x000000000001ab70|start_thread|:clone \[|thread_start|call_once\{\{vtable\.shim\}\}|__rust_begin_short_backtrace|:drover::main \[|:profile_jobs::main \["


def self_costs(dump):
    out = subprocess.run(
        ["callgrind_annotate", "--inclusive=no", "--threshold=100", dump],
        capture_output=True, text=True, check=True).stdout
    rows, total = [], None
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+)\s+(?:\(\s*[\d.]+%\)\s+)?(.*)", line)
        if not m:
            continue
        n, what = int(m.group(1).replace(",", "")), m.group(2)
        if "PROGRAM TOTALS" in what:
            total = n
        elif ":" in what and not re.search(FRAMES, what):
            rows.append((n, what))
    return total, rows


def attribute(dump):
    total, rows = self_costs(dump)
    parts = {p: 0 for p, _ in PARTS}
    parts["not matched"] = 0
    top_unmatched = []
    for n, what in rows:
        for p, rx in PARTS:
            if re.search(rx, what):
                parts[p] += n
                break
        else:
            parts["not matched"] += n
            top_unmatched.append((n, what))
    parts["not matched"] += total - sum(n for n, _ in rows)
    return total, parts, top_unmatched


def callgrind_tables(specs):
    cases = []
    for spec in specs:
        name, jobs, dump = spec.split(":", 2)
        cases.append((name, int(jobs), attribute(dump)))
    print("| part | " + " | ".join(f"{n}: Ir/job | share" for n, _, _ in cases) + " |")
    print("|---|" + "---|---|" * len(cases))
    names = [p for p, _ in PARTS] + ["not matched"]
    for p in names:
        cells = []
        for _, jobs, (total, parts, _) in cases:
            cells.append(f"{parts[p] / jobs:,.0f} | {100 * parts[p] / total:.1f} %")
        print(f"| {p} | " + " | ".join(cells) + " |")
    cells = [f"**{total / jobs:,.0f}** | 100 %" for _, jobs, (total, _, _) in cases]
    print("| **total** | " + " | ".join(cells) + " |")
    print()
    print("jobs in the window: " + ", ".join(f"{n} {j}" for n, j, _ in cases))
    plain = next((t / j for n, j, (t, _, _) in cases if n == "plain"), None)
    if plain:
        for n, j, (t, _, _) in cases:
            print(f"{n}: {t / j:,.0f} Ir/job = {t / j / plain:.2f}x plain")
    for n, j, (_, _, unmatched) in cases:
        print(f"\n{n}: largest unmatched symbols (Ir/job):")
        for c, what in sorted(unmatched, reverse=True)[:8]:
            print(f"  {c / j:10,.0f}  {what[:150]}")


def broker_table(clk_tck):
    rows = [line.split() for line in sys.stdin if line.strip()]
    print("| round | case | jobs | broker CPU µs/job (raw) | background µs/job | broker CPU µs/job (net) | jobs/s | worker VmHWM | load 1 min |")
    print("|---|---|---|---|---|---|---|---|---|")
    per = {}
    for i, (kind, jobs, ticks, idle_per_s, secs, hwm, load) in enumerate(rows):
        jobs, ticks, idle, secs = int(jobs), int(ticks), float(idle_per_s), float(secs)
        raw = ticks / clk_tck / jobs * 1e6
        bg = idle * secs / clk_tck / jobs * 1e6
        per.setdefault(kind, []).append((raw, raw - bg, hwm))
        hwm_s = f"{int(hwm) / 1024:.1f} MiB" if hwm != "-" else ""
        print(f"| {i // 2 + 1} | {kind} | {jobs} | {raw:.0f} | {bg:.0f} | {raw - bg:.0f} | {jobs / secs:,.0f} | {hwm_s} | {load} |")
    if "plain" in per and "drover" in per:
        med = {k: (statistics.median(r for r, _, _ in v), statistics.median(n for _, n, _ in v)) for k, v in per.items()}
        print(f"\nmedian broker CPU per job: plain {med['plain'][0]:.0f} µs raw / {med['plain'][1]:.0f} µs net; "
              f"drover {med['drover'][0]:.0f} µs raw / {med['drover'][1]:.0f} µs net; "
              f"ratio {med['drover'][0] / med['plain'][0]:.2f} raw, {med['drover'][1] / med['plain'][1]:.2f} net")
        ratios = [d[0] / p[0] for p, d in zip(per["plain"], per["drover"])]
        print("per-round ratio (raw): " + " / ".join(f"{r:.2f}" for r in ratios))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--broker"]:
        broker_table(int(sys.argv[2]))
    else:
        callgrind_tables(sys.argv[1:])
