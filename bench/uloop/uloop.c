// uloop: cloop's transparent relay on io_uring instead of epoll, by hand, to
// measure whether a completion ring would lower a relay's cost per connection
// here. One thread per CPU, each with a SO_REUSEPORT listener and a ring:
// multishot accept; SO_ORIGINAL_DST, socket and SO_MARK synchronously; then
// connect, recv and send as ring operations, one outstanding per direction
// (recv -> send -> recv), EOF half-closes the peer, teardown shuts both
// sockets down and frees them when their last operation completed.
//
// Built by hand (apt-get install liburing-dev; cc -O2 -o uloop uloop.c -luring
// -lpthread) and run in place of cloop under the same redirect.
//
// usage: uloop [-listen 127.0.0.1:PORT] [-mark MARK] [-threads N]
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <linux/netfilter_ipv4.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF (64 << 10)

enum { OP_ACCEPT = 1, OP_CONNECT, OP_RECV, OP_SEND };

struct pair;
struct side {
	int fd;
	struct pair *p;
	struct side *peer;
	char *buf;       // recv buffer of this side; sent to peer
	int len, off;    // bytes in buf being sent to peer
	int eof, shut;
	int busy;        // a recv or send of this direction is in flight
};

struct pair {
	struct side c, u;
	int dialing, dead, ops;
	struct sockaddr_in od;
};

struct loop {
	struct io_uring ring;
	int lfd, mark;
};

static struct sockaddr_in listen_addr;
static int mark = 0x5e8;

static inline uint64_t tag(void *ptr, int op) { return (uint64_t)(uintptr_t)ptr | (uint64_t)op; }

static struct io_uring_sqe *sqe(struct loop *l) {
	struct io_uring_sqe *s = io_uring_get_sqe(&l->ring);
	if (!s) {
		io_uring_submit(&l->ring);
		s = io_uring_get_sqe(&l->ring);
	}
	return s;
}

static void arm_accept(struct loop *l) {
	struct io_uring_sqe *s = sqe(l);
	io_uring_prep_multishot_accept(s, l->lfd, NULL, NULL, SOCK_CLOEXEC);
	io_uring_sqe_set_data64(s, OP_ACCEPT);
}

// side pointers are 8-aligned: the low 3 bits carry the op.
static void recv_on(struct loop *l, struct side *s) {
	struct io_uring_sqe *q = sqe(l);
	io_uring_prep_recv(q, s->fd, s->buf, BUF, 0);
	io_uring_sqe_set_data64(q, tag(s, OP_RECV));
	s->busy = 1;
	s->p->ops++;
}

static void send_from(struct loop *l, struct side *s) {
	struct io_uring_sqe *q = sqe(l);
	io_uring_prep_send(q, s->peer->fd, s->buf + s->off, s->len - s->off, MSG_NOSIGNAL);
	io_uring_sqe_set_data64(q, tag(s, OP_SEND));
	s->busy = 1;
	s->p->ops++;
}

static void kill_pair(struct pair *p) {
	if (!p->dead) {
		p->dead = 1;
		shutdown(p->c.fd, SHUT_RDWR); // completes the recvs in flight
		shutdown(p->u.fd, SHUT_RDWR);
	}
}

static void maybe_free(struct pair *p) {
	if (p->ops > 0)
		return;
	if (!p->dead && !(p->c.eof && p->u.eof))
		return;
	close(p->c.fd);
	close(p->u.fd);
	free(p->c.buf);
	free(p->u.buf);
	free(p);
}

static void new_conn(struct loop *l, int cfd) {
	struct pair *p = calloc(1, sizeof *p);
	socklen_t odl = sizeof p->od;
	if (getsockopt(cfd, SOL_IP, SO_ORIGINAL_DST, &p->od, &odl) < 0) {
		close(cfd);
		free(p);
		return;
	}
	int ufd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (ufd < 0) {
		close(cfd);
		free(p);
		return;
	}
	int one = 1;
	setsockopt(ufd, SOL_SOCKET, SO_MARK, &l->mark, sizeof l->mark);
	setsockopt(ufd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	p->c = (struct side){.fd = cfd, .p = p, .peer = &p->u, .buf = malloc(BUF)};
	p->u = (struct side){.fd = ufd, .p = p, .peer = &p->c, .buf = malloc(BUF)};
	p->dialing = 1;
	struct io_uring_sqe *q = sqe(l);
	io_uring_prep_connect(q, ufd, (struct sockaddr *)&p->od, sizeof p->od);
	io_uring_sqe_set_data64(q, tag(p, OP_CONNECT));
	p->ops++;
	recv_on(l, &p->c);
}

static void on_recv(struct loop *l, struct side *s, int res) {
	struct pair *p = s->p;
	s->busy = 0;
	if (p->dead)
		return;
	if (res < 0) {
		kill_pair(p);
		return;
	}
	if (res == 0) {
		s->eof = 1;
		if (!p->dialing && !s->peer->shut) {
			s->peer->shut = 1;
			shutdown(s->peer->fd, SHUT_WR);
		}
		return;
	}
	s->off = 0;
	s->len = res;
	if (!p->dialing)
		send_from(l, s);
}

static void on_send(struct loop *l, struct side *s, int res) {
	struct pair *p = s->p;
	s->busy = 0;
	if (p->dead)
		return;
	if (res < 0) {
		kill_pair(p);
		return;
	}
	s->off += res;
	if (s->off < s->len) {
		send_from(l, s);
		return;
	}
	s->len = s->off = 0;
	recv_on(l, s);
}

static void on_connect(struct loop *l, struct pair *p, int res) {
	p->dialing = 0;
	if (p->dead)
		return;
	if (res < 0) {
		kill_pair(p);
		return;
	}
	recv_on(l, &p->u);
	struct side *c = &p->c;
	if (c->len > c->off)
		send_from(l, c); // the client's bytes that came while dialling
	else if (c->eof && !p->u.shut) {
		p->u.shut = 1;
		shutdown(p->u.fd, SHUT_WR);
	}
}

static void *run(void *arg) {
	struct loop *l = arg;
	// The ring is made on the thread that uses it (SINGLE_ISSUER binds it
	// to its creator).
	struct io_uring_params pr = {.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN};
	if (io_uring_queue_init_params(4096, &l->ring, &pr) < 0) {
		perror("uloop: io_uring");
		exit(1);
	}
	arm_accept(l);
	for (;;) {
		io_uring_submit_and_wait(&l->ring, 1);
		struct io_uring_cqe *cqe;
		unsigned head, n = 0;
		io_uring_for_each_cqe(&l->ring, head, cqe) {
			n++;
			uint64_t d = cqe->user_data;
			int op = d & 7, res = cqe->res;
			void *ptr = (void *)(uintptr_t)(d & ~7ULL);
			if (op == OP_ACCEPT) {
				if (res >= 0)
					new_conn(l, res);
				if (!(cqe->flags & IORING_CQE_F_MORE))
					arm_accept(l);
				continue;
			}
			struct pair *p;
			if (op == OP_CONNECT) {
				p = ptr;
				on_connect(l, p, res);
			} else {
				struct side *s = ptr;
				p = s->p;
				if (op == OP_RECV)
					on_recv(l, s, res);
				else
					on_send(l, s, res);
			}
			p->ops--;
			maybe_free(p);
		}
		io_uring_cq_advance(&l->ring, n);
	}
	return NULL;
}

static struct loop *new_loop(void) {
	struct loop *l = calloc(1, sizeof *l);
	l->mark = mark;
	l->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1;
	setsockopt(l->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	setsockopt(l->lfd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
	if (bind(l->lfd, (struct sockaddr *)&listen_addr, sizeof listen_addr) < 0 || listen(l->lfd, 4096) < 0) {
		perror("uloop: listen");
		exit(1);
	}
	return l;
}

int main(int argc, char **argv) {
	const char *addr = "127.0.0.1:9041";
	int threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "-listen"))
			addr = argv[i + 1];
		else if (!strcmp(argv[i], "-mark"))
			mark = (int)strtol(argv[i + 1], NULL, 0);
		else if (!strcmp(argv[i], "-threads"))
			threads = atoi(argv[i + 1]);
	}
	char host[64];
	const char *colon = strrchr(addr, ':');
	memcpy(host, addr, colon - addr);
	host[colon - addr] = 0;
	listen_addr.sin_family = AF_INET;
	listen_addr.sin_port = htons(atoi(colon + 1));
	inet_pton(AF_INET, host, &listen_addr.sin_addr);
	pthread_t t;
	for (int i = 1; i < threads; i++)
		pthread_create(&t, NULL, run, new_loop());
	run(new_loop());
	return 0;
}
