/* A bare UDP forwarder, the naive way: one recvfrom and one sendto per datagram.
 *
 *   naive LISTEN-ADDR:PORT PEER-ADDR:PORT
 *
 * Every datagram that arrives on LISTEN is sent, unchanged, to PEER from the same socket.
 * No protocol work at all, and one socket for every client, which a TURN server cannot have
 * (each allocation has a relayed address of its own): `naive_sockets` is the same loop with a
 * socket per client. Exits on SIGTERM or SIGINT; prints nothing per packet. */
#include "common.h"

int main(int argc, char **argv) {
    struct sockaddr_storage peer;
    socklen_t peer_len;
    int fd = fwd_setup(argc, argv, &peer, &peer_len);
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
        if (sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&peer, peer_len) == n)
            forwarded++;
    }
    fprintf(stderr, "naive: forwarded %llu datagrams\n", forwarded);
    return 0;
}
