// cloop: the floor of a transparent TCP relay on this machine, for the
// benchmark only (nsbench's cloop contender). It is goloop's design in C, so
// no language runtime is in the figures: one thread per CPU, each with its own
// SO_REUSEPORT listener and edge-triggered epoll set; accept4, SO_ORIGINAL_DST,
// a non-blocking connect with SO_MARK (the redirect lets marked sockets
// through), and read(2)/write(2) through one scratch buffer per thread,
// keeping only the bytes a peer would not take yet. EOF half-closes the other
// side; an error closes both. Nothing a firewall does (no identification,
// decision, metering or records). Not part of netshape; built by bench/run.sh
// when a C compiler is present.
//
// usage: cloop [-listen 127.0.0.1:PORT] [-mark MARK] [-threads N]
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/netfilter_ipv4.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

struct side {
	int fd;
	struct side *peer;
	char *pending; // read from the peer, not yet written here
	size_t plen, poff;
	int eof;      // read returned 0 on this side
	int shut;     // this side was half-closed after its peer's EOF
	int dialing;  // upstream connect in progress
	int closed;
	struct side *next_free;
};

struct loop {
	int ep, lfd, mark;
	char scratch[256 << 10];
	struct side *graveyard; // freed after the current batch of events
};

static struct sockaddr_in listen_addr;
static int mark = 0x5e8;

static void close_pair(struct loop *l, struct side *s) {
	struct side *x[2] = {s, s->peer};
	for (int i = 0; i < 2; i++) {
		if (x[i]->closed)
			continue;
		x[i]->closed = 1;
		close(x[i]->fd); // also leaves the epoll set
		free(x[i]->pending);
		x[i]->pending = NULL;
		x[i]->next_free = l->graveyard;
		l->graveyard = x[i];
	}
}

// move copies src to dst until src has nothing or dst takes no more; -1 on error.
static int move(struct loop *l, struct side *src, struct side *dst) {
	for (;;) {
		if (dst->pending) {
			ssize_t n = write(dst->fd, dst->pending + dst->poff, dst->plen - dst->poff);
			if (n < 0)
				return errno == EAGAIN ? 0 : -1;
			dst->poff += n;
			if (dst->poff < dst->plen)
				return 0;
			free(dst->pending);
			dst->pending = NULL;
		}
		if (src->eof) {
			if (!dst->shut) {
				dst->shut = 1;
				return shutdown(dst->fd, SHUT_WR);
			}
			return 0;
		}
		ssize_t n = read(src->fd, l->scratch, sizeof l->scratch);
		if (n < 0)
			return errno == EAGAIN ? 0 : -1;
		if (n == 0) {
			src->eof = 1;
			continue;
		}
		ssize_t w = write(dst->fd, l->scratch, n);
		if (w < 0) {
			if (errno != EAGAIN)
				return -1;
			w = 0;
		}
		if (w < n) {
			dst->pending = malloc(n - w);
			memcpy(dst->pending, l->scratch + w, n - w);
			dst->plen = n - w;
			dst->poff = 0;
			return 0;
		}
	}
}

static void pump(struct loop *l, struct side *s) {
	struct side *c = s, *u = s->peer;
	if (c->dialing || u->dialing)
		return;
	if (move(l, c, u) < 0 || move(l, u, c) < 0) {
		close_pair(l, s);
		return;
	}
	if (c->eof && u->eof && c->shut && u->shut)
		close_pair(l, s);
}

static void do_accept(struct loop *l) {
	for (;;) {
		int cfd = accept4(l->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (cfd < 0)
			return; // EAGAIN, or EMFILE and the like: the next event tries again
		struct sockaddr_in od;
		socklen_t odl = sizeof od;
		if (getsockopt(cfd, SOL_IP, SO_ORIGINAL_DST, &od, &odl) < 0) {
			close(cfd);
			continue;
		}
		int ufd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (ufd < 0) {
			close(cfd);
			continue;
		}
		int one = 1;
		setsockopt(ufd, SOL_SOCKET, SO_MARK, &l->mark, sizeof l->mark);
		setsockopt(ufd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		if (connect(ufd, (struct sockaddr *)&od, sizeof od) < 0 && errno != EINPROGRESS) {
			close(cfd);
			close(ufd);
			continue;
		}
		struct side *c = calloc(1, sizeof *c), *u = calloc(1, sizeof *u);
		c->fd = cfd;
		u->fd = ufd;
		c->peer = u;
		u->peer = c;
		u->dialing = 1;
		struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET};
		ev.data.ptr = c;
		epoll_ctl(l->ep, EPOLL_CTL_ADD, cfd, &ev);
		ev.data.ptr = u;
		epoll_ctl(l->ep, EPOLL_CTL_ADD, ufd, &ev);
	}
}

static void *run(void *arg) {
	struct loop *l = arg;
	struct epoll_event evs[128];
	for (;;) {
		int n = epoll_wait(l->ep, evs, 128, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			perror("epoll_wait");
			exit(1);
		}
		for (int i = 0; i < n; i++) {
			if (evs[i].data.ptr == NULL) {
				do_accept(l);
				continue;
			}
			struct side *s = evs[i].data.ptr;
			if (s->closed)
				continue; // its pair closed earlier in this batch
			if (s->dialing) {
				int e = 0;
				socklen_t el = sizeof e;
				getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &e, &el);
				if (e != 0 || (evs[i].events & (EPOLLERR | EPOLLHUP))) {
					close_pair(l, s);
					continue;
				}
				if (!(evs[i].events & EPOLLOUT))
					continue;
				s->dialing = 0;
			}
			pump(l, s);
		}
		while (l->graveyard) {
			struct side *x = l->graveyard;
			l->graveyard = x->next_free;
			free(x);
		}
	}
	return NULL;
}

static struct loop *new_loop(void) {
	struct loop *l = calloc(1, sizeof *l);
	l->mark = mark;
	l->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;
	setsockopt(l->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	setsockopt(l->lfd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
	if (bind(l->lfd, (struct sockaddr *)&listen_addr, sizeof listen_addr) < 0 || listen(l->lfd, 4096) < 0) {
		perror("cloop: listen");
		exit(1);
	}
	l->ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
	epoll_ctl(l->ep, EPOLL_CTL_ADD, l->lfd, &ev);
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
		else {
			fprintf(stderr, "usage: cloop [-listen 127.0.0.1:PORT] [-mark MARK] [-threads N]\n");
			return 2;
		}
	}
	char host[64];
	const char *colon = strrchr(addr, ':');
	if (!colon || colon - addr >= (long)sizeof host) {
		fprintf(stderr, "cloop: bad -listen %s\n", addr);
		return 2;
	}
	memcpy(host, addr, colon - addr);
	host[colon - addr] = 0;
	listen_addr.sin_family = AF_INET;
	listen_addr.sin_port = htons(atoi(colon + 1));
	if (inet_pton(AF_INET, host, &listen_addr.sin_addr) != 1) {
		fprintf(stderr, "cloop: bad -listen %s\n", addr);
		return 2;
	}
	if (threads < 1)
		threads = 1;
	pthread_t t;
	for (int i = 1; i < threads; i++)
		pthread_create(&t, NULL, run, new_loop());
	run(new_loop());
	return 0;
}
