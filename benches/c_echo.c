/* A reference point for large frames: a tight, hand-written C epoll echo server for
 * switchboard's wire format (4-byte big-endian length, then the payload).
 *
 * It does what a C programmer would do for speed: once a frame's header is in, it
 * allocates a buffer of the frame's whole length and reads the rest straight into it,
 * then writes the frame back from there. (It reserves the announced length before the
 * bytes come: a peer announcing 1 MiB and sending one byte costs it 1 MiB, which
 * switchboard refuses to do.) Level-triggered, one connection's output written before
 * it reads again; no limits, no timeouts, no error handling beyond closing.
 *
 *   gcc -O2 -o target/c_echo benches/c_echo.c && target/c_echo 9000
 *
 * benches/large_frames.sh builds and runs it against switchboard.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_FRAME (16u << 20)
#define READ_SIZE (128 * 1024)

struct conn {
    int fd;
    /* The header being read, then the frame (header included) being filled. */
    unsigned char header[4];
    size_t header_have;
    unsigned char *frame;
    size_t frame_len, frame_have;
    /* Output: frames waiting to be written, as one buffer. */
    unsigned char *out;
    size_t out_len, out_sent, out_cap;
};

static void queue(struct conn *c, const unsigned char *bytes, size_t n) {
    if (c->out_len + n > c->out_cap) {
        c->out_cap = (c->out_len + n) * 2;
        c->out = realloc(c->out, c->out_cap);
    }
    memcpy(c->out + c->out_len, bytes, n);
    c->out_len += n;
}

/* Writes what is queued; returns -1 on error, 1 if some remains, 0 when done. */
static int flush_out(struct conn *c) {
    while (c->out_sent < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_sent, c->out_len - c->out_sent, MSG_NOSIGNAL);
        if (n < 0) return (errno == EAGAIN) ? 1 : -1;
        c->out_sent += (size_t)n;
    }
    c->out_len = c->out_sent = 0;
    return 0;
}

/* Takes in what arrived in `buf`, echoing every complete frame. */
static int absorb(struct conn *c, unsigned char *buf, size_t n) {
    while (n > 0) {
        if (c->frame == NULL) {
            size_t take = 4 - c->header_have;
            if (take > n) take = n;
            memcpy(c->header + c->header_have, buf, take);
            c->header_have += take;
            buf += take;
            n -= take;
            if (c->header_have < 4) return 0;
            uint32_t len = ntohl(*(uint32_t *)c->header);
            if (len > MAX_FRAME) return -1;
            c->frame_len = 4 + (size_t)len;
            c->frame = malloc(c->frame_len); /* the whole frame, before it arrives */
            memcpy(c->frame, c->header, 4);
            c->frame_have = 4;
            c->header_have = 0;
        }
        size_t take = c->frame_len - c->frame_have;
        if (take > n) take = n;
        memcpy(c->frame + c->frame_have, buf, take);
        c->frame_have += take;
        buf += take;
        n -= take;
        if (c->frame_have == c->frame_len) {
            queue(c, c->frame, c->frame_len);
            free(c->frame);
            c->frame = NULL;
        }
    }
    return 0;
}

/* Reads what the socket has; the rest of a large frame lands in the frame itself. */
static int on_readable(struct conn *c, unsigned char *scratch) {
    for (;;) {
        ssize_t n;
        if (c->frame != NULL && c->frame_len - c->frame_have >= READ_SIZE) {
            n = recv(c->fd, c->frame + c->frame_have, c->frame_len - c->frame_have, 0);
            if (n > 0) {
                c->frame_have += (size_t)n;
                if (c->frame_have == c->frame_len) {
                    queue(c, c->frame, c->frame_len);
                    free(c->frame);
                    c->frame = NULL;
                }
                continue;
            }
        } else {
            n = recv(c->fd, scratch, READ_SIZE, 0);
            if (n > 0) {
                if (absorb(c, scratch, (size_t)n) < 0) return -1;
                continue;
            }
        }
        if (n == 0) return -1;
        return (errno == EAGAIN) ? 0 : -1;
    }
}

static void close_conn(int ep, struct conn *c) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->frame);
    free(c->out);
    free(c);
}

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 9000;
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 1024) < 0) {
        perror("c_echo: bind");
        return 1;
    }
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    unsigned char *scratch = malloc(READ_SIZE);
    struct epoll_event events[256];
    while (!stop) {
        int n = epoll_wait(ep, events, 256, 200);
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (c == NULL) {
                int fd;
                while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    c = calloc(1, sizeof *c);
                    c->fd = fd;
                    struct epoll_event cev = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
                }
                continue;
            }
            int bad = 0;
            if (events[i].events & EPOLLOUT) bad = flush_out(c) < 0;
            if (!bad && (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && c->out_len == 0)
                bad = on_readable(c, scratch) < 0;
            int pending = bad ? -1 : flush_out(c);
            if (bad || pending < 0) {
                close_conn(ep, c);
                continue;
            }
            /* Writable interest only while output waits; reading waits for it. */
            struct epoll_event cev = {.events = pending ? EPOLLOUT : EPOLLIN, .data.ptr = c};
            epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &cev);
        }
    }
    return 0;
}
