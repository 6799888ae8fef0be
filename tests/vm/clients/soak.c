/*
 * soak: writes and verifies stamped blocks through mpath-sg nodes for a while, from
 * several threads, with SG_IO and with sg's asynchronous interface (write() then read()),
 * and reports every command, every error and every mismatch.
 *
 * Each thread owns a range of blocks on one node. Every block it writes carries a stamp:
 * the node's index, the block's own LBA, the thread, a sequence number, and a checksum over
 * all of it and a payload derived from (LBA, sequence). The thread remembers, per block,
 * the last sequence number acknowledged and whether a write to it failed since (a write
 * that failed may or may not have landed). A read then proves each block:
 *   - the checksum holds (nothing corrupted or torn within the block),
 *   - node and LBA are the block's own (nothing misdirected to another LU or block),
 *   - the sequence number is the acknowledged one, or one of a failed write since
 *     (nothing lost: an acknowledged write is never undone, an old one never comes back).
 * Every 16th command is an INQUIRY for the device identification page, which must be the
 * node's own LU's, as it was at the start (nothing routed to another LU). scsi_debug's LUs
 * share one store, so the nodes write at distinct LBAs (node N from N * 65536) and the
 * data alone could not tell the LUs apart: the identity does.
 *
 * usage: soak SECONDS THREADS_PER_NODE LOG NODE...   (SIGUSR1 ends the writing early)
 * Output (stdout): one SUMMARY line; LOG gets a line per error and per mismatch:
 *   ERR <unix time> node=N thread=T op=write|read iface=sgio|async lba=L blocks=B
 *       errno=E status=S host=H driver=D sense=K/ASC/ASCQ
 *   MISMATCH <unix time> node=N thread=T lba=L why=... seq=... acked=... doubt=...
 * After SECONDS, each thread verifies every block of its range (retrying a read that fails,
 * for up to 60 s: the paths may still be coming back), then exits.
 * Exit status: 0 if there was no mismatch and the final verification read every block.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <scsi/sg.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define BLOCK 512
#define RANGE 256 /* blocks per thread */
#define MAX_BLOCKS 8 /* per command */
#define TIMEOUT_MS 10000
#define MAGIC 0x4b414f53u /* "SOAK" */

struct stamp {
	uint32_t magic;
	uint32_t node;
	uint64_t lba;
	uint32_t thread;
	uint32_t seq;
	uint64_t sum;
};

struct block_state {
	uint32_t acked; /* 0: never written (zeros) */
	uint32_t highest; /* highest sequence number sent */
	int doubt; /* a write failed since `acked` was known */
};

struct worker {
	int node;
	const char *path;
	int thread;
	int async;
	uint64_t first_lba;
	uint32_t seq;
	struct block_state st[RANGE];
	uint64_t rng;
	long commands, writes, reads, inquiries, errors, mismatches, final_unread;
	unsigned char ident[64]; /* VPD 0x83 as first seen */
	pthread_t tid;
};

static double deadline;
static atomic_int stop;
static FILE *logf;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_REALTIME, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static uint64_t next(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static uint64_t fnv(const unsigned char *p, size_t n, uint64_t h)
{
	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

static uint64_t block_sum(const unsigned char *b)
{
	uint64_t h = fnv(b, offsetof(struct stamp, sum), 0xcbf29ce484222325ull);
	return fnv(b + sizeof(struct stamp), BLOCK - sizeof(struct stamp), h);
}

static void fill(unsigned char *b, struct worker *w, uint64_t lba, uint32_t seq)
{
	struct stamp s = { MAGIC, (uint32_t)w->node, lba, (uint32_t)w->thread, seq, 0 };
	uint64_t x = lba * 0x9e3779b97f4a7c15ull ^ seq ^ ((uint64_t)w->node << 56);
	memcpy(b, &s, sizeof s);
	for (size_t i = sizeof s; i < BLOCK; i += 8) {
		next(&x);
		memcpy(b + i, &x, 8);
	}
	s.sum = block_sum(b);
	memcpy(b, &s, sizeof s);
}

static void logline(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logline(const char *fmt, ...)
{
	va_list ap;
	pthread_mutex_lock(&log_lock);
	va_start(ap, fmt);
	vfprintf(logf, fmt, ap);
	va_end(ap);
	fflush(logf);
	pthread_mutex_unlock(&log_lock);
}

/* One command: SG_IO, or (async) write() then read() of the same header (sg's v3
 * asynchronous interface). 0 on GOOD with no host or driver error; otherwise logged, -1. */
static int issue(struct worker *w, int fd, int async, const char *op, unsigned char *cdb, unsigned char cdb_len,
		 int dir, unsigned char *data, unsigned len, uint64_t lba, int n)
{
	unsigned char sense[32] = { 0 };
	sg_io_hdr_t h;
	memset(&h, 0, sizeof h);
	h.interface_id = 'S';
	h.dxfer_direction = dir;
	h.cmd_len = cdb_len;
	h.cmdp = cdb;
	h.mx_sb_len = sizeof sense;
	h.sbp = sense;
	h.dxferp = data;
	h.dxfer_len = len;
	h.timeout = TIMEOUT_MS;
	h.pack_id = (int)w->seq;
	int err = 0;
	w->commands++;
	if (async) {
		if (write(fd, &h, sizeof h) < 0 || read(fd, &h, sizeof h) < 0)
			err = errno;
	} else if (ioctl(fd, SG_IO, &h) < 0) {
		err = errno;
	}
	if (!err && !h.status && !h.host_status && !h.driver_status)
		return 0;
	int desc = (sense[0] & 0x7f) >= 0x72, got = !err && h.sb_len_wr;
	w->errors++;
	logline("ERR %.3f node=%d thread=%d op=%s iface=%s lba=%llu blocks=%d errno=%d status=0x%x host=0x%x "
		"driver=0x%x sense=%x/%02x/%02x\n",
		now(), w->node, w->thread, op, async ? "async" : "sgio", (unsigned long long)lba, n, err,
		err ? 0 : h.status, err ? 0 : h.host_status, err ? 0 : h.driver_status,
		got ? (desc ? sense[1] : sense[2]) & 0xf : 0, got ? (desc ? sense[2] : sense[12]) : 0,
		got ? (desc ? sense[3] : sense[13]) : 0);
	return -1;
}

/* READ(10) or WRITE(10) of n blocks at lba, through the worker's interface. */
static int command(struct worker *w, int fd, int is_write, uint64_t lba, int n, unsigned char *data)
{
	unsigned char cdb[10] = { is_write ? 0x2a : 0x28, 0, (unsigned char)(lba >> 24), (unsigned char)(lba >> 16),
				  (unsigned char)(lba >> 8), (unsigned char)lba, 0, 0, (unsigned char)n, 0 };
	return issue(w, fd, w->async, is_write ? "write" : "read", cdb, sizeof cdb,
		     is_write ? SG_DXFER_TO_DEV : SG_DXFER_FROM_DEV, data, (unsigned)n * BLOCK, lba, n);
}

/* INQUIRY, VPD page 0x83, into buf (64 bytes), by SG_IO. 0 on GOOD. */
static int inquiry(struct worker *w, int fd, unsigned char *buf)
{
	unsigned char cdb[6] = { 0x12, 1, 0x83, 0, 64, 0 };
	memset(buf, 0, 64);
	w->inquiries++;
	return issue(w, fd, 0, "inquiry", cdb, sizeof cdb, SG_DXFER_FROM_DEV, buf, 64, 0, 0);
}

/* Checks block i of the worker's range as read; 0 if it is what it may be. */
static int verify(struct worker *w, int i, const unsigned char *b)
{
	struct block_state *st = &w->st[i];
	uint64_t lba = w->first_lba + (uint64_t)i;
	struct stamp s;
	memcpy(&s, b, sizeof s);
	const char *why = NULL;
	int zeros = 1;
	for (int k = 0; k < BLOCK && zeros; k++)
		zeros = !b[k];
	uint32_t seq = 0;
	if (zeros) {
		if (st->acked)
			why = "an acknowledged write was lost (zeros)";
	} else if (s.magic != MAGIC || s.sum != block_sum(b)) {
		why = "checksum";
	} else if (s.node != (uint32_t)w->node) {
		why = "another LU's block (misdirected)";
	} else if (s.lba != lba) {
		why = "another block's data (misdirected)";
	} else if (s.thread != (uint32_t)w->thread) {
		why = "another thread's block";
	} else {
		seq = s.seq;
		if (seq != st->acked && !(st->doubt && seq > st->acked && seq <= st->highest))
			why = seq < st->acked ? "an acknowledged write was undone (older data)" : "unexpected sequence";
	}
	if (why) {
		w->mismatches++;
		logline("MISMATCH %.3f node=%d thread=%d lba=%llu why=%s seq=%u acked=%u doubt=%d highest=%u\n",
			now(), w->node, w->thread, (unsigned long long)lba, why, s.seq, st->acked, st->doubt,
			st->highest);
		return -1;
	}
	/* What was read is now what the block holds. */
	st->acked = seq;
	st->doubt = 0;
	return 0;
}

/* SIGUSR1 is blocked in every thread and taken here, so that no command is interrupted. */
static void *stopper(void *arg)
{
	sigset_t *set = arg;
	int sig;
	if (sigwait(set, &sig) == 0)
		atomic_store(&stop, 1);
	return NULL;
}

static void *run(void *arg)
{
	struct worker *w = arg;
	unsigned char *buf = aligned_alloc(4096, MAX_BLOCKS * BLOCK);
	int fd = open(w->path, O_RDWR);
	if (fd < 0 || !buf) {
		perror(w->path);
		exit(2);
	}
	if (inquiry(w, fd, w->ident)) {
		fprintf(stderr, "soak: the first INQUIRY on %s failed\n", w->path);
		exit(2);
	}
	while (!atomic_load(&stop) && now() < deadline) {
		int n = 1 + (int)(next(&w->rng) % MAX_BLOCKS);
		int i = (int)(next(&w->rng) % (RANGE - n + 1));
		uint64_t lba = w->first_lba + (uint64_t)i;
		if (next(&w->rng) % 16 == 0) {
			unsigned char id[64];
			if (inquiry(w, fd, id) == 0 && memcmp(id, w->ident, sizeof id)) {
				w->mismatches++;
				logline("MISMATCH %.3f node=%d thread=%d lba=0 why=another LU's identity (misdirected) "
					"seq=0 acked=0 doubt=0 highest=0\n", now(), w->node, w->thread);
			}
		} else if (next(&w->rng) % 4) {
			uint32_t seq = ++w->seq;
			for (int k = 0; k < n; k++) {
				fill(buf + k * BLOCK, w, lba + k, seq);
				w->st[i + k].highest = seq;
			}
			int ok = command(w, fd, 1, lba, n, buf) == 0;
			for (int k = 0; k < n; k++) {
				if (ok) {
					w->st[i + k].acked = seq;
					w->st[i + k].doubt = 0;
				} else {
					w->st[i + k].doubt = 1;
				}
			}
			w->writes++;
		} else {
			memset(buf, 0xee, (size_t)n * BLOCK);
			if (command(w, fd, 0, lba, n, buf) == 0)
				for (int k = 0; k < n; k++)
					verify(w, i + k, buf + k * BLOCK);
			w->reads++;
		}
	}
	/* Final verification: every block, a read retried for up to 60 s. */
	double give_up = now() + 60;
	for (int i = 0; i < RANGE; i += MAX_BLOCKS) {
		int ok;
		while (!(ok = command(w, fd, 0, w->first_lba + (uint64_t)i, MAX_BLOCKS, buf) == 0) && now() < give_up)
			usleep(200000);
		w->reads++;
		if (!ok) {
			w->final_unread += MAX_BLOCKS;
			continue;
		}
		for (int k = 0; k < MAX_BLOCKS; k++)
			verify(w, i + k, buf + k * BLOCK);
	}
	close(fd);
	free(buf);
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc < 5) {
		fprintf(stderr, "usage: %s SECONDS THREADS_PER_NODE LOG NODE...\n", argv[0]);
		return 2;
	}
	int per = atoi(argv[2]), nodes = argc - 4;
	logf = fopen(argv[3], "a");
	if (!logf || per < 1) {
		fprintf(stderr, "soak: bad arguments\n");
		return 2;
	}
	static sigset_t usr1;
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &usr1, NULL);
	pthread_t stop_thread;
	pthread_create(&stop_thread, NULL, stopper, &usr1);
	pthread_detach(stop_thread);
	int nw = per * nodes;
	struct worker *ws = calloc((size_t)nw, sizeof *ws);
	deadline = now() + atof(argv[1]);
	double start = now();
	for (int k = 0; k < nw; k++) {
		struct worker *w = &ws[k];
		w->node = k / per;
		w->path = argv[4 + w->node];
		w->thread = k % per;
		w->async = w->thread % 2; /* odd threads: write()/read() */
		w->first_lba = (uint64_t)w->node * 65536 + (uint64_t)w->thread * RANGE;
		w->rng = 0x9e3779b97f4a7c15ull * (uint64_t)(k + 1) ^ (uint64_t)start;
		if (pthread_create(&w->tid, NULL, run, w)) {
			perror("pthread_create");
			return 2;
		}
	}
	long commands = 0, writes = 0, reads = 0, inquiries = 0, errors = 0, mismatches = 0, unread = 0;
	for (int k = 0; k < nw; k++) {
		pthread_join(ws[k].tid, NULL);
		commands += ws[k].commands;
		writes += ws[k].writes;
		reads += ws[k].reads;
		inquiries += ws[k].inquiries;
		errors += ws[k].errors;
		mismatches += ws[k].mismatches;
		unread += ws[k].final_unread;
	}
	printf("SUMMARY seconds=%.0f threads=%d commands=%ld writes=%ld reads=%ld inquiries=%ld errors=%ld mismatches=%ld "
	       "blocks_verified=%ld blocks_unread=%ld\n",
	       now() - start, nw, commands, writes, reads, inquiries, errors, mismatches, (long)nw * RANGE - unread, unread);
	return mismatches || unread ? 1 : 0;
}
