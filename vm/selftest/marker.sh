#!/usr/bin/env bash
# Prints a marker: ci/vm-tests.sh selftest checks that it reaches the
# terminal and the log, and that the console log is whole.
echo "selftest-marker-4711"
