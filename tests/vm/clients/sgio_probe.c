/*
 * sgio_probe: sends a fixed list of SG_IO calls and sg ioctls, well-formed and malformed,
 * to one device and prints one line per case: the ioctl's return value and errno, and
 * every output field sg writes. Run it on a path's /dev/sgN and on /dev/mpath-sg/X and
 * diff the two outputs: the node must answer as the sg driver does.
 *
 * Built natively and with -m32 (the compat ioctl path) by the Makefile.
 *
 * usage: sgio_probe DEVICE [--no-rawio]
 *        sgio_probe DEVICE --limits [HW_BYTES]
 *        sgio_probe DEVICE --tur TIMEOUT_MS
 *        sgio_probe DEVICE --version
 *   --no-rawio   drop CAP_SYS_RAWIO from the effective set first (sg's permission filter
 *                applies to callers without it)
 *   --limits     print the advertised maximum transfer (BLKSECTGET, SG_GET_RESERVED_SIZE
 *                after asking for 64 MiB, SG_GET_SG_TABLESIZE), then READ exactly that many
 *                bytes and one block more (and HW_BYTES and one block more)
 *   --tur        one TEST UNIT READY with that timeout; prints its outcome and the time it took
 *   --version    open, SG_GET_VERSION_NUM, close: prints the value and the time it took
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <scsi/sg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define BLKSECTGET_ 0x1267 /* _IO(0x12, 103): bytes on sg, sectors on block devices */
/* glibc's <scsi/sg.h> predates these */
#ifndef SG_DXFER_UNKNOWN
#define SG_DXFER_UNKNOWN -5
#endif
#ifndef SG_GET_ACCESS_COUNT
#define SG_GET_ACCESS_COUNT 0x2289
#endif
#ifndef SG_FLAG_Q_AT_TAIL
#define SG_FLAG_Q_AT_TAIL 0x10
#endif

static const char *dev;
static unsigned char sensebuf[256];
static int rw_fd, ro_fd;
static unsigned char *unmapped; /* a page that faults */

static uint32_t fnv(const unsigned char *p, size_t n)
{
	uint32_t h = 2166136261u;
	while (n--)
		h = (h ^ *p++) * 16777619u;
	return h;
}

static const char *errname(int e)
{
	switch (e) {
	case 0: return "0";
	case EPERM: return "EPERM";
	case EIO: return "EIO";
	case ENXIO: return "ENXIO";
	case ENOMEM: return "ENOMEM";
	case EFAULT: return "EFAULT";
	case EBUSY: return "EBUSY";
	case ENODEV: return "ENODEV";
	case EINVAL: return "EINVAL";
	case ENOTTY: return "ENOTTY";
	case EDOM: return "EDOM";
	case ENOSYS: return "ENOSYS";
	case EMSGSIZE: return "EMSGSIZE";
	case ENOTCONN: return "ENOTCONN";
	default: {
		static char buf[32];
		snprintf(buf, sizeof buf, "errno%d", e);
		return buf;
	}
	}
}

/* One SG_IO; prints the outcome. sense/data are checked for bytes written past what sg
 * says it wrote (they start filled with 0xAA). */
static void sgio(const char *name, int fd, sg_io_hdr_t *h, unsigned char *data, size_t data_len)
{
	unsigned char *sense = h->sbp;
	int r = ioctl(fd, SG_IO, h);
	int e = r < 0 ? errno : 0;
	printf("%-28s ret=%d errno=%s", name, r, errname(e));
	if (r == 0) {
		printf(" status=%#x masked=%#x msg=%#x sb_len_wr=%u host=%#x driver=%#x resid=%d info=%#x",
		       h->status, h->masked_status, h->msg_status, h->sb_len_wr, h->host_status,
		       h->driver_status, h->resid, h->info);
		if (sense && h->sb_len_wr) {
			printf(" sense=");
			for (int i = 0; i < h->sb_len_wr; i++)
				printf("%02x", sense[i]);
		}
		if (sense) {
			int tail = 0;
			for (int i = h->sb_len_wr; i < 255; i++)
				tail += sense[i] != 0xAA;
			printf(" sense_tail_changed=%d", tail);
		}
		/* A linear buffer is compared over what the device transferred: past
		 * dxfer_len - resid, sg copies back stale bytes of its bounce buffer (and the
		 * node leaves the caller's bytes alone; docs/sg-compat.md). */
		/* After CHECK CONDITION the buffer holds whatever the device did not
		 * overwrite (scsi_debug reports resid 0 even when it moved nothing): stale
		 * bytes of sg's bounce buffer on sg, zeros or this file's own earlier data on
		 * the node (docs/sg-compat.md). */
		if (data && data_len && (h->masked_status & 0x01) && h->resid == 0) {
			printf(" data=(unspecified after CHECK CONDITION)");
		} else if (data && data_len && h->iovec_count == 0) {
			size_t n = h->dxfer_len - (h->resid > 0 ? (size_t)h->resid : 0);
			printf(" data=%08x", fnv(data, n < data_len ? n : data_len));
		} else if (data && data_len) {
			printf(" data=%08x", fnv(data, data_len));
		}
	}
	printf("\n");
	fflush(stdout);
}

static sg_io_hdr_t hdr(int dir, unsigned char *cdb, int cdb_len, void *data, unsigned len)
{
	sg_io_hdr_t h;
	memset(&h, 0, sizeof h);
	memset(sensebuf, 0xAA, sizeof sensebuf);
	h.interface_id = 'S';
	h.dxfer_direction = dir;
	h.cmd_len = cdb_len;
	h.cmdp = cdb;
	h.mx_sb_len = 32;
	h.sbp = sensebuf;
	h.dxferp = data;
	h.dxfer_len = len;
	h.timeout = 20000;
	return h;
}

static void int_ioctl(const char *name, int fd, unsigned long cmd, int *arg)
{
	int r = ioctl(fd, cmd, arg);
	int e = r < 0 ? errno : 0;
	printf("%-28s ret=%d errno=%s", name, r, errname(e));
	if (r == 0 && arg)
		printf(" value=%d", *arg);
	printf("\n");
}

static int drop_cap_sys_rawio(void)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2];
	if (syscall(SYS_capget, &h, d))
		return -1;
	d[CAP_SYS_RAWIO / 32].effective &= ~(1u << (CAP_SYS_RAWIO % 32));
	return syscall(SYS_capset, &h, d);
}

static int limits(int fd, unsigned hw)
{
	int sect = -1, res = 64 << 20, tbl = -1;
	if (ioctl(fd, BLKSECTGET_, &sect) || ioctl(fd, SG_SET_RESERVED_SIZE, &res) ||
	    ioctl(fd, SG_GET_RESERVED_SIZE, &res) || ioctl(fd, SG_GET_SG_TABLESIZE, &tbl)) {
		perror("limits ioctl");
		return 1;
	}
	printf("blksectget=%d reserved=%d tablesize=%d\n", sect, res, tbl);
	unsigned top = hw > (unsigned)sect ? hw : (unsigned)sect;
	unsigned char *big = malloc(top + 4096);
	unsigned sizes[4] = { sect, sect + 512, hw, hw + 512 };
	for (int k = 0; k < (hw ? 4 : 2); k++) {
		unsigned blocks = sizes[k] / 512;
		unsigned char rd[10] = { 0x28, 0, 0, 0, 0, 0, 0, blocks >> 8, blocks & 0xff, 0 };
		if (blocks > 0xffff)
			continue; /* READ(10) cannot say it */
		sg_io_hdr_t h = hdr(SG_DXFER_FROM_DEV, rd, 10, big, blocks * 512);
		char name[64];
		snprintf(name, sizeof name, "read-%u-bytes", blocks * 512);
		sgio(name, fd, &h, NULL, 0);
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s DEVICE [--no-rawio]\n", argv[0]);
		return 2;
	}
	dev = argv[1];
	if (argc > 2 && !strcmp(argv[2], "--no-rawio") && drop_cap_sys_rawio()) {
		perror("capset");
		return 2;
	}
	if (argc > 2 && !strcmp(argv[2], "--version")) {
		struct timespec t0, t1;
		int v = -1;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		int fd = open(dev, O_RDWR | O_NONBLOCK);
		int r = fd < 0 ? -1 : ioctl(fd, SG_GET_VERSION_NUM, &v);
		if (fd >= 0)
			close(fd);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		printf("version ret=%d value=%d elapsed_ms=%ld\n", r, v,
		       (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000);
		return r == 0 ? 0 : 1;
	}
	rw_fd = open(dev, O_RDWR | O_NONBLOCK);
	ro_fd = open(dev, O_RDONLY | O_NONBLOCK);
	if (rw_fd < 0 || ro_fd < 0) {
		fprintf(stderr, "%s: open: %s\n", dev, strerror(errno));
		return 2;
	}
	unmapped = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (argc > 2 && !strcmp(argv[2], "--limits"))
		return limits(rw_fd, argc > 3 ? (unsigned)atoi(argv[3]) : 0);
	if (argc > 3 && !strcmp(argv[2], "--tur")) {
		unsigned char tur[6] = { 0 };
		struct timespec t0, t1;
		sg_io_hdr_t h = hdr(SG_DXFER_NONE, tur, 6, NULL, 0);
		h.timeout = atoi(argv[3]);
		clock_gettime(CLOCK_MONOTONIC, &t0);
		sgio("tur", rw_fd, &h, NULL, 0);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		printf("elapsed_ms=%ld\n", (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000);
		return 0;
	}
	static unsigned char buf[65536], buf2[65536];
	unsigned char tur[6] = { 0 };
	unsigned char inq[6] = { 0x12, 0, 0, 0, 96, 0 };
	unsigned char inq83[6] = { 0x12, 1, 0x83, 0, 255, 0 };
	unsigned char rd10[10] = { 0x28, 0, 0, 0, 0, 8, 0, 0, 8, 0 };       /* LBA 8, 8 blocks */
	unsigned char wr10[10] = { 0x2a, 0, 0, 0, 0, 8, 0, 0, 8, 0 };
	unsigned char rd_oob[10] = { 0x28, 0, 0x7f, 0xff, 0xff, 0xff, 0, 0, 1, 0 }; /* LBA out of range */
	unsigned char badop[6] = { 0xc7, 0, 0, 0, 0, 0 };                        /* vendor opcode */
	unsigned char cdb253[260] = { 0 };
	sg_io_hdr_t h;

	/* --- header validation */
	h = hdr(SG_DXFER_NONE, tur, 6, NULL, 0);
	h.interface_id = 'Q';
	sgio("v4-header", rw_fd, &h, NULL, 0);
	h = hdr(SG_DXFER_NONE, tur, 6, NULL, 0);
	h.interface_id = 0;
	sgio("interface-id-0", rw_fd, &h, NULL, 0);
	h = hdr(SG_DXFER_NONE, tur, 0, NULL, 0);
	sgio("cmd-len-0", rw_fd, &h, NULL, 0);
	h = hdr(SG_DXFER_NONE, tur, 5, NULL, 0);
	sgio("cmd-len-5", rw_fd, &h, NULL, 0);
	h = hdr(SG_DXFER_NONE, cdb253, 253, NULL, 0);
	sgio("cmd-len-253", rw_fd, &h, NULL, 0);
	h = hdr(SG_DXFER_NONE, NULL, 6, NULL, 0);
	sgio("cmdp-null", rw_fd, &h, NULL, 0);
	h = hdr(SG_DXFER_NONE, unmapped, 6, NULL, 0);
	sgio("cmdp-unmapped", rw_fd, &h, NULL, 0);
	{
		int r = ioctl(rw_fd, SG_IO, NULL);
		printf("%-28s ret=%d errno=%s\n", "hdr-null", r, errname(r < 0 ? errno : 0));
		r = ioctl(rw_fd, SG_IO, unmapped);
		printf("%-28s ret=%d errno=%s\n", "hdr-unmapped", r, errname(r < 0 ? errno : 0));
	}

	/* --- well-formed commands */
	h = hdr(SG_DXFER_NONE, tur, 6, NULL, 0);
	sgio("tur", rw_fd, &h, NULL, 0);
	memset(buf, 0, sizeof buf);
	h = hdr(SG_DXFER_FROM_DEV, inq, 6, buf, 96);
	sgio("inquiry", rw_fd, &h, buf, 96);
	memset(buf, 0, sizeof buf);
	h = hdr(SG_DXFER_FROM_DEV, inq83, 6, buf, 255);
	sgio("inquiry-vpd83", rw_fd, &h, buf, 255);
	memset(buf, 0x5a, 4096);
	h = hdr(SG_DXFER_TO_DEV, wr10, 10, buf, 4096);
	sgio("write10", rw_fd, &h, NULL, 0);
	memset(buf2, 0, sizeof buf2);
	h = hdr(SG_DXFER_FROM_DEV, rd10, 10, buf2, 4096);
	sgio("read10-after-write", rw_fd, &h, buf2, 4096);
	printf("%-28s %s\n", "read-back-matches", memcmp(buf, buf2, 4096) ? "no" : "yes");
	memset(buf, 0, sizeof buf);
	h = hdr(SG_DXFER_TO_FROM_DEV, rd10, 10, buf, 4096);
	sgio("read10-to-from-dev", rw_fd, &h, buf, 4096);
	memset(buf, 0, sizeof buf);
	h = hdr(SG_DXFER_UNKNOWN, inq, 6, buf, 96);
	sgio("inquiry-dxfer-unknown", rw_fd, &h, buf, 96);
	memset(buf, 0, sizeof buf);
	h = hdr(-42, inq, 6, buf, 96);
	sgio("inquiry-dxfer-bogus", rw_fd, &h, buf, 96);
	memset(buf, 0, sizeof buf);
	h = hdr(SG_DXFER_FROM_DEV, inq, 6, buf, 4096);
	sgio("inquiry-resid", rw_fd, &h, buf, 4096);

	/* --- target errors, sense handling */
	h = hdr(SG_DXFER_FROM_DEV, rd_oob, 10, buf, 512);
	sgio("read-out-of-range", rw_fd, &h, NULL, 0);
	h = hdr(SG_DXFER_FROM_DEV, rd_oob, 10, buf, 512);
	h.mx_sb_len = 255;
	sgio("sense-mx-sb-len-255", rw_fd, &h, NULL, 0);
	h = hdr(SG_DXFER_FROM_DEV, rd_oob, 10, buf, 512);
	h.mx_sb_len = 8;
	sgio("sense-mx-sb-len-8", rw_fd, &h, NULL, 0);
	h = hdr(SG_DXFER_FROM_DEV, rd_oob, 10, buf, 512);
	h.mx_sb_len = 0;
	sgio("sense-mx-sb-len-0", rw_fd, &h, NULL, 0);
	h = hdr(SG_DXFER_FROM_DEV, rd_oob, 10, buf, 512);
	h.sbp = NULL;
	sgio("sense-sbp-null", rw_fd, &h, NULL, 0);
	h = hdr(SG_DXFER_NONE, badop, 6, NULL, 0);
	sgio("vendor-opcode", rw_fd, &h, NULL, 0);

	/* --- data pointers and lengths */
	h = hdr(SG_DXFER_FROM_DEV, inq, 6, NULL, 96);
	sgio("dxferp-null-from-dev", rw_fd, &h, NULL, 0);
	{
		/* sg sends whatever its bounce buffer holds: aim it at blocks nothing reads */
		unsigned char wr_scratch[10] = { 0x2a, 0, 0, 0, 0x10, 0, 0, 0, 8, 0 };
		h = hdr(SG_DXFER_TO_DEV, wr_scratch, 10, NULL, 4096);
		sgio("dxferp-null-to-dev", rw_fd, &h, NULL, 0);
	}
	h = hdr(SG_DXFER_FROM_DEV, inq, 6, unmapped, 96);
	sgio("dxferp-unmapped-from-dev", rw_fd, &h, NULL, 0);
	h = hdr(SG_DXFER_TO_DEV, wr10, 10, unmapped, 4096);
	sgio("dxferp-unmapped-to-dev", rw_fd, &h, NULL, 0);
	h = hdr(SG_DXFER_FROM_DEV, rd10, 10, buf, 256u << 20);
	sgio("dxfer-len-256MiB", rw_fd, &h, NULL, 0);
	h = hdr(SG_DXFER_FROM_DEV, rd10, 10, buf, 0);
	sgio("dxfer-len-0-read", rw_fd, &h, NULL, 0);
	h = hdr(SG_DXFER_NONE, tur, 6, buf, 512);
	sgio("dxfer-none-with-len", rw_fd, &h, NULL, 0);

	/* --- iovec lists */
	{
		static sg_iovec_t iov[1100];
		memset(buf2, 0, sizeof buf2);
		iov[0].iov_base = buf2;
		iov[0].iov_len = 1000;
		iov[1].iov_base = buf2 + 2048;
		iov[1].iov_len = 2096;
		iov[2].iov_base = buf2 + 8192;
		iov[2].iov_len = 1000;
		h = hdr(SG_DXFER_FROM_DEV, rd10, 10, iov, 4096);
		h.iovec_count = 3;
		sgio("iovec-read-3", rw_fd, &h, buf2, 16384);
		memset(buf, 0x3c, 4096);
		iov[0].iov_base = buf;
		iov[0].iov_len = 4000;
		iov[1].iov_base = buf + 4000;
		iov[1].iov_len = 96;
		h = hdr(SG_DXFER_TO_DEV, wr10, 10, iov, 4096);
		h.iovec_count = 2;
		sgio("iovec-write-2", rw_fd, &h, NULL, 0);
		memset(buf2, 0, sizeof buf2);
		h = hdr(SG_DXFER_FROM_DEV, rd10, 10, buf2, 4096);
		sgio("iovec-write-read-back", rw_fd, &h, buf2, 4096);
		h = hdr(SG_DXFER_FROM_DEV, rd10, 10, iov, 4096);
		h.iovec_count = 1025;
		sgio("iovec-count-1025", rw_fd, &h, NULL, 0);
		iov[0].iov_base = unmapped;
		iov[0].iov_len = 4096;
		h = hdr(SG_DXFER_FROM_DEV, rd10, 10, iov, 4096);
		h.iovec_count = 1;
		sgio("iovec-entry-unmapped", rw_fd, &h, NULL, 0);
		iov[0].iov_base = buf;
		iov[0].iov_len = 0;
		h = hdr(SG_DXFER_FROM_DEV, rd10, 10, iov, 4096);
		h.iovec_count = 1;
		sgio("iovec-entry-len-0", rw_fd, &h, NULL, 0);
		h = hdr(SG_DXFER_FROM_DEV, rd10, 10, unmapped, 4096);
		h.iovec_count = 2;
		sgio("iovec-list-unmapped", rw_fd, &h, NULL, 0);
		h = hdr(SG_DXFER_FROM_DEV, rd10, 10, NULL, 4096);
		h.iovec_count = 2;
		sgio("iovec-list-null", rw_fd, &h, NULL, 0);
	}

	/* --- permissions: a read-only fd */
	h = hdr(SG_DXFER_FROM_DEV, inq, 6, buf, 96);
	sgio("ro-inquiry", ro_fd, &h, buf, 96);
	memset(buf, 0x11, 4096);
	h = hdr(SG_DXFER_TO_DEV, wr10, 10, buf, 4096);
	sgio("ro-write10", ro_fd, &h, NULL, 0);
	h = hdr(SG_DXFER_TO_DEV, wr10, 10, unmapped, 4096);
	sgio("ro-write10-bad-buffer", ro_fd, &h, NULL, 0);
	h = hdr(SG_DXFER_NONE, badop, 6, NULL, 0);
	sgio("ro-vendor-opcode", ro_fd, &h, NULL, 0);

	/* --- other ioctls */
	int v;
	int_ioctl("get-version-num", rw_fd, SG_GET_VERSION_NUM, &v);
	int_ioctl("get-version-num-null", rw_fd, SG_GET_VERSION_NUM, NULL);
	v = 0;
	int_ioctl("get-timeout", rw_fd, SG_GET_TIMEOUT, &v);
	v = 1234;
	int_ioctl("set-timeout", rw_fd, SG_SET_TIMEOUT, &v);
	int_ioctl("get-timeout-after-set", rw_fd, SG_GET_TIMEOUT, NULL);
	v = -1;
	int_ioctl("set-timeout-negative", rw_fd, SG_SET_TIMEOUT, &v);
	int_ioctl("set-timeout-null", rw_fd, SG_SET_TIMEOUT, NULL);
	v = -1;
	int_ioctl("set-reserved-negative", rw_fd, SG_SET_RESERVED_SIZE, &v);
	v = 4096;
	int_ioctl("set-reserved-4096", rw_fd, SG_SET_RESERVED_SIZE, &v);
	int_ioctl("get-reserved-after-set", rw_fd, SG_GET_RESERVED_SIZE, &v);
	int_ioctl("get-command-q", rw_fd, SG_GET_COMMAND_Q, &v);
	v = 1;
	int_ioctl("set-command-q", rw_fd, SG_SET_COMMAND_Q, &v);
	int_ioctl("get-command-q-after-set", rw_fd, SG_GET_COMMAND_Q, &v);
	int_ioctl("emulated-host", rw_fd, SG_EMULATED_HOST, &v);
	int_ioctl("get-access-count", rw_fd, SG_GET_ACCESS_COUNT, &v);
	int_ioctl("get-num-waiting", rw_fd, SG_GET_NUM_WAITING, &v);
	int_ioctl("get-pack-id", rw_fd, SG_GET_PACK_ID, &v);
	int_ioctl("get-low-dma", rw_fd, SG_GET_LOW_DMA, &v);
	int_ioctl("get-keep-orphan", rw_fd, SG_GET_KEEP_ORPHAN, &v);
	int_ioctl("unknown-ioctl-rw", rw_fd, 0x5401 /* TCGETS */, &v);
	int_ioctl("unknown-ioctl-ro", ro_fd, 0x5401, &v);
	int_ioctl("unknown-ioctl-2-ro", ro_fd, 0x22ff, &v);
	{
		struct sg_scsi_id id;
		memset(&id, 0x55, sizeof id);
		int r = ioctl(rw_fd, SG_GET_SCSI_ID, &id);
		printf("%-28s ret=%d errno=%s host=%d channel=%d id=%d lun=%d type=%d cmd_per_lun=%d queue_depth=%d unused=%d,%d\n",
		       "get-scsi-id", r, errname(r < 0 ? errno : 0), id.host_no, id.channel, id.scsi_id,
		       id.lun, id.scsi_type, id.h_cmd_per_lun, id.d_queue_depth, id.unused[0], id.unused[1]);
		struct sg_req_info t[SG_MAX_QUEUE];
		memset(t, 0x55, sizeof t);
		r = ioctl(rw_fd, SG_GET_REQUEST_TABLE, t);
		printf("%-28s ret=%d errno=%s table=%08x\n", "get-request-table", r,
		       errname(r < 0 ? errno : 0), fnv((void *)t, sizeof t));
	}
	return 0;
}
