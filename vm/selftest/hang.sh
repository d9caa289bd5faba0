#!/bin/bash
# Runner self-test: a guest that hangs is killed by the timeout.
sleep 3600
