/* A bare UDP forwarder, the naive way: one recvfrom and one sendto per datagram.
 *
 *   naive LISTEN-ADDR:PORT PEER-ADDR:PORT
 *
 * Every datagram that arrives on LISTEN is sent, unchanged, to PEER; no protocol work at all.
 * Built plain (`naive`), it sends from the listening socket: one socket for every client,
 * which a TURN server cannot have, since each allocation has a relayed address of its own.
 * Built with -DSOCKET_PER_CLIENT (`naive-sockets`), it sends each client's datagrams from a
 * socket of their own (clients.h): the naive forwarder that the data-path targets name, in a
 * TURN relay's shape. Exits on SIGTERM or SIGINT; prints nothing per packet. */
#ifdef SOCKET_PER_CLIENT
#include "clients.h"
#else
#include "common.h"
#endif

int main(int argc, char **argv) {
    struct sockaddr_storage peer;
    socklen_t peer_len;
    int fd = fwd_setup(argc, argv, &peer, &peer_len);
#ifdef SOCKET_PER_CLIENT
    clients_init(fd);
#endif
    static char buf[65536];
    unsigned long long forwarded = 0;
    while (!fwd_stop) {
        struct sockaddr_storage from;
        socklen_t from_len = sizeof from;
        ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &from_len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("recvfrom");
            return 1;
        }
#ifdef SOCKET_PER_CLIENT
        int out = client_fd(&from); /* -1: the table is full; the datagram is dropped */
#else
        int out = fd;
#endif
        if (out >= 0 && sendto(out, buf, (size_t)n, 0, (struct sockaddr *)&peer, peer_len) == n)
            forwarded++;
    }
    fprintf(stderr, "%s: forwarded %llu datagrams\n", argv[0], forwarded);
    return 0;
}
