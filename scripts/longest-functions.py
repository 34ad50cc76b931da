#!/usr/bin/env python3
"""Prints the longest Rust functions under a directory, longest first.

    scripts/longest-functions.py [DIR] [N] [--skip-tests]

Counts lines from a `fn` line to its closing brace by matching braces (braces in
strings and comments count too: a rough measure, good for "is anything over 100
lines"). With --skip-tests, a file is read only up to its first `#[cfg(test)]`,
and files named tests.rs are left out. Issue 20 holds functions to about 100
lines; this is the figure its closing note cites.
"""
import os
import re
import sys

FN = re.compile(r"\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+(\w+)")


def lengths(path, skip_tests):
    lines = open(path, encoding="utf-8").read().split("\n")
    for i, line in enumerate(lines):
        if skip_tests and re.match(r"\s*#\[cfg\(test\)\]", line):
            return
        m = FN.match(line)
        if not m:
            continue
        depth, started, j = 0, False, i
        while j < len(lines):
            depth += lines[j].count("{") - lines[j].count("}")
            started = started or "{" in lines[j]
            if started and depth <= 0:
                break
            if not started and lines[j].rstrip().endswith(";"):
                break
            j += 1
        yield j - i + 1, i + 1, m.group(6)


def main():
    args = [a for a in sys.argv[1:] if a != "--skip-tests"]
    skip_tests = "--skip-tests" in sys.argv
    root = args[0] if args else "src"
    count = int(args[1]) if len(args) > 1 else 15
    found = []
    for d, _, files in os.walk(root):
        for f in files:
            if f.endswith(".rs") and not (skip_tests and f == "tests.rs"):
                p = os.path.join(d, f)
                found += [(n, p, line, name) for n, line, name in lengths(p, skip_tests)]
    for n, p, line, name in sorted(found, reverse=True)[:count]:
        print(f"{n:5} {p}:{line} {name}")


if __name__ == "__main__":
    main()
