/* The service behind the gateway: bench/container/hello-server.c (the container baseline's
 * static HTTP server), adapted to sit behind a proxy:
 *   - each connection is served by a child process, so a connection that a client (skiff's
 *     connection pool, a health check) keeps open never holds up the next one;
 *   - it answers one request per connection (`connection: close`), GET and HEAD only (no
 *     request bodies);
 *   - the answer says what the service saw: the request line and the `x-jwt-sub` header the
 *     gateway's `jwt` middleware adds.
 * Built static (gcc -O2 -static) so the OCI bundle's rootfs holds this one file and nothing else.
 *
 *     hello-server PORT          (listens on 127.0.0.1:PORT)
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

/* The value of header `name` in the request head `head` (NUL-terminated), copied into `out`
 * (at most `size` - 1 bytes, printable ASCII only), or "-" when absent. */
static void header_value(const char *head, const char *name, char *out, size_t size) {
    size_t len = strlen(name);
    const char *line = strstr(head, "\r\n");
    snprintf(out, size, "-");
    while (line && line[2] != '\r' && line[2] != '\0') {
        line += 2;
        if (strncasecmp(line, name, len) == 0 && line[len] == ':') {
            const char *value = line + len + 1;
            while (*value == ' ' || *value == '\t') value++;
            size_t n = 0;
            while (value[n] && value[n] != '\r' && value[n] != '\n' && n + 1 < size
                   && isprint((unsigned char)value[n]))
                n++;
            memcpy(out, value, n);
            out[n] = '\0';
            return;
        }
        line = strstr(line, "\r\n");
    }
}

static void serve(int conn) {
    char head[8192];
    size_t got = 0;
    /* Read until the end of the request head (or the buffer is full). */
    while (got < sizeof head - 1) {
        ssize_t n = read(conn, head + got, sizeof head - 1 - got);
        if (n <= 0) return;
        got += (size_t)n;
        head[got] = '\0';
        if (strstr(head, "\r\n\r\n")) break;
    }
    head[got] = '\0';

    char request_line[512];
    size_t n = strcspn(head, "\r\n");
    if (n >= sizeof request_line) n = sizeof request_line - 1;
    memcpy(request_line, head, n);
    request_line[n] = '\0';
    for (size_t i = 0; i < n; i++)
        if (!isprint((unsigned char)request_line[i])) request_line[i] = '?';

    char subject[300];
    header_value(head, "x-jwt-sub", subject, sizeof subject);

    char body[1024];
    int body_len = snprintf(body, sizeof body,
                            "hello from the container\nrequest: %s\nx-jwt-sub: %s\n",
                            request_line, subject);
    if (body_len < 0 || (size_t)body_len >= sizeof body) body_len = (int)strlen(body);
    int head_request = strncmp(request_line, "HEAD ", 5) == 0;

    char response[1536];
    int len = snprintf(response, sizeof response,
                       "HTTP/1.1 200 OK\r\n"
                       "content-type: text/plain; charset=utf-8\r\n"
                       "content-length: %d\r\n"
                       "connection: close\r\n"
                       "\r\n"
                       "%s",
                       body_len, head_request ? "" : body);
    if (len > 0) (void)!write(conn, response, (size_t)len);
    /* Close gracefully: let the client see the end, and read what it still sends (for up to
     * a second) so that closing does not reset the connection under the answer. */
    shutdown(conn, SHUT_WR);
    struct timeval second = {1, 0};
    setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &second, sizeof second);
    while (read(conn, head, sizeof head) > 0) {}
}

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 8080;
    /* Children are reaped by the kernel (this is PID 1 in its container). */
    signal(SIGCHLD, SIG_IGN);
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
    fprintf(stderr, "hello-server listening on 127.0.0.1:%d\n", port);
    for (;;) {
        int conn = accept(listener, NULL, NULL);
        if (conn < 0) continue;
        pid_t child = fork();
        if (child == 0) {
            close(listener);
            serve(conn);
            close(conn);
            _exit(0);
        }
        close(conn);
    }
}
