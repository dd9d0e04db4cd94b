/* Ends the way it is told: `status exit N` exits with N, `status signal N` kills itself with
 * signal N (without dumping core), `status wait` prints "ready" and waits to be killed.
 * Used to check that `ioasid run` passes exit statuses and signals through. */
#include "fixture.h"
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "wait") == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        printf("ready\n");
        fflush(stdout);
        sleep(30);
        return 4;
    }
    if (argc != 3) {
        fprintf(stderr, "usage: status exit|signal N\n");
        return 2;
    }
    int number = atoi(argv[2]);
    if (strcmp(argv[1], "exit") == 0) return number;
    struct rlimit none = {0, 0};
    setrlimit(RLIMIT_CORE, &none);
    signal(number, SIG_DFL);
    sigset_t set; /* the caller may have started us with signals blocked */
    sigemptyset(&set);
    sigaddset(&set, number);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    raise(number);
    return 3;
}
