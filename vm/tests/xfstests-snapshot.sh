#!/usr/bin/env bash
# xfstests' CI list (vm/xfstests/ci.list) on ext4 where TEST_DEV is the
# writable image of a snapshot of an origin whose file system keeps
# receiving writes, and SCRATCH_DEV's file system is snapshotted every 20 s
# while the tests use it (vm/xfstests/guest.sh, mode "snapshot"). Any
# failed test, failed snapshot round, change of the origin's data or
# unclean origin file system fails it.
# vm: --disk 1G --disk 1G --disk 3G --timeout 2400
# vm-requires: CONFIG_BLKSNAP CONFIG_EXT4_FS
# vm-arch: x86_64 (as xfstests-cbt)
set -euo pipefail
exec bash "$(dirname "$0")/../xfstests/guest.sh" snapshot ext4 ci
