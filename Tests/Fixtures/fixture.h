/* Helpers shared by the C fixtures that PreloadTests.swift compiles and runs under the preload.
 * A fixture prints "ok <what>" for each check to stdout and exits 0; on the first failed check it
 * prints "FAIL file:line: <what> (errno)" to stderr and exits 1. */
#ifndef IOASID_FIXTURE_H
#define IOASID_FIXTURE_H

#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(condition, ...)                                                          \
    do {                                                                               \
        if (!(condition)) {                                                            \
            int saved_errno_ = errno;                                                  \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                       \
            fprintf(stderr, __VA_ARGS__);                                              \
            fprintf(stderr, " [%s; errno %d %s]\n", #condition, saved_errno_, strerror(saved_errno_)); \
            exit(1);                                                                   \
        }                                                                              \
    } while (0)

/* Checks that a call failed with -1 and the given errno. */
#define CHECK_ERRNO(call, expected)                                                    \
    do {                                                                               \
        errno = 0;                                                                     \
        long result_ = (long)(call);                                                   \
        int errno_ = errno;                                                            \
        if (result_ != -1 || errno_ != (expected)) {                                   \
            fprintf(stderr, "FAIL %s:%d: %s returned %ld errno %d (%s), expected -1 errno %d (%s)\n", \
                    __FILE__, __LINE__, #call, result_, errno_, strerror(errno_), (expected), strerror(expected)); \
            exit(1);                                                                   \
        }                                                                              \
    } while (0)

#define OK(...)              \
    do {                     \
        printf("ok ");       \
        printf(__VA_ARGS__); \
        printf("\n");        \
        fflush(stdout);      \
    } while (0)

/* Whether /proc/self/maps names a mapping whose path contains `needle`. */
static inline int mapped(const char *needle) {
    FILE *maps = fopen("/proc/self/maps", "r");
    if (maps == NULL) return -1;
    char line[4096];
    int found = 0;
    while (fgets(line, sizeof line, maps) != NULL) {
        if (strstr(line, needle) != NULL) found = 1;
    }
    fclose(maps);
    return found;
}

/* Raises RLIMIT_NOFILE so that fds up to `highest` can exist (raising the hard limit needs
 * CAP_SYS_RESOURCE); returns whether it worked. */
#include <sys/resource.h>
static inline int raise_fd_limit(unsigned long highest) {
    struct rlimit limit;
    if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return 0;
    if (limit.rlim_cur > highest) return 1;
    if (limit.rlim_max <= highest) limit.rlim_max = highest + 1;
    limit.rlim_cur = limit.rlim_max;
    return setrlimit(RLIMIT_NOFILE, &limit) == 0;
}

#endif
