#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Host tests of linux/assemble.py on a tiny fake base tree."""

import os
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
import unittest
from pathlib import Path

ASSEMBLE = Path(__file__).resolve().parent / "assemble.py"


def run(*args, cwd=None, check=True):
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=check)


class AssembleTest(unittest.TestCase):
    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp())
        base = self.tmp / "src/linux-source-x"
        (base / "block").mkdir(parents=True)
        (base / "block/Makefile").write_text("obj-y += blk-core.o\n")
        (base / "block/blk-core.c").write_text("int core;\n")
        (base / ".gitignore").write_text("*.o\n")
        self.tarball = self.tmp / "base.tar.xz"
        with tarfile.open(self.tarball, "w:xz") as t:
            t.add(base, arcname="linux-source-x")
        self.repo = self.tmp / "repo"
        (self.repo / "linux/tree/block").mkdir(parents=True)
        (self.repo / "linux/patches").mkdir(parents=True)
        (self.repo / "drv").mkdir()
        (self.repo / "linux/tree/block/blk-filter.c").write_text("int filter;\n")
        (self.repo / "drv/main.rs").write_text("// driver\n")
        (self.repo / "linux/patches/makefile.diff").write_text(
            textwrap.dedent(
                """\
                --- a/block/Makefile
                +++ b/block/Makefile
                @@ -1 +1,2 @@
                 obj-y += blk-core.o
                +obj-y += blk-filter.o
                """
            )
        )
        self.write_series()
        self.tree = self.tmp / "tree"

    def write_series(self, extra=""):
        (self.repo / "linux/series.toml").write_text(
            textwrap.dedent(
                """\
                [meta]
                signoff = "Test <t@example.org>"
                [map]
                "linux/tree" = ""
                "drv" = "drivers/block/drv"
                [[patch]]
                slug = "filter"
                subject = "block: add a filter"
                body = "Body text."
                add = ["linux/tree/block"]
                edits = ["linux/patches/makefile.diff"]
                [[patch]]
                slug = "driver"
                subject = "drv: add the driver"
                add = ["drv"]
                """
            )
            + extra
        )

    def assemble(self, check=True):
        return run(
            sys.executable, str(ASSEMBLE), "--tree", str(self.tree), "--tarball",
            str(self.tarball), "--repo", str(self.repo), check=check,
        )

    def git(self, *args):
        return run("git", "-C", str(self.tree), *args).stdout

    def test_series_layout(self):
        self.assemble()
        log = self.git("log", "--format=%s", "base..fork").splitlines()
        self.assertEqual(log, ["drv: add the driver", "block: add a filter"])
        self.assertEqual((self.tree / "block/blk-filter.c").read_text(), "int filter;\n")
        self.assertEqual((self.tree / "drivers/block/drv/main.rs").read_text(), "// driver\n")
        self.assertIn("blk-filter.o", (self.tree / "block/Makefile").read_text())
        # The base holds every file of the tarball, ignored ones included.
        self.assertIn(".gitignore", self.git("ls-tree", "--name-only", "base"))
        # format-patch gives the series, signed off.
        out = self.tmp / "out"
        run("git", "-C", str(self.tree), "format-patch", "-q", "-o", str(out), "base..fork")
        patches = sorted(out.iterdir())
        self.assertEqual(len(patches), 2)
        self.assertIn("Signed-off-by: Test <t@example.org>", patches[0].read_text())

    def test_unchanged_inputs_do_nothing_and_one_change_touches_one_file(self):
        self.assemble()
        head = self.git("rev-parse", "HEAD")
        core = self.tree / "block/blk-core.c"
        drv = self.tree / "drivers/block/drv/main.rs"
        old = 1_000_000_000
        os.utime(core, (old, old))
        os.utime(drv, (old, old))
        self.assertIn("unchanged", self.assemble().stderr)
        self.assertEqual(self.git("rev-parse", "HEAD"), head)
        (self.repo / "linux/tree/block/blk-filter.c").write_text("int filter2;\n")
        time.sleep(0.01)
        self.assertIn("updated", self.assemble().stderr)
        self.assertEqual((self.tree / "block/blk-filter.c").read_text(), "int filter2;\n")
        self.assertEqual(core.stat().st_mtime, old)
        self.assertEqual(drv.stat().st_mtime, old)

    def test_unclaimed_file_is_an_error(self):
        (self.repo / "drv/extra.rs").write_text("// stray\n")
        (self.repo / "linux/series.toml").write_text(
            (self.repo / "linux/series.toml").read_text().replace('add = ["drv"]', 'add = ["drv/main.rs"]')
        )
        res = self.assemble(check=False)
        self.assertNotEqual(res.returncode, 0)
        self.assertIn("drv/extra.rs", res.stderr)

    def test_bad_edit_is_an_error(self):
        (self.repo / "linux/patches/makefile.diff").write_text(
            "--- a/block/Makefile\n+++ b/block/Makefile\n@@ -1 +1,2 @@\n obj-y += nothere.o\n+x\n"
        )
        res = self.assemble(check=False)
        self.assertNotEqual(res.returncode, 0)
        self.assertIn("does not apply", res.stderr)

    def test_local_changes_in_tree_are_refused(self):
        self.assemble()
        (self.tree / "block/blk-core.c").write_text("int hacked;\n")
        (self.repo / "drv/main.rs").write_text("// driver v2\n")
        res = self.assemble(check=False)
        self.assertNotEqual(res.returncode, 0)
        self.assertIn("local changes", res.stderr)

    def test_changed_base_checksum_reunpacks(self):
        self.assemble()
        self.git("config", "blksnap.base-sha256", "stale")
        res = self.assemble()
        self.assertIn("unpacking", res.stderr)


if __name__ == "__main__":
    unittest.main()
