/*
 * KVM's VFIO pseudo-device: with `-accel kvm`, QEMU creates a KVM device of type
 * KVM_DEV_TYPE_VFIO and registers every VFIO file it uses with it
 * (KVM_SET_DEVICE_ATTR, group KVM_DEV_VFIO_FILE, attribute FILE_ADD or FILE_DEL, the
 * descriptor at `addr`). KVM asks the VFIO driver whether the file is one of its own, learns
 * whether the device's DMA is cache-coherent, and hands the device its `struct kvm`. The
 * kernel would refuse ioasid's VFIO cdevs and groups (EINVAL: to it they are eventfds).
 *
 * Here the request is answered for those files: 0, because a modelled device's DMA is always
 * coherent and none of them needs KVM. Everything else on a KVM device (other groups, other
 * descriptors, an /dev/iommu, a bad pointer) and the same request on anything that is not
 * KVM's VFIO device goes to the kernel unchanged. Differences from the kernel: adding a file
 * twice, or removing one never added, succeeds (KVM says EEXIST and ENOENT).
 *
 * Cost: the ioctl wrapper compares the request number once on every foreign call; the rest
 * runs only for KVM_SET_DEVICE_ATTR.
 */
#define _GNU_SOURCE
#include "preload_internal.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

/* linux/kvm.h: struct kvm_device_attr and its VFIO group. */
struct kvm_device_attribute {
    uint32_t flags, group;
    uint64_t attribute, address;
};
enum { KVM_DEV_VFIO_FILE = 1, KVM_DEV_VFIO_FILE_ADD = 1, KVM_DEV_VFIO_FILE_DEL = 2 };

/* Copies `size` bytes of this process's memory at `address`; 0, or -1 if it is not readable. */
static int copy_in(void *destination, uint64_t address, size_t size) {
    struct iovec local = {destination, size};
    struct iovec remote = {(void *)(uintptr_t)address, size};
    return syscall(SYS_process_vm_readv, getpid(), &local, 1UL, &remote, 1UL, 0UL) == (long)size ? 0 : -1;
}

/* Whether `fd` is a VFIO file ioasid serves (a device cdev or a group). */
static int is_served_vfio_file(int fd) {
    if (!ioasid_owned(fd)) return 0;
    int (*node)(int, unsigned *, unsigned *) =
        (int (*)(int, unsigned *, unsigned *))ioasid_preload_engine_symbol("ioasid_engine_node");
    unsigned major = 0, minor = 0;
    if (node == NULL || node(fd, &major, &minor) != 1) return 0;
    return major == IOASID_CDEV_MAJOR || major == IOASID_GROUP_MAJOR;
}

/* Whether `fd` is KVM's VFIO pseudo-device. */
static int is_kvm_vfio_device(int fd) { return ioasid_preload_fd_link_is(fd, "anon_inode:kvm-vfio") == 1; }

int ioasid_kvm_vfio_attribute(int fd, void *argument) {
    struct kvm_device_attribute attribute;
    if (copy_in(&attribute, (uint64_t)(uintptr_t)argument, sizeof attribute) != 0) return 0;
    if (attribute.group != KVM_DEV_VFIO_FILE ||
        (attribute.attribute != KVM_DEV_VFIO_FILE_ADD && attribute.attribute != KVM_DEV_VFIO_FILE_DEL))
        return 0;
    int32_t file;
    if (copy_in(&file, attribute.address, sizeof file) != 0) return 0;
    return is_served_vfio_file(file) && is_kvm_vfio_device(fd);
}
