/*
 * hollow-vmm: a stand-in for a VMM, for control-plane tests and benchmarks only.
 * It runs no guest. It honours the contract volantd relies on:
 *   - creates a serial socket (echoes what a client types) and a control socket
 *     that speaks a small subset of QMP (greeting, qmp_capabilities, query-status,
 *     query-name, system_powerdown, quit);
 *   - appends a boot marker line to the console log;
 *   - exits 0 on SIGTERM/SIGINT, on system_powerdown and on quit;
 *   - optionally "crashes" (SIGABRT) after N seconds, ignores SIGTERM, or accepts
 *     system_powerdown without exiting (a guest with no ACPI handler), so tests can
 *     exercise crash detection and every rung of the stop ladder.
 * A C process costs ~1 MB RSS and well under a millisecond of CPU to start, which is
 * what lets a benchmark launch a thousand of them on two cores.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_CLIENTS 16
#define BUF_SIZE 4096

enum client_kind { SERIAL, CONTROL };

struct client {
    int fd;
    enum client_kind kind;
    size_t used;
    char buf[BUF_SIZE];
};

static const char *name = "hollow";
static const char *serial_path;
static const char *control_path;
static const char *console_path;
static const char *cmdline = "";
static const char *boot_marker = "hollow-vmm: boot complete";
static double crash_after = -1;
static double boot_delay = 0; /* seconds before the boot marker, like a guest still booting */
static int ignore_sigterm;
static int ignore_powerdown;
static struct client clients[MAX_CLIENTS];
static int nclients;

static void usage(void) {
    fprintf(stderr,
            "usage: hollow-vmm --name N --serial PATH --control PATH --console-log PATH\n"
            "                  [--cmdline S] [--boot-marker S] [--crash-after SECONDS]\n"
            "                  [--boot-delay SECONDS]\n"
            "                  [--ignore-sigterm] [--ignore-powerdown]\n");
    exit(2);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void write_all(int fd, const char *data, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        data += n;
        len -= (size_t)n;
    }
}

static void write_str(int fd, const char *s) { write_all(fd, s, strlen(s)); }

static void console_line(const char *a, const char *b) {
    int fd = open(console_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd < 0)
        return;
    char line[BUF_SIZE * 2];
    int n = snprintf(line, sizeof line, "%s%s\n", a, b);
    if (n > 0)
        write_all(fd, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
    close(fd);
}

static int listen_unix(const char *path) {
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof addr.sun_path) {
        fprintf(stderr, "hollow-vmm: socket path too long: %s\n", path);
        exit(1);
    }
    strcpy(addr.sun_path, path);
    unlink(path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(fd, 16) < 0) {
        fprintf(stderr, "hollow-vmm: cannot listen on %s: %s\n", path, strerror(errno));
        exit(1);
    }
    return fd;
}

static void finish(int code) {
    unlink(serial_path);
    unlink(control_path);
    exit(code);
}

static void drop_client(int i) {
    close(clients[i].fd);
    clients[i] = clients[--nclients];
}

static void accept_client(int listen_fd, enum client_kind kind) {
    int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
        return;
    if (nclients == MAX_CLIENTS) {
        close(fd);
        return;
    }
    clients[nclients].fd = fd;
    clients[nclients].kind = kind;
    clients[nclients].used = 0;
    nclients++;
    if (kind == CONTROL)
        write_str(fd, "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 0, "
                      "\"major\": 0}, \"package\": \"hollow-vmm\"}, \"capabilities\": []}}\r\n");
    else {
        char banner[256];
        snprintf(banner, sizeof banner, "hollow-vmm console for %s\r\n", name);
        write_str(fd, banner);
    }
}

/* Copies the value of "execute" in a JSON line into out; returns 0 if absent. */
static int execute_name(const char *line, char *out, size_t out_size) {
    const char *p = strstr(line, "\"execute\"");
    if (!p)
        return 0;
    p += strlen("\"execute\"");
    while (*p == ' ' || *p == ':' || *p == '\t')
        p++;
    if (*p != '"')
        return 0;
    p++;
    size_t n = 0;
    while (*p && *p != '"' && n + 1 < out_size)
        out[n++] = *p++;
    out[n] = 0;
    return n > 0;
}

/* Returns 1 when the VMM should exit after answering. */
static int handle_command(int fd, const char *line) {
    char cmd[64];
    char reply[512];
    if (!execute_name(line, cmd, sizeof cmd)) {
        write_str(fd, "{\"error\": {\"class\": \"GenericError\", \"desc\": \"expected execute\"}}\r\n");
        return 0;
    }
    if (!strcmp(cmd, "qmp_capabilities")) {
        write_str(fd, "{\"return\": {}}\r\n");
    } else if (!strcmp(cmd, "query-status")) {
        write_str(fd, "{\"return\": {\"status\": \"running\", \"singlestep\": false, "
                      "\"running\": true}}\r\n");
    } else if (!strcmp(cmd, "query-name")) {
        snprintf(reply, sizeof reply, "{\"return\": {\"name\": \"%s\"}}\r\n", name);
        write_str(fd, reply);
    } else if (!strcmp(cmd, "system_powerdown") && ignore_powerdown) {
        /* Like QEMU with a guest that has no ACPI handler: accepted, then nothing. */
        write_str(fd, "{\"return\": {}}\r\n");
        write_str(fd, "{\"event\": \"POWERDOWN\"}\r\n");
        console_line("hollow-vmm: power button pressed; ignored by ", name);
    } else if (!strcmp(cmd, "system_powerdown") || !strcmp(cmd, "quit")) {
        write_str(fd, "{\"return\": {}}\r\n");
        write_str(fd, "{\"event\": \"SHUTDOWN\", \"data\": {\"guest\": true, "
                      "\"reason\": \"guest-shutdown\"}}\r\n");
        console_line("hollow-vmm: power down requested via ", cmd);
        return 1;
    } else {
        snprintf(reply, sizeof reply,
                 "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The command %s has "
                 "not been found\"}}\r\n",
                 cmd);
        write_str(fd, reply);
    }
    return 0;
}

/* Returns 1 when the VMM should exit. */
static int service_client(int i) {
    struct client *c = &clients[i];
    ssize_t n = read(c->fd, c->buf + c->used, BUF_SIZE - 1 - c->used);
    if (n <= 0) {
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            return 0;
        drop_client(i);
        return 0;
    }
    if (c->kind == SERIAL) {
        write_all(c->fd, c->buf + c->used, (size_t)n);
        return 0;
    }
    c->used += (size_t)n;
    c->buf[c->used] = 0;
    char *start = c->buf;
    char *nl;
    while ((nl = strchr(start, '\n')) != NULL) {
        *nl = 0;
        if (handle_command(c->fd, start))
            return 1;
        start = nl + 1;
    }
    size_t rest = c->used - (size_t)(start - c->buf);
    if (rest == BUF_SIZE - 1) /* an over-long line: discard it */
        rest = 0;
    memmove(c->buf, start, rest);
    c->used = rest;
    return 0;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--ignore-sigterm")) {
            ignore_sigterm = 1;
            continue;
        }
        if (!strcmp(a, "--ignore-powerdown")) {
            ignore_powerdown = 1;
            continue;
        }
        if (!v)
            usage();
        if (!strcmp(a, "--name")) name = v;
        else if (!strcmp(a, "--serial")) serial_path = v;
        else if (!strcmp(a, "--control")) control_path = v;
        else if (!strcmp(a, "--console-log")) console_path = v;
        else if (!strcmp(a, "--cmdline")) cmdline = v;
        else if (!strcmp(a, "--boot-marker")) boot_marker = v;
        else if (!strcmp(a, "--crash-after")) crash_after = atof(v);
        else if (!strcmp(a, "--boot-delay")) boot_delay = atof(v);
        else usage();
        i++;
    }
    if (!serial_path || !control_path || !console_path)
        usage();

    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core); /* a simulated crash must not leave core files */

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    if (ignore_sigterm)
        signal(SIGTERM, SIG_IGN);
    else
        sigaddset(&mask, SIGTERM);
    signal(SIGPIPE, SIG_IGN);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    int sig_fd = signalfd(-1, &mask, SFD_CLOEXEC);

    int serial_fd = listen_unix(serial_path);
    int control_fd = listen_unix(control_path);

    console_line("hollow-vmm: starting ", name);
    console_line("hollow-vmm: Command line: ", cmdline);
    double booted_at = boot_delay > 0 ? now() + boot_delay : -1;
    if (booted_at < 0)
        console_line(boot_marker, "");

    double deadline = crash_after >= 0 ? now() + crash_after : -1;
    struct pollfd fds[3 + MAX_CLIENTS];
    for (;;) {
        int timeout = -1;
        if (booted_at >= 0) {
            double left = booted_at - now();
            if (left <= 0) {
                console_line(boot_marker, "");
                booted_at = -1;
            } else {
                timeout = (int)(left * 1000) + 1;
            }
        }
        if (deadline >= 0) {
            double left = deadline - now();
            if (left <= 0) {
                console_line("hollow-vmm: simulated crash of ", name);
                signal(SIGABRT, SIG_DFL);
                abort();
            }
            int crash_in = (int)(left * 1000) + 1;
            if (timeout < 0 || crash_in < timeout)
                timeout = crash_in;
        }
        fds[0] = (struct pollfd){.fd = sig_fd, .events = POLLIN};
        fds[1] = (struct pollfd){.fd = serial_fd, .events = POLLIN};
        fds[2] = (struct pollfd){.fd = control_fd, .events = POLLIN};
        for (int i = 0; i < nclients; i++)
            fds[3 + i] = (struct pollfd){.fd = clients[i].fd, .events = POLLIN};
        int n = poll(fds, (nfds_t)(3 + nclients), timeout);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            finish(1);
        }
        if (fds[0].revents & POLLIN) {
            struct signalfd_siginfo si;
            if (read(sig_fd, &si, sizeof si) == sizeof si) {
                console_line("hollow-vmm: terminating on signal ", strsignal((int)si.ssi_signo));
                finish(0);
            }
        }
        int polled = nclients;
        /* Walk backwards: drop_client moves the last client into the freed slot. */
        for (int i = polled - 1; i >= 0; i--) {
            if (fds[3 + i].revents & (POLLIN | POLLHUP | POLLERR)) {
                if (service_client(i))
                    finish(0);
            }
        }
        if (fds[1].revents & POLLIN)
            accept_client(serial_fd, SERIAL);
        if (fds[2].revents & POLLIN)
            accept_client(control_fd, CONTROL);
    }
}
