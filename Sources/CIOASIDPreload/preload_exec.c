/*
 * Descriptors across execve: a launcher opens the device nodes and hands the descriptors to the
 * program it starts. libvirt does this for QEMU (`-device vfio-pci,fd=N`,
 * `-object iommufd,fd=N`), and so does a shell's `exec 5<>/dev/vfio/devices/vfio0`.
 *
 * With the kernel, the open file survives execve. Here the file is the engine's, and the engine
 * lives in the process image that execve replaces; what survives is only the eventfd behind the
 * descriptor number. So:
 *  - Before execve, the list of the engine's device-node descriptors that stay open across it
 *    (no FD_CLOEXEC) goes into the new image's environment as
 *    IOASID_INHERITED_FDS=fd:major:minor[,fd:major:minor...] (the node's numbers, as fstat
 *    reports them).
 *  - In the new image, the preload's constructor opens each listed node afresh and puts the new
 *    descriptor at the listed number (dup3), in place of the eventfd, then removes the variable.
 *
 * What crosses is the node, not the state: the new image gets a freshly opened /dev/iommu or
 * VFIO cdev, group or container, as if it had opened the path itself. A launcher passes
 * descriptors it has only opened, so nothing is lost there; a descriptor that was bound or held
 * IOAS objects starts over empty. A number that is not an eventfd any more (the program closed
 * and reused it, or the variable is stale) is left alone. The engine's other descriptors (fault
 * and event queues, data fds) do not cross.
 *
 * Interposed: execve, execv, execvp, execvpe and fexecve. Not covered: the execl* forms,
 * posix_spawn and system() (glibc reaches execve through an internal symbol there); their
 * children see the descriptors as bare eventfds.
 */
#undef _FORTIFY_SOURCE
#define _GNU_SOURCE
#include "preload_internal.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define IOASID_EXPORT __attribute__((visibility("default")))

static const char VARIABLE[] = "IOASID_INHERITED_FDS";

typedef int (*execve_fn)(const char *, char *const[], char *const[]);
typedef int (*execvpe_fn)(const char *, char *const[], char *const[]);
typedef int (*fexecve_fn)(int, char *const[], char *const[]);
typedef int (*node_fn)(int, unsigned *, unsigned *);

/* The highest descriptor number scanned; engine descriptors above it do not cross. */
enum { SCAN_LIMIT = IOASID_OWNED_LOW_SIZE };

/* One entry is at most "65535:4294967295:4294967295,". */
enum { ENTRY_MAX = 32 };

/*
 * The environment for the new image: `envp` without any IOASID_INHERITED_FDS, plus one that
 * lists the engine's node descriptors open across execve. Returns `envp` itself when there is
 * nothing to list (and the variable is absent), else an array in a fresh anonymous mapping
 * (async-signal-safe: execve may run in a vfork child) that *mapping / *mapping_size describe.
 */
static char *const *environment_for_exec(char *const envp[], void **mapping, size_t *mapping_size) {
    *mapping = NULL;
    *mapping_size = 0;
    size_t variables = 0, stale = 0;
    for (; envp != NULL && envp[variables] != NULL; variables++)
        if (strncmp(envp[variables], VARIABLE, sizeof VARIABLE - 1) == 0 && envp[variables][sizeof VARIABLE - 1] == '=') stale++;

    size_t count = 0;
    for (int fd = 0; fd < SCAN_LIMIT; fd++)
        if (ioasid_owned(fd)) count++;
    if (count == 0 && stale == 0) return envp;

    node_fn node = count > 0 ? (node_fn)ioasid_preload_engine_symbol("ioasid_engine_node") : NULL;
    size_t size = (variables + 2) * sizeof(char *) + sizeof VARIABLE + 1 + count * ENTRY_MAX;
    void *memory = (void *)syscall(SYS_mmap, NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0L);
    if (memory == MAP_FAILED) return envp; /* the descriptors stay bare eventfds */
    char **array = memory;
    char *text = (char *)memory + (variables + 2) * sizeof(char *);

    size_t out = 0;
    for (size_t index = 0; index < variables; index++) {
        const char *entry = envp[index];
        if (strncmp(entry, VARIABLE, sizeof VARIABLE - 1) == 0 && entry[sizeof VARIABLE - 1] == '=') continue;
        array[out++] = (char *)entry;
    }
    char *cursor = text;
    memcpy(cursor, VARIABLE, sizeof VARIABLE - 1);
    cursor += sizeof VARIABLE - 1;
    *cursor++ = '=';
    size_t listed = 0;
    for (int fd = 0; node != NULL && fd < SCAN_LIMIT; fd++) {
        if (!ioasid_owned(fd)) continue;
        long descriptor_flags = syscall(SYS_fcntl, fd, F_GETFD);
        if (descriptor_flags < 0 || (descriptor_flags & FD_CLOEXEC)) continue;
        unsigned major = 0, minor = 0;
        if (node(fd, &major, &minor) != 1) continue;
        char entry[ENTRY_MAX];
        int length = snprintf(entry, sizeof entry, "%s%d:%u:%u", listed ? "," : "", fd, major, minor);
        if (length <= 0 || (size_t)length >= sizeof entry) continue;
        memcpy(cursor, entry, (size_t)length);
        cursor += length;
        listed++;
    }
    *cursor = '\0';
    if (listed > 0) array[out++] = text;
    array[out] = NULL;
    *mapping = memory;
    *mapping_size = size;
    return array;
}

static void release(void *mapping, size_t size) {
    if (mapping != NULL) {
        int saved = errno;
        (void)syscall(SYS_munmap, mapping, size);
        errno = saved;
    }
}

IOASID_EXPORT int execve(const char *path, char *const argv[], char *const envp[]) {
    execve_fn real = (execve_fn)dlsym(RTLD_NEXT, "execve");
    if (real == NULL) {
        errno = ENOSYS;
        return -1;
    }
    void *mapping;
    size_t size;
    char *const *environment = environment_for_exec(envp, &mapping, &size);
    int result = real(path, argv, environment);
    release(mapping, size);
    return result;
}

IOASID_EXPORT int execv(const char *path, char *const argv[]) {
    return execve(path, argv, environ);
}

IOASID_EXPORT int execvpe(const char *file, char *const argv[], char *const envp[]) {
    execvpe_fn real = (execvpe_fn)dlsym(RTLD_NEXT, "execvpe");
    if (real == NULL) {
        errno = ENOSYS;
        return -1;
    }
    void *mapping;
    size_t size;
    char *const *environment = environment_for_exec(envp, &mapping, &size);
    int result = real(file, argv, environment);
    release(mapping, size);
    return result;
}

IOASID_EXPORT int execvp(const char *file, char *const argv[]) {
    return execvpe(file, argv, environ);
}

IOASID_EXPORT int fexecve(int fd, char *const argv[], char *const envp[]) {
    fexecve_fn real = (fexecve_fn)dlsym(RTLD_NEXT, "fexecve");
    if (real == NULL) {
        errno = ENOSYS;
        return -1;
    }
    void *mapping;
    size_t size;
    char *const *environment = environment_for_exec(envp, &mapping, &size);
    int result = real(fd, argv, environment);
    release(mapping, size);
    return result;
}

/* The path of the node with these numbers, or NULL. `buffer` holds at least 32 bytes. */
static const char *node_path(unsigned major, unsigned minor, char *buffer, size_t size) {
    if (major == IOASID_MISC_MAJOR && minor == IOASID_IOMMU_MINOR) return "/dev/iommu";
    if (major == IOASID_MISC_MAJOR && minor == IOASID_VFIO_CONTAINER_MINOR) return "/dev/vfio/vfio";
    if (major == IOASID_CDEV_MAJOR) return snprintf(buffer, size, "/dev/vfio/devices/vfio%u", minor) > 0 ? buffer : NULL;
    if (major == IOASID_GROUP_MAJOR) return snprintf(buffer, size, "/dev/vfio/%u", minor) > 0 ? buffer : NULL;
    return NULL;
}

static void diagnose_inherited(const char *path) {
    char line[256];
    int length = snprintf(line, sizeof line, "ioasid-preload: cannot re-open inherited %s: %s\n", path, strerror(errno));
    if (length > 0) (void)!syscall(SYS_write, 2, line, (size_t)length);
}

/* Whether `fd` is open on an eventfd (what an engine descriptor is to the kernel). */
static int is_eventfd(int fd) { return ioasid_preload_fd_link_is(fd, "anon_inode:[eventfd]") == 1; }

void ioasid_preload_adopt_inherited(void) {
    const char *list = getenv(VARIABLE);
    if (list == NULL) return;
    char copy[4096];
    snprintf(copy, sizeof copy, "%s", list);
    unsetenv(VARIABLE);
    char *save = NULL;
    for (char *entry = strtok_r(copy, ",", &save); entry != NULL; entry = strtok_r(NULL, ",", &save)) {
        int fd;
        unsigned major, minor;
        if (sscanf(entry, "%d:%u:%u", &fd, &major, &minor) != 3 || fd < 0 || ioasid_owned(fd)) continue;
        char buffer[64];
        const char *path = node_path(major, minor, buffer, sizeof buffer);
        if (path == NULL || !is_eventfd(fd)) continue;
        int saved = errno;
        int fresh = open(path, O_RDWR); /* the interposed open: the engine's node */
        if (fresh >= 0 && fresh != fd) {
            if (dup2(fresh, fd) < 0) diagnose_inherited(path);
            close(fresh);
        } else if (fresh < 0) {
            diagnose_inherited(path);
        }
        errno = saved;
    }
}
