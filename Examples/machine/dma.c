/*
 * dma.c — a C program driving a device of the modelled machine through VFIO cdev + iommufd, as
 * a VMM would on real hardware, then making the device issue DMA (IOASID_DEVICE_DMA).
 *
 *   ioasid run --machine vtd,smmuv3 -- ./dma        (scripts/machine-example.sh builds and runs it)
 *
 * For each device: bind it to /dev/iommu, read its IOMMU's hardware info, map a buffer into an
 * IOAS at IOVA 1 MiB, attach, DMA-write and DMA-read through the IOMMU, check the bytes landed,
 * then show that an unmapped IOVA and an unattached PASID are blocked (unrecoverable faults).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <linux/iommufd.h>
#include <linux/vfio.h>
#include <ioasid/ioasid.h>

static int failures;

static void check(int ok, const char *what) {
	printf("  %-58s %s\n", what, ok ? "ok" : "FAILED");
	if (!ok) failures++;
}

static const char *status_name(uint32_t s) {
	return s == IOASID_DMA_DONE ? "done" : s == IOASID_DMA_PAGE_REQUEST ? "page request" : "fault";
}

static int dma(int device, uint32_t flags, uint32_t pasid, uint64_t iova, void *data, uint32_t length, uint32_t *status) {
	struct ioasid_device_dma d = { .size = sizeof(d), .flags = flags, .pasid = pasid, .length = length,
				       .iova = iova, .data_uptr = (uintptr_t)data };
	int rc = ioctl(device, IOASID_DEVICE_DMA, &d);
	*status = d.out_status;
	return rc;
}

static void run(int iommufd, const char *path) {
	printf("%s\n", path);
	int device = open(path, O_RDWR);
	check(device >= 0, "open the VFIO device cdev");
	if (device < 0) return;
	struct vfio_device_bind_iommufd bind = { .argsz = sizeof(bind), .iommufd = iommufd };
	check(ioctl(device, VFIO_DEVICE_BIND_IOMMUFD, &bind) == 0, "VFIO_DEVICE_BIND_IOMMUFD");

	struct iommu_hw_info_vtd vtd;
	struct iommu_hw_info info = { .size = sizeof(info), .dev_id = bind.out_devid, .data_len = sizeof(vtd),
				      .data_uptr = (uintptr_t)&vtd };
	check(ioctl(iommufd, IOMMU_GET_HW_INFO, &info) == 0, "IOMMU_GET_HW_INFO");
	printf("  hardware: %s, max PASID log2 %u, capabilities 0x%llx\n",
	       info.out_data_type == IOMMU_HW_INFO_TYPE_INTEL_VTD ? "Intel VT-d" :
	       info.out_data_type == IOMMU_HW_INFO_TYPE_ARM_SMMUV3 ? "Arm SMMUv3" : "other",
	       info.out_max_pasid_log2, (unsigned long long)info.out_capabilities);

	struct iommu_ioas_alloc alloc = { .size = sizeof(alloc) };
	check(ioctl(iommufd, IOMMU_IOAS_ALLOC, &alloc) == 0, "IOMMU_IOAS_ALLOC");
	size_t length = 16 * 4096;
	unsigned char *buffer = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	memset(buffer, 0, length);
	struct iommu_ioas_map map = { .size = sizeof(map), .flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE |
				      IOMMU_IOAS_MAP_WRITEABLE, .ioas_id = alloc.out_ioas_id, .user_va = (uintptr_t)buffer,
				      .length = length, .iova = 1 << 20 };
	check(ioctl(iommufd, IOMMU_IOAS_MAP, &map) == 0, "IOMMU_IOAS_MAP 64 KiB at IOVA 1 MiB");
	struct vfio_device_attach_iommufd_pt attach = { .argsz = sizeof(attach), .pt_id = alloc.out_ioas_id };
	check(ioctl(device, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &attach) == 0, "VFIO_DEVICE_ATTACH_IOMMUFD_PT (the IOAS)");

	uint32_t status;
	const char message[] = "written by the device";
	check(dma(device, IOASID_DMA_WRITE, 0, (1 << 20) + 3 * 4096 + 8, (void *)message, sizeof message, &status) == 0 &&
	      status == IOASID_DMA_DONE, "device DMA-writes 22 bytes at IOVA 1 MiB + 12 KiB + 8");
	check(memcmp(buffer + 3 * 4096 + 8, message, sizeof message) == 0, "the bytes landed in the program's buffer");
	memcpy(buffer + 5 * 4096, "from the CPU", 13);
	char back[13] = { 0 };
	check(dma(device, 0, 0, (1 << 20) + 5 * 4096, back, sizeof back, &status) == 0 && status == IOASID_DMA_DONE &&
	      strcmp(back, "from the CPU") == 0, "device DMA-reads what the CPU wrote");
	/* The device has ATS and PRI: for a page it may not access it first sends a page request. No
	 * fault queue is attached, so the driver answers it with a failure; the retry then fails. */
	check(dma(device, IOASID_DMA_WRITE, 0, 64 << 20, (void *)message, 4, &status) == 0 &&
	      status == IOASID_DMA_PAGE_REQUEST, "DMA to an unmapped IOVA: the device sends a page request");
	for (int tries = 0; tries < 100 && status == IOASID_DMA_PAGE_REQUEST; tries++) {
		usleep(1000);
		dma(device, IOASID_DMA_RESUME, 0, 0, NULL, 0, &status);
	}
	printf("    (retry: %s)\n", status_name(status));
	check(status == IOASID_DMA_FAULT, "no fault queue: the request is refused, the retry is blocked");
	check(dma(device, IOASID_DMA_WRITE | IOASID_DMA_PASID, 7, 1 << 20, (void *)message, 4, &status) == 0 &&
	      status == IOASID_DMA_FAULT, "DMA tagged with PASID 7 (never attached) is blocked");

	struct vfio_device_detach_iommufd_pt detach = { .argsz = sizeof(detach) };
	check(ioctl(device, VFIO_DEVICE_DETACH_IOMMUFD_PT, &detach) == 0, "VFIO_DEVICE_DETACH_IOMMUFD_PT");
	check(dma(device, IOASID_DMA_WRITE, 0, 1 << 20, (void *)message, 4, &status) == 0 && status == IOASID_DMA_FAULT,
	      "after detach the device's DMA is blocked");
	close(device);
	munmap(buffer, length);
}

int main(int argc, char **argv) {
	int iommufd = open("/dev/iommu", O_RDWR);
	if (iommufd < 0) { perror("/dev/iommu"); return 1; }
	int count = argc > 1 ? atoi(argv[1]) : 2;
	for (int i = 0; i < count; i++) {
		char path[64];
		snprintf(path, sizeof path, "/dev/vfio/devices/vfio%d", i);
		run(iommufd, path);
	}
	printf("%s\n", failures ? "FAILED" : "all checks passed");
	return failures != 0;
}
