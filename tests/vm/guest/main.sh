#!/bin/bash
# Runs inside the lab VM (started by tests/vm/run): prepares the kernel, then runs each
# scenario in a fresh topology and records its verdict in $LAB_OUT/results.
#
# usage: main.sh OUTDIR   (OUTDIR/scenarios: the scenario files, one per line, each
#                          optionally followed by @rounds)
set -u
LAB_OUT=$1
mapfile -t scenarios <"$LAB_OUT/scenarios"
LAB_ROOT=$(cd "$(dirname "$0")/.." && pwd)
export LAB_OUT LAB_ROOT
. "$LAB_ROOT/guest/prepare.sh"
results=$LAB_OUT/results

pass=0
fail=0
for scenario in "${scenarios[@]}"; do
	# FILE@rounds: the daemon serves SG_IO in CUSE's retry rounds (mpathsg_start adds it).
	LAB_DAEMON_ARGS=
	case $scenario in
	*@rounds)
		scenario=${scenario%@rounds}
		LAB_DAEMON_ARGS=--ioctl-rounds
		;;
	esac
	export LAB_DAEMON_ARGS
	name=$(basename "$scenario" .sh)${LAB_DAEMON_ARGS:+@rounds}
	export LAB_SCENARIO=$name
	echo
	echo "=== scenario $name"
	log=$LAB_OUT/$name.log
	start=$(date +%s.%N)
	# A scenario runs in its own shell with errexit; a hang is a failure, never a pass.
	# Its output goes to a file, printed when it ends: a process stuck in the kernel must
	# not keep the runner waiting on a pipe it holds open.
	trace=
	[ "${LAB_TRACE:-0}" = 1 ] && trace=-x
	timeout --kill-after=10 "${LAB_SCENARIO_TIMEOUT:-300}" \
		bash $trace -c 'PS4="+ \${EPOCHREALTIME} "; set -euo pipefail; . "$LAB_ROOT/lib/lab.sh"; . "$1"' scenario "$scenario" \
		>"$log" 2>&1
	rc=$?
	cat "$log"
	if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
		echo "=== scenario $name timed out after ${LAB_SCENARIO_TIMEOUT:-300}s; processes:"
		ps -eo pid,ppid,stat,wchan:24,args | grep -v '\[' | tail -n 40
	fi
	secs=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
	if [ $rc -eq 0 ]; then
		echo "=== PASS $name (${secs}s)"
		echo "PASS $name $secs" >>"$results"
		pass=$((pass + 1))
	else
		echo "=== FAIL $name (exit $rc, ${secs}s)"
		echo "FAIL $name $secs" >>"$results"
		fail=$((fail + 1))
	fi
	# Clean topology for the next scenario; a scenario that cannot be cleaned up after
	# poisons the rest, so stop there.
	pkill -x mpath-sgd 2>/dev/null && sleep 0.5
	if ! (lab_reset) >>"$LAB_OUT/reset.log" 2>&1; then
		echo "lab: cannot reset the topology after $name (see reset.log)"
		echo "RESET-FAILED $name" >>"$results"
		break
	fi
done
echo "DONE $pass $fail" >>"$results"
