#!/usr/bin/env bash
# xfstests' CI list (vm/xfstests/ci.list) on ext4 with the change tracker
# attached to TEST_DEV and SCRATCH_DEV before mkfs: a filter under the file
# system must change nothing the file system's own regression tests can
# notice. Any failed test fails this one; tests the kernel cannot run are
# reported as not run. Results and logs: $VM_OUT/xfstests.
# vm: --disk 1G --disk 1G --timeout 1800
# vm-requires: CONFIG_BLKSNAP CONFIG_EXT4_FS
# vm-arch: x86_64 (xfstests take about 5 minutes of TCG on x86_64 and several times that on ppc64le; the file system code is not page-size specific enough to pay for it in every run)
set -euo pipefail
exec bash "$(dirname "$0")/../xfstests/guest.sh" cbt ext4 ci
