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
 * Run:   loadgen silent PORT CONNECTIONS TIMEOUT [hold]
 *
 * Kick accuracy, seen from the clients: opens CONNECTIONS (framed), sends one
 * PING on each as fast as it can, then stays silent and reads every connection
 * until its CLOSE frame, and closes it then, as a live client does ("hold":
 * it keeps it open and reads no more until every CLOSE has come, as a hung
 * client or one whose network is gone would). Prints one line "late L1 L2
 * ...": for each connection, when its CLOSE arrived - (when its PING was sent
 * + TIMEOUT), in seconds. Exits 1 if a connection ends without a CLOSE.
 *
 * Run:   loadgen scale PORT SOURCE_IP CONNECTIONS INTERVAL TIMEOUT OUTFILE [ID_PREFIX]
 *
 * Many connections, as real clients keep them (benchmarks/scale.py runs
 * several of these at once, each from its own SOURCE_IP in 127.0.0.0/8: one
 * address has about 28,000 ephemeral ports). Opens CONNECTIONS from SOURCE_IP,
 * at most WINDOW handshakes at a time (HELLO proposing INTERVAL; with
 * ID_PREFIX, connection i names itself client_id ID_PREFIX<i>), prints
 * "connected N SECONDS", then takes commands on stdin, one per line:
 *   ping       every connection sends a PING every INTERVAL seconds, the
 *              connections spread evenly over it; each PONG's latency is kept
 *   silent K   the first K connections send one last PING together, then
 *              stay silent: each CLOSE(1) must come TIMEOUT after it; each
 *              closes its socket when its CLOSE(1) arrives, as a live client
 *              does ("silent K hold": it keeps the socket open, unread, to
 *              the end, as a hung client or one whose network is gone)
 *   stop       stop sending, wait up to 5 s for the PONGs still owed, write
 *              the latencies to OUTFILE ("pong SENT_AT SECONDS" lines, SENT_AT
 *              on CLOCK_MONOTONIC, and "kick SECONDS SINCE_PONG AT" lines: CLOSE(1)
 *              arrival - (last PING sent + TIMEOUT), and - (that PING's
 *              PONG's arrival + TIMEOUT), "nan" if it never came; AT: the
 *              arrival),
 *              print "done sent S answered A unanswered U kicked K
 *              unexpected E" and exit
 * and prints "tick READY SENT ANSWERED KICKED WORST_MS" every second meanwhile
 * (counts so far; WORST_MS: the slowest PONG since the last tick). An
 * arrival is when the kernel received the bytes (SO_TIMESTAMPNS; on loopback
 * that is when the server wrote them), not when this process read them: the
 * figures are the server's, whatever this process's priority or load.
 * "Unexpected" counts connections ended by the server (or a CLOSE) without
 * having been told to stay silent.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
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

static int silent(int port, int conns, double timeout, int hold) {
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
                    if (hold)
                        epoll_ctl(ep, EPOLL_CTL_DEL, fds[i], NULL);
                    else
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

/* ---- scale mode ---------------------------------------------------------- */

#define WINDOW 64          /* handshakes in flight */
#define STDIN_TAG UINT32_MAX

struct conn {
    int fd;
    int state;             /* 0 connecting, 1 HELLO sent, 2 ready, 3 gone */
    int silent;            /* told to stay silent: a CLOSE(1) is due */
    double ping_sent;      /* when the PING in flight was sent, 0 if none */
    double last_ping;      /* when the last PING was sent */
    double last_pong;      /* when the last PONG arrived */
    struct parser parser;
};

struct samples {
    double *values;
    size_t size, capacity;
};

static void keep(struct samples *s, double value) {
    if (s->size == s->capacity) {
        s->capacity = s->capacity ? 2 * s->capacity : 65536;
        s->values = realloc(s->values, s->capacity * sizeof(double));
        if (!s->values) die("realloc");
    }
    s->values[s->size++] = value;
}

static void raise_fd_limit(void) {
    struct rlimit limit;
    if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
        limit.rlim_cur = limit.rlim_max;
        setrlimit(RLIMIT_NOFILE, &limit);
    }
}

/* CLOCK_REALTIME - CLOCK_MONOTONIC, for the kernel's receive timestamps. */
static double realtime_offset(void) {
    struct timespec real;
    double before = now();
    clock_gettime(CLOCK_REALTIME, &real);
    return real.tv_sec + real.tv_nsec / 1e9 - (before + now()) / 2;
}

/* read(), and *at: when the kernel received the last of those bytes, on
 * CLOCK_MONOTONIC (an arrival, see the top); when they were read if the
 * kernel gave no time (the end of the stream). */
static ssize_t read_stamped(int fd, char *buf, size_t size, double offset, double *at) {
    union {
        char space[CMSG_SPACE(sizeof(struct timespec))];
        struct cmsghdr align;
    } control;
    struct iovec iov = {.iov_base = buf, .iov_len = size};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1,
                         .msg_control = control.space,
                         .msg_controllen = sizeof(control.space)};
    ssize_t got = recvmsg(fd, &msg, 0);
    *at = now();
    for (struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg); got > 0 && cmsg;
         cmsg = CMSG_NXTHDR(&msg, cmsg)) {
        if (cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_TIMESTAMPNS) {
            struct timespec ts;
            memcpy(&ts, CMSG_DATA(cmsg), sizeof(ts));
            double arrived = ts.tv_sec + ts.tv_nsec / 1e9 - offset;
            if (arrived < *at) *at = arrived;
        }
    }
    return got;
}

static int open_one(const struct sockaddr_in *server, const struct sockaddr_in *source,
                    int ep, uint32_t index) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) die("socket");
    int one = 1;
    /* The port is chosen at connect(), per destination: ports are not used up
     * by the bind. */
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    /* Each read says when its bytes arrived (read_stamped). */
    if (setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof(one)) < 0)
        die("SO_TIMESTAMPNS");
    if (bind(fd, (const struct sockaddr *)source, sizeof(*source)) < 0) die("bind");
    if (connect(fd, (const struct sockaddr *)server, sizeof(*server)) < 0 &&
        errno != EINPROGRESS)
        die("connect");
    struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = index};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
    return fd;
}

static int scale(int port, const char *source_ip, int count, double interval,
                 double timeout, const char *outfile, const char *id_prefix) {
    raise_fd_limit();
    struct sockaddr_in server = {.sin_family = AF_INET, .sin_port = htons(port)};
    server.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct sockaddr_in source = {.sin_family = AF_INET};
    if (inet_pton(AF_INET, source_ip, &source.sin_addr) != 1) die("source address");
    char hello[128];
    int json = snprintf(hello + 2, sizeof(hello) - 2,
                        "{\"version\":1,\"interval\":%g}", interval);
    hello[0] = 0x01;
    hello[1] = (char)json;  /* < 128: one LEB128 byte */
    size_t hello_size = (size_t)json + 2;

    struct conn *conns = calloc((size_t)count, sizeof(struct conn));
    double offset = realtime_offset();
    int ep = epoll_create1(0);
    struct epoll_event in = {.events = EPOLLIN, .data.u32 = STDIN_TAG};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, 0, &in) < 0) die("epoll_ctl stdin");
    struct samples pongs = {0}, pong_at = {0}, kicks = {0}, kicks_pong = {0};
    struct samples kick_at = {0};
    long long sent = 0, answered = 0, kicked = 0, unexpected = 0;
    int opened = 0, ready = 0, in_flight = 0, silent_count = 0;
    int pinging = 0, stopping = 0, hold = 0;
    double start = now(), pace_start = 0, stop_until = 0, next_tick = start + 1;
    double worst = 0;
    long long next_seq = 0;  /* PINGs are sent in order: seq % count */
    struct epoll_event events[1024];
    char buf[65536], line[256];
    size_t line_size = 0;

    for (;;) {
        while (opened < count && in_flight < WINDOW) {
            conns[opened].fd = open_one(&server, &source, ep, (uint32_t)opened);
            opened++;
            in_flight++;
        }
        double t = now();
        if (ready == count && opened == count && in_flight == 0 && start > 0) {
            printf("connected %d %.3f\n", count, t - start);
            fflush(stdout);
            start = 0;  /* printed */
        }
        int wait_ms = 100;
        if (pinging && !stopping) {
            double due = pace_start + (double)next_seq * interval / count;
            while (due <= t) {
                struct conn *c = &conns[next_seq % count];
                next_seq++;
                if (c->state == 2 && !c->silent && c->ping_sent == 0) {
                    write_all(c->fd, "\x03\x00", 2);
                    c->ping_sent = c->last_ping = now();
                    sent++;
                }
                due = pace_start + (double)next_seq * interval / count;
            }
            /* Rounded up: rounded down, the last millisecond before each
             * PING was a busy loop of epoll_wait(0) (a loadgen at 500 PINGs/s
             * took 44 % of a core, at 4,000/s all of one, and seven of them
             * starved the server they measure). */
            wait_ms = (int)((due - t) * 1000) + 1;
            if (wait_ms > 100) wait_ms = 100;
        }
        if (t >= next_tick) {
            printf("tick %d %lld %lld %lld %.1f\n", ready, sent, answered, kicked,
                   worst * 1000);
            fflush(stdout);
            next_tick = t + 1;
            worst = 0;
        }
        if (stopping) {
            long long owed = 0;
            for (int i = 0; i < count; i++)
                owed += conns[i].state == 2 && conns[i].ping_sent != 0;
            if (owed == 0 || t >= stop_until) break;
        }
        int n = epoll_wait(ep, events, 1024, wait_ms < 0 ? 0 : wait_ms);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        for (int e = 0; e < n; e++) {
            uint32_t tag = events[e].data.u32;
            if (tag == STDIN_TAG) {
                ssize_t got = read(0, line + line_size, sizeof(line) - 1 - line_size);
                if (got <= 0) { stopping = 1; stop_until = now() + 5; continue; }
                line_size += (size_t)got;
                char *nl;
                while ((nl = memchr(line, '\n', line_size))) {
                    *nl = 0;
                    if (strcmp(line, "ping") == 0) {
                        pinging = 1;
                        pace_start = now();
                        next_seq = 0;
                    } else if (strncmp(line, "silent ", 7) == 0) {
                        silent_count = atoi(line + 7);
                        hold = strstr(line + 7, "hold") != NULL;
                        for (int i = 0; i < silent_count && i < count; i++) {
                            struct conn *c = &conns[i];
                            if (c->state != 2) continue;
                            c->silent = 1;
                            write_all(c->fd, "\x03\x00", 2);
                            c->ping_sent = c->last_ping = now();
                            sent++;
                        }
                    } else if (strcmp(line, "stop") == 0) {
                        stopping = 1;
                        stop_until = now() + 5;
                    }
                    size_t used = (size_t)(nl - line) + 1;
                    memmove(line, nl + 1, line_size - used);
                    line_size -= used;
                }
                continue;
            }
            struct conn *c = &conns[tag];
            if (c->state == 0) {  /* connected (or failed): send HELLO */
                int error = 0;
                socklen_t size = sizeof(error);
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &error, &size);
                if (error) { errno = error; die("connect"); }
                if (id_prefix) {
                    int n = snprintf(hello + 2, sizeof(hello) - 2,
                                     "{\"version\":1,\"interval\":%g,\"client_id\":\"%s%u\"}",
                                     interval, id_prefix, tag);
                    if (n >= 128) die("client_id too long");
                    hello[1] = (char)n;
                    hello_size = (size_t)n + 2;
                }
                write_all(c->fd, hello, hello_size);
                struct epoll_event ev = {.events = EPOLLIN, .data.u32 = tag};
                if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl");
                c->state = 1;
                continue;
            }
            if (c->state == 3) continue;
            double at;
            ssize_t got = read_stamped(c->fd, buf, sizeof(buf), offset, &at);
            if (got < 0 && errno == EAGAIN) continue;
            int ended = got <= 0;
            for (ssize_t k = 0; k < got && !ended; k++) {
                int type = parse_byte(&c->parser, (unsigned char)buf[k]);
                if (type == 0x01 && c->state == 1) {
                    c->state = 2;
                    ready++;
                    in_flight--;
                } else if (type == 0x04 && c->ping_sent != 0) {
                    double latency = at - c->ping_sent;
                    if (!c->silent) {
                        keep(&pongs, latency);
                        keep(&pong_at, c->ping_sent);
                        if (latency > worst) worst = latency;
                    }
                    c->ping_sent = 0;
                    c->last_pong = at;
                    answered++;
                } else if (type == 0x05) {
                    ended = 1;
                }
            }
            if (!ended) continue;
            if (c->silent && got > 0) {
                keep(&kicks, at - (c->last_ping + timeout));
                /* The server read that PING just before it answered: the
                 * kick's lateness against its own deadline, as seen here
                 * (NaN: the PONG had not come). */
                keep(&kicks_pong, c->ping_sent == 0 ? at - (c->last_pong + timeout)
                                                   : 0.0 / 0.0);
                keep(&kick_at, at);
                kicked++;
            } else {
                if (c->state == 1) {
                    fprintf(stderr, "connection %d refused in the handshake\n", tag);
                    return 1;
                }
                unexpected++;
            }
            c->state = 3;
            if (c->silent && got > 0 && hold) {
                /* no answer, no FIN: closed when the process exits */
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                continue;
            }
            close(c->fd);
        }
    }
    long long unanswered = 0;
    for (int i = 0; i < count; i++)
        unanswered += conns[i].state == 2 && !conns[i].silent && conns[i].ping_sent != 0;
    FILE *out = fopen(outfile, "w");
    if (!out) die("outfile");
    for (size_t i = 0; i < pongs.size; i++)
        fprintf(out, "pong %.6f %.6f\n", pong_at.values[i], pongs.values[i]);
    for (size_t i = 0; i < kicks.size; i++)
        fprintf(out, "kick %.6f %.6f %.6f\n", kicks.values[i], kicks_pong.values[i],
                kick_at.values[i]);
    fclose(out);
    printf("done sent %lld answered %lld unanswered %lld kicked %lld unexpected %lld\n",
           sent, answered, unanswered, kicked, unexpected);
    return 0;
}

int main(int argc, char **argv) {
    if ((argc == 5 || (argc == 6 && strcmp(argv[5], "hold") == 0))
        && strcmp(argv[1], "silent") == 0)
        return silent(atoi(argv[2]), atoi(argv[3]), atof(argv[4]), argc == 6);
    if ((argc == 8 || argc == 9) && strcmp(argv[1], "scale") == 0)
        return scale(atoi(argv[2]), argv[3], atoi(argv[4]), atof(argv[5]),
                     atof(argv[6]), argv[7], argc == 9 ? argv[8] : NULL);
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
