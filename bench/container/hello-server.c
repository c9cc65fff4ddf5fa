/* The container baseline's workload: the smallest useful HTTP server, built static
 * (gcc -O2 -static) so the OCI bundle's rootfs holds this one file and nothing else.
 * Answers every request on a connection with `hello\n` (keep-alive), one connection at a time.
 *
 *     hello-server PORT          (listens on 127.0.0.1:PORT)
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char response[] =
    "HTTP/1.1 200 OK\r\n"
    "content-type: text/plain; charset=utf-8\r\n"
    "content-length: 6\r\n"
    "\r\n"
    "hello\n";

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 8080;
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    if (listener < 0) { perror("socket"); return 1; }
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0) { perror("bind"); return 1; }
    if (listen(listener, 128) < 0) { perror("listen"); return 1; }
    for (;;) {
        int conn = accept(listener, NULL, NULL);
        if (conn < 0) continue;
        char buf[8192];
        ssize_t n;
        /* One read per request: the benchmark's requests are small and sent whole. */
        while ((n = read(conn, buf, sizeof buf)) > 0) {
            if (write(conn, response, sizeof response - 1) < 0) break;
        }
        close(conn);
    }
}
