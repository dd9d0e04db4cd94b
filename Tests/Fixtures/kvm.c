/* KVM's VFIO pseudo-device, run under `ioasid run --machine vtd` (see PreloadTests.swift):
 * QEMU with -accel kvm registers each VFIO file with a KVM_DEV_TYPE_VFIO device
 * (KVM_SET_DEVICE_ATTR, KVM_DEV_VFIO_FILE, FILE_ADD/FILE_DEL). ioasid's cdev and group are
 * accepted; everything else keeps the kernel's answer. The request on a descriptor that is not
 * KVM's device reaches the kernel whatever it names. Prints "skip kvm" when this machine
 * cannot create a VM. */
#include "fixture.h"

#include <fcntl.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

struct device_attribute { uint32_t flags, group; uint64_t attribute, address; };
struct create_device { uint32_t type, fd, flags; };
#define KVM_CREATE_VM _IO(0xAE, 0x01)
#define KVM_CREATE_DEVICE _IOWR(0xAE, 0xe0, struct create_device)
#define KVM_SET_DEVICE_ATTR _IOW(0xAE, 0xe1, struct device_attribute)
enum { KVM_DEV_TYPE_VFIO = 4, FILE_GROUP = 1, FILE_ADD = 1, FILE_DEL = 2 };

static int set_file(int device, uint64_t which, int32_t *file) {
    struct device_attribute attribute = {0, FILE_GROUP, which, (uint64_t)(uintptr_t)file};
    return ioctl(device, KVM_SET_DEVICE_ATTR, &attribute);
}

int main(void) {
    int32_t cdev = open("/dev/vfio/devices/vfio0", O_RDWR);
    int32_t group = open("/dev/vfio/0", O_RDWR);
    int32_t iommufd = open("/dev/iommu", O_RDWR);
    int32_t null = open("/dev/null", O_RDWR);
    CHECK(cdev >= 0 && group >= 0 && iommufd >= 0 && null >= 0, "open the nodes");

    int other = eventfd(0, 0);
    CHECK(other >= 0, "eventfd");
    CHECK_ERRNO(set_file(other, FILE_ADD, &cdev), ENOTTY);
    OK("the request on another descriptor reaches the kernel");

    int kvm = open("/dev/kvm", O_RDWR);
    int vm = kvm >= 0 ? ioctl(kvm, KVM_CREATE_VM, 0) : -1;
    struct create_device create = {KVM_DEV_TYPE_VFIO, 0, 0};
    if (vm < 0 || ioctl(vm, KVM_CREATE_DEVICE, &create) != 0) {
        printf("skip kvm (%s)\n", strerror(errno));
        return 0;
    }
    int device = (int)create.fd;
    CHECK(set_file(device, FILE_ADD, &cdev) == 0, "FILE_ADD of the cdev");
    CHECK(set_file(device, FILE_ADD, &group) == 0, "FILE_ADD of the group");
    CHECK(set_file(device, FILE_DEL, &cdev) == 0, "FILE_DEL of the cdev");
    CHECK_ERRNO(set_file(device, FILE_ADD, &iommufd), EINVAL);
    CHECK_ERRNO(set_file(device, FILE_ADD, &null), EINVAL);
    CHECK_ERRNO(set_file(device, FILE_ADD, (int32_t *)16), EFAULT);
    OK("kvm-vfio accepts ioasid's VFIO files and refuses the rest");
    return 0;
}
