/* A socket per client, as a TURN relay has one per allocation: the table shared by the
 * forwarders that send each client's datagrams from a socket of its own (`sockets`, and
 * `naive` built as `naive-sockets`). The first datagram from a client address opens a socket
 * for it, bound to the listening address with any port. Open addressing, FNV-1a over address
 * and port: one lookup per datagram, no allocation. */
#ifndef FORWARDER_CLIENTS_H
#define FORWARDER_CLIENTS_H

#include "common.h"

#define MAX_CLIENTS 4096
#define CLIENT_TABLE (2 * MAX_CLIENTS)

struct client {
    struct sockaddr_storage addr; /* ss_family 0: free slot */
    int fd;
};

static struct client client_table[CLIENT_TABLE];
static int clients;
static struct sockaddr_storage client_local;
static socklen_t client_local_len;

/* Remembers the listening socket's address: client sockets bind to it, with port 0. */
static void clients_init(int listen_fd) {
    client_local_len = sizeof client_local;
    if (getsockname(listen_fd, (struct sockaddr *)&client_local, &client_local_len) != 0) {
        perror("getsockname");
        exit(1);
    }
}

static int same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b) {
    if (a->ss_family != b->ss_family)
        return 0;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
    return x->sin6_port == y->sin6_port &&
           memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr) == 0;
}

static unsigned hash_addr(const struct sockaddr_storage *a) {
    const unsigned char *p;
    size_t n;
    unsigned short port;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a;
        p = (const void *)&x->sin_addr;
        n = sizeof x->sin_addr;
        port = x->sin_port;
    } else {
        const struct sockaddr_in6 *x = (const void *)a;
        p = (const void *)&x->sin6_addr;
        n = sizeof x->sin6_addr;
        port = x->sin6_port;
    }
    unsigned h = 2166136261u ^ port;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}

/* The socket of a client, opened at its first datagram; -1 when the table is full or the
 * socket cannot be opened (the datagram is then dropped). */
static int client_fd(const struct sockaddr_storage *from) {
    unsigned i = hash_addr(from) % CLIENT_TABLE;
    while (client_table[i].addr.ss_family != 0) {
        if (same_addr(&client_table[i].addr, from))
            return client_table[i].fd;
        i = (i + 1) % CLIENT_TABLE;
    }
    if (clients == MAX_CLIENTS)
        return -1;
    int fd = socket(client_local.ss_family, SOCK_DGRAM, 0);
    if (fd < 0)
        return -1;
    int size = FWD_RCVBUF;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    struct sockaddr_storage any = client_local;
    if (any.ss_family == AF_INET)
        ((struct sockaddr_in *)&any)->sin_port = 0;
    else
        ((struct sockaddr_in6 *)&any)->sin6_port = 0;
    if (bind(fd, (struct sockaddr *)&any, client_local_len) != 0) {
        close(fd);
        return -1;
    }
    client_table[i].addr = *from;
    client_table[i].fd = fd;
    clients++;
    return fd;
}

#endif
