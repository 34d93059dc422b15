/* A heartbeat load generator that is not the bottleneck: one thread, epoll.
 *
 * Build: cc -O2 -o loadgen benchmarks/loadgen.c   (benchmarks/server.py does it)
 * Run:   loadgen PORT CONNECTIONS SECONDS PIPELINE HANDSHAKE PING_HEX REPLY_BYTES
 *
 * Opens CONNECTIONS to 127.0.0.1:PORT, performs HANDSHAKE on each ("framed":
 * send a HELLO, read one frame; "http": a WebSocket upgrade, read to the blank
 * line; "none"), then for SECONDS keeps PIPELINE heartbeats (the bytes PING_HEX)
 * in flight on every connection, each answered by REPLY_BYTES bytes (with "http",
 * by a WebSocket PONG frame; the server's own PINGs are skipped). Prints
 * "replies N seconds S rate R" on stdout.
 *
 * Run:   loadgen silent PORT CONNECTIONS TIMEOUT
 *
 * Kick accuracy, seen from the clients: opens CONNECTIONS (framed), sends one
 * PING on each as fast as it can, then stays silent and reads every connection
 * until its CLOSE frame. Prints one line "late L1 L2 ...": for each
 * connection, when its CLOSE arrived - (when its PING was sent + TIMEOUT), in
 * seconds. Exits 1 if a connection ends without a CLOSE.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char HELLO[] = "\x01\x1d{\"version\":1,\"interval\":3600}";
static const char UPGRADE[] =
    "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n\r\n";

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void write_all(int fd, const char *data, size_t size) {
    while (size) {
        ssize_t n = write(fd, data, size);
        if (n < 0) die("write");
        data += n;
        size -= (size_t)n;
    }
}

/* Blocking handshake: the connection is switched to non-blocking afterwards. */
static void handshake(int fd, const char *mode) {
    char buf[4096];
    size_t have = 0;
    if (strcmp(mode, "framed") == 0) {
        write_all(fd, HELLO, sizeof(HELLO) - 1);
        for (;;) {  /* one frame: type, LEB128 length, payload */
            ssize_t n = read(fd, buf + have, sizeof(buf) - have);
            if (n <= 0) die("read HELLO");
            have += (size_t)n;
            size_t pos = 1, length = 0;
            int shift = 0;
            while (pos < have && (buf[pos] & 0x80)) {
                length |= (size_t)(buf[pos++] & 0x7f) << shift;
                shift += 7;
            }
            if (pos >= have) continue;
            length |= (size_t)(buf[pos++] & 0x7f) << shift;
            if (have >= pos + length) return;
        }
    } else if (strcmp(mode, "http") == 0) {
        write_all(fd, UPGRADE, sizeof(UPGRADE) - 1);
        while (have < 4 || memcmp(buf + have - 4, "\r\n\r\n", 4) != 0) {
            ssize_t n = read(fd, buf + have, 1);
            if (n <= 0) die("read upgrade");
            have += (size_t)n;
        }
    }
}

/* Opens CONNECTIONS to 127.0.0.1:PORT, each through HANDSHAKE, then
 * non-blocking and in EP (epoll data: its index). Returns their descriptors. */
static int *open_connections(int port, int conns, const char *mode, int ep) {
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int *fds = calloc((size_t)conns, sizeof(int));
    for (int i = 0; i < conns; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0) die("socket");
        if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) die("connect");
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        handshake(fd, mode);
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
        fds[i] = fd;
    }
    return fds;
}

/* A frame parser fed byte by byte: type, LEB128 length, payload skipped. */
struct parser {
    int state; /* 0: type byte next, 1: length bytes, 2: payload */
    unsigned char type;
    size_t left;
    int shift;
};

/* Feeds one byte; returns the frame's type when this byte completes it, else 0. */
static int parse_byte(struct parser *p, unsigned char byte) {
    if (p->state == 0) {
        p->type = byte;
        p->left = 0;
        p->shift = 0;
        p->state = 1;
        return 0;
    }
    if (p->state == 1) {
        p->left |= (size_t)(byte & 0x7f) << p->shift;
        p->shift += 7;
        if (byte & 0x80) return 0;
        p->state = p->left ? 2 : 0;
        return p->left ? 0 : p->type;
    }
    if (--p->left) return 0;
    p->state = 0;
    return p->type;
}

static int silent(int port, int conns, double timeout) {
    double *sent = calloc((size_t)conns, sizeof(double));
    double *late = calloc((size_t)conns, sizeof(double));
    struct parser *parsers = calloc((size_t)conns, sizeof(struct parser));
    int ep = epoll_create1(0);
    int *fds = open_connections(port, conns, "framed", ep);
    for (int i = 0; i < conns; i++) {
        sent[i] = now();
        write_all(fds[i], "\x03\x00", 2);
    }
    int closed = 0;
    double give_up = now() + timeout + 30;
    struct epoll_event events[1024];
    char buf[4096];
    while (closed < conns && now() < give_up) {
        int n = epoll_wait(ep, events, 1024, 100);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        for (int e = 0; e < n; e++) {
            int i = (int)events[e].data.u32;
            ssize_t got = read(fds[i], buf, sizeof(buf));
            double at = now();
            if (got < 0 && errno == EAGAIN) continue;
            if (got <= 0) {
                fprintf(stderr, "connection %d ended without CLOSE\n", i);
                return 1;
            }
            for (ssize_t k = 0; k < got; k++) {
                if (parse_byte(&parsers[i], (unsigned char)buf[k]) == 0x05) {
                    late[i] = at - (sent[i] + timeout);
                    close(fds[i]);
                    closed++;
                    break;
                }
            }
        }
    }
    if (closed < conns) {
        fprintf(stderr, "%d connections got no CLOSE\n", conns - closed);
        return 1;
    }
    printf("late");
    for (int i = 0; i < conns; i++) printf(" %.6f", late[i]);
    printf("\n");
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 5 && strcmp(argv[1], "silent") == 0)
        return silent(atoi(argv[2]), atoi(argv[3]), atof(argv[4]));
    if (argc != 8) {
        fprintf(stderr, "usage: %s PORT CONNECTIONS SECONDS PIPELINE HANDSHAKE "
                        "PING_HEX REPLY_BYTES\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]), conns = atoi(argv[2]), pipeline = atoi(argv[4]);
    double seconds = atof(argv[3]);
    const char *mode = argv[5], *hex = argv[6];
    size_t reply = (size_t)atoi(argv[7]);
    size_t ping_size = strlen(hex) / 2;
    char *batch = malloc(ping_size * (size_t)pipeline);
    for (size_t i = 0; i < ping_size; i++) sscanf(hex + 2 * i, "%2hhx", &batch[i]);
    for (int p = 1; p < pipeline; p++) memcpy(batch + p * ping_size, batch, ping_size);
    size_t batch_size = ping_size * (size_t)pipeline, batch_reply = reply * pipeline;

    size_t *pending = calloc((size_t)conns, sizeof(size_t)); /* reply bytes owed */
    int websocket = strcmp(mode, "http") == 0;
    /* WebSocket: per connection, the bytes of a control frame not yet complete. */
    unsigned char (*partial)[130] = calloc((size_t)conns, sizeof(*partial));
    size_t *partial_size = calloc((size_t)conns, sizeof(size_t));
    int ep = epoll_create1(0);
    int *fds = open_connections(port, conns, mode, ep);
    long long replies = 0;
    double start = now(), end = start + seconds;
    for (int i = 0; i < conns; i++) {
        write_all(fds[i], batch, batch_size);
        pending[i] = websocket ? (size_t)pipeline : batch_reply;  /* frames : bytes */
    }
    struct epoll_event events[1024];
    char buf[65536];
    while (now() < end) {
        int n = epoll_wait(ep, events, 1024, 100);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        for (int e = 0; e < n; e++) {
            int i = (int)events[e].data.u32;
            ssize_t got = read(fds[i], buf, sizeof(buf));
            if (got == 0) {
                fprintf(stderr, "connection %d closed by the server\n", i);
                return 1;
            }
            if (got < 0) {
                if (errno == EAGAIN) continue;
                die("read");
            }
            if (websocket) {
                unsigned char *frame = partial[i];
                size_t have = partial_size[i];
                for (ssize_t k = 0; k < got; k++) {
                    frame[have++] = (unsigned char)buf[k];
                    if (have >= 2 && have == 2 + (size_t)(frame[1] & 0x7f)) {
                        if ((frame[0] & 0x0f) == 0x0a && --pending[i] == 0) {
                            replies += pipeline;
                            write_all(fds[i], batch, batch_size);
                            pending[i] = (size_t)pipeline;
                        }
                        have = 0;
                    }
                }
                partial_size[i] = have;
                continue;
            }
            size_t left = (size_t)got;
            while (left) {
                size_t take = left < pending[i] ? left : pending[i];
                pending[i] -= take;
                left -= take;
                if (pending[i] == 0) {
                    replies += pipeline;
                    write_all(fds[i], batch, batch_size);
                    pending[i] = batch_reply;
                }
            }
        }
    }
    double took = now() - start;
    printf("replies %lld seconds %.3f rate %.0f\n", replies, took, replies / took);
    return 0;
}
