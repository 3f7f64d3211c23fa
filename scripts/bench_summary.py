#!/usr/bin/env python3
"""Turns `cargo bench --bench stages` output (stdin) into a Markdown table:
benchmark, median time, median throughput (elem/s = frames/s, or the unit the
group sets). Usage: cargo bench --bench stages 2>&1 | python3 scripts/bench_summary.py
"""
import re
import sys

text = sys.stdin.read()
# Criterion prints `name  time: [lo mid hi]` on one line when the name is
# short, else the name alone on the line before.
pat = re.compile(
    r"^(\S+)\s*\n?\s+time:\s+\[\S+ \S+ (\S+ \S+) \S+ \S+\]"
    r"(?:\s*\n\s+thrpt:\s+\[\S+ +\S+ (\S+ +\S+) \S+ +\S+\])?",
    re.M,
)
print("| benchmark | median time | median throughput |")
print("|---|---:|---:|")
for m in pat.finditer(text):
    name, t, thr = m.group(1), m.group(2), m.group(3) or ""
    print(f"| {name} | {t} | {' '.join(thr.split())} |")
