#!/usr/bin/env python3
"""Count sytest results per test area (the tests/ subfolder or file a test
comes from). Usage: sytest/areas.py <SYTEST_DIR> <out dir of a run>

Reads <out>/passed.txt, failed.txt, skipped.txt (one name, then a tab and a
reason, a line) and maps each name to the file in <SYTEST_DIR>/tests that
declares it; names built at run time are matched with their variables as
wildcards. Prints a Markdown table."""
import os, re, sys
from collections import defaultdict

def declared(sytest):
    exact, patterns = {}, []
    for root, _, files in os.walk(os.path.join(sytest, "tests")):
        for f in files:
            if not f.endswith(".pl"):
                continue
            path = os.path.join(root, f)
            rel = os.path.relpath(path, os.path.join(sytest, "tests"))
            area = rel.split(os.sep)[0].removesuffix(".pl")
            src = open(path, encoding="utf-8", errors="replace").read()
            for m in re.finditer(r'(?:test|multi_test)\s*\(?\s*"((?:[^"\\]|\\.)*)"', src):
                name = m.group(1).replace('\\"', '"').replace("\\@", "@").replace("\\$", "$")
                if "$" in name:
                    rx = "^" + re.sub(r"\\\$\\{?\w+\\}?|\\\$\w+", ".*", re.escape(name)) + "$"
                    patterns.append((re.compile(rx), area))
                else:
                    exact.setdefault(name, area)
    return exact, patterns

def main():
    sytest, out = sys.argv[1], sys.argv[2]
    exact, patterns = declared(sytest)
    counts = defaultdict(lambda: [0, 0, 0])
    for i, kind in enumerate(["passed", "failed", "skipped"]):
        path = os.path.join(out, kind + ".txt")
        if not os.path.exists(path):
            continue
        for line in open(path, encoding="utf-8"):
            name = line.rstrip("\n").split("\t")[0]
            if not name:
                continue
            area = exact.get(name)
            if area is None:
                area = next((a for rx, a in patterns if rx.match(name)), "other")
            counts[area][i] += 1
    print("| area | passed | failed | skipped |")
    print("| --- | --- | --- | --- |")
    tot = [0, 0, 0]
    for area in sorted(counts):
        p, f, s = counts[area]
        tot = [tot[0] + p, tot[1] + f, tot[2] + s]
        print(f"| {area} | {p} | {f} | {s} |")
    print(f"| **total** | **{tot[0]}** | **{tot[1]}** | **{tot[2]}** |")

if __name__ == "__main__":
    main()
