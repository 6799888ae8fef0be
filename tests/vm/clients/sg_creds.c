/* sg_creds: who may use an sg fd's asynchronous interface (write()/read()).
 *
 * sg_check_file_access() refuses a read() or write() whose caller's credentials are not
 * the opener's (EPERM). This opens DEVICE O_RDWR and sends a TEST UNIT READY through
 * write() and reaps it with read(): from the opening thread, from another thread of the
 * same process, and from a forked child (which inherits the fd but has credentials of
 * its own). Prints one line, e.g.
 *   opener=ok thread=ok child_write=EPERM child_read=EPERM
 * so that /dev/sgN and the node can be compared.
 *
 * usage: sg_creds DEVICE
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <scsi/sg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int fd;

static const char *errname(int e)
{
	switch (e) {
	case 0: return "ok";
	case EPERM: return "EPERM";
	case EACCES: return "EACCES";
	case EAGAIN: return "EAGAIN";
	case EINVAL: return "EINVAL";
	case EIO: return "EIO";
	case ENODEV: return "ENODEV";
	case ENXIO: return "ENXIO";
	default: return "other";
	}
}

static void tur(sg_io_hdr_t *h, unsigned char *cdb, unsigned char *sense)
{
	memset(cdb, 0, 6);
	memset(h, 0, sizeof(*h));
	h->interface_id = 'S';
	h->dxfer_direction = SG_DXFER_NONE;
	h->cmd_len = 6;
	h->cmdp = cdb;
	h->mx_sb_len = 32;
	h->sbp = sense;
	h->timeout = 20000;
	h->pack_id = 7;
}

/* errno of write(), then of read() (0 for success); a read() is tried only after a
 * write() that worked, unless `read_anyway`. */
static void write_read(int *we, int *re, int read_anyway)
{
	sg_io_hdr_t h;
	unsigned char cdb[6], sense[32];

	tur(&h, cdb, sense);
	*we = write(fd, &h, sizeof(h)) == (ssize_t)sizeof(h) ? 0 : errno;
	*re = -1;
	if (*we == 0 || read_anyway) {
		memset(&h, 0, sizeof(h));
		*re = read(fd, &h, sizeof(h)) == (ssize_t)sizeof(h) ? 0 : errno;
	}
}

static void *thread_main(void *arg)
{
	int *r = arg;

	write_read(&r[0], &r[1], 0);
	return NULL;
}

int main(int argc, char **argv)
{
	int we, re, tr[2], status, up[2], down[2], child[2];
	pthread_t t;
	pid_t pid;
	char c;

	if (argc != 2) {
		fprintf(stderr, "usage: %s DEVICE\n", argv[0]);
		return 2;
	}
	fd = open(argv[1], O_RDWR);
	if (fd < 0) {
		perror(argv[1]);
		return 2;
	}
	write_read(&we, &re, 0);
	if (we || re) {
		printf("opener_write=%s opener_read=%s\n", errname(we), errname(re));
		return 1;
	}
	pthread_create(&t, NULL, thread_main, tr);
	pthread_join(t, NULL);

	/* The child tries write() and read(). If its write() is refused, the parent queues
	 * a command so that the child's read() has something to reap (and would get it if
	 * only the write() were checked). */
	if (pipe(up) || pipe(down))
		return 2;
	pid = fork();
	if (pid == 0) {
		int r[2];

		write_read(&r[0], &r[1], 0);
		if (r[0] != 0) {
			sg_io_hdr_t h;

			if (write(up[1], "q", 1) != 1 || read(down[0], &c, 1) != 1)
				_exit(2);
			memset(&h, 0, sizeof(h));
			r[1] = read(fd, &h, sizeof(h)) == (ssize_t)sizeof(h) ? 0 : errno;
		} else if (write(up[1], "d", 1) != 1) {
			_exit(2);
		}
		if (write(up[1], r, sizeof(r)) != sizeof(r))
			_exit(2);
		_exit(0);
	}
	if (read(up[0], &c, 1) != 1)
		return 2;
	int queued = 0;
	if (c == 'q') {
		sg_io_hdr_t h;
		unsigned char cdb[6], sense[32];

		tur(&h, cdb, sense);
		queued = write(fd, &h, sizeof(h)) == (ssize_t)sizeof(h);
		usleep(100000); /* the command completes */
		if (write(down[1], "g", 1) != 1)
			return 2;
	}
	if (read(up[0], child, sizeof(child)) != sizeof(child))
		return 2;
	waitpid(pid, &status, 0);
	if (queued && child[1] != 0) {
		/* The child could not reap it: the parent does. */
		sg_io_hdr_t h;

		memset(&h, 0, sizeof(h));
		if (read(fd, &h, sizeof(h)) != (ssize_t)sizeof(h)) {
			printf("the opener could not reap its command: %s\n", strerror(errno));
			return 1;
		}
	}
	printf("opener=ok thread=%s child_write=%s child_read=%s\n",
	       tr[0] || tr[1] ? errname(tr[0] ? tr[0] : tr[1]) : "ok", errname(child[0]),
	       errname(child[1]));
	return 0;
}
