# make demo: a transcript a newcomer can follow, on a two-path LU with one multipath map.
lab_lu 2
a=${LAB_PATHS[0]} b=${LAB_PATHS[1]}
lab_map mpatha --group "$a" "$b"
show() {
	printf '\n$ %s\n' "$*"
	"$@" 2>&1 | sed 's/^/  /' || true
}
say "One logical unit, two paths ($a through SCSI host $(lab_host_of "$a"), $b through host $(lab_host_of "$b")),"
say "one dm-multipath map over them (one priority group per path: $a is used first):"
show dmsetup table mpatha
show dmsetup status mpatha

say
say "Start the daemon; it publishes a node for the map:"
mpathsg_start
sed 's/^/  [mpath-sgd] /' "$MPATHSG_LOG"
show ls -l /dev/mpath-sg/
show sg_inq /dev/mpath-sg/mpatha
show sg_readcap /dev/mpath-sg/mpatha

say
say "Path $a goes offline:"
path_offline "$a"
show sg_turs -v /dev/mapper/mpatha
say "  ^ SG_IO on the multipath block device went to the dead path and was not retried."
show sg_turs -v /dev/mpath-sg/mpatha
say "  ^ through the node the same command succeeds: mpath-sgd failed over to $b and told device-mapper:"
grep failover "$MPATHSG_LOG" | sed 's/^/  [mpath-sgd] /'
show dmsetup status mpatha
head -c 4096 /dev/urandom >/tmp/demo-pattern
show sg_raw -s 4096 -i /tmp/demo-pattern /dev/mpath-sg/mpatha 2a 00 00 00 00 40 00 00 08 00
show sg_raw -r 4096 -o /tmp/demo-back /dev/mpath-sg/mpatha 28 00 00 00 00 40 00 00 08 00
show cmp /tmp/demo-pattern /tmp/demo-back
say "  ^ data written and read back through the node while $a is down."

say
say "qemu's scsi-generic device realizes on the node (SG_GET_VERSION_NUM, SG_GET_SCSI_ID, INQUIRY VPD):"
qemu_scsi_generic /dev/mpath-sg/mpatha | grep -A3 'dev: scsi-generic' | sed 's/^/  /'

say
say "SIGTERM: the daemon removes its node and exits."
mpathsg_stop
show ls /dev/mpath-sg/
