// SPDX-License-Identifier: MIT
/*
 * vmm.c - use /dev/iommu the way a virtual machine monitor does.
 *
 * Only the Linux uapi is used: <linux/iommufd.h> and the mock driver's
 * iommufd_test.h (IOMMU_TEST_CMD, served by a kernel built with
 * CONFIG_IOMMUFD_TEST, or by `ioasid run`). The program sets up guest memory
 * behind an IOAS, binds a PASID-capable mock device, builds a nested
 * (stage-1 over stage-2) translation with a fault queue, attaches a PASID,
 * invalidates the guest IOTLB, handles an I/O page fault, and tears it all
 * down. Each step prints one line; on the first failure it prints the errno
 * name and exits 1.
 *
 * Build (the headers must be Linux 6.15 or newer):
 *   gcc -O2 -Wall -isystem HDRS -o vmm vmm.c
 * where HDRS holds linux/iommufd.h and iommufd_test.h (see scripts/example.sh).
 * Run:
 *   ioasid run --trace -- ./vmm        (user-space /dev/iommu)
 *   ./vmm                              (a real kernel with CONFIG_IOMMUFD_TEST)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <linux/iommufd.h>
#include <iommufd_test.h>

#define GUEST_MEM_SIZE	(16UL << 20)		/* 16 MiB of guest RAM */
#define GUEST_IOVA	(MOCK_APERTURE_START)	/* guest-physical 0 in the mock aperture */
#define VMM_PASID	100			/* the PASID the guest hands to its device */
#define INV_IOTLB_ID	1			/* the guest IOTLB entry it invalidates */
#define FAULT_ADDR	(GUEST_IOVA + 0x3000)	/* the address the device faults on */
#define FAULT_GRPID	7

static int step_no;

/* Starts a step: "[NN] description", a whole line (the result follows on the next line, so that
 * the lines `ioasid run --trace` writes for the step's calls fall between whole lines). */
static void step(const char *fmt, ...)
{
	va_list ap;

	printf("[%02d] ", ++step_no);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

/* Ends a step successfully, with optional details. */
static void ok(const char *fmt, ...)
{
	va_list ap;

	printf("     ok");
	if (fmt && *fmt) {
		printf(" (");
		va_start(ap, fmt);
		vprintf(fmt, ap);
		va_end(ap);
		printf(")");
	}
	printf("\n");
	fflush(stdout);
}

static const char *errno_name(int err)
{
	const char *name = strerrorname_np(err);

	return name ? name : "E?";
}

/* Ends a step with the errno of the failed call and exits. */
static void __attribute__((noreturn)) fail_errno(const char *call, int err)
{
	printf("     FAILED: %s: %s (%d, %s)\n", call, errno_name(err), err, strerror(err));
	fflush(stdout);
	exit(1);
}

/* Ends a step because a result is not the expected one and exits. */
static void __attribute__((noreturn)) fail_check(const char *fmt, ...)
{
	va_list ap;

	printf("     FAILED: ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	exit(1);
}

/* ioctl() that fails the current step on error. */
#define IOCTL(fd, req, arg)						\
	do {								\
		if (ioctl(fd, req, arg))				\
			fail_errno(#req, errno);			\
	} while (0)

static int iommufd;

static void destroy(uint32_t id)
{
	struct iommu_destroy cmd = { .size = sizeof(cmd), .id = id };

	IOCTL(iommufd, IOMMU_DESTROY, &cmd);
}

static void mock_domain_replace(uint32_t stdev_id, uint32_t pt_id, uint32_t *out_hwpt)
{
	struct iommu_test_cmd cmd = {
		.size = sizeof(cmd),
		.op = IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE,
		.id = stdev_id,
		.mock_domain_replace = { .pt_id = pt_id },
	};

	IOCTL(iommufd, IOMMU_TEST_CMD, &cmd);
	if (out_hwpt)
		*out_hwpt = cmd.mock_domain_replace.pt_id;
}

/* Compares the 4 mock IOTLB entries of a nested HWPT with expected[]. */
static void check_iotlb(uint32_t hwpt_id, const uint32_t expected[MOCK_NESTED_DOMAIN_IOTLB_NUM])
{
	for (uint32_t i = 0; i < MOCK_NESTED_DOMAIN_IOTLB_NUM; i++) {
		struct iommu_test_cmd cmd = {
			.size = sizeof(cmd),
			.op = IOMMU_TEST_OP_MD_CHECK_IOTLB,
			.id = hwpt_id,
			.check_iotlb = { .id = i, .iotlb = expected[i] },
		};

		if (ioctl(iommufd, IOMMU_TEST_CMD, &cmd)) {
			int err = errno;

			printf("     FAILED: IOMMU_TEST_OP_MD_CHECK_IOTLB iotlb[%u] != 0x%x: %s (%d)\n",
			       i, expected[i], errno_name(err), err);
			exit(1);
		}
	}
}

int main(void)
{
	uint32_t ioas_id, stdev_id, auto_hwpt_id, idev_id;
	uint32_t parent_hwpt_id, pasid_hwpt_id, nested_hwpt_id, rid_hwpt_id;
	uint32_t fault_id;
	int fault_fd, memfd;
	struct iommu_hwpt_pgfault fault;

	setvbuf(stdout, NULL, _IOLBF, 0);

	/* ---------------------------------------------------------------- setup */
	step("open /dev/iommu");
	iommufd = open("/dev/iommu", O_RDWR | O_CLOEXEC);
	if (iommufd < 0)
		fail_errno("open(\"/dev/iommu\")", errno);
	ok(NULL);

	step("IOMMU_IOAS_ALLOC: the guest-physical address space");
	{
		struct iommu_ioas_alloc cmd = { .size = sizeof(cmd) };

		IOCTL(iommufd, IOMMU_IOAS_ALLOC, &cmd);
		ioas_id = cmd.out_ioas_id;
		ok("ioas_id=%u", ioas_id);
	}

	step("guest memory: memfd_create + ftruncate %lu MiB", GUEST_MEM_SIZE >> 20);
	memfd = memfd_create("guest-ram", MFD_CLOEXEC);
	if (memfd < 0)
		fail_errno("memfd_create", errno);
	if (ftruncate(memfd, GUEST_MEM_SIZE))
		fail_errno("ftruncate", errno);
	ok(NULL);

	step("IOMMU_IOAS_MAP_FILE: guest memory at IOVA 0x%lx, fixed, read/write",
	     (unsigned long)GUEST_IOVA);
	{
		struct iommu_ioas_map_file cmd = {
			.size = sizeof(cmd),
			.flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE |
				 IOMMU_IOAS_MAP_WRITEABLE,
			.ioas_id = ioas_id,
			.fd = memfd,
			.start = 0,
			.length = GUEST_MEM_SIZE,
			.iova = GUEST_IOVA,
		};

		IOCTL(iommufd, IOMMU_IOAS_MAP_FILE, &cmd);
		if (cmd.iova != GUEST_IOVA)
			fail_check("iova=0x%llx, expected 0x%lx", (unsigned long long)cmd.iova,
				   (unsigned long)GUEST_IOVA);
		ok("iova=0x%llx length=0x%llx", (unsigned long long)cmd.iova,
		   (unsigned long long)cmd.length);
	}

	step("IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS: PASID-capable mock device attached to the IOAS");
	{
		struct iommu_test_cmd cmd = {
			.size = sizeof(cmd),
			.op = IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS,
			.id = ioas_id,
			.mock_domain_flags = { .dev_flags = MOCK_FLAGS_DEVICE_PASID },
		};

		IOCTL(iommufd, IOMMU_TEST_CMD, &cmd);
		stdev_id = cmd.mock_domain_flags.out_stdev_id;
		auto_hwpt_id = cmd.mock_domain_flags.out_hwpt_id;
		idev_id = cmd.mock_domain_flags.out_idev_id;
		if (!stdev_id || !auto_hwpt_id || !idev_id)
			fail_check("an id is 0: stdev_id=%u hwpt_id=%u idev_id=%u", stdev_id,
				   auto_hwpt_id, idev_id);
		ok("stdev_id=%u idev_id=%u auto hwpt_id=%u", stdev_id, idev_id, auto_hwpt_id);
	}

	step("IOMMU_GET_HW_INFO");
	{
		struct iommu_test_hw_info info = {};
		struct iommu_hw_info cmd = {
			.size = sizeof(cmd),
			.dev_id = idev_id,
			.data_len = sizeof(info),
			.data_uptr = (uintptr_t)&info,
		};

		IOCTL(iommufd, IOMMU_GET_HW_INFO, &cmd);
		if (cmd.out_data_type != IOMMU_HW_INFO_TYPE_SELFTEST)
			fail_check("out_data_type=0x%x, expected IOMMU_HW_INFO_TYPE_SELFTEST",
				   cmd.out_data_type);
		if (info.test_reg != IOMMU_HW_INFO_SELFTEST_REGVAL)
			fail_check("test_reg=0x%x, expected 0x%x", info.test_reg,
				   IOMMU_HW_INFO_SELFTEST_REGVAL);
		if (cmd.out_max_pasid_log2 != MOCK_PASID_WIDTH)
			fail_check("out_max_pasid_log2=%u, expected %u", cmd.out_max_pasid_log2,
				   MOCK_PASID_WIDTH);
		ok("type=0x%x data_len=%u test_reg=0x%x capabilities=0x%llx max_pasid_log2=%u",
		   cmd.out_data_type, cmd.data_len, info.test_reg,
		   (unsigned long long)cmd.out_capabilities, cmd.out_max_pasid_log2);
	}

	step("IOMMU_HWPT_ALLOC: nest-parent paging HWPT (guest stage-2) on the IOAS");
	{
		struct iommu_hwpt_alloc cmd = {
			.size = sizeof(cmd),
			.flags = IOMMU_HWPT_ALLOC_NEST_PARENT,
			.dev_id = idev_id,
			.pt_id = ioas_id,
			.data_type = IOMMU_HWPT_DATA_NONE,
		};

		IOCTL(iommufd, IOMMU_HWPT_ALLOC, &cmd);
		parent_hwpt_id = cmd.out_hwpt_id;
		ok("hwpt_id=%u", parent_hwpt_id);
	}

	step("IOMMU_HWPT_ALLOC: PASID-compatible paging HWPT on the IOAS");
	{
		struct iommu_hwpt_alloc cmd = {
			.size = sizeof(cmd),
			.flags = IOMMU_HWPT_ALLOC_PASID,
			.dev_id = idev_id,
			.pt_id = ioas_id,
			.data_type = IOMMU_HWPT_DATA_NONE,
		};

		IOCTL(iommufd, IOMMU_HWPT_ALLOC, &cmd);
		pasid_hwpt_id = cmd.out_hwpt_id;
		ok("hwpt_id=%u", pasid_hwpt_id);
	}

	step("IOMMU_FAULT_QUEUE_ALLOC");
	{
		struct iommu_fault_alloc cmd = { .size = sizeof(cmd) };

		IOCTL(iommufd, IOMMU_FAULT_QUEUE_ALLOC, &cmd);
		fault_id = cmd.out_fault_id;
		fault_fd = (int)cmd.out_fault_fd;
		if (!fault_id || fault_fd < 0)
			fail_check("fault_id=%u fault_fd=%d", fault_id, fault_fd);
		ok("fault_id=%u", fault_id);
	}

	step("IOMMU_HWPT_ALLOC: nested HWPT (guest stage-1, selftest data) with fault queue, PASID-compatible");
	{
		struct iommu_hwpt_selftest data = { .iotlb = IOMMU_TEST_IOTLB_DEFAULT };
		struct iommu_hwpt_alloc cmd = {
			.size = sizeof(cmd),
			.flags = IOMMU_HWPT_FAULT_ID_VALID | IOMMU_HWPT_ALLOC_PASID,
			.dev_id = idev_id,
			.pt_id = parent_hwpt_id,
			.data_type = IOMMU_HWPT_DATA_SELFTEST,
			.data_len = sizeof(data),
			.data_uptr = (uintptr_t)&data,
			.fault_id = fault_id,
		};

		IOCTL(iommufd, IOMMU_HWPT_ALLOC, &cmd);
		nested_hwpt_id = cmd.out_hwpt_id;
		ok("hwpt_id=%u parent=%u fault_id=%u", nested_hwpt_id, parent_hwpt_id, fault_id);
	}

	/*
	 * A PASID may only be attached while the RID's domain is PASID-compatible
	 * (the auto domain of the IOAS is not), so move the RID first.
	 */
	step("IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE: RID -> PASID-compatible HWPT %u", pasid_hwpt_id);
	mock_domain_replace(stdev_id, pasid_hwpt_id, &rid_hwpt_id);
	ok("pt_id=%u", rid_hwpt_id);

	step("IOMMU_TEST_OP_PASID_ATTACH: PASID %u -> PASID-compatible HWPT %u", VMM_PASID,
	     pasid_hwpt_id);
	{
		struct iommu_test_cmd cmd = {
			.size = sizeof(cmd),
			.op = IOMMU_TEST_OP_PASID_ATTACH,
			.id = stdev_id,
			.pasid_attach = { .pasid = VMM_PASID, .pt_id = pasid_hwpt_id },
		};

		IOCTL(iommufd, IOMMU_TEST_CMD, &cmd);
		ok(NULL);
	}

	step("IOMMU_TEST_OP_PASID_CHECK_HWPT: PASID %u is on HWPT %u", VMM_PASID, pasid_hwpt_id);
	{
		struct iommu_test_cmd cmd = {
			.size = sizeof(cmd),
			.op = IOMMU_TEST_OP_PASID_CHECK_HWPT,
			.id = stdev_id,
			.pasid_check = { .pasid = VMM_PASID, .hwpt_id = pasid_hwpt_id },
		};

		IOCTL(iommufd, IOMMU_TEST_CMD, &cmd);
		ok(NULL);
	}

	step("IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE: RID -> nested HWPT %u", nested_hwpt_id);
	mock_domain_replace(stdev_id, nested_hwpt_id, &rid_hwpt_id);
	ok("pt_id=%u", rid_hwpt_id);

	step("IOMMU_TEST_OP_MD_CHECK_IOTLB: nested HWPT's %u IOTLB entries are 0x%x",
	     MOCK_NESTED_DOMAIN_IOTLB_NUM, IOMMU_TEST_IOTLB_DEFAULT);
	{
		const uint32_t expected[MOCK_NESTED_DOMAIN_IOTLB_NUM] = {
			IOMMU_TEST_IOTLB_DEFAULT, IOMMU_TEST_IOTLB_DEFAULT,
			IOMMU_TEST_IOTLB_DEFAULT, IOMMU_TEST_IOTLB_DEFAULT,
		};

		check_iotlb(nested_hwpt_id, expected);
		ok(NULL);
	}

	step("IOMMU_HWPT_INVALIDATE: guest invalidates IOTLB entry %u", INV_IOTLB_ID);
	{
		struct iommu_hwpt_invalidate_selftest inv = { .flags = 0, .iotlb_id = INV_IOTLB_ID };
		struct iommu_hwpt_invalidate cmd = {
			.size = sizeof(cmd),
			.hwpt_id = nested_hwpt_id,
			.data_uptr = (uintptr_t)&inv,
			.data_type = IOMMU_HWPT_INVALIDATE_DATA_SELFTEST,
			.entry_len = sizeof(inv),
			.entry_num = 1,
		};

		IOCTL(iommufd, IOMMU_HWPT_INVALIDATE, &cmd);
		if (cmd.entry_num != 1)
			fail_check("entry_num=%u handled, expected 1", cmd.entry_num);
		ok("entry_num=%u", cmd.entry_num);
	}

	step("IOMMU_TEST_OP_MD_CHECK_IOTLB: entry %u is 0, the others unchanged", INV_IOTLB_ID);
	{
		uint32_t expected[MOCK_NESTED_DOMAIN_IOTLB_NUM] = {
			IOMMU_TEST_IOTLB_DEFAULT, IOMMU_TEST_IOTLB_DEFAULT,
			IOMMU_TEST_IOTLB_DEFAULT, IOMMU_TEST_IOTLB_DEFAULT,
		};

		expected[INV_IOTLB_ID] = 0;
		check_iotlb(nested_hwpt_id, expected);
		ok(NULL);
	}

	/* ------------------------------------------------- an I/O page fault */
	step("IOMMU_TEST_OP_TRIGGER_IOPF: device faults at 0x%lx (no PASID, grpid %u, read+write)",
	     (unsigned long)FAULT_ADDR, FAULT_GRPID);
	{
		struct iommu_test_cmd cmd = {
			.size = sizeof(cmd),
			.op = IOMMU_TEST_OP_TRIGGER_IOPF,
			.trigger_iopf = {
				.dev_id = idev_id,
				.pasid = 0,
				.grpid = FAULT_GRPID,
				.perm = IOMMU_PGFAULT_PERM_READ | IOMMU_PGFAULT_PERM_WRITE,
				.addr = FAULT_ADDR,
			},
		};

		IOCTL(iommufd, IOMMU_TEST_CMD, &cmd);
		ok(NULL);
	}

	step("poll(fault_fd, POLLIN)");
	{
		struct pollfd pfd = { .fd = fault_fd, .events = POLLIN };
		int n = poll(&pfd, 1, 5000);

		if (n < 0)
			fail_errno("poll", errno);
		if (n == 0)
			fail_errno("poll (no POLLIN within 5 s)", ETIMEDOUT);
		if (!(pfd.revents & POLLIN))
			fail_check("revents=0x%x without POLLIN", pfd.revents);
		ok("revents=0x%x", pfd.revents);
	}

	step("read(fault_fd): one struct iommu_hwpt_pgfault");
	{
		ssize_t n;

		memset(&fault, 0xff, sizeof(fault));
		n = read(fault_fd, &fault, sizeof(fault));
		if (n < 0)
			fail_errno("read", errno);
		if (n != sizeof(fault))
			fail_check("read returned %zd, expected %zu", n, sizeof(fault));
		if (fault.dev_id != idev_id || fault.addr != FAULT_ADDR ||
		    fault.grpid != FAULT_GRPID ||
		    fault.perm != (IOMMU_PGFAULT_PERM_READ | IOMMU_PGFAULT_PERM_WRITE) ||
		    !(fault.flags & IOMMU_PGFAULT_FLAGS_LAST_PAGE) ||
		    (fault.flags & IOMMU_PGFAULT_FLAGS_PASID_VALID))
			fail_check("unexpected record: flags=0x%x dev_id=%u pasid=%u grpid=%u perm=0x%x addr=0x%llx length=%u cookie=%u",
				   fault.flags, fault.dev_id, fault.pasid, fault.grpid, fault.perm,
				   (unsigned long long)fault.addr, fault.length, fault.cookie);
		ok("flags=0x%x dev_id=%u pasid=%u grpid=%u perm=0x%x addr=0x%llx length=%u cookie=%u",
		   fault.flags, fault.dev_id, fault.pasid, fault.grpid, fault.perm,
		   (unsigned long long)fault.addr, fault.length, fault.cookie);
	}

	step("write(fault_fd): iommu_hwpt_page_response SUCCESS for cookie %u", fault.cookie);
	{
		struct iommu_hwpt_page_response resp = {
			.cookie = fault.cookie,
			.code = IOMMUFD_PAGE_RESP_SUCCESS,
		};
		ssize_t n = write(fault_fd, &resp, sizeof(resp));

		if (n < 0)
			fail_errno("write", errno);
		if (n != sizeof(resp))
			fail_check("write returned %zd, expected %zu", n, sizeof(resp));
		ok(NULL);
	}

	step("poll(fault_fd, POLLIN, 0): the queue is empty again");
	{
		struct pollfd pfd = { .fd = fault_fd, .events = POLLIN };
		int n = poll(&pfd, 1, 0);

		if (n < 0)
			fail_errno("poll", errno);
		if (n != 0)
			fail_check("poll returned %d, revents=0x%x", n, pfd.revents);
		ok(NULL);
	}

	/* ------------------------------------------------------------ teardown */
	step("IOMMU_TEST_OP_PASID_DETACH: PASID %u", VMM_PASID);
	{
		struct iommu_test_cmd cmd = {
			.size = sizeof(cmd),
			.op = IOMMU_TEST_OP_PASID_DETACH,
			.id = stdev_id,
			.pasid_detach = { .pasid = VMM_PASID },
		};

		IOCTL(iommufd, IOMMU_TEST_CMD, &cmd);
		ok(NULL);
	}

	step("IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE: RID -> nest-parent HWPT %u", parent_hwpt_id);
	mock_domain_replace(stdev_id, parent_hwpt_id, &rid_hwpt_id);
	ok("pt_id=%u", rid_hwpt_id);

	step("IOMMU_DESTROY: nested HWPT %u", nested_hwpt_id);
	destroy(nested_hwpt_id);
	ok(NULL);

	step("IOMMU_DESTROY: PASID-compatible HWPT %u", pasid_hwpt_id);
	destroy(pasid_hwpt_id);
	ok(NULL);

	step("IOMMU_DESTROY: mock device %u (detach + unbind)", stdev_id);
	destroy(stdev_id);
	ok(NULL);

	step("IOMMU_DESTROY: nest-parent HWPT %u", parent_hwpt_id);
	destroy(parent_hwpt_id);
	ok(NULL);

	step("close(fault_fd) + IOMMU_DESTROY: fault queue %u", fault_id);
	if (close(fault_fd))
		fail_errno("close(fault_fd)", errno);
	destroy(fault_id);
	ok(NULL);

	step("IOMMU_IOAS_UNMAP: all of IOAS %u", ioas_id);
	{
		struct iommu_ioas_unmap cmd = {
			.size = sizeof(cmd),
			.ioas_id = ioas_id,
			.iova = 0,
			.length = UINT64_MAX,
		};

		IOCTL(iommufd, IOMMU_IOAS_UNMAP, &cmd);
		if (cmd.length != GUEST_MEM_SIZE)
			fail_check("unmapped 0x%llx bytes, expected 0x%lx",
				   (unsigned long long)cmd.length, GUEST_MEM_SIZE);
		ok("length=0x%llx", (unsigned long long)cmd.length);
	}

	step("IOMMU_DESTROY: IOAS %u", ioas_id);
	destroy(ioas_id);
	ok(NULL);

	step("close(memfd) + close(/dev/iommu)");
	if (close(memfd))
		fail_errno("close(memfd)", errno);
	if (close(iommufd))
		fail_errno("close(iommufd)", errno);
	ok(NULL);

	printf("all steps passed\n");
	return 0;
}
