/* A KVM VMM's view of an assigned device's BAR, run under `ioasid run --machine vtd` (see
 * PreloadTests.swift): the program mmaps BAR 0 of a modelled device's VFIO cdev and gives the
 * mapping to a KVM guest as a memory slot, as QEMU does with -accel kvm. The BAR mapping is
 * trapped MMIO (no access in the page tables), so KVM cannot map it into the guest: a guest load
 * or store there comes back as a KVM_EXIT_MMIO, and the VMM performs it on the same mapping
 * (QEMU's RAM-device regions do exactly that), which reaches the device model. A tiny real-mode
 * guest reads the device's magic register, reports it on an I/O port, and writes the scratch
 * register. Prints "skip kvm" when this machine cannot create and run a VM. */
#include "fixture.h"

#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define VFIO_DEVICE_GET_REGION_INFO _IO(';', 100 + 8)
#define VFIO_DEVICE_BIND_IOMMUFD _IO(';', 100 + 18)
struct region_info { uint32_t argsz, flags, index, cap_offset; uint64_t size, offset; };
struct bind { uint32_t argsz, flags; int32_t iommufd; uint32_t out_devid; uint64_t token_uuid_ptr; };

enum { CODE_GPA = 0x1000, BAR_GPA = 0x10000, MAGIC = 0x494f4153, SCRATCH = 0x28 };

int main(void) {
    int iommufd = open("/dev/iommu", O_RDWR);
    int device = open("/dev/vfio/devices/vfio0", O_RDWR);
    CHECK(iommufd >= 0 && device >= 0, "open the iommufd and the cdev");
    struct bind bind = {sizeof bind, 0, iommufd, 0, 0};
    CHECK(ioctl(device, VFIO_DEVICE_BIND_IOMMUFD, &bind) == 0, "bind");
    struct region_info region = {sizeof region, 0, 0, 0, 0, 0};
    CHECK(ioctl(device, VFIO_DEVICE_GET_REGION_INFO, &region) == 0 && (region.flags & 4), "BAR 0 is mmap-able");
    uint8_t *bar = mmap(NULL, region.size, PROT_READ | PROT_WRITE, MAP_SHARED, device, (off_t)region.offset);
    CHECK(bar != MAP_FAILED, "mmap BAR 0");

    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    int vm = kvm < 0 ? -1 : ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0) {
        printf("skip kvm (%s)\n", strerror(errno));
        return 0;
    }
    uint8_t *code = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(code != MAP_FAILED, "guest memory");
    /* out 0x11, al (the guest runs); mov ax, 0x1000; mov ds, ax; mov eax, [0]; out 0x10, eax;
     * mov dword [0x28], 0x12345678; hlt (real mode: ds = 0x1000 puts ds:0 at BAR_GPA) */
    static const uint8_t program[] = {0xe6, 0x11, 0xb8, 0x00, 0x10, 0x8e, 0xd8, 0x66, 0xa1, 0x00, 0x00, 0x66, 0xe7, 0x10,
                                      0x66, 0xc7, 0x06, SCRATCH, 0x00, 0x78, 0x56, 0x34, 0x12, 0xf4};
    memcpy(code, program, sizeof program);
    struct kvm_userspace_memory_region memory = {0, 0, CODE_GPA, 4096, (uint64_t)(uintptr_t)code};
    CHECK(ioctl(vm, KVM_SET_USER_MEMORY_REGION, &memory) == 0, "the guest's code slot");
    struct kvm_userspace_memory_region slot = {1, 0, BAR_GPA, region.size, (uint64_t)(uintptr_t)bar};
    CHECK(ioctl(vm, KVM_SET_USER_MEMORY_REGION, &slot) == 0, "a memory slot over the BAR mapping");
    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    struct kvm_run *run = vcpu < 0 || run_size <= 0 ? MAP_FAILED : mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    if (run == MAP_FAILED) {
        printf("skip kvm (no vCPU: %s)\n", strerror(errno));
        return 0;
    }
    struct kvm_sregs sregs;
    CHECK(ioctl(vcpu, KVM_GET_SREGS, &sregs) == 0, "sregs");
    sregs.cs.base = 0, sregs.cs.selector = 0, sregs.ds.base = 0, sregs.ds.selector = 0;
    CHECK(ioctl(vcpu, KVM_SET_SREGS, &sregs) == 0, "real mode at 0");
    struct kvm_regs regs = {.rip = CODE_GPA, .rflags = 2};
    CHECK(ioctl(vcpu, KVM_SET_REGS, &regs) == 0, "registers");

    uint32_t reported = 0;
    int mmio_exits = 0, halted = 0;
    for (int exits = 0; exits < 20 && !halted; exits++) {
        if (ioctl(vcpu, KVM_RUN, 0) < 0) {
            if (exits == 0) {  /* before the guest's first instruction: this machine cannot run guests */
                printf("skip kvm (KVM_RUN: %s)\n", strerror(errno));
                return 0;
            }
            CHECK(0, "KVM_RUN after %d exits", exits);
        }
        switch (run->exit_reason) {
        case KVM_EXIT_MMIO: {
            uint64_t offset = run->mmio.phys_addr - BAR_GPA;
            CHECK(run->mmio.phys_addr >= BAR_GPA && offset + run->mmio.len <= region.size, "MMIO inside the BAR");
            /* What QEMU's RAM-device region does: the access on the host mapping (trapped). */
            if (run->mmio.len == 4 && run->mmio.is_write) *(volatile uint32_t *)(bar + offset) = *(uint32_t *)run->mmio.data;
            else if (run->mmio.len == 4) *(uint32_t *)run->mmio.data = *(volatile uint32_t *)(bar + offset);
            else CHECK(0, "a %u-byte access", run->mmio.len);
            mmio_exits++;
            break;
        }
        case KVM_EXIT_IO:
            if (run->io.port == 0x11) break;  /* the guest started */
            CHECK(run->io.port == 0x10 && run->io.size == 4, "the guest's report");
            memcpy(&reported, (uint8_t *)run + run->io.data_offset, 4);
            break;
        case KVM_EXIT_HLT: halted = 1; break;
        default:
            if (exits == 0) {
                printf("skip kvm (exit %u before the guest ran)\n", run->exit_reason);
                return 0;
            }
            CHECK(0, "unexpected exit %u", run->exit_reason);
        }
    }
    CHECK(halted, "the guest halted");
    CHECK(mmio_exits == 2, "both BAR accesses came back as MMIO exits: %d", mmio_exits);
    CHECK(reported == MAGIC, "the guest read the device's magic: %#x", reported);
    CHECK(*(volatile uint32_t *)(bar + SCRATCH) == 0x12345678, "the device kept the guest's write");
    OK("a KVM guest's accesses to a BAR slot reach the device");
    return 0;
}
