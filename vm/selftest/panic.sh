#!/bin/bash
# Runner self-test: a guest that panics is a failure, not a hang.
echo c >/proc/sysrq-trigger
sleep 600
