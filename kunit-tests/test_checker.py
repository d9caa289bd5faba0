#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Host tests of the KUnit result check (kunit-tests/check.sh).

Synthetic KTAP console logs go through the same kunit.py parse and
check_results.py as a real run; a pass must pass, and a failing case, a
crash, a missing suite and an empty log must each fail.
"""

import os
import subprocess
import tempfile
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHECK = HERE / "check.sh"


def ktap(suites):
    """suites: list of (name, [(case, 'ok'|'not ok')]) -> console text."""
    out = ["[    1.000000] KTAP version 1", f"[    1.000000] 1..{len(suites)}"]
    for i, (name, cases) in enumerate(suites, 1):
        out += [
            "[    1.000000]     KTAP version 1",
            f"[    1.000000]     # Subtest: {name}",
            f"[    1.000000]     1..{len(cases)}",
        ]
        for j, (case, res) in enumerate(cases, 1):
            out.append(f"[    1.000000]     {res} {j} {case}")
        ok = all(r == "ok" for _, r in cases)
        out.append(f"[    1.000000] {'ok' if ok else 'not ok'} {i} {name}")
    return "\n".join(["[    0.000000] Linux version 7.3.4-blksnap"] + out) + "\n"


class CheckerTest(unittest.TestCase):
    def check(self, text, glob=""):
        with tempfile.TemporaryDirectory() as td:
            log = Path(td) / "console.log"
            log.write_text(text)
            expected = Path(td) / "expected"
            expected.write_text("# the suite a run must contain\nrust_doctests_kernel\n")
            res = subprocess.run(
                ["bash", str(CHECK), str(log), str(Path(td) / "r.json"), glob],
                capture_output=True, text=True,
                env=dict(os.environ, KUNIT_EXPECTED=str(expected)),
            )
            return res.returncode, res.stdout + res.stderr

    def test_all_pass(self):
        rc, out = self.check(ktap([("rust_doctests_kernel", [("a", "ok"), ("b", "ok")])]))
        self.assertEqual(rc, 0, out)
        self.assertIn("2 passed, 0 failed", out)

    def test_failing_case_fails(self):
        rc, out = self.check(
            ktap([("rust_doctests_kernel", [("a", "ok"), ("b", "not ok")])])
        )
        self.assertNotEqual(rc, 0, out)

    def test_missing_expected_suite_fails(self):
        rc, out = self.check(ktap([("other_suite", [("a", "ok")])]))
        self.assertNotEqual(rc, 0, out)
        self.assertIn("rust_doctests_kernel (missing)", out)

    def test_crash_midway_fails(self):
        text = ktap([("rust_doctests_kernel", [("a", "ok"), ("b", "ok")])])
        # The guest died after the first case: the rest never came.
        cut = text.index("ok 2 b")
        rc, out = self.check(text[:cut] + "[    2.0] Kernel panic - not syncing\n")
        self.assertNotEqual(rc, 0, out)

    def test_empty_log_fails(self):
        rc, out = self.check("[    0.000000] Linux version 7.3.4-blksnap\n")
        self.assertNotEqual(rc, 0, out)

    def test_kernel_bug_fails_passing_run(self):
        text = ktap([("rust_doctests_kernel", [("a", "ok"), ("b", "ok")])])
        oops = (
            "[    1.5] BUG: kernel NULL pointer dereference, address: 0000000000000000\n"
            "[    1.5] Oops: Oops: 0002 [#1] SMP\n"
        )
        cut = text.index("[    1.000000]     ok 2 b")
        rc, out = self.check(text[:cut] + oops + text[cut:])
        self.assertNotEqual(rc, 0, out)
        self.assertIn("reported a bug", out)

    def test_lockdep_report_fails_passing_run(self):
        text = ktap([("rust_doctests_kernel", [("a", "ok")])])
        splat = "[    1.5] WARNING: possible circular locking dependency detected\n"
        rc, out = self.check(text + splat)
        self.assertNotEqual(rc, 0, out)

    def test_warn_fails_passing_run(self):
        # The WARN formats of 7.3 (kernel/panic.c), as x86_64 and ppc64le print them, and the
        # one of older kernels.
        warns = [
            "[    1.5] WARNING: rust/kernel/bug.rs:181 at _RNvNtCs_6kernel3bug5tests+0x2f/0x40, "
            "CPU#0: kunit_try_catch/77\n",
            "[    1.5] WARNING: at rust_helper_WARN_ON+0x1c/0x30, CPU#0: kunit_try_catch/77\n",
            "[    1.5] WARNING: CPU: 0 PID: 77 at rust/helpers/bug.c:12 rust_helper_WARN_ON+0x1c/0x30\n",
        ]
        text = ktap([("rust_doctests_kernel", [("a", "ok"), ("b", "ok")])])
        cut = text.index("[    1.000000]     ok 2 b")
        for warn in warns:
            splat = "[    1.5] ------------[ cut here ]------------\n" + warn
            rc, out = self.check(text[:cut] + splat + text[cut:])
            self.assertNotEqual(rc, 0, warn + out)
            self.assertIn("reported a bug", out)

    def test_warning_words_in_test_output_pass(self):
        # Test output that merely mentions warnings is no bug report.
        text = ktap([("rust_doctests_kernel", [("a", "ok")])])
        rc, out = self.check(text + "[    1.5] blksnap: WARNING: the storage is small\n")
        self.assertEqual(rc, 0, out)

    def test_glob_excludes_expected_suite(self):
        rc, out = self.check(ktap([("blksnap_cbt", [("a", "ok")])]), glob="blksnap_*")
        self.assertEqual(rc, 0, out)


if __name__ == "__main__":
    unittest.main()
