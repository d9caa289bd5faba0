#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Assemble the fork's kernel tree from the pinned base and linux/series.toml.

The assembled tree is a git repository outside this repo:

* commit tagged ``base``: the pristine upstream tarball, as pinned;
* branch ``fork``: one commit per entry of ``linux/series.toml``, in order,
  so ``git format-patch base..fork`` is the upstream patch series.

Each line of the fork has one source of truth in this repo: new files are
real files (``linux/tree/<kernel path>``, the Rust driver under
``rust-blksnap/driver/``), edits of upstream files are diffs under
``linux/patches/``. The series file says which patch each of them belongs to.

Commits are built with git plumbing on a private index (the working tree is
not touched) and with fixed dates, so unchanged inputs give the same commit
and nothing happens; a change updates only the files whose content changed,
keeping the mtimes of the others so incremental kernel builds stay
incremental.
"""

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIXED_DATE = "1700000000 +0000"


class AssembleError(Exception):
    pass


def git(tree, *args, env=None, input=None):
    full_env = dict(os.environ)
    full_env.update(
        {
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_AUTHOR_DATE": FIXED_DATE,
            "GIT_COMMITTER_DATE": FIXED_DATE,
        }
    )
    if env:
        full_env.update(env)
    res = subprocess.run(
        ["git", "-C", str(tree), "-c", "core.autocrlf=false", "-c", "gc.auto=0", *args],
        env=full_env,
        input=input,
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        raise AssembleError(f"git {' '.join(args[:2])} failed: {res.stderr.strip()}")
    return res.stdout


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_env(path):
    out = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            out[k] = v
    return out


def ident(meta):
    name = meta.get("author_name", "blksnap fork")
    email = meta.get("author_email", "blksnap@localhost")
    return {
        "GIT_AUTHOR_NAME": name,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_COMMITTER_NAME": name,
        "GIT_COMMITTER_EMAIL": email,
    }


def make_base(tree, tarball, tar_sha, label, meta):
    """Unpack the tarball into a fresh git repository, commit, tag 'base'."""
    if tar_sha and sha256(tarball) != tar_sha:
        raise AssembleError(f"checksum mismatch for {tarball}")
    tmp = Path(str(tree) + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    print(f"unpacking {tarball} into {tree}", file=sys.stderr)
    subprocess.run(
        ["tar", "-xf", str(tarball), "-C", str(tmp), "--strip-components=1"], check=True
    )
    git(tmp, "init", "-q", "-b", "fork")
    # A kernel tree ships .gitignore files; the base must hold every file
    # of the tarball, so add them all (-f).
    git(tmp, "add", "-A", "-f", ".")
    git(tmp, "commit", "-q", "--no-verify", "-m", f"base: {label}", env=ident(meta))
    git(tmp, "tag", "base")
    git(tmp, "config", "blksnap.base-sha256", tar_sha or "")
    if tree.exists():
        shutil.rmtree(tree)
    tmp.rename(tree)


def load_series(series_path):
    with open(series_path, "rb") as f:
        series = tomllib.load(f)
    mapping = series.get("map", {})
    patches = series.get("patch", [])
    slugs = set()
    for p in patches:
        for key in ("slug", "subject"):
            if key not in p:
                raise AssembleError(f"a patch in {series_path} has no '{key}'")
        if p["slug"] in slugs:
            raise AssembleError(f"patch slug '{p['slug']}' is used twice")
        slugs.add(p["slug"])
    return series.get("meta", {}), mapping, patches


def kernel_path(rel, mapping):
    """Map a repo-relative path to its kernel path (longest prefix wins)."""
    best = None
    for src in mapping:
        if rel == src or rel.startswith(src.rstrip("/") + "/"):
            if best is None or len(src) > len(best):
                best = src
    if best is None:
        raise AssembleError(f"{rel} is under no directory of [map]")
    dst = mapping[best].strip("/")
    rest = rel[len(best.rstrip("/")) :].lstrip("/")
    return f"{dst}/{rest}" if dst and rest else (dst or rest)


def expand(repo, entries):
    """Expand files and directories to a sorted list of repo-relative files."""
    files = []
    for e in entries:
        p = repo / e
        if p.is_dir():
            files += sorted(
                str(f.relative_to(repo)) for f in p.rglob("*") if f.is_file()
            )
        elif p.is_file():
            files.append(e)
        else:
            raise AssembleError(f"series names {e}, which does not exist")
    return files


def mapped_files(repo, mapping):
    out = set()
    for src in mapping:
        d = repo / src
        if d.is_dir():
            out |= {
                str(f.relative_to(repo))
                for f in d.rglob("*")
                if f.is_file() and not is_ignored(f)
            }
    return out


def is_ignored(path):
    # Editor and build leftovers never belong to the series.
    name = path.name
    return (
        name.endswith(("~", ".orig", ".rej", ".o", ".cmd"))
        or name.startswith(".#")
        or "/target/" in str(path)
    )


def build_chain(tree, repo, meta, mapping, patches):
    """Build the series as commits on top of 'base'; return the last one."""
    base = git(tree, "rev-parse", "base^{commit}").strip()
    prev = base
    claimed = set()
    with tempfile.TemporaryDirectory() as td:
        env = dict(ident(meta), GIT_INDEX_FILE=str(Path(td) / "index"))
        git(tree, "read-tree", base, env=env)
        for p in patches:
            files = expand(repo, p.get("add", []))
            for rel in files:
                if rel in claimed:
                    raise AssembleError(f"{rel} belongs to two patches")
                claimed.add(rel)
            if files:
                blobs = git(
                    tree,
                    "hash-object",
                    "-w",
                    "--stdin-paths",
                    input="\n".join(str(repo / f) for f in files) + "\n",
                ).split()
                info = []
                for rel, blob in zip(files, blobs):
                    mode = "100755" if os.access(repo / rel, os.X_OK) else "100644"
                    info.append(f"{mode} {blob}\t{kernel_path(rel, mapping)}")
                git(tree, "update-index", "--add", "--index-info", env=env,
                    input="\n".join(info) + "\n")
            for diff in p.get("edits", []):
                diff_path = repo / diff
                if not diff_path.is_file():
                    raise AssembleError(f"series names {diff}, which does not exist")
                try:
                    git(tree, "apply", "--cached", "--whitespace=nowarn",
                        str(diff_path), env=env)
                except AssembleError as e:
                    raise AssembleError(f"{diff} does not apply: {e}") from None
            tree_id = git(tree, "write-tree", env=env).strip()
            msg = p["subject"].strip() + "\n"
            if p.get("body"):
                msg += "\n" + p["body"].strip() + "\n"
            signoff = meta.get("signoff")
            if signoff:
                msg += f"\nSigned-off-by: {signoff}\n"
            prev = git(tree, "commit-tree", tree_id, "-p", prev, env=env,
                       input=msg).strip()
    unclaimed = sorted(mapped_files(repo, mapping) - claimed)
    if unclaimed:
        raise AssembleError(
            "files under [map] that no patch adds (add them to the series): "
            + ", ".join(unclaimed)
        )
    return prev


def sync_worktree(tree, new, force):
    """Move branch 'fork' and the working tree to commit `new`."""
    head = git(tree, "rev-parse", "HEAD").strip()
    if head == new:
        return False
    dirty = git(tree, "status", "--porcelain", "--untracked-files=no").strip()
    if dirty and not force:
        raise AssembleError(
            f"{tree} has local changes (the repo is the source of truth; "
            "use --force to drop them):\n" + dirty
        )
    # reset --hard rewrites only the files whose content differs, so the
    # mtimes of untouched files are kept.
    git(tree, "reset", "-q", "--hard", new)
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", type=Path, required=True, help="assembled tree")
    ap.add_argument("--tarball", type=Path, help="base tarball (if the tree is new)")
    ap.add_argument("--repo", type=Path, default=REPO, help="the fork's repo")
    ap.add_argument("--series", type=Path, help="series file (default: linux/series.toml)")
    ap.add_argument("--force", action="store_true", help="drop local changes in the tree")
    args = ap.parse_args()

    repo = args.repo.resolve()
    series_path = args.series or repo / "linux/series.toml"
    env = read_env(repo / "linux/base.env") if (repo / "linux/base.env").exists() else {}
    tar_sha = env.get("BASE_TARBALL_SHA256", "")
    label = f"{env.get('BASE_PKG', 'linux')} {env.get('BASE_VERSION', '')}".strip()
    try:
        meta, mapping, patches = load_series(series_path)
        tree = args.tree.resolve()
        have = (tree / ".git").is_dir() and subprocess.run(
            ["git", "-C", str(tree), "rev-parse", "-q", "--verify", "base"],
            capture_output=True,
        ).returncode == 0
        if have:
            cur = subprocess.run(
                ["git", "-C", str(tree), "config", "blksnap.base-sha256"],
                capture_output=True, text=True,
            ).stdout.strip()
            if cur != tar_sha:
                have = False
        if not have:
            if not args.tarball:
                raise AssembleError(f"{tree} has no base; give --tarball")
            make_base(tree, args.tarball, tar_sha, label, meta)
        new = build_chain(tree, repo, meta, mapping, patches)
        changed = sync_worktree(tree, new, args.force)
        git(tree, "update-ref", "refs/heads/fork", new)
        n = len(patches)
        print(
            f"{tree}: base + {n} patch{'es' if n != 1 else ''}"
            f" ({'updated' if changed else 'unchanged'})",
            file=sys.stderr,
        )
    except AssembleError as e:
        print(f"assemble: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
