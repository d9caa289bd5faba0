#!/bin/bash
# Runner self-test: the script's exit status comes back to the host.
echo "exiting with 3"
exit 3
