/*
 * A small program with a leak on an error path, for docs/fault-injection.md.
 *
 * It gives a device three regions of memory, each in an IOAS of its own and mapped in two
 * halves, then removes them again. add_region() undoes its work when the first map fails, but
 * when the second map fails it returns without destroying the IOAS: that IOAS and its first
 * half stay behind for as long as /dev/iommu is open. On a normal run the path is never taken;
 *
 *   ioasid run --fail IOMMU_IOAS_MAP:4 -- ./leaky_regions
 *
 * fails the second map of the second region, and ioasid's check at exit names what was left.
 *
 * Build: cc -O2 -Wall -o leaky_regions leaky_regions.c
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

/* The iommufd ABI (include/uapi/linux/iommufd.h), the three calls used here. */
#define IOMMUFD_TYPE ';'
#define IOMMU_DESTROY _IO(IOMMUFD_TYPE, 0x80)
#define IOMMU_IOAS_ALLOC _IO(IOMMUFD_TYPE, 0x81)
#define IOMMU_IOAS_MAP _IO(IOMMUFD_TYPE, 0x85)
#define IOMMU_IOAS_MAP_WRITEABLE (1 << 1)
#define IOMMU_IOAS_MAP_READABLE (1 << 2)

struct iommu_destroy { uint32_t size, id; };
struct iommu_ioas_alloc { uint32_t size, flags, out_ioas_id; };
struct iommu_ioas_map {
	uint32_t size, flags, ioas_id, reserved;
	uint64_t user_va, length, iova;
};

#define REGIONS 3
#define REGION_SIZE (64 * 1024)

struct region {
	uint32_t ioas;
	void *memory;
};

static int destroy(int fd, uint32_t id)
{
	struct iommu_destroy cmd = { .size = sizeof(cmd), .id = id };
	return ioctl(fd, IOMMU_DESTROY, &cmd);
}

static int map(int fd, uint32_t ioas, void *memory, size_t length)
{
	struct iommu_ioas_map cmd = {
		.size = sizeof(cmd),
		.flags = IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
		.ioas_id = ioas,
		.user_va = (uintptr_t)memory,
		.length = length,
	};
	return ioctl(fd, IOMMU_IOAS_MAP, &cmd);
}

static int add_region(int fd, struct region *r)
{
	struct iommu_ioas_alloc alloc = { .size = sizeof(alloc) };

	if (ioctl(fd, IOMMU_IOAS_ALLOC, &alloc))
		return -1;
	r->ioas = alloc.out_ioas_id;
	if (map(fd, r->ioas, r->memory, REGION_SIZE / 2)) {
		int saved = errno;
		destroy(fd, r->ioas);
		errno = saved;
		return -1;
	}
	if (map(fd, r->ioas, (char *)r->memory + REGION_SIZE / 2, REGION_SIZE / 2))
		return -1; /* the leak: the IOAS (and its first half) is never destroyed */
	return 0;
}

int main(void)
{
	struct region regions[REGIONS];
	int added[REGIONS];
	int fd, i, count = 0;

	fd = open("/dev/iommu", O_RDWR);
	if (fd < 0) {
		perror("open /dev/iommu");
		return 1;
	}
	for (i = 0; i < REGIONS; i++) {
		regions[i].memory = mmap(NULL, REGION_SIZE, PROT_READ | PROT_WRITE,
					 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (regions[i].memory == MAP_FAILED) {
			perror("mmap");
			return 1;
		}
		if (add_region(fd, &regions[i]) == 0)
			added[count++] = i;
		else
			printf("region %d: not added: %s\n", i, strerror(errno));
	}
	printf("%d of %d regions added\n", count, REGIONS);
	for (i = 0; i < count; i++)
		destroy(fd, regions[added[i]].ioas);
	printf("regions removed\n");
	return 0; /* exits with /dev/iommu still open, as many programs do */
}
