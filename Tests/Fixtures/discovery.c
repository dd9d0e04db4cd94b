/* Discovery like a real machine, run under `ioasid run --machine vtd:2,mock` (see
 * PreloadTests.swift): the device nodes stat as character devices whose numbers match sysfs,
 * the sysfs view of each modelled device reads as the kernel's does, and writing sriov_numvfs
 * creates and removes virtual functions with their own addresses, groups and cdevs.
 *
 * `discovery nodes-only` checks only /dev/iommu (for a run without --machine). */
#include "fixture.h"

#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

static const char *const PF = "/sys/bus/pci/devices/0100:00:01.0";

/* The whole of a small file, NUL-terminated; exits on failure. */
static void read_file(const char *path, char *buffer, size_t size) {
    int fd = open(path, O_RDONLY);
    CHECK(fd >= 0, "open %s", path);
    ssize_t length = read(fd, buffer, size - 1);
    CHECK(length >= 0, "read %s", path);
    buffer[length] = '\0';
    CHECK(close(fd) == 0, "close %s", path);
}

static void expect_file(const char *path, const char *expected) {
    char text[256];
    read_file(path, text, sizeof text);
    CHECK(strcmp(text, expected) == 0, "%s reads '%s', expected '%s'", path, text, expected);
}

/* The last component of the link at `path`. */
static void link_basename(const char *path, char *out, size_t size) {
    char target[PATH_MAX];
    ssize_t length = readlink(path, target, sizeof target - 1);
    CHECK(length > 0, "readlink %s", path);
    target[length] = '\0';
    snprintf(out, size, "%s", basename(target));
}

static void expect_link_basename(const char *path, const char *expected) {
    char name[PATH_MAX];
    link_basename(path, name, sizeof name);
    CHECK(strcmp(name, expected) == 0, "%s -> .../%s, expected .../%s", path, name, expected);
}

/* The cdev name under BDF/vfio-dev/, found as the VFIO selftests do (opendir + readdir). */
static void cdev_name(const char *bdf_path, char *out, size_t size) {
    char folder[PATH_MAX];
    snprintf(folder, sizeof folder, "%s/vfio-dev/", bdf_path);
    DIR *dir = opendir(folder);
    CHECK(dir != NULL, "opendir %s", folder);
    out[0] = '\0';
    for (struct dirent *entry; (entry = readdir(dir)) != NULL;)
        if (strncmp(entry->d_name, "vfio", 4) == 0) snprintf(out, size, "%s", entry->d_name);
    CHECK(closedir(dir) == 0, "closedir");
    CHECK(out[0] != '\0', "no vfio* entry in %s", folder);
}

/* The cdev of the device at `bdf_path` stats as a character device whose numbers are those of
 * its sysfs vfio-dev/vfioN/dev, and an open descriptor of it fstats the same. */
static void check_cdev_matches_sysfs(const char *bdf_path, int expected_minor) {
    char name[NAME_MAX + 1], path[PATH_MAX + 300], dev[64];
    cdev_name(bdf_path, name, sizeof name);
    snprintf(path, sizeof path, "%s/vfio-dev/%s/dev", bdf_path, name);
    read_file(path, dev, sizeof dev);
    unsigned major_number, minor_number;
    CHECK(sscanf(dev, "%u:%u", &major_number, &minor_number) == 2, "%s: '%s'", path, dev);
    CHECK((int)minor_number == expected_minor, "%s: minor %u, expected %d", path, minor_number, expected_minor);
    snprintf(path, sizeof path, "/dev/vfio/devices/%s", name);
    struct stat st;
    CHECK(stat(path, &st) == 0, "stat %s", path);
    CHECK(S_ISCHR(st.st_mode), "%s is a character device (mode %o)", path, st.st_mode);
    CHECK(major(st.st_rdev) == major_number && minor(st.st_rdev) == minor_number,
          "%s is %u:%u, sysfs says %u:%u", path, major(st.st_rdev), minor(st.st_rdev), major_number, minor_number);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    CHECK(fd >= 0, "open %s", path);
    struct stat opened;
    CHECK(fstat(fd, &opened) == 0, "fstat %s", path);
    CHECK(S_ISCHR(opened.st_mode) && opened.st_rdev == st.st_rdev, "fstat of an open %s is %u:%u (mode %o)", path,
          major(opened.st_rdev), minor(opened.st_rdev), opened.st_mode);
    CHECK(close(fd) == 0, "close");
}

static void check_iommu_node(void) {
    struct stat st;
    CHECK(stat("/dev/iommu", &st) == 0, "stat /dev/iommu");
    CHECK(S_ISCHR(st.st_mode) && major(st.st_rdev) == 10 && minor(st.st_rdev) == 257,
          "/dev/iommu is %u:%u mode %o", major(st.st_rdev), minor(st.st_rdev), st.st_mode);
    struct stat again;
    CHECK(lstat("/dev/iommu", &again) == 0 && again.st_rdev == st.st_rdev, "lstat /dev/iommu");
    CHECK(fstatat(AT_FDCWD, "/dev/iommu", &again, 0) == 0 && again.st_rdev == st.st_rdev, "fstatat /dev/iommu");
    struct statx x;
    CHECK(statx(AT_FDCWD, "/dev/iommu", 0, STATX_BASIC_STATS, &x) == 0, "statx /dev/iommu");
    CHECK(S_ISCHR(x.stx_mode) && x.stx_rdev_major == 10 && x.stx_rdev_minor == 257, "statx /dev/iommu %u:%u",
          x.stx_rdev_major, x.stx_rdev_minor);
    CHECK(access("/dev/iommu", R_OK | W_OK) == 0, "access /dev/iommu");
    CHECK(faccessat(AT_FDCWD, "/dev/iommu", F_OK, 0) == 0, "faccessat /dev/iommu");
    CHECK_ERRNO(access("/dev/iommu", X_OK), EACCES);
    /* The symbol older binaries (glibc < 2.33) call. */
    int (*xstat)(int, const char *, struct stat *) = (int (*)(int, const char *, struct stat *))dlsym(RTLD_DEFAULT, "__xstat");
    CHECK(xstat != NULL, "__xstat exists");
    CHECK(xstat(1, "/dev/iommu", &again) == 0 && again.st_rdev == st.st_rdev && S_ISCHR(again.st_mode), "__xstat /dev/iommu");
    int fd = open("/dev/iommu", O_RDWR);
    CHECK(fd >= 0, "open /dev/iommu");
    CHECK(fstat(fd, &again) == 0 && S_ISCHR(again.st_mode) && again.st_rdev == st.st_rdev, "fstat of /dev/iommu's fd");

    CHECK(statx(fd, "", AT_EMPTY_PATH, STATX_BASIC_STATS, &x) == 0 && S_ISCHR(x.stx_mode) && x.stx_rdev_minor == 257,
          "statx AT_EMPTY_PATH of /dev/iommu's fd");
    CHECK(close(fd) == 0, "close");
    CHECK(stat("/dev/null", &st) == 0 && S_ISCHR(st.st_mode) && major(st.st_rdev) == 1 && minor(st.st_rdev) == 3,
          "a foreign node is unchanged");
    OK("/dev/iommu is character device 10:257");
}

static void check_dev_vfio(void) {
    struct stat st;
    CHECK(stat("/dev/vfio", &st) == 0 && S_ISDIR(st.st_mode), "/dev/vfio is a folder");
    CHECK(stat("/dev/vfio/devices", &st) == 0 && S_ISDIR(st.st_mode), "/dev/vfio/devices is a folder");
    CHECK(stat("/dev/vfio/vfio", &st) == 0 && S_ISCHR(st.st_mode) && major(st.st_rdev) == 10 && minor(st.st_rdev) == 196,
          "/dev/vfio/vfio is 10:196");
    CHECK(stat("/dev/vfio/1", &st) == 0 && S_ISCHR(st.st_mode) && minor(st.st_rdev) == 1, "/dev/vfio/1 is a group node");
    int seen = 0;
    DIR *dir = opendir("/dev/vfio");
    CHECK(dir != NULL, "opendir /dev/vfio");
    for (struct dirent *entry; (entry = readdir(dir)) != NULL;) {
        if (strcmp(entry->d_name, "vfio") == 0) seen |= 1;
        if (strcmp(entry->d_name, "devices") == 0) seen |= 2;
        if (strcmp(entry->d_name, "0") == 0) seen |= 4;
        if (strcmp(entry->d_name, "2") == 0) seen |= 8;
    }
    closedir(dir);
    CHECK(seen == 15, "/dev/vfio lists vfio, devices, 0 and 2 (seen %#x)", seen);
    dir = opendir("/dev/vfio/devices");
    CHECK(dir != NULL, "opendir /dev/vfio/devices");
    int cdevs = 0;
    for (struct dirent *entry; (entry = readdir(dir)) != NULL;)
        if (strncmp(entry->d_name, "vfio", 4) == 0) cdevs++;
    closedir(dir);
    CHECK(cdevs == 3, "/dev/vfio/devices lists 3 cdevs, not %d", cdevs);
    CHECK_ERRNO(stat("/dev/vfio/devices/vfio3", &st), ENOENT);
    /* udev's /dev/char links, through which QEMU opens a cdev by its numbers. */
    CHECK(lstat("/dev/char/241:1", &st) == 0 && S_ISLNK(st.st_mode), "/dev/char/241:1 is a link");
    CHECK(stat("/dev/char/241:1", &st) == 0 && S_ISCHR(st.st_mode) && major(st.st_rdev) == 241 && minor(st.st_rdev) == 1,
          "/dev/char/241:1 is the cdev");
    CHECK(stat("/dev/char/10:257", &st) == 0 && S_ISCHR(st.st_mode) && minor(st.st_rdev) == 257, "/dev/char/10:257");
    int fd = open("/dev/char/241:1", O_RDWR);
    CHECK(fd >= 0, "open /dev/char/241:1");
    CHECK(fstat(fd, &st) == 0 && S_ISCHR(st.st_mode) && major(st.st_rdev) == 241 && minor(st.st_rdev) == 1,
          "fstat of the cdev opened through /dev/char");
    close(fd);
    char *resolved = realpath("/dev/char/241:1", NULL);
    CHECK(resolved != NULL && strcmp(resolved, "/dev/vfio/devices/vfio1") == 0, "realpath /dev/char/241:1 = %s",
          resolved ? resolved : "(null)");
    free(resolved);
    CHECK(stat("/dev/char/1:3", &st) == 0 || errno == ENOENT, "a foreign /dev/char link is the machine's");
    /* The host's Intel IOMMU debugfs does not describe modelled devices. */
    CHECK_ERRNO(access("/sys/kernel/debug/iommu/intel", F_OK), ENOENT);
    OK("/dev/vfio lists the machine's nodes");
}

static void check_sysfs(void) {
    char path[PATH_MAX], text[PATH_MAX];
    snprintf(path, sizeof path, "%s/vendor", PF);
    expect_file(path, "0x1b36\n");
    snprintf(path, sizeof path, "%s/device", PF);
    expect_file(path, "0x00f0\n");
    snprintf(path, sizeof path, "%s/class", PF);
    expect_file(path, "0xff0000\n");
    snprintf(path, sizeof path, "%s/subsystem_vendor", PF);
    expect_file(path, "0x1b36\n");
    snprintf(path, sizeof path, "%s/revision", PF);
    expect_file(path, "0x01\n");
    /* fopen reaches the view too (glibc's fopen opens through its internal symbols). */
    snprintf(path, sizeof path, "%s/vendor", PF);
    FILE *file = fopen(path, "r");
    CHECK(file != NULL, "fopen %s", path);
    CHECK(fgets(text, sizeof text, file) != NULL && strcmp(text, "0x1b36\n") == 0, "fgets vendor: %s", text);
    fclose(file);
    /* config: the configuration space, IDs first. */
    snprintf(path, sizeof path, "%s/config", PF);
    unsigned char config[4096];
    int fd = open(path, O_RDONLY);
    CHECK(fd >= 0, "open %s", path);
    ssize_t length = read(fd, config, sizeof config);
    CHECK(length == 4096, "config is 4096 bytes (PCI Express), read %zd", length);
    CHECK(config[0] == 0x36 && config[1] == 0x1b && config[2] == 0xf0 && config[3] == 0x00, "config starts with 1b36:00f0");
    CHECK(config[0x0b] == 0xff, "config class byte");
    close(fd);
    file = fopen(path, "rb");
    CHECK(file != NULL && fread(config, 1, 4, file) == 4 && config[0] == 0x36, "fopen + fread config");
    fclose(file);
    /* links */
    snprintf(path, sizeof path, "%s/iommu_group", PF);
    expect_link_basename(path, "0");
    snprintf(path, sizeof path, "%s/driver", PF);
    expect_link_basename(path, "vfio-pci");
    snprintf(path, sizeof path, "%s/vfio-dev/vfio0/device", PF);
    expect_link_basename(path, "0100:00:01.0");
    snprintf(path, sizeof path, "/sys/bus/pci/devices/0100:00:02.0/iommu_group");
    expect_link_basename(path, "1");
    char *resolved = realpath(PF, NULL);
    CHECK(resolved != NULL && strcmp(resolved, "/sys/devices/pci0100:00/0100:00:01.0") == 0, "realpath %s = %s", PF,
          resolved ? resolved : "(null)");
    free(resolved);
    snprintf(path, sizeof path, "%s/iommu_group", PF);
    resolved = realpath(path, NULL);
    CHECK(resolved != NULL && strcmp(resolved, "/sys/kernel/iommu_groups/0") == 0, "realpath iommu_group = %s",
          resolved ? resolved : "(null)");
    free(resolved);
    struct stat st;
    CHECK(lstat("/sys/kernel/iommu_groups/0/devices/0100:00:01.0", &st) == 0 && S_ISLNK(st.st_mode),
          "the group lists its device");
    CHECK(stat("/sys/bus/pci/devices/0100:00:03.0/vendor", &st) == 0, "the mock device has a sysfs folder");
    CHECK_ERRNO(stat("/sys/bus/pci/devices/0100:00:03.0/sriov_totalvfs", &st), ENOENT);
    CHECK_ERRNO(stat("/sys/bus/pci/devices/0100:00:04.0", &st), ENOENT);
    CHECK(access("/sys/bus/pci/devices/0100:00:01.0/config", R_OK) == 0, "access config");
    OK("sysfs view of each device");
    check_cdev_matches_sysfs(PF, 0);
    check_cdev_matches_sysfs("/sys/bus/pci/devices/0100:00:02.0", 1);
    check_cdev_matches_sysfs("/sys/bus/pci/devices/0100:00:03.0", 2);
    OK("cdev numbers match vfio-dev/vfioN/dev");
}

static long write_numvfs(const char *text) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/sriov_numvfs", PF);
    int fd = open(path, O_WRONLY);
    CHECK(fd >= 0, "open %s for writing", path);
    errno = 0;
    long result = write(fd, text, strlen(text));
    int saved_errno = errno;
    close(fd);
    errno = saved_errno;
    return result;
}

static void check_sriov(void) {
    char path[PATH_MAX], text[64];
    snprintf(path, sizeof path, "%s/sriov_totalvfs", PF);
    expect_file(path, "7\n");
    snprintf(path, sizeof path, "%s/sriov_numvfs", PF);
    expect_file(path, "0\n");
    CHECK(write_numvfs("2") == 1, "enable 2 VFs");
    expect_file(path, "2\n");
    snprintf(path, sizeof path, "%s/virtfn0", PF);
    expect_link_basename(path, "0100:00:01.1");
    snprintf(path, sizeof path, "%s/virtfn1", PF);
    expect_link_basename(path, "0100:00:01.2");
    const char *vf = "/sys/bus/pci/devices/0100:00:01.1";
    snprintf(path, sizeof path, "%s/physfn", vf);
    expect_link_basename(path, "0100:00:01.0");
    snprintf(path, sizeof path, "%s/driver", vf);
    expect_link_basename(path, "vfio-pci");
    snprintf(path, sizeof path, "%s/iommu_group", vf);
    expect_link_basename(path, "3");
    snprintf(path, sizeof path, "%s/device", vf);
    expect_file(path, "0x00f1\n");
    check_cdev_matches_sysfs(vf, 3);
    check_cdev_matches_sysfs("/sys/bus/pci/devices/0100:00:01.2", 4);
    struct stat st;
    CHECK(stat("/dev/vfio/3", &st) == 0 && S_ISCHR(st.st_mode) && minor(st.st_rdev) == 3, "the VF's group node");
    OK("2 VFs with their own addresses, groups and cdevs");

    /* The kernel's rules (drivers/pci/iov.c: sriov_numvfs_store). */
    CHECK(write_numvfs("3") == -1 && errno == EBUSY, "a different count while VFs exist is EBUSY (errno %d)", errno);
    CHECK(write_numvfs("8") == -1 && errno == ERANGE, "more than sriov_totalvfs is ERANGE (errno %d)", errno);
    CHECK(write_numvfs("two") == -1 && errno == EINVAL, "not a number is EINVAL (errno %d)", errno);
    CHECK(write_numvfs("2\n") == 2, "the same count again does nothing");
    int vf_fd = open("/dev/vfio/devices/vfio3", O_RDWR);
    CHECK(vf_fd >= 0, "open the VF's cdev");
    CHECK(write_numvfs("0") == -1 && errno == EBUSY, "removing a VF whose cdev is open is EBUSY (errno %d)", errno);
    close(vf_fd);
    CHECK(write_numvfs("0") == 1, "disable the VFs");
    snprintf(path, sizeof path, "%s/sriov_numvfs", PF);
    expect_file(path, "0\n");
    snprintf(path, sizeof path, "%s/virtfn0", PF);
    CHECK_ERRNO(readlink(path, text, sizeof text), ENOENT);
    CHECK_ERRNO(stat("/sys/bus/pci/devices/0100:00:01.1", &st), ENOENT);
    CHECK_ERRNO(stat("/dev/vfio/devices/vfio3", &st), ENOENT);
    CHECK_ERRNO(open("/dev/vfio/devices/vfio3", O_RDWR), ENOENT);
    OK("sriov_numvfs errors and removal");

    /* stdio: fprintf through fopen, as scripts in C do. */
    snprintf(path, sizeof path, "%s/sriov_numvfs", PF);
    FILE *file = fopen(path, "w");
    CHECK(file != NULL, "fopen sriov_numvfs");
    CHECK(fprintf(file, "%d\n", 1) == 2 && fclose(file) == 0, "fprintf 1 > sriov_numvfs");
    CHECK(stat("/dev/vfio/devices/vfio3", &st) == 0 && S_ISCHR(st.st_mode), "the VF came back");
    file = fopen(path, "r");
    CHECK(file != NULL && fgets(text, sizeof text, file) != NULL && strcmp(text, "1\n") == 0, "fgets sriov_numvfs");
    fclose(file);
    CHECK(write_numvfs("0") == 1, "disable again");
    OK("sriov_numvfs through stdio");
}

/* The VFIO container is an iommufd too, but its node is misc 10:196 (VFIO_MINOR), by path and
 * through its descriptor (with a machine: /dev/vfio exists then). */
static void check_container_node(void) {
    struct stat container, again;
    CHECK(stat("/dev/vfio/vfio", &container) == 0 && S_ISCHR(container.st_mode) && major(container.st_rdev) == 10 &&
          minor(container.st_rdev) == 196, "/dev/vfio/vfio is %u:%u", major(container.st_rdev), minor(container.st_rdev));
    int container_fd = open("/dev/vfio/vfio", O_RDWR);
    CHECK(container_fd >= 0, "open /dev/vfio/vfio");
    CHECK(fstat(container_fd, &again) == 0 && again.st_rdev == container.st_rdev, "fstat of the container's fd is %u:%u",
          major(again.st_rdev), minor(again.st_rdev));
    CHECK(close(container_fd) == 0, "close the container");
    OK("/dev/vfio/vfio is character device 10:196, open or not");
}

int main(int argc, char **argv) {
    check_iommu_node();
    if (argc > 1 && strcmp(argv[1], "nodes-only") == 0) {
        struct stat st;
        CHECK(stat("/sys/bus/pci/devices/0100:00:01.0", &st) != 0, "no modelled device without a machine");
        printf("discovery ok\n");
        return 0;
    }
    check_dev_vfio();
    check_container_node();
    check_sysfs();
    check_sriov();
    printf("discovery ok\n");
    return 0;
}
