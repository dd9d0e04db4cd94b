/* vfio_facts: print, one fact a line, how a VFIO PCI device answers — sysfs and device
 * nodes, GET_INFO, regions and their capability chains, IRQ info, SET_IRQS errnos,
 * feature probes, config space reads and writes (BAR sizing, COMMAND, capability lists),
 * BAR/ROM region access and mmap, the VFIO container on /dev/vfio/vfio and /dev/iommu.
 * `vfio_facts vf` instead creates VFs through sriov_numvfs and prints the VF side and the
 * VF token rules.
 *
 * Run it as root on a real kernel with the function bound to vfio-pci and its address in
 * VFIO_SELFTESTS_BDF (it must be the only vfio device: the probe opens
 * /dev/vfio/devices/vfio0), built statically for a VM:
 *     cc -static -O1 -isystem KERNEL_HEADERS -o vfio_facts vfio_facts.c
 * or under ioasid: `ioasid run --machine vtd -- ./vfio_facts`, and compare the outputs.
 * Facts found with it are summed up in docs/conformance.md. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include <linux/iommufd.h>
#include <linux/pci_regs.h>
#include <linux/vfio.h>

static const char *bdf;
static int dev = -1;
static uint64_t cfg_off;

#define R(expr) ({ errno = 0; long __r = (long)(expr); int __e = errno; printf("%-60s -> %ld%s%s\n", #expr, __r, __r < 0 ? " errno=" : "", __r < 0 ? strerror(__e) : ""); __r; })

static void sysfs_facts(void)
{
	char p[512], buf[512];
	const char *files[] = {"vendor", "device", "subsystem_vendor", "subsystem_device", "class", "revision",
			       "sriov_totalvfs", "sriov_numvfs", "sriov_offset", "sriov_stride", "sriov_vf_device",
			       "vfio-dev/vfio0/dev", "irq", "numa_node", "driver_override", "resource", NULL};
	const char *links[] = {"iommu_group", "driver", "virtfn0", "physfn", "subsystem", "iommu", NULL};
	printf("== sysfs of %s\n", bdf);
	snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s", bdf);
	int n = readlink(p, buf, sizeof(buf) - 1);
	if (n > 0) { buf[n] = 0; printf("link %s -> %s\n", p, buf); }
	for (int i = 0; files[i]; i++) {
		snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s/%s", bdf, files[i]);
		int fd = open(p, O_RDONLY);
		if (fd < 0) { printf("file %s: open errno=%s\n", files[i], strerror(errno)); continue; }
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (n < 0) { printf("file %s: read errno=%s\n", files[i], strerror(errno)); continue; }
		buf[n] = 0;
		for (int j = 0; j < n; j++) if (buf[j] == '\n') buf[j] = '|';
		printf("file %s (%d bytes): %s\n", files[i], n, buf);
	}
	for (int i = 0; links[i]; i++) {
		snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s/%s", bdf, links[i]);
		n = readlink(p, buf, sizeof(buf) - 1);
		if (n < 0) { printf("link %s: errno=%s\n", links[i], strerror(errno)); continue; }
		buf[n] = 0;
		printf("link %s -> %s\n", links[i], buf);
	}
	snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s/vfio-dev", bdf);
	DIR *d = opendir(p);
	if (d) {
		struct dirent *e;
		printf("dir vfio-dev:");
		while ((e = readdir(d))) printf(" %s(type %d)", e->d_name, e->d_type);
		printf("\n");
		closedir(d);
	}
	snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s/vfio-dev/vfio0", bdf);
	d = opendir(p);
	if (d) {
		struct dirent *e;
		printf("dir vfio-dev/vfio0:");
		while ((e = readdir(d))) printf(" %s", e->d_name);
		printf("\n");
		closedir(d);
	}
	snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s/vfio-dev/vfio0/device", bdf);
	n = readlink(p, buf, sizeof(buf) - 1);
	if (n > 0) { buf[n] = 0; printf("link vfio-dev/vfio0/device -> %s\n", buf); }
	snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s/config", bdf);
	struct stat st;
	if (!stat(p, &st)) printf("stat config: size %lld mode %o\n", (long long)st.st_size, st.st_mode);
	const char *nodes[] = {"/dev/iommu", "/dev/vfio/vfio", "/dev/vfio/devices/vfio0", "/dev/vfio", "/dev/vfio/devices", NULL};
	for (int i = 0; nodes[i]; i++) {
		if (stat(nodes[i], &st)) { printf("stat %s: errno=%s\n", nodes[i], strerror(errno)); continue; }
		printf("stat %s: mode %o rdev %u:%u\n", nodes[i], st.st_mode, major(st.st_rdev), minor(st.st_rdev));
	}
	d = opendir("/dev/vfio");
	if (d) {
		struct dirent *e;
		printf("dir /dev/vfio:");
		while ((e = readdir(d))) {
			char q[300];
			snprintf(q, sizeof(q), "/dev/vfio/%s", e->d_name);
			if (!stat(q, &st) && S_ISCHR(st.st_mode)) printf(" %s(%u:%u)", e->d_name, major(st.st_rdev), minor(st.st_rdev));
			else printf(" %s", e->d_name);
		}
		printf("\n");
		closedir(d);
	}
	const char *more[] = {"/sys/class/vfio-dev/vfio0/dev", "/sys/class/misc/iommu/dev", "/sys/class/misc/vfio/dev", NULL};
	for (int i = 0; more[i]; i++) {
		int fd = open(more[i], O_RDONLY);
		if (fd < 0) { printf("file %s: errno=%s\n", more[i], strerror(errno)); continue; }
		n = read(fd, buf, sizeof(buf) - 1); close(fd);
		if (n > 0) { buf[n] = 0; if (buf[n - 1] == '\n') buf[n - 1] = 0; printf("file %s: %s\n", more[i], buf); }
	}
	n = readlink("/sys/bus/pci/devices/0000:01:00.0/iommu_group", buf, sizeof(buf) - 1);
	if (n > 0) {
		buf[n] = 0;
		char q[600];
		snprintf(q, sizeof(q), "/sys/bus/pci/devices/0000:01:00.0/%s/devices", buf);
		d = opendir(q);
		if (d) { struct dirent *e; printf("dir group/devices:"); while ((e = readdir(d))) printf(" %s", e->d_name); printf("\n"); closedir(d); }
	}
}

static void dump_caps(void *buf, uint32_t first, uint32_t size)
{
	uint32_t off = first;
	int depth = 0;
	while (off && off + 8 <= size && depth++ < 16) {
		struct vfio_info_cap_header *h = (void *)((char *)buf + off);
		printf("    cap @%u id %u version %u next %u", off, h->id, h->version, h->next);
		if (h->id == VFIO_REGION_INFO_CAP_SPARSE_MMAP) {
			struct vfio_region_info_cap_sparse_mmap *s = (void *)h;
			printf(" sparse nr_areas %u:", s->nr_areas);
			for (uint32_t i = 0; i < s->nr_areas; i++) printf(" [%#llx +%#llx]", (unsigned long long)s->areas[i].offset, (unsigned long long)s->areas[i].size);
		} else if (h->id == VFIO_REGION_INFO_CAP_TYPE) {
			struct vfio_region_info_cap_type *t = (void *)h;
			printf(" type %u subtype %u", t->type, t->subtype);
		}
		printf("\n");
		off = h->next;
	}
}

static void device_info(void)
{
	char big[4096];
	struct vfio_device_info *info = (void *)big;
	memset(big, 0, sizeof(big));
	info->argsz = sizeof(*info);
	R(ioctl(dev, VFIO_DEVICE_GET_INFO, info));
	printf("GET_INFO(argsz 24): argsz %u flags %#x num_regions %u num_irqs %u cap_offset %u\n", info->argsz, info->flags, info->num_regions, info->num_irqs, info->cap_offset);
	memset(big, 0, sizeof(big));
	info->argsz = sizeof(big);
	R(ioctl(dev, VFIO_DEVICE_GET_INFO, info));
	printf("GET_INFO(argsz 4096): argsz %u flags %#x num_regions %u num_irqs %u cap_offset %u\n", info->argsz, info->flags, info->num_regions, info->num_irqs, info->cap_offset);
	dump_caps(big, info->cap_offset, sizeof(big));
	memset(big, 0, sizeof(big));
	info->argsz = 16;
	R(ioctl(dev, VFIO_DEVICE_GET_INFO, info));
	info->argsz = 15;
	R(ioctl(dev, VFIO_DEVICE_GET_INFO, info));
	uint32_t nreg = 9;
	for (uint32_t i = 0; i <= nreg + 1; i++) {
		struct vfio_region_info *r = (void *)big;
		memset(big, 0, sizeof(big));
		r->argsz = sizeof(*r);
		r->index = i;
		errno = 0;
		int rc = ioctl(dev, VFIO_DEVICE_GET_REGION_INFO, r);
		if (rc) { printf("REGION %u (argsz 32): rc %d errno=%s\n", i, rc, strerror(errno)); continue; }
		printf("REGION %u (argsz 32): argsz %u flags %#x cap_offset %u size %#llx offset %#llx\n", i, r->argsz, r->flags, r->cap_offset, (unsigned long long)r->size, (unsigned long long)r->offset);
		memset(big, 0, sizeof(big));
		r->argsz = sizeof(big);
		r->index = i;
		rc = ioctl(dev, VFIO_DEVICE_GET_REGION_INFO, r);
		printf("REGION %u (argsz 4096): rc %d argsz %u flags %#x cap_offset %u\n", i, rc, r->argsz, r->flags, r->cap_offset);
		if (r->flags & VFIO_REGION_INFO_FLAG_CAPS) dump_caps(big, r->cap_offset, sizeof(big));
	}
	{
		struct vfio_region_info r = {.argsz = 16, .index = 0};
		R(ioctl(dev, VFIO_DEVICE_GET_REGION_INFO, &r));
		r.argsz = 31; r.index = 0;
		R(ioctl(dev, VFIO_DEVICE_GET_REGION_INFO, &r));
		r.argsz = 32; r.index = 0xffffffff;
		R(ioctl(dev, VFIO_DEVICE_GET_REGION_INFO, &r));
	}
	for (uint32_t i = 0; i <= 6; i++) {
		struct vfio_irq_info q = {.argsz = sizeof(q), .index = i};
		errno = 0;
		int rc = ioctl(dev, VFIO_DEVICE_GET_IRQ_INFO, &q);
		printf("IRQ %u: rc %d%s%s argsz %u flags %#x count %u\n", i, rc, rc ? " errno=" : "", rc ? strerror(errno) : "", q.argsz, q.flags, q.count);
	}
	{
		struct vfio_irq_info q = {.argsz = 15, .index = 0};
		R(ioctl(dev, VFIO_DEVICE_GET_IRQ_INFO, &q));
	}
}

static int set_irqs(uint32_t flags, uint32_t index, uint32_t start, uint32_t count, const void *data, size_t dsize, uint32_t argsz_override)
{
	char buf[4096];
	struct vfio_irq_set *s = (void *)buf;
	memset(buf, 0, sizeof(buf));
	s->argsz = argsz_override ? argsz_override : sizeof(*s) + dsize;
	s->flags = flags; s->index = index; s->start = start; s->count = count;
	if (dsize) memcpy(s->data, data, dsize);
	errno = 0;
	int rc = ioctl(dev, VFIO_DEVICE_SET_IRQS, s);
	return rc ? -errno : 0;
}

#define SI(desc, ...) do { int __r = set_irqs(__VA_ARGS__); printf("SET_IRQS %-58s -> %d%s%s\n", desc, __r, __r ? " " : "", __r ? strerror(-__r) : ""); } while (0)

static void irq_facts(void)
{
	int fds[16];
	for (int i = 0; i < 16; i++) fds[i] = eventfd(0, EFD_NONBLOCK);
	uint8_t b1 = 1;
	SI("INTx trigger eventfd start0 count1", VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_EVENTFD, 0, 0, 1, fds, 4, 0);
	SI("INTx mask none start0 count1", VFIO_IRQ_SET_ACTION_MASK | VFIO_IRQ_SET_DATA_NONE, 0, 0, 1, NULL, 0, 0);
	SI("INTx unmask none", VFIO_IRQ_SET_ACTION_UNMASK | VFIO_IRQ_SET_DATA_NONE, 0, 0, 1, NULL, 0, 0);
	SI("INTx trigger none (fire)", VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_NONE, 0, 0, 1, NULL, 0, 0);
	uint64_t v = 0;
	int n = read(fds[0], &v, 8);
	printf("INTx eventfd after trigger: read %d value %llu\n", n, (unsigned long long)v);
	SI("INTx mask start1 count1", VFIO_IRQ_SET_ACTION_MASK | VFIO_IRQ_SET_DATA_NONE, 0, 1, 1, NULL, 0, 0);
	SI("INTx trigger eventfd count2", VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_EVENTFD, 0, 0, 2, fds, 8, 0);
	SI("INTx disable count0", VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_NONE, 0, 0, 0, NULL, 0, 0);
	SI("INTx mask when disabled", VFIO_IRQ_SET_ACTION_MASK | VFIO_IRQ_SET_DATA_NONE, 0, 0, 1, NULL, 0, 0);
	SI("MSI trigger eventfd count1 (enable)", VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_EVENTFD, 1, 0, 1, fds, 4, 0);
	SI("MSI trigger bool [1]", VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_BOOL, 1, 0, 1, &b1, 1, 0);
	n = read(fds[0], &v, 8);
	printf("MSI eventfd after bool trigger: read %d value %llu\n", n, (unsigned long long)v);
	SI("MSI mask (unsupported?)", VFIO_IRQ_SET_ACTION_MASK | VFIO_IRQ_SET_DATA_NONE, 1, 0, 1, NULL, 0, 0);
	SI("MSI unmask", VFIO_IRQ_SET_ACTION_UNMASK | VFIO_IRQ_SET_DATA_NONE, 1, 0, 1, NULL, 0, 0);
	SI("MSIX enable while MSI on", VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_EVENTFD, 2, 0, 1, fds, 4, 0);
	SI("INTx enable while MSI on", VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_EVENTFD, 0, 0, 1, fds, 4, 0);
	SI("MSI start1 count1 (beyond count)", VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_NONE, 1, 1, 1, NULL, 0, 0);
	SI("MSI disable", VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_NONE, 1, 0, 0, NULL, 0, 0);
	SI("MSI count2 eventfd (cap 1)", VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_EVENTFD, 1, 0, 2, fds, 8, 0);
	SI("MSIX enable 3 vectors", VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_EVENTFD, 2, 0, 3, fds, 12, 0);
	SI("MSIX set vector 5 (extend)", VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_EVENTFD, 2, 5, 1, fds + 5, 4, 0);
	SI("MSIX fire 5 none", VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_NONE, 2, 5, 1, NULL, 0, 0);
	n = read(fds[5], &v, 8);
	printf("MSIX vec5 eventfd: read %d value %llu\n", n, (unsigned long long)v);
	SI("MSIX fire 4 (no eventfd)", VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_NONE, 2, 4, 1, NULL, 0, 0);
	int minus1 = -1;
	SI("MSIX vector 1 eventfd -1 (teardown one)", VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_EVENTFD, 2, 1, 1, &minus1, 4, 0);
	int bad = 999;
	SI("MSIX vector 2 eventfd 999 (bad fd)", VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_EVENTFD, 2, 2, 1, &bad, 4, 0);
	SI("MSIX start 9 count 2 (past 10)", VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_NONE, 2, 9, 2, NULL, 0, 0);
	SI("MSIX start 10 count 1 (== count)", VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_NONE, 2, 10, 1, NULL, 0, 0);
	SI("MSIX start 0 count 0 eventfd flags", VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_EVENTFD, 2, 0, 0, NULL, 0, 0);
	SI("MSIX mask", VFIO_IRQ_SET_ACTION_MASK | VFIO_IRQ_SET_DATA_NONE, 2, 0, 1, NULL, 0, 0);
	SI("MSIX two data flags", VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_DATA_BOOL, 2, 0, 1, &b1, 1, 0);
	SI("MSIX two action flags", VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_ACTION_MASK | VFIO_IRQ_SET_DATA_NONE, 2, 0, 1, NULL, 0, 0);
	SI("MSIX unknown flag bit 6", (1u << 6) | VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_NONE, 2, 0, 1, NULL, 0, 0);
	SI("MSIX argsz too small for data", VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_EVENTFD, 2, 0, 2, fds, 8, 24);
	SI("MSIX argsz 16 (< minsz)", VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_NONE, 2, 0, 1, NULL, 0, 16);
	SI("MSIX disable", VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_NONE, 2, 0, 0, NULL, 0, 0);
	SI("MSIX disable again", VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_NONE, 2, 0, 0, NULL, 0, 0);
	SI("MSIX fire 0 when disabled", VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_NONE, 2, 0, 1, NULL, 0, 0);
	SI("ERR eventfd", VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_EVENTFD, 3, 0, 1, fds, 4, 0);
	SI("ERR fire none", VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_NONE, 3, 0, 1, NULL, 0, 0);
	n = read(fds[0], &v, 8);
	printf("ERR eventfd after fire: read %d value %llu\n", n, (unsigned long long)v);
	SI("ERR disable count0", VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_NONE, 3, 0, 0, NULL, 0, 0);
	SI("REQ eventfd", VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_EVENTFD, 4, 0, 1, fds, 4, 0);
	SI("REQ start1", VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_EVENTFD, 4, 1, 1, fds, 4, 0);
	SI("REQ disable eventfd -1", VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_EVENTFD, 4, 0, 1, &minus1, 4, 0);
	SI("index 5", VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_NONE, 5, 0, 1, NULL, 0, 0);
	SI("index 9", VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_NONE, 9, 0, 1, NULL, 0, 0);
	/* DATA_NONE with count 0 on MSI-X when never enabled, and DATA_BOOL count 0 */
	SI("MSIX bool count0", VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_BOOL, 2, 0, 0, NULL, 0, 0);
	for (int i = 0; i < 16; i++) close(fds[i]);
}

static void feature_facts(void)
{
	for (uint32_t f = 0; f <= 12; f++) {
		char buf[256];
		struct vfio_device_feature *ft = (void *)buf;
		uint32_t kinds[] = {VFIO_DEVICE_FEATURE_GET, VFIO_DEVICE_FEATURE_SET, VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_SET};
		const char *names[] = {"GET", "SET", "GET|SET"};
		for (int k = 0; k < 3; k++) {
			memset(buf, 0, sizeof(buf));
			ft->argsz = sizeof(*ft);
			ft->flags = VFIO_DEVICE_FEATURE_PROBE | kinds[k] | f;
			errno = 0;
			int rc = ioctl(dev, VFIO_DEVICE_FEATURE, ft);
			printf("FEATURE %2u PROBE|%-8s -> %d%s%s\n", f, names[k], rc, rc ? " errno=" : "", rc ? strerror(errno) : "");
		}
	}
	char buf[256];
	struct vfio_device_feature *ft = (void *)buf;
	memset(buf, 0, sizeof(buf));
	ft->argsz = sizeof(*ft); ft->flags = VFIO_DEVICE_FEATURE_PROBE;
	R(ioctl(dev, VFIO_DEVICE_FEATURE, ft));
	ft->argsz = 8; ft->flags = VFIO_DEVICE_FEATURE_PROBE | VFIO_DEVICE_FEATURE_SET;
	R(ioctl(dev, VFIO_DEVICE_FEATURE, ft));
	ft->argsz = sizeof(*ft); ft->flags = VFIO_DEVICE_FEATURE_SET | (1u << 19);
	R(ioctl(dev, VFIO_DEVICE_FEATURE, ft));
	ft->argsz = sizeof(*ft); ft->flags = VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_PCI_VF_TOKEN;
	R(ioctl(dev, VFIO_DEVICE_FEATURE, ft));
	ft->argsz = sizeof(*ft) + 16; ft->flags = VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_PCI_VF_TOKEN;
	R(ioctl(dev, VFIO_DEVICE_FEATURE, ft));
	ft->argsz = sizeof(*ft) + 16; ft->flags = VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_PCI_VF_TOKEN;
	R(ioctl(dev, VFIO_DEVICE_FEATURE, ft));
	ft->argsz = sizeof(*ft) + 16; ft->flags = VFIO_DEVICE_FEATURE_GET;  /* feature 0 GET? */
	R(ioctl(dev, VFIO_DEVICE_FEATURE, ft));
	ft->argsz = sizeof(*ft) + 16; ft->flags = 0;  /* neither */
	R(ioctl(dev, VFIO_DEVICE_FEATURE, ft));
}

static void cfg_read(uint32_t off, uint32_t len)
{
	uint8_t b[16] = {0};
	errno = 0;
	long n = pread(dev, b, len, cfg_off + off);
	printf("cfg pread off %#x len %u -> %ld%s%s:", off, len, n, n < 0 ? " errno=" : "", n < 0 ? strerror(errno) : "");
	for (long i = 0; i < n && i < 16; i++) printf(" %02x", b[i]);
	printf("\n");
}

static uint32_t rd32(uint32_t off) { uint32_t v = 0; pread(dev, &v, 4, cfg_off + off); return v; }
static uint16_t rd16(uint32_t off) { uint16_t v = 0; pread(dev, &v, 2, cfg_off + off); return v; }
static uint8_t rd8(uint32_t off) { uint8_t v = 0; pread(dev, &v, 1, cfg_off + off); return v; }
static long wr32(uint32_t off, uint32_t v) { return pwrite(dev, &v, 4, cfg_off + off); }
static long wr16(uint32_t off, uint16_t v) { return pwrite(dev, &v, 2, cfg_off + off); }

static void config_facts(void)
{
	printf("== config space\n");
	uint8_t all[256];
	long n = pread(dev, all, 256, cfg_off);
	printf("pread 256 at 0 -> %ld\n", n);
	for (int i = 0; i < 256; i += 16) {
		printf("  %03x:", i);
		for (int j = 0; j < 16; j++) printf(" %02x", all[i + j]);
		printf("\n");
	}
	uint8_t ext[4096];
	n = pread(dev, ext, 4096, cfg_off);
	printf("pread 4096 at 0 -> %ld\n", n);
	for (int i = 256; i < 4096 && n == 4096; i += 16) {
		int z = 1;
		for (int j = 0; j < 16; j++) if (ext[i + j]) z = 0;
		if (z) continue;
		printf("  %03x:", i);
		for (int j = 0; j < 16; j++) printf(" %02x", ext[i + j]);
		printf("\n");
	}
	cfg_read(0x1, 1); cfg_read(0x1, 2); cfg_read(0x2, 4); cfg_read(0x3, 4); cfg_read(0x0, 8); cfg_read(0x6, 2);
	cfg_read(0x0, 3); cfg_read(0xfff, 1); cfg_read(0xffe, 4); cfg_read(0x1000, 1); cfg_read(0x100, 4);
	/* capability walk */
	uint8_t p = rd8(PCI_CAPABILITY_LIST);
	printf("status %#x cap list:", rd16(PCI_STATUS));
	for (int i = 0; p && i < 48; i++) { printf(" [%#x id %#x]", p, rd8(p)); p = rd8(p + 1); }
	printf("\next caps:");
	uint32_t e = 0x100;
	for (int i = 0; e && i < 48; i++) { uint32_t h = rd32(e); printf(" [%#x id %#x ver %u raw %#x]", e, h & 0xffff, (h >> 16) & 0xf, h); e = h >> 20; if (!h) break; }
	printf("\n");
	/* BARs */
	uint16_t cmd = rd16(PCI_COMMAND);
	printf("COMMAND after open %#06x\n", cmd);
	for (int i = 0; i < 6; i++) {
		uint32_t o = PCI_BASE_ADDRESS_0 + 4 * i;
		uint32_t orig = rd32(o);
		long w = wr32(o, 0xffffffff);
		uint32_t sz = rd32(o);
		wr32(o, orig);
		printf("BAR%d orig %#010x write ~0 -> %ld, reads %#010x, restored reads %#010x\n", i, orig, w, sz, rd32(o));
	}
	{
		uint32_t orig = rd32(PCI_ROM_ADDRESS);
		wr32(PCI_ROM_ADDRESS, 0xfffff800);
		uint32_t sz = rd32(PCI_ROM_ADDRESS);
		wr32(PCI_ROM_ADDRESS, 0xffffffff);
		uint32_t sz2 = rd32(PCI_ROM_ADDRESS);
		wr32(PCI_ROM_ADDRESS, orig);
		printf("ROM orig %#010x write fffff800 reads %#010x, write ~0 reads %#010x\n", orig, sz, sz2);
	}
	{ long w; uint32_t r32; uint16_t r16; uint8_t r8;
	w = wr32(PCI_BASE_ADDRESS_0, 0x12345678); r32 = rd32(PCI_BASE_ADDRESS_0); printf("write BAR0 0x12345678 -> %ld; then reads %#x\n", w, r32);
	{ uint8_t x = 0xab; w = pwrite(dev, &x, 1, cfg_off + 0x11); r32 = rd32(PCI_BASE_ADDRESS_0); printf("write 1 byte 0xab at BAR0+1 -> %ld; then BAR0 reads %#x\n", w, r32); }
	{ uint16_t x = 0xfffe; w = pwrite(dev, &x, 2, cfg_off + 0x12); r32 = rd32(PCI_BASE_ADDRESS_0); printf("write 2 bytes 0xfffe at BAR0+2 -> %ld; then BAR0 reads %#x\n", w, r32); }
	wr32(PCI_BASE_ADDRESS_0, 0xfe800000);
	w = wr32(PCI_BASE_ADDRESS_2, 0x1234); r32 = rd32(PCI_BASE_ADDRESS_2); printf("write IO BAR2 0x1234 -> %ld; then reads %#x\n", w, r32);
	w = wr32(PCI_BASE_ADDRESS_4, 0x1); r32 = rd32(PCI_BASE_ADDRESS_4); printf("write BAR4 (upper of 64-bit BAR3) 0x1 -> %ld; then reads %#x\n", w, r32);
	wr32(PCI_BASE_ADDRESS_4, 0);
	w = wr16(0, 0x1234); r16 = rd16(0); printf("write vendor id 0x1234 -> %ld; then reads %#x\n", w, r16);
	w = wr16(PCI_COMMAND, 0); r16 = rd16(PCI_COMMAND); printf("write COMMAND 0 -> %ld; then reads %#x\n", w, r16);
	w = wr16(PCI_COMMAND, 0xffff); r16 = rd16(PCI_COMMAND); printf("write COMMAND 0xffff -> %ld; then reads %#x\n", w, r16);
	w = wr16(PCI_COMMAND, 0x0406); r16 = rd16(PCI_COMMAND); printf("write COMMAND 0x0406 -> %ld; then reads %#x\n", w, r16);
	w = wr16(PCI_COMMAND, 0x0004); r16 = rd16(PCI_COMMAND); printf("write COMMAND 0x0004 -> %ld; then reads %#x\n", w, r16);
	{ uint8_t x = 0x07; w = pwrite(dev, &x, 1, cfg_off + PCI_COMMAND); r16 = rd16(PCI_COMMAND); printf("write COMMAND low byte 0x07 -> %ld; then reads %#x\n", w, r16); }
	w = wr16(PCI_COMMAND, 0x0103); 
	w = wr16(PCI_STATUS, 0xffff); r16 = rd16(PCI_STATUS); printf("write STATUS 0xffff -> %ld; then reads %#x\n", w, r16);
	r8 = rd8(PCI_INTERRUPT_LINE); printf("INTERRUPT_LINE %#x PIN %#x\n", r8, rd8(PCI_INTERRUPT_PIN));
	w = pwrite(dev, "\x5a", 1, cfg_off + PCI_INTERRUPT_LINE); r8 = rd8(PCI_INTERRUPT_LINE); printf("write INTERRUPT_LINE 0x5a -> %ld; then reads %#x\n", w, r8);
	w = wr16(PCI_CACHE_LINE_SIZE, 0x1010); r16 = rd16(PCI_CACHE_LINE_SIZE); printf("write cacheline/latency 0x1010 -> %ld; then reads %#x\n", w, r16);
	w = wr32(0x180, 0xffffffff); r32 = rd32(0x180); printf("write ext 0x180 (inside SR-IOV cap) ~0 -> %ld; then reads %#x\n", w, r32);
	w = wr32(0x1f0, 0x12345678); r32 = rd32(0x1f0); printf("write ext 0x1f0 (unassigned) -> %ld; then reads %#x\n", w, r32);
	w = wr32(0xf0, 0x12345678); r32 = rd32(0xf0); printf("write std 0xf0 (unassigned) -> %ld; then reads %#x\n", w, r32);
	w = wr32(0x2c, 0x12345678); r32 = rd32(0x2c); printf("write subsystem ids -> %ld; then reads %#x\n", w, r32);
	}
	printf("pwrite 8 bytes at 0x40 -> "); { uint64_t q = 0; long r = pwrite(dev, &q, 8, cfg_off + 0x40); printf("%ld %s\n", r, r < 0 ? strerror(errno) : ""); }
	printf("pwrite 4 bytes at 0x1000 -> "); { uint32_t q = 0; long r = pwrite(dev, &q, 4, cfg_off + 0x1000); printf("%ld %s\n", r, r < 0 ? strerror(errno) : ""); }
	/* MSI-X cap control */
	p = rd8(PCI_CAPABILITY_LIST);
	for (int i = 0; p && i < 48; i++) {
		if (rd8(p) == PCI_CAP_ID_MSIX) {
			printf("MSIX cap @%#x ctrl %#x table %#x pba %#x\n", p, rd16(p + 2), rd32(p + 4), rd32(p + 8));
			{ long w = wr16(p + 2, 0xc000); uint16_t r = rd16(p + 2); printf("write MSIX ctrl 0xc000 -> %ld then reads %#x\n", w, r); }
			wr16(p + 2, 0);
		}
		if (rd8(p) == PCI_CAP_ID_MSI) {
			printf("MSI cap @%#x ctrl %#x addr %#x %#x data/next %#x %#x\n", p, rd16(p + 2), rd32(p + 4), rd32(p + 8), rd32(p + 12), rd32(p + 16));
			{ long w = wr16(p + 2, 1); uint16_t r = rd16(p + 2); printf("write MSI ctrl 0x1 -> %ld then reads %#x\n", w, r); }
			{ long w = wr32(p + 4, 0xfee00000); uint32_t r = rd32(p + 4); printf("write MSI addr -> %ld then reads %#x\n", w, r); }
			wr16(p + 2, 0);
		}
		if (rd8(p) == PCI_CAP_ID_PM) printf("PM cap @%#x pmc %#x pmcsr %#x\n", p, rd16(p + 2), rd16(p + 4));
		if (rd8(p) == PCI_CAP_ID_EXP) printf("PCIe cap @%#x flags %#x devcap %#x devctl %#x devsta %#x lnkcap %#x devcap2 %#x\n", p, rd16(p + 2), rd32(p + 4), rd16(p + 8), rd16(p + 10), rd32(p + 12), rd32(p + 0x24));
		p = rd8(p + 1);
	}
}

static void bar_facts(void)
{
	printf("== BAR/ROM/VGA regions\n");
	for (int i = 0; i <= 8; i++) {
		struct vfio_region_info r = {.argsz = sizeof(r), .index = i};
		if (ioctl(dev, VFIO_DEVICE_GET_REGION_INFO, &r)) continue;
		if (!r.size || i == 7) continue;
		uint32_t v = 0;
		errno = 0;
		long n = pread(dev, &v, 4, r.offset);
		printf("region %d pread 4 at 0 -> %ld%s%s value %#x\n", i, n, n < 0 ? " errno=" : "", n < 0 ? strerror(errno) : "", v);
		n = pread(dev, &v, 4, r.offset + r.size - 2);
		printf("region %d pread 4 at size-2 -> %ld%s\n", i, n, n < 0 ? strerror(errno) : "");
		n = pread(dev, &v, 4, r.offset + r.size);
		printf("region %d pread 4 at size -> %ld%s\n", i, n, n < 0 ? strerror(errno) : "");
		uint64_t q;
		n = pread(dev, &q, 8, r.offset);
		printf("region %d pread 8 at 0 -> %ld%s\n", i, n, n < 0 ? strerror(errno) : "");
		n = pread(dev, &v, 3, r.offset + 1);
		printf("region %d pread 3 at 1 -> %ld%s\n", i, n, n < 0 ? strerror(errno) : "");
		if (r.flags & VFIO_REGION_INFO_FLAG_MMAP) {
			void *m = mmap(NULL, r.size, PROT_READ | PROT_WRITE, MAP_SHARED, dev, r.offset);
			printf("region %d mmap whole -> %s\n", i, m == MAP_FAILED ? strerror(errno) : "ok");
			if (m != MAP_FAILED) munmap(m, r.size);
			m = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, dev, r.offset);
			printf("region %d mmap MAP_PRIVATE -> %s\n", i, m == MAP_FAILED ? strerror(errno) : "ok");
			if (m != MAP_FAILED) munmap(m, 4096);
			m = mmap(NULL, r.size * 2, PROT_READ, MAP_SHARED, dev, r.offset);
			printf("region %d mmap 2x size -> %s\n", i, m == MAP_FAILED ? strerror(errno) : "ok");
			if (m != MAP_FAILED) munmap(m, r.size * 2);
		} else {
			void *m = mmap(NULL, 4096, PROT_READ, MAP_SHARED, dev, r.offset);
			printf("region %d (no MMAP flag) mmap -> %s\n", i, m == MAP_FAILED ? strerror(errno) : "ok");
			if (m != MAP_FAILED) munmap(m, 4096);
		}
	}
	struct vfio_region_info c = {.argsz = sizeof(c), .index = 7};
	ioctl(dev, VFIO_DEVICE_GET_REGION_INFO, &c);
	void *m = mmap(NULL, 4096, PROT_READ, MAP_SHARED, dev, c.offset);
	printf("config mmap -> %s\n", m == MAP_FAILED ? strerror(errno) : "ok");
	uint32_t v;
	long n = pread(dev, &v, 4, (uint64_t)9 << 40);
	printf("pread region 9 -> %ld %s\n", n, n < 0 ? strerror(errno) : "");
	n = pread(dev, &v, 4, (uint64_t)8 << 40);
	printf("pread region 8 (VGA) -> %ld %s\n", n, n < 0 ? strerror(errno) : "");
}

static void container_facts(void)
{
	printf("== container (/dev/vfio/vfio and /dev/iommu)\n");
	const char *paths[] = {"/dev/vfio/vfio", "/dev/iommu"};
	for (int k = 0; k < 2; k++) {
		int c = open(paths[k], O_RDWR);
		printf("%s:\n", paths[k]);
		R(ioctl(c, VFIO_GET_API_VERSION));
		for (unsigned long e = 0; e <= 10; e++) { errno = 0; int r = ioctl(c, VFIO_CHECK_EXTENSION, e); printf("  CHECK_EXTENSION %lu -> %d%s\n", e, r, r < 0 ? strerror(errno) : ""); }
		struct vfio_iommu_type1_info info = {.argsz = sizeof(info)};
		R(ioctl(c, VFIO_IOMMU_GET_INFO, &info));
		R(ioctl(c, VFIO_SET_IOMMU, 3));
		char gp[64], buf[256];
		snprintf(gp, sizeof(gp), "/sys/bus/pci/devices/%s/iommu_group", bdf);
		int n = readlink(gp, buf, sizeof(buf) - 1); buf[n > 0 ? n : 0] = 0;
		char *g = strrchr(buf, '/');
		snprintf(gp, sizeof(gp), "/dev/vfio/%s", g ? g + 1 : "0");
		int grp = open(gp, O_RDWR);
		printf("  open %s -> %d %s\n", gp, grp, grp < 0 ? strerror(errno) : "");
		struct vfio_group_status st = {.argsz = sizeof(st)};
		R(ioctl(grp, VFIO_GROUP_GET_STATUS, &st));
		printf("  group %s status flags %#x\n", gp, st.flags);
		R(ioctl(grp, VFIO_GROUP_GET_DEVICE_FD, bdf));
		R(ioctl(grp, VFIO_GROUP_SET_CONTAINER, &c));
		st.argsz = sizeof(st);
		ioctl(grp, VFIO_GROUP_GET_STATUS, &st);
		printf("  group status after SET_CONTAINER flags %#x\n", st.flags);
		R(ioctl(c, VFIO_SET_IOMMU, 3));
		R(ioctl(c, VFIO_SET_IOMMU, 3));
		char bigi[1024];
		struct vfio_iommu_type1_info *bi = (void *)bigi;
		memset(bigi, 0, sizeof(bigi));
		bi->argsz = sizeof(*bi);
		R(ioctl(c, VFIO_IOMMU_GET_INFO, bi));
		printf("  GET_INFO(24): argsz %u flags %#x pgsizes %#llx cap_offset %u\n", bi->argsz, bi->flags, (unsigned long long)bi->iova_pgsizes, bi->cap_offset);
		memset(bigi, 0, sizeof(bigi));
		bi->argsz = sizeof(bigi);
		R(ioctl(c, VFIO_IOMMU_GET_INFO, bi));
		printf("  GET_INFO(1024): argsz %u flags %#x pgsizes %#llx cap_offset %u\n", bi->argsz, bi->flags, (unsigned long long)bi->iova_pgsizes, bi->cap_offset);
		uint32_t off = bi->cap_offset;
		for (int i = 0; off && i < 8; i++) {
			struct vfio_info_cap_header *h = (void *)(bigi + off);
			printf("    cap @%u id %u version %u next %u", off, h->id, h->version, h->next);
			if (h->id == VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE) {
				struct vfio_iommu_type1_info_cap_iova_range *r = (void *)h;
				for (uint32_t j = 0; j < r->nr_iovas; j++) printf(" [%#llx-%#llx]", (unsigned long long)r->iova_ranges[j].start, (unsigned long long)r->iova_ranges[j].end);
			} else if (h->id == VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL) {
				printf(" avail %u", ((struct vfio_iommu_type1_info_dma_avail *)h)->avail);
			}
			printf("\n");
			off = h->next;
		}
		int d = ioctl(grp, VFIO_GROUP_GET_DEVICE_FD, bdf);
		printf("  GET_DEVICE_FD -> %d\n", d);
		char tokarg[128];
		snprintf(tokarg, sizeof(tokarg), "%s  vf_token=52ac9bff-3a88-4fbd-901a-0d767c3b6c97", bdf);
		R(ioctl(grp, VFIO_GROUP_GET_DEVICE_FD, tokarg));
		snprintf(tokarg, sizeof(tokarg), "%s vf_token=52ac9bff-3a88-4fbd-901a-0d767c3b6c9", bdf);
		R(ioctl(grp, VFIO_GROUP_GET_DEVICE_FD, tokarg));
		snprintf(tokarg, sizeof(tokarg), "%s junk", bdf);
		R(ioctl(grp, VFIO_GROUP_GET_DEVICE_FD, tokarg));
		R(ioctl(grp, VFIO_GROUP_GET_DEVICE_FD, "0000:01:00.7"));
		struct vfio_device_info di = {.argsz = sizeof(di)};
		if (d >= 0) { R(ioctl(d, VFIO_DEVICE_GET_INFO, &di)); printf("  group device info flags %#x\n", di.flags); close(d); }
		/* map/unmap errnos on the compat container */
		void *buf2 = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		struct vfio_iommu_type1_dma_map mp = {.argsz = sizeof(mp), .flags = 3, .vaddr = (uint64_t)buf2, .iova = 0x100000, .size = 8192};
		R(ioctl(c, VFIO_IOMMU_MAP_DMA, &mp));
		R(ioctl(c, VFIO_IOMMU_MAP_DMA, &mp));
		struct vfio_iommu_type1_dma_unmap um = {.argsz = sizeof(um), .iova = 0x100000, .size = 4096};
		R(ioctl(c, VFIO_IOMMU_UNMAP_DMA, &um));
		printf("  unmap half: size out %#llx\n", (unsigned long long)um.size);
		um.size = 0; um.flags = VFIO_DMA_UNMAP_FLAG_ALL; um.iova = 0;
		R(ioctl(c, VFIO_IOMMU_UNMAP_DMA, &um));
		printf("  unmap all: size out %#llx\n", (unsigned long long)um.size);
		R(ioctl(grp, VFIO_GROUP_UNSET_CONTAINER));
		close(grp);
		close(c);
	}
}


static int write_file(const char *path, const char *v)
{
	int fd = open(path, O_WRONLY);
	if (fd < 0) return -errno;
	int n = write(fd, v, strlen(v));
	int e = errno;
	close(fd);
	return n < 0 ? -e : n;
}

static int cdev_of(const char *b)
{
	char p[256];
	snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s/vfio-dev", b);
	DIR *d = opendir(p);
	if (!d) return -1;
	struct dirent *e;
	char path[300] = "";
	while ((e = readdir(d))) if (!strncmp(e->d_name, "vfio", 4)) snprintf(path, sizeof(path), "/dev/vfio/devices/%s", e->d_name);
	closedir(d);
	printf("cdev of %s: %s\n", b, path);
	return open(path, O_RDWR);
}

static int bind_tok(int fd, int iommufd, const unsigned char *uuid)
{
	struct vfio_device_bind_iommufd b = {.argsz = sizeof(b), .iommufd = iommufd};
	if (uuid) { b.flags = VFIO_DEVICE_BIND_FLAG_TOKEN; b.token_uuid_ptr = (uint64_t)uuid; }
	errno = 0;
	int r = ioctl(fd, VFIO_DEVICE_BIND_IOMMUFD, &b);
	return r ? -errno : 0;
}

static void vf_facts(void)
{
	char p[256], buf[256];
	static const unsigned char u1[16] = {0x52,0xac,0x9b,0xff,0x3a,0x88,0x4f,0xbd,0x90,0x1a,0x0d,0x76,0x7c,0x3b,0x6c,0x97};
	static const unsigned char u2[16] = {0x88,0x59,0x46,0x74,0x90,0xa0,0x47,0xa9,0xae,0xa8,0x9d,0x9b,0x35,0x2a,0xc0,0x8a};
	printf("== SR-IOV\n");
	snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s/sriov_numvfs", bdf);
	printf("write sriov_numvfs \"2\" (no newline) -> %d\n", write_file(p, "2"));
	printf("write sriov_numvfs \"3\" while 2 -> %d\n", write_file(p, "3"));
	printf("write sriov_numvfs \"0\" -> %d\n", write_file(p, "0"));
	printf("write sriov_numvfs \"9\" (> total) -> %d\n", write_file(p, "9"));
	printf("write sriov_numvfs \"x\" -> %d\n", write_file(p, "x"));
	printf("write sriov_numvfs \"1\\n\" -> %d\n", write_file(p, "1\n"));
	int fd = open(p, O_RDONLY); int n = read(fd, buf, 32); close(fd); buf[n > 0 ? n : 0] = 0;
	printf("sriov_numvfs reads \"%s\"\n", buf);
	snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s/virtfn0", bdf);
	n = readlink(p, buf, sizeof(buf) - 1); buf[n > 0 ? n : 0] = 0;
	printf("virtfn0 -> %s\n", buf);
	char vf[64];
	snprintf(vf, sizeof(vf), "%.60s", strrchr(buf, '/') ? strrchr(buf, '/') + 1 : buf);
	const char *links[] = {"physfn", "driver", "iommu_group", NULL};
	for (int i = 0; links[i]; i++) {
		snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s/%s", vf, links[i]);
		n = readlink(p, buf, sizeof(buf) - 1); buf[n > 0 ? n : 0] = 0;
		printf("VF %s -> %s\n", links[i], n > 0 ? buf : strerror(errno));
	}
	const char *files[] = {"vendor", "device", "class", "sriov_totalvfs", "driver_override", NULL};
	for (int i = 0; files[i]; i++) {
		snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s/%s", vf, files[i]);
		fd = open(p, O_RDONLY);
		if (fd < 0) { printf("VF file %s: %s\n", files[i], strerror(errno)); continue; }
		n = read(fd, buf, 64); close(fd); buf[n > 0 ? n : 0] = 0;
		for (int j = 0; j < n; j++) if (buf[j] == '\n') buf[j] = '|';
		printf("VF file %s: %s\n", files[i], buf);
	}
	int iommufd = open("/dev/iommu", O_RDWR);
	int vfd = cdev_of(vf);
	printf("VF bind no token (PF never opened) -> %d\n", bind_tok(vfd, iommufd, NULL));
	printf("VF bind token u1 (PF never opened) -> %d\n", bind_tok(vfd, iommufd, u1));
	close(vfd);
	int pfd = cdev_of(bdf);
	printf("PF bind token u1 -> %d\n", bind_tok(pfd, iommufd, u1));
	vfd = cdev_of(vf);
	printf("VF bind no token -> %d\n", bind_tok(vfd, iommufd, NULL));
	printf("VF bind token u2 -> %d\n", bind_tok(vfd, iommufd, u2));
	printf("VF bind token u1 -> %d\n", bind_tok(vfd, iommufd, u1));
	{
		char fb[64]; struct vfio_device_feature *ft = (void *)fb;
		memset(fb, 0, sizeof(fb));
		ft->argsz = sizeof(*ft) + 16; ft->flags = VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_PCI_VF_TOKEN;
		memcpy(ft->data, u2, 16);
		errno = 0; int r = ioctl(pfd, VFIO_DEVICE_FEATURE, ft);
		printf("PF FEATURE SET VF_TOKEN u2 while VF open -> %d %s\n", r, r ? strerror(errno) : "");
		ft->flags = VFIO_DEVICE_FEATURE_PROBE | VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_PCI_VF_TOKEN;
		errno = 0; r = ioctl(vfd, VFIO_DEVICE_FEATURE, ft);
		printf("VF FEATURE PROBE|SET VF_TOKEN -> %d %s\n", r, r ? strerror(errno) : "");
	}
	dev = vfd;
	struct vfio_device_info di = {.argsz = sizeof(di)};
	ioctl(dev, VFIO_DEVICE_GET_INFO, &di);
	printf("VF GET_INFO flags %#x regions %u irqs %u\n", di.flags, di.num_regions, di.num_irqs);
	for (uint32_t i = 0; i < 9; i++) {
		struct vfio_region_info r = {.argsz = sizeof(r), .index = i};
		if (ioctl(dev, VFIO_DEVICE_GET_REGION_INFO, &r)) { printf("VF REGION %u errno %s\n", i, strerror(errno)); continue; }
		printf("VF REGION %u argsz %u flags %#x size %#llx\n", i, r.argsz, r.flags, (unsigned long long)r.size);
		if (i == 7) cfg_off = r.offset;
	}
	for (uint32_t i = 0; i < 5; i++) {
		struct vfio_irq_info q = {.argsz = sizeof(q), .index = i};
		int r = ioctl(dev, VFIO_DEVICE_GET_IRQ_INFO, &q);
		printf("VF IRQ %u rc %d flags %#x count %u\n", i, r, q.flags, q.count);
	}
	uint8_t all[256];
	pread(dev, all, 256, cfg_off);
	for (int i = 0; i < 256; i += 16) { printf("  VF %03x:", i); for (int j = 0; j < 16; j++) printf(" %02x", all[i + j]); printf("\n"); }
	uint8_t ext[4096];
	pread(dev, ext, 4096, cfg_off);
	printf("VF ext caps:");
	uint32_t e = 0x100;
	for (int i = 0; e && i < 16; i++) { uint32_t h; memcpy(&h, ext + e, 4); printf(" [%#x id %#x]", e, h & 0xffff); if (!h) break; e = h >> 20; }
	printf("\n");
	printf("VF COMMAND %#x\n", rd16(PCI_COMMAND));
	{ long w = wr16(PCI_COMMAND, 0x0006); uint16_t r = rd16(PCI_COMMAND); printf("VF write COMMAND 0x6 -> %ld then %#x\n", w, r); }
	for (int i = 0; i < 6; i++) { uint32_t o = 0x10 + 4 * i, orig = rd32(o); wr32(o, 0xffffffff); printf("VF BAR%d orig %#x sized %#x\n", i, orig, rd32(o)); wr32(o, orig); }
	snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s/sriov_numvfs", bdf);
	printf("write sriov_numvfs 0 while VF open -> %d\n", write_file(p, "0"));
	close(vfd);
	close(pfd);
	printf("write sriov_numvfs 0 after close -> %d\n", write_file(p, "0"));
	close(iommufd);
}

int main(int argc, char **argv)
{
	bdf = getenv("VFIO_SELFTESTS_BDF");
	if (!bdf) bdf = "0000:01:00.0";
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc > 1 && !strcmp(argv[1], "vf")) { vf_facts(); return 0; }
	sysfs_facts();
	int iommufd = open("/dev/iommu", O_RDWR);
	dev = open("/dev/vfio/devices/vfio0", O_RDWR);
	printf("== cdev before bind\n");
	struct vfio_device_info di = {.argsz = sizeof(di)};
	R(ioctl(dev, VFIO_DEVICE_GET_INFO, &di));
	uint32_t v; R(pread(dev, &v, 4, (uint64_t)7 << 40));
	R(ioctl(dev, VFIO_DEVICE_RESET));
	struct vfio_device_bind_iommufd b = {.argsz = sizeof(b), .iommufd = iommufd};
	R(ioctl(dev, VFIO_DEVICE_BIND_IOMMUFD, &b));
	printf("bind out_devid %u\n", b.out_devid);
	struct iommu_ioas_alloc a = {.size = sizeof(a)};
	R(ioctl(iommufd, IOMMU_IOAS_ALLOC, &a));
	struct vfio_device_attach_iommufd_pt at = {.argsz = sizeof(at), .pt_id = a.out_ioas_id};
	R(ioctl(dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &at));
	printf("attach pt_id out %u (ioas %u)\n", at.pt_id, a.out_ioas_id);
	printf("== device info\n");
	device_info();
	struct vfio_region_info c = {.argsz = sizeof(c), .index = 7};
	ioctl(dev, VFIO_DEVICE_GET_REGION_INFO, &c);
	cfg_off = c.offset;
	config_facts();
	printf("== reset\n");
	R(ioctl(dev, VFIO_DEVICE_RESET));
	printf("COMMAND after reset %#x\n", rd16(PCI_COMMAND));
	printf("== irqs\n");
	irq_facts();
	printf("== features\n");
	feature_facts();
	bar_facts();
	/* IOAS map of a BAR mmap */
	struct vfio_region_info r0 = {.argsz = sizeof(r0), .index = 0};
	ioctl(dev, VFIO_DEVICE_GET_REGION_INFO, &r0);
	void *bm = mmap(NULL, r0.size, PROT_READ | PROT_WRITE, MAP_SHARED, dev, r0.offset);
	struct iommu_ioas_map mp = {.size = sizeof(mp), .flags = IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_FIXED_IOVA, .ioas_id = a.out_ioas_id, .user_va = (uint64_t)bm, .length = 4096, .iova = 0x200000};
	R(ioctl(iommufd, IOMMU_IOAS_MAP, &mp));
	munmap(bm, r0.size);
	struct iommu_ioas_iova_ranges rq = {.size = sizeof(rq), .ioas_id = a.out_ioas_id};
	R(ioctl(iommufd, IOMMU_IOAS_IOVA_RANGES, &rq));
	struct iommu_iova_range rr[8];
	rq.num_iovas = 8; rq.allowed_iovas = (uint64_t)rr;
	R(ioctl(iommufd, IOMMU_IOAS_IOVA_RANGES, &rq));
	for (uint32_t i = 0; i < rq.num_iovas && i < 8; i++) printf("  ioas range [%#llx-%#llx]\n", (unsigned long long)rr[i].start, (unsigned long long)rr[i].last);
	printf("out_iova_alignment %llu\n", (unsigned long long)rq.out_iova_alignment);
	R(ioctl(dev, VFIO_DEVICE_BIND_IOMMUFD, &b));
	struct vfio_device_detach_iommufd_pt dt = {.argsz = sizeof(dt)};
	R(ioctl(dev, VFIO_DEVICE_DETACH_IOMMUFD_PT, &dt));
	R(ioctl(dev, VFIO_DEVICE_DETACH_IOMMUFD_PT, &dt));
	close(dev);
	close(iommufd);
	container_facts();
	printf("== done\n");
	return 0;
}
