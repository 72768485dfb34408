/* A probe for the seccomp tests, compiled statically (`cc -static`) into the test rootfs.
 * Each argument names a check; each check prints one line `NAME=ok` or `NAME=E<errno>`
 * (for `workload`, `workload=E<errno>@<step>` at the step that failed).
 *
 *   io_uring_setup   io_uring_setup(1, &params), raw
 *   vsock            socket(AF_VSOCK, SOCK_STREAM, 0)
 *   vsock_high       the same with high bits above the int the kernel reads
 *   personality      personality(ADDR_NO_RANDOMIZE), then back
 *   clone3           clone3(NULL, 0), raw (no filter: EFAULT or EINVAL)
 *   workload         file IO, AF_INET and AF_UNIX sockets, threads, fork + exec
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/personality.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SYS_io_uring_setup
#define SYS_io_uring_setup 425
#endif
#ifndef SYS_clone3
#define SYS_clone3 435
#endif

static void report(const char *name, long rc) {
    if (rc < 0)
        printf("%s=E%d\n", name, errno);
    else
        printf("%s=ok\n", name);
}

static void *thread_main(void *arg) {
    *(int *)arg += 1;
    return NULL;
}

#define STEP(name, expr) do { if ((expr) < 0) { printf("workload=E%d@%s\n", errno, name); return; } } while (0)

static void workload(void) {
    char buf[64];
    int fd, one = 1;
    STEP("open", fd = open("/tmp/probe.txt", O_CREAT | O_TRUNC | O_RDWR, 0600));
    STEP("write", write(fd, "hello", 5));
    STEP("lseek", lseek(fd, 0, SEEK_SET));
    STEP("read", read(fd, buf, sizeof buf));
    STEP("fsync", fsync(fd));
    close(fd);
    STEP("rename", rename("/tmp/probe.txt", "/tmp/probe2.txt"));
    STEP("unlink", unlink("/tmp/probe2.txt"));

    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    int server, client, conn;
    STEP("socket_inet", server = socket(AF_INET, SOCK_STREAM, 0));
    STEP("setsockopt", setsockopt(server, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one));
    STEP("bind", bind(server, (struct sockaddr *)&addr, sizeof addr));
    STEP("listen", listen(server, 1));
    STEP("getsockname", getsockname(server, (struct sockaddr *)&addr, &len));
    STEP("socket_client", client = socket(AF_INET, SOCK_STREAM, 0));
    STEP("connect", connect(client, (struct sockaddr *)&addr, sizeof addr));
    STEP("accept", conn = accept(server, NULL, NULL));
    STEP("send", send(client, "ping", 4, 0));
    STEP("recv", recv(conn, buf, sizeof buf, 0));
    close(conn), close(client), close(server);

    int pair[2];
    STEP("socketpair_unix", socketpair(AF_UNIX, SOCK_STREAM, 0, pair));
    STEP("unix_write", write(pair[0], "x", 1));
    STEP("unix_read", read(pair[1], buf, 1));
    close(pair[0]), close(pair[1]);

    /* glibc creates threads with clone3 first and falls back to clone on ENOSYS. */
    pthread_t threads[4];
    int counters[4] = {0};
    for (int i = 0; i < 4; i++) {
        errno = pthread_create(&threads[i], NULL, thread_main, &counters[i]);
        STEP("pthread_create", errno ? -1 : 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(threads[i], NULL);
    for (int i = 0; i < 4; i++) {
        errno = EINVAL;
        STEP("thread_ran", counters[i] == 1 ? 0 : -1);
    }

    pid_t child;
    int status;
    STEP("fork", child = fork());
    if (child == 0) {
        execl("/bin/sh", "sh", "-c", "exit 7", (char *)NULL);
        _exit(127);
    }
    STEP("waitpid", waitpid(child, &status, 0));
    errno = ECHILD;
    STEP("exec_status", WIFEXITED(status) && WEXITSTATUS(status) == 7 ? 0 : -1);
    printf("workload=ok\n");
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *check = argv[i];
        if (!strcmp(check, "io_uring_setup")) {
            unsigned char params[120] = {0};
            report(check, syscall(SYS_io_uring_setup, 1, params));
        } else if (!strcmp(check, "vsock")) {
            report(check, socket(40, SOCK_STREAM, 0));
        } else if (!strcmp(check, "vsock_high")) {
            report(check, syscall(SYS_socket, 0x100000028L, SOCK_STREAM, 0));
        } else if (!strcmp(check, "personality")) {
            long old = syscall(SYS_personality, 0xffffffffL);
            long rc = syscall(SYS_personality, (long)ADDR_NO_RANDOMIZE);
            report(check, rc);
            if (rc >= 0)
                syscall(SYS_personality, old);
        } else if (!strcmp(check, "clone3")) {
            report(check, syscall(SYS_clone3, NULL, 0));
        } else if (!strcmp(check, "workload")) {
            workload();
        } else {
            printf("%s=unknown-check\n", check);
        }
    }
    return 0;
}
