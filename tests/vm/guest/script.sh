#!/bin/bash
# Runs one script inside the lab VM (tests/vm/run --script FILE): same kernel preparation
# as the scenario runner, one topology, the script's own output as the transcript.
# usage: script.sh OUTDIR FILE
set -u
LAB_OUT=$1
LAB_ROOT=$(cd "$(dirname "$0")/.." && pwd)
export LAB_OUT LAB_ROOT
. "$LAB_ROOT/guest/prepare.sh"
if bash -c 'set -euo pipefail; . "$LAB_ROOT/lib/lab.sh"; . "$1"' script "$2"; then
	echo "SCRIPT-OK" >>"$LAB_OUT/results"
else
	echo "SCRIPT-FAILED $?" >>"$LAB_OUT/results"
fi
