/* A bare UDP forwarder, the naive way, shaped like a TURN relay: one recvfrom and one sendto
 * per datagram, each client's datagrams sent from a socket of their own.
 *
 *   naive_sockets LISTEN-ADDR:PORT PEER-ADDR:PORT
 *
 * Every datagram that arrives on LISTEN is sent, unchanged, to PEER from its client's socket
 * (opened at the client's first datagram, bound to the listening address with any port;
 * clients.h). It is the reference the data-path targets name: a relay with no protocol work
 * that makes one system call per packet and direction, with the one relayed address per
 * allocation that a TURN server must have. `naive` sends everything from the listening
 * socket instead, which no TURN server can do; `sockets` batches.
 *
 * Up to 4096 clients; datagrams from more are dropped. Exits on SIGTERM or SIGINT; prints
 * nothing per packet. */
#include "clients.h"

int main(int argc, char **argv) {
    struct sockaddr_storage peer;
    socklen_t peer_len;
    int fd = fwd_setup(argc, argv, &peer, &peer_len);
    clients_init(fd);
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
        int out = client_fd(&from);
        if (out >= 0 && sendto(out, buf, (size_t)n, 0, (struct sockaddr *)&peer, peer_len) == n)
            forwarded++;
    }
    fprintf(stderr, "naive_sockets: forwarded %llu datagrams from %d clients' sockets\n", forwarded,
            clients);
    return 0;
}
