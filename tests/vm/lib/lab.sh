# shellcheck shell=bash
# Lab helpers, sourced inside the lab VM by tests/vm/guest/main.sh before each scenario.
#
# Topology: scsi_debug presents logical units through several SCSI hosts (one host = one
# path, `vpd_use_hostno=0` gives every path to a LU the same VPD 0x83 WWID); device-mapper
# multipath maps are built over those paths with dmsetup (or by multipathd when a scenario
# asks for it). Faults are the ones real paths suffer: device offline, hot-unplug, scsi_debug
# error injection, map suspend/reload.
#
# Every helper fails the scenario (non-zero exit under `set -e`) when it cannot do what it
# says; assertions print what they checked.

LAB_SDEBUG_SYSFS=/sys/bus/pseudo/drivers/scsi_debug

say() { printf '%s\n' "$*"; }
step() { printf '\n-- %s\n' "$*"; }
die() {
	printf 'FAIL: %s\n' "$*" >&2
	exit 1
}

# ---------------------------------------------------------------- assertions

# assert_ok DESC CMD...: CMD must exit 0.
assert_ok() {
	local desc=$1 out rc=0
	shift
	out=$("$@" 2>&1) || rc=$?
	if [ "$rc" -ne 0 ]; then
		printf '%s\n' "$out" | sed 's/^/   | /' >&2
		die "$desc: \`$*\` exited $rc, expected success"
	fi
	say "ok: $desc"
	LAB_LAST_OUTPUT=$out
}

# assert_fails DESC CMD...: CMD must exit non-zero.
assert_fails() {
	local desc=$1 out rc=0
	shift
	out=$("$@" 2>&1) || rc=$?
	if [ "$rc" -eq 0 ]; then
		printf '%s\n' "$out" | sed 's/^/   | /' >&2
		die "$desc: \`$*\` succeeded, expected failure"
	fi
	say "ok: $desc (exit $rc: $(printf '%s' "$out" | tail -n 1))"
	LAB_LAST_OUTPUT=$out
}

# assert_eq DESC EXPECTED ACTUAL
assert_eq() {
	[ "$2" = "$3" ] || die "$1: expected '$2', got '$3'"
	say "ok: $1 ($3)"
}

# assert_match DESC EXTENDED-REGEX TEXT
assert_match() {
	printf '%s' "$3" | grep -Eq -- "$2" || {
		printf '%s\n' "$3" | sed 's/^/   | /' >&2
		die "$1: output does not match /$2/"
	}
	say "ok: $1"
}

# wait_for DESC SECONDS CMD...: poll CMD every 0.1 s until it succeeds.
wait_for() {
	local desc=$1 secs=$2 i
	shift 2
	for ((i = 0; i < secs * 10; i++)); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	die "timed out after ${secs}s waiting for: $desc"
}

# ---------------------------------------------------------------- topology

# lab_lus NLUS NPATHS [scsi_debug params...]: NLUS logical units, each reachable through
# NPATHS paths (one scsi_debug host per path). Sets LAB_LU_PATHS[i]="sdX sdY ..." (paths of
# LU i, in host order) and LAB_PATHS (all path disks).
lab_lus() {
	local nlus=$1 npaths=$2
	shift 2
	[ -d $LAB_SDEBUG_SYSFS ] && die "scsi_debug is already loaded (lab_reset was not run?)"
	modprobe scsi_debug add_host="$npaths" num_tgts=1 max_luns="$nlus" \
		vpd_use_hostno=0 dev_size_mb=64 "$@" || die "modprobe scsi_debug failed"
	wait_for "$((nlus * npaths)) scsi_debug disks" 30 lab_count_disks_is $((nlus * npaths))
	lab_scan_paths
}

# lab_disks_by ATTR VALUE: the sd disks whose SCSI device's ATTR (model, vendor) is VALUE,
# blanks aside.
lab_disks_by() {
	local d
	for d in /sys/block/sd*; do
		[ -e "$d" ] || continue
		[ "$(cat "$d/device/$1" 2>/dev/null | tr -d ' ')" = "$2" ] || continue
		basename "$d"
	done
	return 0
}

lab_sdebug_disks() { lab_disks_by model scsi_debug; }

lab_count_disks_is() { [ "$(lab_sdebug_disks | wc -l)" -eq "$1" ]; }

# lab_lu NPATHS [params...]: one LU behind NPATHS paths.
lab_lu() {
	local n=$1
	shift
	lab_lus 1 "$n" "$@"
}

# Group scsi_debug disks by LU (the WWID from VPD 0x83), paths ordered by host number.
lab_scan_paths() {
	LAB_PATHS=()
	LAB_LU_PATHS=()
	declare -gA LAB_WWID_OF=()
	local -A lu_of=()
	local hctl d w
	while read -r hctl d; do
		w=$(tr -d '\0' </sys/block/"$d"/device/wwid) || die "$d has no WWID"
		LAB_PATHS+=("$d")
		LAB_WWID_OF[$d]=$w
		[ -n "${lu_of[$w]+set}" ] || lu_of[$w]=${#lu_of[@]}
		LAB_LU_PATHS[${lu_of[$w]}]+="${LAB_LU_PATHS[${lu_of[$w]}]:+ }$d"
	done < <(for d in $(lab_sdebug_disks); do
		printf '%s %s\n' "$(basename "$(readlink -f /sys/block/"$d"/device)")" "$d"
	done | sort -t: -k1,1n -k4,4n)
	return 0
}

# dev_t of a disk as MAJ:MIN.
lab_devt() { cat /sys/block/"$1"/dev; }

# sg node of a disk, e.g. /dev/sg1.
lab_sg_of() {
	local n
	n=$(ls /sys/block/"$1"/device/scsi_generic/ 2>/dev/null) || die "$1 has no sg node"
	printf '/dev/%s\n' "$n"
}

# SCSI host number of a disk (the path's "initiator port").
lab_host_of() { basename "$(readlink -f /sys/block/"$1"/device)" | cut -d: -f1; }

# lab_table [--queue] [--group] DISK...: the multipath table over DISK..., printed.
# Default: one priority group (service-time) holding all paths, as multipath's `multibus`.
# --group: one priority group per path, in the given order (multipath's `failover`
# grouping): I/O and ioctls go to the first usable group, deterministically.
# --queue: the map queues I/O when no path is left (feature queue_if_no_path).
lab_table() {
	local queue=0 group=0 d sz table features="0"
	while [ $# -gt 0 ]; do
		case $1 in
		--queue) queue=1 ;;
		--group) group=1 ;;
		*) break ;;
		esac
		shift
	done
	[ $# -gt 0 ] || die "lab_table: no paths"
	[ $queue -eq 1 ] && features="1 queue_if_no_path"
	sz=$(blockdev --getsz /dev/"$1")
	if [ $group -eq 1 ]; then
		table="0 $sz multipath $features 0 $# 1"
		for d in "$@"; do table+=" service-time 0 1 1 $(lab_devt "$d") 1"; done
	else
		table="0 $sz multipath $features 0 1 1 service-time 0 $# 1"
		for d in "$@"; do table+=" $(lab_devt "$d") 1"; done
	fi
	printf '%s\n' "$table"
}

# lab_map NAME [--queue] [--group] DISK...: a multipath map over DISK... with dmsetup
# (options as for lab_table).
lab_map() {
	local name=$1 table
	shift
	table=$(lab_table "$@") || die "lab_map $name: no table"
	dmsetup create "$name" --table "$table" || die "dmsetup create $name failed (table: $table)"
	wait_for "/dev/mapper/$name" 10 test -b /dev/mapper/"$name"
}

# lab_maps_all [--queue]: one map per LU, named lab0, lab1, ... in LU order.
lab_maps_all() {
	local i
	for i in "${!LAB_LU_PATHS[@]}"; do
		# shellcheck disable=SC2086
		lab_map "lab$i" "$@" ${LAB_LU_PATHS[$i]}
	done
}

# lab_many_maps N DISK...: N multipath maps lab0..lab<N-1>, each over all of DISK... (one
# group), made in one dmsetup call. dm lets several tables share a path device, so scale
# needs no more disks (256 scsi_debug LUs take over 4 minutes to probe under TCG).
lab_many_maps() {
	local n=$1 i d sz spec="" paths=""
	shift
	sz=$(blockdev --getsz /dev/"$1")
	for d in "$@"; do paths+=" $(lab_devt "$d") 1"; done
	for ((i = 0; i < n; i++)); do
		spec+="lab$i,,,,0 $sz multipath 0 0 1 1 service-time 0 $# 1$paths;"
	done
	dmsetup create --concise "$spec" --noudevsync || die "dmsetup create of $n maps failed"
	udevadm settle -t 120 || true
}

# map_path_state MAP DISK: A or F, the path's state in device-mapper's map status.
map_path_state() {
	local devt
	devt=$(lab_devt "$2")
	dmsetup status "$1" | awk -v p="$devt" '{ for (i = 1; i < NF; i++) if ($i == p) { print $(i + 1); exit } }'
}

map_fail_path() { dmsetup message "$1" 0 "fail_path $(lab_devt "$2")"; }
map_reinstate_path() { dmsetup message "$1" 0 "reinstate_path $(lab_devt "$2")"; }
map_suspend() { dmsetup suspend "$1"; }
map_resume() { dmsetup resume "$1"; }
# map_reload NAME TABLE: load a new table and make it live.
map_reload() {
	dmsetup reload "$1" --table "$2" && dmsetup resume "$1"
}

# ---------------------------------------------------------------- path faults

# The SCSI device refuses all commands at once (DID_NO_CONNECT), as a dead link does.
path_offline() { echo offline >/sys/block/"$1"/device/state; }
path_running() { echo running >/sys/block/"$1"/device/state; }

# Hot-unplug the path's SCSI device; path_rescan HOST brings it back (possibly as a new sdX).
path_delete() { echo 1 >/sys/block/"$1"/device/delete; }
path_rescan() {
	echo "- - -" >/sys/class/scsi_host/host"$1"/scan
	lab_scan_paths
}

# sdebug_inject EVERY_NTH OPTS: scsi_debug error injection (see scsi_debug's `opts`; e.g.
# 4 = timeout, 2 = medium error, 0x10 = transport error). `sdebug_inject 0 0` stops it.
sdebug_inject() {
	echo "$1" >/sys/bus/pseudo/drivers/scsi_debug/every_nth
	echo "$2" >/sys/bus/pseudo/drivers/scsi_debug/opts
}

# ---------------------------------------------------------------- multipathd

# lab_multipathd_start: the real multipathd (it needs the guest's systemd-udevd, which
# virtme-ng's init starts), making maps of every multipathed LU (find_multipaths no).
# Returns non-zero when it cannot run here.
lab_multipathd_start() {
	mkdir -p /run/lab-multipath
	cat >/run/lab-multipath/multipath.conf <<-EOF
		defaults {
		    user_friendly_names yes
		    find_multipaths no
		    polling_interval 1
		    failback immediate
		}
	EOF
	mount --bind /run/lab-multipath/multipath.conf /etc/multipath.conf 2>/dev/null ||
		{ touch /etc/multipath.conf && mount --bind /run/lab-multipath/multipath.conf /etc/multipath.conf; }
	pgrep -x systemd-udevd >/dev/null || die "systemd-udevd is not running in the lab"
	udevadm trigger --action=add --subsystem-match=block
	udevadm settle -t 10
	multipathd -s || return 1
	wait_for "multipathd to answer" 15 multipathd show daemon
}

lab_multipathd_stop() {
	if pgrep -x multipathd >/dev/null; then
		multipathd shutdown >/dev/null 2>&1 || pkill -x multipathd
		wait_for "multipathd to exit" 10 sh -c '! pgrep -x multipathd'
	fi
	mountpoint -q /etc/multipath.conf && umount /etc/multipath.conf
	return 0
}

# ---------------------------------------------------------------- reset

# lab_udevd_rules RULES...: add udev rules files (in /run/udev/rules.d) to the guest's
# systemd-udevd, which virtme-ng's init starts. Never stop that udevd: libdevmapper sees
# /run/udev/control and would wait forever for udev to confirm each dmsetup operation.
lab_udevd_rules() {
	pgrep -x systemd-udevd >/dev/null || die "systemd-udevd is not running in the lab"
	mkdir -p /run/udev/rules.d
	cp "$@" /run/udev/rules.d/
	LAB_UDEV_RULES+=("$@")
	udevadm control --reload
}

lab_udevd_rules_remove() {
	local f
	for f in "${LAB_UDEV_RULES[@]}"; do rm -f "/run/udev/rules.d/$(basename "$f")"; done
	LAB_UDEV_RULES=()
	pgrep -x systemd-udevd >/dev/null && udevadm control --reload
	return 0
}
LAB_UDEV_RULES=()

# Back to an empty topology: no maps, no scsi_debug, no multipathd, no extra udev rules.
lab_reset() {
	lab_multipathd_stop
	lab_udevd_rules_remove
	dmsetup remove_all -f >/dev/null 2>&1 || true
	if [ -d $LAB_SDEBUG_SYSFS ]; then
		modprobe -r scsi_debug || die "cannot unload scsi_debug (still in use?)"
	fi
	lio_reset
	LAB_PATHS=()
	LAB_LU_PATHS=()
}

# ---------------------------------------------------------------- mpath-sgd

LAB_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
MPATH_SGD=$LAB_REPO/target/release/mpath-sgd
SGIO_PROBE=$LAB_REPO/target/clients/sgio_probe
SGIO_PROBE32=$LAB_REPO/target/clients/sgio_probe32
SG_ASYNC_PROBE=$LAB_REPO/target/clients/sg_async_probe
SG_ASYNC_PROBE32=$LAB_REPO/target/clients/sg_async_probe32
export SECCOMP_EXEC=$LAB_REPO/target/clients/seccomp_exec
# The daemon runs as the shipped unit runs it (capability bounding set, NoNewPrivileges,
# system call filter, LimitNOFILE, OOMScoreAdjust: lib/unit-sandbox), unless
# LAB_DAEMON_SANDBOX=none.
MPATHSG_UNIT=$LAB_REPO/systemd/mpath-sgd.service

# mpathsg_start [ARGS...]: run the daemon in the background (its log in
# $LAB_OUT/<scenario>-mpath-sgd.log) and wait until it serves its maps. $LAB_DAEMON_ARGS
# (set by the runner for SCENARIO@rounds) comes first. The daemon runs under the unit's
# sandbox (lib/unit-sandbox) unless LAB_DAEMON_SANDBOX=none.
mpathsg_start() {
	mpathsg_command "$@"
	local before
	before=$(grep -c "serving" "$MPATHSG_LOG" 2>/dev/null || true)
	"${MPATHSG_CMD[@]}" >>"$MPATHSG_LOG" 2>&1 &
	MPATHSG_PID=$!
	mpathsg_wait_serving "$MPATHSG_PID" "${before:-0}" "$@"
}

# mpathsg_command [ARGS...]: MPATHSG_CMD, the daemon's command line (sandbox, state
# directory, the runner's mode, ARGS), and MPATHSG_LOG.
mpathsg_command() {
	[ -x "$MPATH_SGD" ] || die "$MPATH_SGD is not built (make build)"
	local sandbox=()
	case ${LAB_DAEMON_SANDBOX:-unit} in
	unit) sandbox=("$LAB_ROOT/lib/unit-sandbox" "$MPATHSG_UNIT" --) ;;
	none) ;;
	*) die "LAB_DAEMON_SANDBOX must be unit or none" ;;
	esac
	MPATHSG_LOG=$LAB_OUT/${LAB_SCENARIO:-manual}-mpath-sgd.log
	mkdir -p /run/mpath-sg/state
	# shellcheck disable=SC2206 # LAB_DAEMON_ARGS: words for the daemon (the runner's mode)
	MPATHSG_CMD=("${sandbox[@]}" "$MPATH_SGD" --state-dir /run/mpath-sg/state ${LAB_DAEMON_ARGS:-} "$@")
}

# mpathsg_wait_serving PID BEFORE [ARGS...]: the log has more "serving" lines than BEFORE
# (within 30 s, PID alive meanwhile).
mpathsg_wait_serving() {
	local pid=$1 before=$2 i
	shift 2
	for ((i = 0; i < 300; i++)); do
		kill -0 "$pid" 2>/dev/null || {
			tail -n 20 "$MPATHSG_LOG" >&2
			mpathsg_seccomp_kills >&2
			die "mpath-sgd exited during start"
		}
		if [ "$(grep -c "serving" "$MPATHSG_LOG")" -gt "$before" ]; then
			# The runner's @rounds mode must really be in force.
			case " ${LAB_DAEMON_ARGS:-} $* " in
			*" --ioctl-rounds "*) grep "serving" "$MPATHSG_LOG" | tail -n 1 | grep -q "retry rounds" ||
				die "the daemon does not say it serves SG_IO in retry rounds" ;;
			esac
			return 0
		fi
		sleep 0.1
	done
	die "mpath-sgd did not report serving within 30 s"
}

# mpathsg_start_supervised [ARGS...]: the daemon under lib/fdstore-supervisor, which does
# what systemd does for the unit's restarts (NOTIFY_SOCKET, the fd store, LISTEN_FDS);
# its events in $MPATHSG_SUPLOG. mpathsg_restart and mpathsg_stop_supervised drive it.
mpathsg_start_supervised() {
	mpathsg_command "$@"
	mkdir -p /run/mpath-sg-lab
	MPATHSG_CTL=/run/mpath-sg-lab/supervisor.ctl
	MPATHSG_SUPLOG=$LAB_OUT/${LAB_SCENARIO:-manual}-supervisor.log
	rm -f "$MPATHSG_CTL"
	mkfifo "$MPATHSG_CTL"
	local before
	before=$(grep -c "serving" "$MPATHSG_LOG" 2>/dev/null || true)
	"$LAB_ROOT/lib/fdstore-supervisor" "$MPATHSG_CTL" "$MPATHSG_SUPLOG" -- "${MPATHSG_CMD[@]}" >>"$MPATHSG_LOG" 2>&1 &
	MPATHSG_SUPERVISOR=$!
	mpathsg_wait_serving "$MPATHSG_SUPERVISOR" "${before:-0}" "$@"
	MPATHSG_PID=$(mpathsg_daemon_pid)
}

# mpathsg_daemon_pid: the supervised daemon's pid now.
mpathsg_daemon_pid() { sed -n 's/^[0-9.]* started \([0-9]*\)$/\1/p' "$MPATHSG_SUPLOG" | tail -n 1; }

# mpathsg_restart [kill]: `systemctl restart` (SIGTERM), or with "kill" a crash (SIGKILL)
# and Restart=on-failure; returns once the successor serves.
mpathsg_restart() {
	local before old
	before=$(grep -c "serving" "$MPATHSG_LOG")
	old=$(mpathsg_daemon_pid)
	echo "${1:-restart}" >"$MPATHSG_CTL"
	wait_for "the supervisor started a successor to $old" 30 \
		sh -c '[ "$(sed -n "s/^[0-9.]* started \([0-9]*\)$/\1/p" "$1" | tail -n 1)" != "$2" ]' sh "$MPATHSG_SUPLOG" "$old"
	mpathsg_wait_serving "$MPATHSG_SUPERVISOR" "$before"
	MPATHSG_PID=$(mpathsg_daemon_pid)
}

# mpathsg_stop_supervised: `systemctl stop`: SIGTERM, the store emptied; the daemon must
# exit 0 within 70 s (it waits for commands up to 60 s) and its nodes must be gone.
mpathsg_stop_supervised() {
	[ -n "${MPATHSG_SUPERVISOR:-}" ] || return 0
	echo stop >"$MPATHSG_CTL"
	local i
	for ((i = 0; i < 700; i++)); do
		kill -0 "$MPATHSG_SUPERVISOR" 2>/dev/null || break
		sleep 0.1
	done
	kill -0 "$MPATHSG_SUPERVISOR" 2>/dev/null && die "the supervisor still runs 70 s after stop"
	wait "$MPATHSG_SUPERVISOR" || true
	MPATHSG_SUPERVISOR= MPATHSG_PID=
	local last
	last=$(grep ' exited ' "$MPATHSG_SUPLOG" | tail -n 1)
	[[ $last =~ " exited "[0-9]+" 0"$ ]] || die "mpath-sgd did not exit 0 at stop: $last"
	wait_for "the nodes are gone once the store is emptied" 5 sh -c '! ls /dev/mpath-sg/* >/dev/null 2>&1'
}

# mpathsg_seccomp_kills: the kernel's audit lines for processes the system call filter
# killed (SECCOMP_RET_KILL_PROCESS is logged), naming the call.
mpathsg_seccomp_kills() {
	dmesg | grep -a 'type=1326' | tail -n 5 || true
}

# mpathsg_stop: SIGTERM; the daemon must exit 0 within 10 s and its nodes must be gone.
mpathsg_stop() {
	[ -n "${MPATHSG_PID:-}" ] || return 0
	kill -TERM "$MPATHSG_PID"
	local i rc=0
	for ((i = 0; i < 100; i++)); do
		kill -0 "$MPATHSG_PID" 2>/dev/null || break
		sleep 0.1
	done
	kill -0 "$MPATHSG_PID" 2>/dev/null && die "mpath-sgd still running 10 s after SIGTERM"
	wait "$MPATHSG_PID" || rc=$?
	MPATHSG_PID=
	[ "$rc" -eq 0 ] || {
		mpathsg_seccomp_kills >&2
		die "mpath-sgd exited $rc after SIGTERM (log: $MPATHSG_LOG)"
	}
	if compgen -G "/dev/mpath-sg/*" >/dev/null; then
		die "nodes left after the daemon exited: $(ls /dev/mpath-sg)"
	fi
}

# mpathsg_log_has REGEX: the daemon logged a line matching REGEX.
mpathsg_log_has() { grep -Eq -- "$1" "$MPATHSG_LOG"; }

# Commands the SCSI device has been sent (scsi_device iorequest_cnt), to see which path
# carried I/O.
path_iocount() { printf '%d\n' "$(cat /sys/block/"$1"/device/iorequest_cnt)"; }

# qemu realizes a scsi-generic device on DEV (no guest is booted): prints the qtree.
qemu_scsi_generic() {
	printf 'info qtree\nquit\n' | timeout 120 qemu-system-x86_64 -S -accel tcg -display none -nodefaults \
		-machine q35 -blockdev driver=host_device,filename="$1",node-name=d0 \
		-device virtio-scsi-pci,id=scsi0 -device scsi-generic,drive=d0,bus=scsi0.0,id=sg0 \
		-monitor stdio 2>&1
}

# ---------------------------------------------------------------- a guest on a node

# guest_initramfs FILE: the guest's initramfs (newc cpio): static busybox, guest_io, the
# modules of the running kernel that its disk needs (decompressed: busybox's insmod reads
# plain .ko), and tests/vm/nested/init.
guest_initramfs() {
	local out=$1 dir f base
	dir=$(mktemp -d)
	mkdir -p "$dir"/bin "$dir"/dev "$dir"/proc "$dir"/sys "$dir"/modules
	cp /bin/busybox "$dir"/bin/busybox
	cp "$LAB_REPO"/target/clients/guest_io "$dir"/guest_io || die "guest_io is not built (make build)"
	cp "$LAB_ROOT"/nested/init "$dir"/init
	# (One module per modprobe: its further words are module parameters.)
	for f in virtio_pci virtio_scsi sd_mod; do modprobe --show-depends "$f"; done |
		awk '$1 == "insmod" && !seen[$2]++ { print $2 }' |
		while read -r f; do
			base=$(basename "$f")
			case $f in
			*.xz) busybox xzcat "$f" >"$dir/modules/${base%.xz}" ;;
			*) cp "$f" "$dir/modules/$base" ;;
			esac
			echo "${base%.xz}" >>"$dir"/modules.order
		done
	[ -s "$dir"/modules.order ] || die "no modules for the guest's disk"
	(cd "$dir" && find . | busybox cpio -o -H newc 2>/dev/null) >"$out" || die "guest initramfs: cpio failed"
	rm -rf "$dir"
}

# guest_start DEV SECONDS CONSOLE: boots the lab's own kernel in qemu (TCG, q35) with
# DEV as its disk (virtio-scsi, scsi-generic), running guest_io for SECONDS; the guest's
# console goes to CONSOLE. Sets GUEST_PID.
guest_start() {
	local dev=$1 seconds=$2 console=$3 initrd=$LAB_OUT/guest-initramfs.cpio
	[ -s "$initrd" ] || guest_initramfs "$initrd"
	: >"$console"
	qemu-system-x86_64 -accel tcg -machine q35 -m 512 -smp 1 -nodefaults -display none -no-reboot \
		-kernel /boot/vmlinuz-"$(uname -r)" -initrd "$initrd" \
		-append "console=ttyS0 rdinit=/init panic=-1 quiet guest_io_seconds=$seconds" \
		-serial file:"$console" \
		-blockdev driver=host_device,filename="$dev",node-name=d0 \
		-device virtio-scsi-pci,id=scsi0 -device scsi-generic,drive=d0,bus=scsi0.0,id=sg0 \
		>"$console.qemu" 2>&1 &
	GUEST_PID=$!
}

# guest_wait CONSOLE PATTERN TIMEOUT: waits for a console line matching PATTERN; fails
# if the guest exits first.
guest_wait() {
	local console=$1 pattern=$2 timeout=$3 i
	for ((i = 0; i < timeout * 10; i++)); do
		grep -aq -- "$pattern" "$console" && return 0
		kill -0 "$GUEST_PID" 2>/dev/null || break
		sleep 0.1
	done
	grep -aq -- "$pattern" "$console" && return 0
	tail -n 20 "$console" "$console.qemu" >&2
	die "the guest did not print '$pattern' within ${timeout}s"
}

# ---------------------------------------------------------------- LIO over tcm_loop
# A real SCSI target (persistent reservations, settable ALUA states) in the VM: a RAM-disk
# backstore seen through several tcm_loop targets is one LU with several I_T nexuses, each
# its own SCSI host (a path). ../shared/notes/vm-lab.md has the recipe this follows.
LAB_LIO=/sys/kernel/config/target
LAB_LIO_PORTS=0 # tcm_loop targets made so far (their WWNs are numbered from it)

# lio_setup: the modules, configfs, and a writable dbroot (LIO keeps PR and ALUA metadata
# there; without one every PR OUT answers NOT READY).
lio_setup() {
	modprobe target_core_mod || die "modprobe target_core_mod failed"
	modprobe tcm_loop || die "modprobe tcm_loop failed"
	mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config
	mkdir -p /run/lab-target/pr /run/lab-target/alua
	[ "$(cat $LAB_LIO/dbroot)" = /run/lab-target ] || echo /run/lab-target >$LAB_LIO/dbroot ||
		die "cannot set LIO's dbroot"
}

# lio_lu NAME [MIB]: a RAM-disk LU (default 64 MiB) with a unit serial (for VPD 0x83) and
# a second ALUA target port group, tpg_b (id 2), beside LIO's default_tg_pt_gp (id 0).
lio_lu() {
	local name=$1 mib=${2:-64} d=$LAB_LIO/core/rd_mcp_0/$1
	mkdir -p "$d" || die "cannot make LIO backstore $name"
	echo "rd_pages=$((mib * 256))" >"$d"/control
	echo "lab-$name" >"$d"/wwn/vpd_unit_serial
	echo 1 >"$d"/enable || die "cannot enable LIO backstore $name"
	mkdir "$d"/alua/tpg_b && echo 2 >"$d"/alua/tpg_b/tg_pt_gp_id || die "cannot make tpg_b on $name"
}

# lio_disks: the sd disks LIO presents.
lio_disks() { lab_disks_by vendor LIO-ORG; }

lio_more_disks_than() { [ "$(lio_disks | wc -l)" -gt "$1" ]; }

# lio_port LU [GROUP]: a new tcm_loop target (one I_T nexus, one SCSI host) presenting LU as
# its LUN 0, its port in ALUA group GROUP (default_tg_pt_gp, the default, or tpg_b). Sets
# LIO_DISK to the sd disk that appeared for it.
lio_port() {
	local lu=$1 group=${2:-default_tg_pt_gp} n w before
	n=$((++LAB_LIO_PORTS))
	w=$LAB_LIO/loopback/naa.50014050000000$(printf %02d "$n")/tpgt_1
	before=$(lio_disks)
	mkdir -p "$w" || die "cannot make tcm_loop target $n"
	# The nexus first: it makes the SCSI host (a LUN made before it is never discovered).
	echo "naa.50014059999999$(printf %02d "$n")" >"$w"/nexus || die "cannot make the nexus of port $n"
	mkdir -p "$w"/lun/lun_0
	ln -s "$LAB_LIO/core/rd_mcp_0/$lu" "$w"/lun/lun_0/virtual_scsi_port || die "cannot map $lu on port $n"
	echo "$group" >"$w"/lun/lun_0/alua_tg_pt_gp || die "cannot put port $n in $group"
	wait_for "the disk of LIO port $n" 30 lio_more_disks_than "$(wc -w <<<"$before")"
	LIO_DISK=$(comm -13 <(sort <<<"$before") <(lio_disks | sort) | head -n 1)
	[ -n "$LIO_DISK" ] || die "no new disk for LIO port $n"
}

# lio_alua LU GROUP STATE: the ALUA access state of GROUP's ports for LU (optimized,
# nonoptimized, standby, unavailable, transitioning).
lio_alua() {
	local code
	case $3 in
	optimized) code=0 ;; nonoptimized) code=1 ;; standby) code=2 ;;
	unavailable) code=3 ;; transitioning) code=15 ;;
	*) die "lio_alua: unknown state $3" ;;
	esac
	echo "$code" >"$LAB_LIO/core/rd_mcp_0/$1/alua/$2/alua_access_state" ||
		die "cannot set $1's $2 to $3"
}

# lio_reset: every port, LU and group gone, modules unloaded.
lio_reset() {
	[ -d $LAB_LIO/core ] || return 0
	local w l
	for w in $LAB_LIO/loopback/naa.*/tpgt_*; do
		[ -d "$w" ] || continue
		for l in "$w"/lun/lun_*; do
			[ -d "$l" ] || continue
			rm -f "$l"/virtual_scsi_port
			rmdir "$l"
		done
		rmdir "$w" && rmdir "$(dirname "$w")"
	done
	for l in $LAB_LIO/core/rd_mcp_*/*/; do
		[ -d "$l" ] || continue
		rmdir "$l"/alua/tpg_b 2>/dev/null || true
		rmdir "$l"
	done
	rmdir $LAB_LIO/core/rd_mcp_* 2>/dev/null || true
	LAB_LIO_PORTS=0
	modprobe -r tcm_loop 2>/dev/null || true
}
