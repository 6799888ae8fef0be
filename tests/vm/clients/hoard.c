/*
 * hoard: holds results unread. Opens FILES files on DEVICE and on each writes PER_FILE
 * READ(10) commands of BYTES bytes through sg's asynchronous interface (write()), never
 * reading a result back. Prints how many writes were accepted and how they failed:
 *   accepted=N enomem=M other=K first_error=ERRNO
 * then keeps everything open and unread until killed.
 *
 * usage: hoard DEVICE FILES PER_FILE BYTES
 * All commands share one data buffer: nothing is ever read back into it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <scsi/sg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: %s DEVICE FILES PER_FILE BYTES\n", argv[0]);
		return 2;
	}
	int files = atoi(argv[2]), per_file = atoi(argv[3]);
	unsigned bytes = (unsigned)atoi(argv[4]), blocks = bytes / 512;
	unsigned char *data = aligned_alloc(4096, bytes);
	unsigned char sense[32], cdb[10] = { 0x28, 0, 0, 0, 0, 0, 0, blocks >> 8, blocks & 0xff, 0 };
	int accepted = 0, enomem = 0, other = 0, first_error = 0;
	for (int f = 0; f < files; f++) {
		int fd = open(argv[1], O_RDWR);
		if (fd < 0) {
			perror(argv[1]);
			return 1;
		}
		for (int i = 0; i < per_file; i++) {
			sg_io_hdr_t h;
			memset(&h, 0, sizeof h);
			h.interface_id = 'S';
			h.dxfer_direction = SG_DXFER_FROM_DEV;
			h.cmd_len = sizeof cdb;
			h.cmdp = cdb;
			h.mx_sb_len = sizeof sense;
			h.sbp = sense;
			h.dxferp = data;
			h.dxfer_len = bytes;
			h.timeout = 30000;
			h.pack_id = f * 1000 + i;
			if (write(fd, &h, sizeof h) == (ssize_t)sizeof h) {
				accepted++;
				continue;
			}
			if (!first_error)
				first_error = errno;
			if (errno == ENOMEM)
				enomem++;
			else
				other++;
		}
	}
	printf("accepted=%d enomem=%d other=%d first_error=%s\n", accepted, enomem, other,
	       first_error ? strerrorname_np(first_error) : "0");
	fflush(stdout);
	for (;;)
		pause();
}
