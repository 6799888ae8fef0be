# make demo: a transcript a newcomer can follow, on a two-path LU with one multipath map.
lab_lu 2
a=${LAB_PATHS[0]} b=${LAB_PATHS[1]}
lab_map mpatha --group "$a" "$b"
show() {
	printf '\n$ %s\n' "$*"
	"$@" 2>&1 | sed 's/^/  /' || true
}
say "One logical unit, two paths ($a through host $(lab_host_of "$a"), $b through host $(lab_host_of "$b")),"
say "one dm-multipath map over them:"
show dmsetup table mpatha
show dmsetup status mpatha
say
say "Path $a goes offline:"
path_offline "$a"
show sg_turs -v /dev/mapper/mpatha
say "  ^ SG_IO on the multipath device went to the dead path and was not retried."
show dd if=/dev/mapper/mpatha of=/dev/null bs=4k count=1 iflag=direct
say "  ^ block I/O failed over, and device-mapper now shows $a failed:"
show dmsetup status mpatha
