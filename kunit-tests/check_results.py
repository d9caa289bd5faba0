#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Independent check of kunit.py's JSON results.

usage: check_results.py RESULTS_JSON EXPECTED_SUITES [GLOB]

Prints a per-suite table and fails (exit 1) when a test failed or crashed,
when a suite named in EXPECTED_SUITES is missing or has no passing case
(suites filtered out by GLOB excepted), or when nothing passed at all.
"""

import fnmatch
import json
import sys

def main():
    res = json.load(open(sys.argv[1]))
    want = [
        line.strip()
        for line in open(sys.argv[2])
        if line.strip() and not line.startswith("#")
    ]
    glob = sys.argv[3] if len(sys.argv) > 3 else ""
    # kunit.py's JSON: the root group holds one sub-group per suite with
    # its counts in "misc"; a suite that has no cases (or never reported
    # any) shows up as a bare test case of the root instead.
    suites = {}
    for g in res.get("sub_groups", []):
        m = g.get("misc", {})
        suites[g["name"]] = {
            "passed": m.get("passed", 0),
            "failed": m.get("failed", 0),
            "skipped": m.get("skipped", 0),
            "crashed": m.get("crashed", 0) + m.get("errors", 0),
        }
    for c in res.get("test_cases", []):
        st = c.get("status")
        suites[c["name"]] = {
            "passed": 0,
            "failed": int(st == "FAIL"),
            "skipped": int(st == "SKIP"),
            "crashed": int(st not in ("FAIL", "SKIP", "PASS")),
        }
    total = {k: sum(s[k] for s in suites.values())
             for k in ("passed", "failed", "skipped", "crashed")}
    print(
        f"KUnit: {len(suites)} suites, {total['passed']} passed, {total['failed']} failed, "
        f"{total['skipped']} skipped, {total['crashed']} crashed"
    )
    bad = []
    for name, n in sorted(suites.items()):
        print(f"  {name:40s} pass {n['passed']:4d} fail {n['failed']:3d} "
              f"skip {n['skipped']:3d} crash {n['crashed']:3d}")
        if n["failed"] or n["crashed"]:
            bad.append(name)
    suite_glob = glob.split(".")[0] if glob else ""
    for w in want:
        if suite_glob and not fnmatch.fnmatch(w, suite_glob):
            continue
        if w not in suites:
            bad.append(f"{w} (missing)")
        elif suites[w]["passed"] == 0:
            bad.append(f"{w} (no passing case)")
    if total["passed"] == 0:
        bad.append("no test passed at all")
    if bad:
        print("KUnit: FAILED: " + ", ".join(bad), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
