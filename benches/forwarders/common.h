/* Shared helpers of the reference forwarders: address parsing, socket setup, signals. */
#ifndef FORWARDER_COMMON_H
#define FORWARDER_COMMON_H

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Receive buffer asked for: the same order as the relays under test (coturn asks 2 MiB,
 * eeaturn 4 MiB), so that bursts are absorbed alike. */
#define FWD_RCVBUF (4 << 20)

static volatile sig_atomic_t fwd_stop;

static void fwd_on_signal(int sig) {
    (void)sig;
    fwd_stop = 1;
}

/* SIGTERM and SIGINT set fwd_stop; no SA_RESTART, so a blocked receive returns EINTR. */
static void fwd_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fwd_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
}

/* Parses "a.b.c.d:port" or "[v6]:port". Returns 0 on success. */
static int fwd_parse(const char *text, struct sockaddr_storage *out, socklen_t *len) {
    char host[128];
    const char *colon = strrchr(text, ':');
    if (colon == NULL || colon == text || (size_t)(colon - text) >= sizeof host)
        return -1;
    size_t hl = (size_t)(colon - text);
    memcpy(host, text, hl);
    host[hl] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || port <= 0 || port > 65535)
        return -1;
    memset(out, 0, sizeof *out);
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
        host[hl - 1] = '\0';
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)out;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((unsigned short)port);
        if (inet_pton(AF_INET6, host + 1, &a->sin6_addr) != 1)
            return -1;
        *len = sizeof *a;
        return 0;
    }
    struct sockaddr_in *a = (struct sockaddr_in *)out;
    a->sin_family = AF_INET;
    a->sin_port = htons((unsigned short)port);
    if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
        return -1;
    *len = sizeof *a;
    return 0;
}

/* Parses the two arguments and binds the listening socket. Exits on error. */
static int fwd_setup(int argc, char **argv, struct sockaddr_storage *peer, socklen_t *peer_len) {
    struct sockaddr_storage listen_addr;
    socklen_t listen_len;
    if (argc != 3 || fwd_parse(argv[1], &listen_addr, &listen_len) != 0 ||
        fwd_parse(argv[2], peer, peer_len) != 0) {
        fprintf(stderr, "usage: %s LISTEN-ADDR:PORT PEER-ADDR:PORT\n", argv[0]);
        exit(2);
    }
    int fd = socket(listen_addr.ss_family, SOCK_DGRAM, 0);
    if (fd < 0) {
        perror("socket");
        exit(1);
    }
    int size = FWD_RCVBUF;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    if (bind(fd, (struct sockaddr *)&listen_addr, listen_len) != 0) {
        perror("bind");
        exit(1);
    }
    fwd_signals();
    return fd;
}

#endif
