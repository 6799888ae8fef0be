/*
 * sg_async_probe: exercises sg's asynchronous interface (write() a v3 header, poll(),
 * read() the completion, pack_ids, the 16-request limit, the request table) on one device
 * and prints one line per step: return values, errnos and every output field. Run it on
 * a path's /dev/sgN and on /dev/mpath-sg/X and diff the outputs.
 *
 * usage: sg_async_probe DEVICE
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <scsi/sg.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#ifndef SG_GET_ACCESS_COUNT
#define SG_GET_ACCESS_COUNT 0x2289
#endif

static unsigned char *unmapped;

/* sg_new_write() wants count >= sizeof the 64-bit sg_io_hdr (88) even from a 32-bit
 * caller, whose header is 64 bytes (Linux 6.1): write that much, as such a caller must. */
#define SZ_SG_IO_HDR 88
#define WR_LEN (sizeof(sg_io_hdr_t) < SZ_SG_IO_HDR ? SZ_SG_IO_HDR : sizeof(sg_io_hdr_t))

static uint32_t fnv(const unsigned char *p, size_t n)
{
	uint32_t h = 2166136261u;
	while (n--)
		h = (h ^ *p++) * 16777619u;
	return h;
}

static const char *errname(int e)
{
	static char buf[32];
	switch (e) {
	case 0: return "0";
	case EPERM: return "EPERM";
	case EIO: return "EIO";
	case EBADF: return "EBADF";
	case EAGAIN: return "EAGAIN";
	case EINTR: return "EINTR";
	case EFAULT: return "EFAULT";
	case EINVAL: return "EINVAL";
	case ENOMEM: return "ENOMEM";
	case EDOM: return "EDOM";
	case ENOSYS: return "ENOSYS";
	case EMSGSIZE: return "EMSGSIZE";
	case ENODEV: return "ENODEV";
	case ENXIO: return "ENXIO";
	default:
		snprintf(buf, sizeof buf, "errno%d", e);
		return buf;
	}
}

/* Each request has its own CDB, sense buffer and data buffer, as fio's sg engine has. */
struct req {
	sg_io_hdr_t h;
	unsigned char cdb[16];
	unsigned char sense[64];
	unsigned char data[8192];
};

static struct req reqs[20];

static sg_io_hdr_t *prep(int i, int pack_id, unsigned char op, unsigned lba, unsigned blocks)
{
	struct req *r = &reqs[i];
	memset(r, 0, sizeof *r);
	memset(r->sense, 0xAA, sizeof r->sense);
	memset(r->data, 0xAA, sizeof r->data);
	r->h.interface_id = 'S';
	r->h.cmdp = r->cdb;
	r->h.sbp = r->sense;
	r->h.mx_sb_len = sizeof r->sense;
	r->h.pack_id = pack_id;
	r->h.usr_ptr = r;
	r->h.timeout = 20000;
	r->cdb[0] = op;
	switch (op) {
	case 0x00: /* TEST UNIT READY */
		r->h.cmd_len = 6;
		r->h.dxfer_direction = SG_DXFER_NONE;
		break;
	case 0x12: /* INQUIRY */
		r->h.cmd_len = 6;
		r->cdb[4] = 96;
		r->h.dxfer_direction = SG_DXFER_FROM_DEV;
		r->h.dxferp = r->data;
		r->h.dxfer_len = 96;
		break;
	case 0x28: /* READ(10) */
	case 0x2a: /* WRITE(10) */
		r->h.cmd_len = 10;
		r->cdb[2] = lba >> 24;
		r->cdb[3] = lba >> 16;
		r->cdb[4] = lba >> 8;
		r->cdb[5] = lba;
		r->cdb[8] = blocks;
		r->h.dxfer_direction = op == 0x28 ? SG_DXFER_FROM_DEV : SG_DXFER_TO_DEV;
		r->h.dxferp = r->data;
		r->h.dxfer_len = blocks * 512;
		if (op == 0x2a)
			for (unsigned k = 0; k < blocks * 512; k++)
				r->data[k] = (unsigned char)(k * 7 + lba + 1);
		break;
	}
	return &r->h;
}

static void wr(const char *name, int fd, const void *buf, size_t len)
{
	ssize_t r = write(fd, buf, len);
	printf("%-30s ret=%zd errno=%s\n", name, r, errname(r < 0 ? errno : 0));
	fflush(stdout);
}

/* read() one completion into a fresh header buffer (pack_id set for FORCE_PACK_ID). */
static void rd(const char *name, int fd, int pack_id, size_t count)
{
	static unsigned char buf[512];
	memset(buf, 0x55, sizeof buf);
	sg_io_hdr_t *h = (sg_io_hdr_t *)buf;
	h->interface_id = 'S';
	h->dxfer_direction = SG_DXFER_FROM_DEV; /* negative: a v3 header */
	h->pack_id = pack_id;
	ssize_t r = read(fd, buf, count);
	int e = r < 0 ? errno : 0;
	printf("%-30s ret=%zd errno=%s", name, r, errname(e));
	if (r >= (ssize_t)sizeof(sg_io_hdr_t)) {
		struct req *q = h->usr_ptr;
		printf(" pack_id=%d status=%#x masked=%#x sb_len_wr=%u host=%#x driver=%#x resid=%d info=%#x dxfer_len=%u cmd_len=%u",
		       h->pack_id, h->status, h->masked_status, h->sb_len_wr, h->host_status,
		       h->driver_status, h->resid, h->info, h->dxfer_len, h->cmd_len);
		if (q >= reqs && q < reqs + 20) {
			printf(" req=%d", (int)(q - reqs));
			if (h->sb_len_wr) {
				printf(" sense=");
				for (int i = 0; i < h->sb_len_wr; i++)
					printf("%02x", q->sense[i]);
			}
			/* After CHECK CONDITION the data-in buffer holds whatever the device did
			 * not overwrite (scsi_debug reports resid 0 even when it transferred
			 * nothing): stale bytes of sg's reserve buffer on sg, zeros or this
			 * file's own earlier data on the node (docs/sg-compat.md). */
			if (h->dxfer_len && h->dxfer_direction == SG_DXFER_FROM_DEV &&
			    (h->masked_status & 0x01))
				printf(" data=(unspecified after CHECK CONDITION)");
			else if (h->dxfer_len && h->dxfer_direction == SG_DXFER_FROM_DEV)
				printf(" data=%08x", fnv(q->data, h->dxfer_len - h->resid));
		} else {
			printf(" usr_ptr=bad");
		}
		int tail = 0;
		for (size_t i = sizeof(sg_io_hdr_t); i < sizeof buf; i++)
			tail += buf[i] != 0x55;
		printf(" buf_tail_changed=%d", tail);
	}
	printf("\n");
	fflush(stdout);
}

static int get_int(int fd, unsigned long cmd)
{
	int v = -99;
	if (ioctl(fd, cmd, &v) < 0)
		return -1000 - errno;
	return v;
}

/* Waits (at most 10 s) until n completions are waiting. */
static int wait_for(int fd, int n)
{
	for (int i = 0; i < 1000; i++) {
		if (get_int(fd, SG_GET_NUM_WAITING) >= n)
			return 1;
		usleep(10000);
	}
	return 0;
}

static void show_poll(const char *name, int fd, short events, int timeout)
{
	struct pollfd p = { .fd = fd, .events = events };
	int r = poll(&p, 1, timeout);
	printf("%-30s ret=%d revents=%#x\n", name, r, r > 0 ? p.revents : 0);
	fflush(stdout);
}

static void show_table(const char *name, int fd)
{
	sg_req_info_t t[SG_MAX_QUEUE];
	memset(t, 0x77, sizeof t);
	int r = ioctl(fd, SG_GET_REQUEST_TABLE, t);
	printf("%-30s ret=%d", name, r);
	for (int i = 0; r == 0 && i < SG_MAX_QUEUE; i++) {
		if (!t[i].req_state)
			continue;
		struct req *q = t[i].usr_ptr;
		printf(" [state=%d orphan=%d owned=%d problem=%d pack_id=%d req=%d]", t[i].req_state,
		       t[i].orphan, t[i].sg_io_owned, t[i].problem, t[i].pack_id,
		       q >= reqs && q < reqs + 20 ? (int)(q - reqs) : -1);
	}
	printf("\n");
	fflush(stdout);
}

static void on_alarm(int sig)
{
	(void)sig;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s DEVICE\n", argv[0]);
		return 2;
	}
	const char *dev = argv[1];
	unmapped = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int fd = open(dev, O_RDWR);
	if (fd < 0) {
		perror(dev);
		return 1;
	}
	int one = 1, zero = 0;

	/* --- an idle file */
	printf("%-30s %d\n", "command-q-initially", get_int(fd, SG_GET_COMMAND_Q));
	show_poll("poll-idle", fd, POLLIN | POLLOUT, 0);
	{
		int nb = open(dev, O_RDWR | O_NONBLOCK);
		rd("read-nonblock-empty", nb, -1, sizeof(sg_io_hdr_t));
		close(nb);
		int ro = open(dev, O_RDONLY);
		wr("write-on-rdonly-fd", ro, prep(0, 1, 0x00, 0, 0), WR_LEN);
		close(ro);
	}

	/* --- malformed writes */
	wr("write-short", fd, prep(0, 1, 0x00, 0, 0), 20);
	wr("write-v3-short", fd, prep(0, 1, 0x00, 0, 0), 60);
	{
		/* 32-bit: EINVAL for the count (sg wants 88); 64-bit: EMSGSIZE for cmd_len */
		sg_io_hdr_t *h = prep(0, 1, 0x00, 0, 0);
		h->cmd_len = 5;
		wr("write-sizeof-header", fd, h, sizeof(sg_io_hdr_t));
	}
	{
		sg_io_hdr_t *h = prep(0, 1, 0x00, 0, 0);
		h->interface_id = 'Q';
		wr("write-interface-q", fd, h, WR_LEN);
		h = prep(0, 1, 0x00, 0, 0);
		h->cmd_len = 5;
		wr("write-cmd-len-5", fd, h, WR_LEN);
		h = prep(0, 1, 0x00, 0, 0);
		h->cmdp = NULL;
		wr("write-cmdp-null", fd, h, WR_LEN);
		h = prep(0, 1, 0x00, 0, 0);
		h->cmdp = unmapped;
		wr("write-cmdp-unmapped", fd, h, WR_LEN);
		h = prep(0, 1, 0x2a, 100, 1);
		h->dxferp = unmapped;
		wr("write-dataout-unmapped", fd, h, WR_LEN);
		h = prep(0, 1, 0x28, 0, 1);
		h->dxfer_len = 256u << 20;
		wr("write-dxfer-256m", fd, h, WR_LEN);
	}
	printf("%-30s %d\n", "command-q-after-v3", get_int(fd, SG_GET_COMMAND_Q));
	printf("%-30s %d\n", "num-waiting-after-errors", get_int(fd, SG_GET_NUM_WAITING));

	/* --- one command */
	wr("write-inquiry", fd, prep(1, 101, 0x12, 0, 0), WR_LEN);
	/* POLLIN only: the wait ends with the completion (FUSE_NOTIFY_POLL on the node) */
	show_poll("poll-in-after-inquiry", fd, POLLIN, 10000);
	wait_for(fd, 1);
	printf("%-30s %d\n", "num-waiting", get_int(fd, SG_GET_NUM_WAITING));
	printf("%-30s %d\n", "pack-id", get_int(fd, SG_GET_PACK_ID));
	show_table("table-one-done", fd);
	rd("read-inquiry", fd, -1, sizeof(sg_io_hdr_t));
	show_poll("poll-after-read", fd, POLLIN | POLLOUT, 0);
	printf("%-30s %d\n", "pack-id-none", get_int(fd, SG_GET_PACK_ID));

	/* --- data out, then in; a larger write() count is all taken */
	wr("write-write10", fd, prep(2, 201, 0x2a, 64, 8), WR_LEN + 12);
	wait_for(fd, 1);
	rd("read-write10", fd, -1, sizeof(sg_io_hdr_t));
	wr("write-read10", fd, prep(3, 202, 0x28, 64, 8), WR_LEN);
	wait_for(fd, 1);
	rd("read-read10-count-400", fd, -1, 400);
	printf("%-30s %s\n", "read-back-equals-written",
	       memcmp(reqs[2].data, reqs[3].data, 4096) ? "no" : "yes");

	/* --- target errors: sense through read() */
	wr("write-read10-beyond-end", fd, prep(4, 203, 0x28, 0x7fffffff, 1), WR_LEN);
	wait_for(fd, 1);
	show_table("table-check-condition", fd);
	rd("read-beyond-end", fd, -1, sizeof(sg_io_hdr_t));

	/* --- a count too small for the header: EINVAL, and the request is gone */
	wr("write-tur-for-short-read", fd, prep(5, 204, 0x00, 0, 0), WR_LEN);
	wait_for(fd, 1);
	rd("read-count-50", fd, -1, 50);
	printf("%-30s %d\n", "num-waiting-after-short-read", get_int(fd, SG_GET_NUM_WAITING));

	/* --- pack_ids: oldest first, or the one asked for under FORCE_PACK_ID */
	wr("write-pack-10", fd, prep(6, 10, 0x28, 0, 1), WR_LEN);
	wr("write-pack-20", fd, prep(7, 20, 0x28, 8, 1), WR_LEN);
	wr("write-pack-30", fd, prep(8, 30, 0x00, 0, 0), WR_LEN);
	printf("%-30s %d\n", "all-three-done", wait_for(fd, 3));
	printf("%-30s %d\n", "pack-id-first", get_int(fd, SG_GET_PACK_ID));
	show_table("table-three-done", fd);
	printf("%-30s %d\n", "force-pack-id", ioctl(fd, SG_SET_FORCE_PACK_ID, &one));
	rd("read-pack-30", fd, 30, sizeof(sg_io_hdr_t));
	rd("read-pack-20", fd, 20, sizeof(sg_io_hdr_t));
	{
		int nb = fcntl(fd, F_GETFL);
		fcntl(fd, F_SETFL, nb | O_NONBLOCK);
		rd("read-pack-99-nonblock", fd, 99, sizeof(sg_io_hdr_t));
		fcntl(fd, F_SETFL, nb);
	}
	rd("read-pack-any", fd, -1, sizeof(sg_io_hdr_t));
	printf("%-30s %d\n", "force-pack-id-off", ioctl(fd, SG_SET_FORCE_PACK_ID, &zero));

	/* --- sixteen outstanding, the seventeenth refused */
	for (int i = 0; i < 16; i++)
		if (write(fd, prep(i, 300 + i, 0x00, 0, 0), WR_LEN) < 0)
			printf("write-%d failed: %s\n", i, errname(errno));
	wr("write-17th", fd, prep(16, 316, 0x00, 0, 0), WR_LEN);
	printf("%-30s %d\n", "sixteen-done", wait_for(fd, 16));
	show_poll("poll-full", fd, POLLIN | POLLOUT, 0);
	{
		sg_io_hdr_t *h = prep(17, 317, 0x00, 0, 0);
		int r = ioctl(fd, SG_IO, h);
		printf("%-30s ret=%d errno=%s\n", "sg-io-when-full", r, errname(r < 0 ? errno : 0));
	}
	for (int i = 0; i < 16; i++) {
		char name[32];
		snprintf(name, sizeof name, "drain-%d", i);
		rd(name, fd, -1, sizeof(sg_io_hdr_t));
	}

	/* --- a blocking read with nothing outstanding waits until a signal ends it */
	{
		struct sigaction sa = { .sa_handler = on_alarm }; /* no SA_RESTART */
		sigaction(SIGALRM, &sa, NULL);
		struct timespec t0, t1;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		alarm(1);
		rd("read-blocking-interrupted", fd, -1, sizeof(sg_io_hdr_t));
		clock_gettime(CLOCK_MONOTONIC, &t1);
		double s = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
		printf("%-30s %s\n", "waited-about-1s", s > 0.8 && s < 5 ? "yes" : "no");
	}

	/* --- closing with commands in flight, then the node still serves */
	for (int i = 0; i < 4; i++)
		write(fd, prep(i, 400 + i, 0x28, i * 8, 8), WR_LEN);
	close(fd);
	fd = open(dev, O_RDWR);
	printf("%-30s %d\n", "reopen-num-waiting", get_int(fd, SG_GET_NUM_WAITING));
	wr("write-after-reopen", fd, prep(0, 500, 0x00, 0, 0), WR_LEN);
	wait_for(fd, 1);
	rd("read-after-reopen", fd, -1, sizeof(sg_io_hdr_t));
	close(fd);
	return 0;
}
