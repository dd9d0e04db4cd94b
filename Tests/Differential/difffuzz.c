/*
 * difffuzz — a seeded generator of random iommufd operation sequences that prints a transcript,
 * one line per operation: what was asked and what the kernel (or ioasid) answered.
 *
 *   difffuzz [-n COUNT] [-s SEED] [-P] [-x]   (-P: no bad argument pointers; -x: the extended set)
 *
 * The same seed gives the same sequence of requests wherever it runs, so a transcript recorded
 * on the real kernel (static build, run under the real kernel by scripts/differential.sh --record) can be replayed under ioasid
 * (dynamic build, `ioasid run`) and compared line by line (scripts/differential.sh). Every
 * answer that feeds later requests (object IDs, IOVAs, counts) is printed, so a divergence shows
 * where it starts.
 *
 * The extended set (-x) adds what an object needs to be reached at all: nested HWPTs with the
 * test driver's data and a fault queue, vDEVICEs, vEVENT queues, HW queues, the process change,
 * page faults and vEVENTs raised by the test driver and read back (records, then responses
 * written) from the queue descriptors, and the mock domain's own checks (maps, refs, IOTLB).
 * Transcripts without -x are unchanged by it: the extended operations only ever run with it.
 *
 * Requests: every iommufd ioctl and the test driver's commands, with random and edge-case
 * sizes (too small, exact, larger with zero or non-zero tail), flags (valid, unknown bits), IDs
 * (live, destroyed, never allocated, huge), IOVAs and lengths (aligned, unaligned, near and
 * across 2^64), user pointers (valid, NULL, unmapped, PROT_NONE, read-only, straddling the end
 * of a readable page, wrapping).
 *
 * User memory lives at fixed addresses so that the kernel's IOVA choices, which depend on the
 * user address, are the same in both runs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/iommufd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "iommufd_test.h"

#define PAGE 4096UL
#define BASE 0x600000000000UL /* RW memory: BUFFER_PAGES pages */
#define BUFFER_PAGES 256
#define READ_ONLY (BASE + 0x10000000UL)  /* 16 read-only pages */
#define NO_ACCESS (BASE + 0x20000000UL)  /* 16 PROT_NONE pages */
#define UNMAPPED (BASE + 0x30000000UL)   /* never mapped */
#define ARGUMENT (BASE + 0x40000000UL)   /* one RW page followed by a PROT_NONE page */

static uint64_t rng_state;
static uint64_t next(void) {
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
static uint64_t below(uint64_t n) { return n ? next() % n : 0; }
static int chance(int percent) { return (int)below(100) < percent; }

static int iommufd;
static int allow_bad_pointers = 1;
static int extended;

/* Everything the run learned: IDs it got back, IOVAs it mapped, fds it was given. */
#define POOL 64
static uint32_t ids[POOL];
static int id_count;
static uint64_t iovas[POOL];
static int iova_count;
static uint32_t devices[POOL]; /* stdev IDs */
static int device_count;
static uint32_t idevs[POOL];
static int idev_count;
static int memfd = -1;

static void remember_id(uint32_t id) { if (id) ids[id_count++ % POOL] = id; }
static void remember_iova(uint64_t iova) { iovas[iova_count++ % POOL] = iova; }

static uint32_t any_id(void) {
    switch (below(8)) {
    case 0: return 0;
    case 1: return (uint32_t)below(24);
    case 2: return UINT32_MAX - (uint32_t)below(2);
    default: return id_count ? ids[below(id_count < POOL ? id_count : POOL)] : (uint32_t)below(8);
    }
}
static uint32_t any_stdev(void) {
    if (device_count && chance(85)) return devices[below(device_count < POOL ? device_count : POOL)];
    return any_id();
}
static uint32_t any_idev(void) {
    if (idev_count && chance(85)) return idevs[below(idev_count < POOL ? idev_count : POOL)];
    return any_id();
}

static uint64_t any_length(void) {
    static const uint64_t edges[] = {0, 1, 2048, PAGE - 1, PAGE, PAGE + 1, 2 * PAGE, 16 * PAGE, 1UL << 21,
                                     UINT64_MAX, UINT64_MAX - PAGE + 1, 1UL << 63};
    if (chance(60)) return PAGE * (1 + below(16));
    return edges[below(sizeof edges / sizeof edges[0])];
}

static uint64_t any_iova(void) {
    static const uint64_t edges[] = {0, PAGE, 1UL << 24, (1UL << 24) + 2048, (1UL << 31) - PAGE, 1UL << 31,
                                     UINT64_MAX - PAGE + 1, UINT64_MAX, 0xfee00000UL, 1UL << 48, 1UL << 56};
    if (iova_count && chance(40)) return iovas[below(iova_count < POOL ? iova_count : POOL)] + (chance(20) ? PAGE : 0);
    if (chance(40)) return (1UL << 24) + PAGE * below(4096);
    return edges[below(sizeof edges / sizeof edges[0])];
}

/* A user address for data the request points at (a buffer to map, an array to fill). */
static uint64_t any_user(int *kind) {
    int k = allow_bad_pointers ? (int)below(10) : 0;
    if (k > 5) k = 0;
    *kind = k;
    switch (k) {
    case 0: return BASE + PAGE * below(BUFFER_PAGES / 2);
    case 1: return 0;
    case 2: return UNMAPPED + PAGE * below(4);
    case 3: return NO_ACCESS + PAGE * below(4);
    case 4: return READ_ONLY + PAGE * below(4);
    default: return UINT64_MAX - PAGE + 1 + 8 * below(4);
    }
}

/* Where the ioctl's own struct goes: normally a good buffer; sometimes a bad pointer, or the
 * struct placed so that it ends exactly at the start of a PROT_NONE page. */
static void *argument_slot(size_t size, const char **how) {
    *how = "";
    if (allow_bad_pointers && chance(6)) {
        switch (below(5)) {
        case 0: *how = " arg=null"; return NULL;
        case 1: *how = " arg=unmapped"; return (void *)UNMAPPED;
        case 2: *how = " arg=prot-none"; return (void *)NO_ACCESS;
        case 3: *how = " arg=read-only"; return (void *)READ_ONLY;
        default: *how = " arg=straddling"; return (void *)(ARGUMENT + PAGE - size / 2);
        }
    }
    return (void *)(ARGUMENT + PAGE - size); /* ends at the boundary: an over-read faults */
}

/* Issues `request` with `value` (of `size` bytes, first u32 its size field unless `sized` is 0),
 * varying the size field; prints the request name and the answer; copies the answer back. */
static int issue(const char *name, unsigned long request, void *value, size_t size, int sized, const char *extra) {
    const char *how;
    size_t declared = size, total = size;
    char tail = 0;
    if (sized) {
        switch (below(12)) {
        case 0: declared = below(size); break;                        /* too small */
        case 1: declared = size + 8; total = size + 8; break;         /* larger, zero tail */
        case 2: declared = size + 8; total = size + 8; tail = 1; break; /* larger, non-zero tail */
        default: break;
        }
        memcpy(value, &(uint32_t){(uint32_t)declared}, 4);
    }
    void *slot = argument_slot(total, &how);
    int good = how[0] == '\0';
    if (good) {
        memset(slot, 0, total);
        memcpy(slot, value, size);
        if (tail) ((char *)slot)[size + 3] = 1;
    }
    errno = 0;
    int rc = ioctl(iommufd, request, slot);
    int error = rc < 0 ? errno : 0;
    if (good) memcpy(value, slot, size);
    printf("%s%s size=%zu%s -> %d %s", name, extra, declared, how, rc < 0 ? -1 : rc, error ? strerrorname_np(error) : "OK");
    return rc < 0 ? -error : rc;
}

static void op_ioas_alloc(void) {
    struct iommu_ioas_alloc a = {.flags = chance(10) ? 1 : 0};
    int rc = issue("IOAS_ALLOC", IOMMU_IOAS_ALLOC, &a, sizeof a, 1, "");
    if (rc == 0) { printf(" id=%u", a.out_ioas_id); remember_id(a.out_ioas_id); }
}

static void op_destroy(void) {
    struct iommu_destroy d = {.id = any_id()};
    char extra[32];
    snprintf(extra, sizeof extra, " id=%u", d.id);
    issue("DESTROY", IOMMU_DESTROY, &d, sizeof d, 1, extra);
}

static void op_map(void) {
    int kind;
    struct iommu_ioas_map m = {.ioas_id = any_id(), .user_va = any_user(&kind), .length = any_length(), .iova = any_iova()};
    m.flags = (uint32_t)below(8) | (chance(5) ? 1u << 7 : 0);
    char extra[128];
    snprintf(extra, sizeof extra, " ioas=%u flags=%#x user=%d length=%#" PRIx64 " iova=%#" PRIx64, m.ioas_id, m.flags, kind,
             (uint64_t)m.length, (uint64_t)m.iova);
    int rc = issue("IOAS_MAP", IOMMU_IOAS_MAP, &m, sizeof m, 1, extra);
    if (rc == 0) { printf(" out=%#" PRIx64, (uint64_t)m.iova); remember_iova(m.iova); }
}

static void op_map_file(void) {
    struct iommu_ioas_map_file m = {.ioas_id = any_id(), .fd = chance(85) ? memfd : (int)below(1000) - 1,
                                    .start = chance(80) ? PAGE * below(8) : any_length(), .length = any_length(),
                                    .iova = any_iova()};
    m.flags = (uint32_t)below(8);
    char extra[160];
    snprintf(extra, sizeof extra, " ioas=%u flags=%#x fd=%s start=%#" PRIx64 " length=%#" PRIx64 " iova=%#" PRIx64, m.ioas_id, m.flags,
             m.fd == memfd ? "memfd" : "other", (uint64_t)m.start, (uint64_t)m.length, (uint64_t)m.iova);
    int rc = issue("IOAS_MAP_FILE", IOMMU_IOAS_MAP_FILE, &m, sizeof m, 1, extra);
    if (rc == 0) { printf(" out=%#" PRIx64, (uint64_t)m.iova); remember_iova(m.iova); }
}

static void op_unmap(void) {
    struct iommu_ioas_unmap u = {.ioas_id = any_id(), .iova = chance(10) ? 0 : any_iova(), .length = chance(10) ? UINT64_MAX : any_length()};
    char extra[96];
    snprintf(extra, sizeof extra, " ioas=%u iova=%#" PRIx64 " length=%#" PRIx64, u.ioas_id, (uint64_t)u.iova, (uint64_t)u.length);
    int rc = issue("IOAS_UNMAP", IOMMU_IOAS_UNMAP, &u, sizeof u, 1, extra);
    if (rc == 0) printf(" unmapped=%#" PRIx64, (uint64_t)u.length);
}

static void op_copy(void) {
    struct iommu_ioas_copy c = {.dst_ioas_id = any_id(), .src_ioas_id = any_id(), .length = any_length(),
                                .dst_iova = any_iova(), .src_iova = any_iova()};
    c.flags = (uint32_t)below(8);
    char extra[160];
    snprintf(extra, sizeof extra, " dst=%u src=%u flags=%#x length=%#" PRIx64 " dst_iova=%#" PRIx64 " src_iova=%#" PRIx64,
             c.dst_ioas_id, c.src_ioas_id, c.flags, (uint64_t)c.length, (uint64_t)c.dst_iova, (uint64_t)c.src_iova);
    int rc = issue("IOAS_COPY", IOMMU_IOAS_COPY, &c, sizeof c, 1, extra);
    if (rc == 0) { printf(" out=%#" PRIx64, (uint64_t)c.dst_iova); remember_iova(c.dst_iova); }
}

static void op_iova_ranges(void) {
    int kind;
    struct iommu_ioas_iova_ranges r = {.ioas_id = any_id(), .num_iovas = (uint32_t)below(5)};
    r.allowed_iovas = r.num_iovas ? any_user(&kind) : (kind = 0, 0);
    char extra[64];
    snprintf(extra, sizeof extra, " ioas=%u num=%u user=%d", r.ioas_id, r.num_iovas, kind);
    int rc = issue("IOAS_IOVA_RANGES", IOMMU_IOAS_IOVA_RANGES, &r, sizeof r, 1, extra);
    if (rc == 0 || rc == -EMSGSIZE) {
        printf(" out_num=%u alignment=%#" PRIx64, r.num_iovas, (uint64_t)r.out_iova_alignment);
        if (rc == 0 && kind == 0) {
            struct iommu_iova_range *ranges = (void *)(uintptr_t)r.allowed_iovas;
            for (uint32_t i = 0; i < r.num_iovas; i++) printf(" [%#" PRIx64 ",%#" PRIx64 "]", (uint64_t)ranges[i].start, (uint64_t)ranges[i].last);
        }
    }
}

static void op_allow_iovas(void) {
    int kind = 0;
    struct iommu_ioas_allow_iovas a = {.ioas_id = any_id(), .num_iovas = (uint32_t)below(4)};
    struct iommu_iova_range *ranges = (void *)(BASE + PAGE * (BUFFER_PAGES - 1));
    for (uint32_t i = 0; i < a.num_iovas && i < 4; i++) {
        ranges[i].start = any_iova();
        ranges[i].last = chance(80) ? ranges[i].start + any_length() - 1 : any_iova();
    }
    a.allowed_iovas = chance(85) ? (uint64_t)(uintptr_t)ranges : any_user(&kind);
    char extra[64];
    snprintf(extra, sizeof extra, " ioas=%u num=%u user=%d", a.ioas_id, a.num_iovas, kind);
    issue("IOAS_ALLOW_IOVAS", IOMMU_IOAS_ALLOW_IOVAS, &a, sizeof a, 1, extra);
}

static void op_option(void) {
    struct iommu_option o = {.option_id = (uint32_t)below(3), .op = (uint16_t)below(3), .object_id = chance(50) ? 0 : any_id(),
                             .val64 = below(3)};
    char extra[96];
    snprintf(extra, sizeof extra, " option=%u op=%u object=%u val=%" PRIu64, o.option_id, o.op, o.object_id, (uint64_t)o.val64);
    int rc = issue("OPTION", IOMMU_OPTION, &o, sizeof o, 1, extra);
    if (rc == 0) printf(" out=%" PRIu64, (uint64_t)o.val64);
}

static void op_vfio_ioas(void) {
    struct iommu_vfio_ioas v = {.ioas_id = any_id(), .op = (uint16_t)below(4)};
    char extra[48];
    snprintf(extra, sizeof extra, " op=%u ioas=%u", v.op, v.ioas_id);
    int rc = issue("VFIO_IOAS", IOMMU_VFIO_IOAS, &v, sizeof v, 1, extra);
    if (rc == 0 && v.op == IOMMU_VFIO_IOAS_GET) printf(" out=%u", v.ioas_id);
}

static void op_hwpt_alloc(void) {
    struct iommu_hwpt_alloc h = {.dev_id = any_idev(), .pt_id = any_id(), .flags = (uint32_t)below(16) & ~(chance(70) ? 2u : 0u)};
    h.data_type = chance(80) ? 0 : (uint32_t)below(4);
    char extra[96];
    snprintf(extra, sizeof extra, " dev=%u pt=%u flags=%#x data_type=%u", h.dev_id, h.pt_id, h.flags, h.data_type);
    int rc = issue("HWPT_ALLOC", IOMMU_HWPT_ALLOC, &h, sizeof h, 1, extra);
    if (rc == 0) { printf(" id=%u", h.out_hwpt_id); remember_id(h.out_hwpt_id); }
}

static void op_hw_info(void) {
    int kind = 0;
    struct iommu_hw_info i = {.dev_id = any_idev(), .data_len = (uint32_t)below(64)};
    i.data_uptr = i.data_len ? any_user(&kind) : 0;
    if (chance(10)) i.flags = (uint32_t)below(4);
    char extra[64];
    snprintf(extra, sizeof extra, " dev=%u len=%u user=%d flags=%#x", i.dev_id, i.data_len, kind, i.flags);
    int rc = issue("GET_HW_INFO", IOMMU_GET_HW_INFO, &i, sizeof i, 1, extra);
    if (rc == 0) printf(" type=%u out_len=%u caps=%#" PRIx64, i.out_data_type, i.data_len, (uint64_t)i.out_capabilities);
}

static void op_dirty(void) {
    if (chance(50)) {
        struct iommu_hwpt_set_dirty_tracking d = {.hwpt_id = any_id(), .flags = (uint32_t)below(3)};
        char extra[48];
        snprintf(extra, sizeof extra, " hwpt=%u flags=%#x", d.hwpt_id, d.flags);
        issue("SET_DIRTY_TRACKING", IOMMU_HWPT_SET_DIRTY_TRACKING, &d, sizeof d, 1, extra);
    } else {
        int kind;
        struct iommu_hwpt_get_dirty_bitmap g = {.hwpt_id = any_id(), .flags = (uint32_t)below(3), .iova = any_iova(),
                                                .length = any_length(), .page_size = chance(70) ? PAGE : any_length(),
                                                .data = any_user(&kind)};
        char extra[128];
        snprintf(extra, sizeof extra, " hwpt=%u flags=%#x iova=%#" PRIx64 " length=%#" PRIx64 " page=%#" PRIx64 " user=%d", g.hwpt_id,
                 g.flags, (uint64_t)g.iova, (uint64_t)g.length, (uint64_t)g.page_size, kind);
        issue("GET_DIRTY_BITMAP", IOMMU_HWPT_GET_DIRTY_BITMAP, &g, sizeof g, 1, extra);
    }
}

static void op_fault_alloc(void) {
    struct iommu_fault_alloc f = {.flags = chance(10) ? 1 : 0};
    int rc = issue("FAULT_QUEUE_ALLOC", IOMMU_FAULT_QUEUE_ALLOC, &f, sizeof f, 1, "");
    if (rc == 0) { printf(" id=%u", f.out_fault_id); remember_id(f.out_fault_id); close((int)f.out_fault_fd); }
}

static void op_invalidate(void) {
    int kind;
    struct iommu_hwpt_invalidate v = {.hwpt_id = any_id(), .data_type = (uint32_t)below(4), .entry_len = (uint32_t)below(3) * 8,
                                      .entry_num = (uint32_t)below(3)};
    v.data_uptr = any_user(&kind);
    char extra[96];
    snprintf(extra, sizeof extra, " hwpt=%u type=%u len=%u num=%u user=%d", v.hwpt_id, v.data_type, v.entry_len, v.entry_num, kind);
    int rc = issue("HWPT_INVALIDATE", IOMMU_HWPT_INVALIDATE, &v, sizeof v, 1, extra);
    if (rc == 0 || rc == -EINVAL) printf(" done=%u", v.entry_num);
}

static void op_viommu(void) {
    struct iommu_viommu_alloc v = {.type = (uint32_t)below(3), .dev_id = any_idev(), .hwpt_id = any_id(), .flags = chance(10)};
    char extra[64];
    snprintf(extra, sizeof extra, " type=%u dev=%u hwpt=%u flags=%#x", v.type, v.dev_id, v.hwpt_id, v.flags);
    int rc = issue("VIOMMU_ALLOC", IOMMU_VIOMMU_ALLOC, &v, sizeof v, 1, extra);
    if (rc == 0) { printf(" id=%u", v.out_viommu_id); remember_id(v.out_viommu_id); }
}

/* The test driver's commands. */
static int test_cmd(const char *name, struct iommu_test_cmd *c, const char *extra) {
    c->size = sizeof *c;
    return issue(name, IOMMU_TEST_CMD, c, sizeof *c, chance(85) ? 0 : 1, extra);
}

static void op_mock_domain(void) {
    struct iommu_test_cmd c = {.op = IOMMU_TEST_OP_MOCK_DOMAIN, .id = any_id()};
    if (chance(30)) { c.op = IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS; c.mock_domain_flags.dev_flags = (uint32_t)below(8); }
    char extra[48];
    snprintf(extra, sizeof extra, " op=%u id=%u", c.op, c.id);
    int rc = test_cmd("TEST_MOCK_DOMAIN", &c, extra);
    if (rc == 0) {
        printf(" stdev=%u hwpt=%u idev=%u", c.mock_domain.out_stdev_id, c.mock_domain.out_hwpt_id, c.mock_domain.out_idev_id);
        remember_id(c.mock_domain.out_stdev_id);
        remember_id(c.mock_domain.out_hwpt_id);
        devices[device_count++ % POOL] = c.mock_domain.out_stdev_id;
        idevs[idev_count++ % POOL] = c.mock_domain.out_idev_id;
    }
}

static void op_mock_replace(void) {
    struct iommu_test_cmd c = {.op = IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, .id = any_stdev()};
    c.mock_domain_replace.pt_id = any_id();
    char extra[48];
    snprintf(extra, sizeof extra, " stdev=%u pt=%u", c.id, c.mock_domain_replace.pt_id);
    int rc = test_cmd("TEST_MOCK_REPLACE", &c, extra);
    if (rc == 0) printf(" out=%u", c.mock_domain_replace.pt_id);
}

static void op_add_reserved(void) {
    struct iommu_test_cmd c = {.op = IOMMU_TEST_OP_ADD_RESERVED, .id = any_id()};
    c.add_reserved.start = any_iova();
    c.add_reserved.length = any_length();
    char extra[96];
    snprintf(extra, sizeof extra, " ioas=%u start=%#" PRIx64 " length=%#" PRIx64, c.id, (uint64_t)c.add_reserved.start,
             (uint64_t)c.add_reserved.length);
    test_cmd("TEST_ADD_RESERVED", &c, extra);
}

static void op_access(void) {
    struct iommu_test_cmd c = {.op = IOMMU_TEST_OP_CREATE_ACCESS, .id = any_id()};
    c.create_access.flags = (uint32_t)below(2);
    char extra[48];
    snprintf(extra, sizeof extra, " ioas=%u flags=%#x", c.id, c.create_access.flags);
    int rc = test_cmd("TEST_CREATE_ACCESS", &c, extra);
    if (rc != 0) return;
    int access = (int)c.create_access.out_access_fd;
    printf("\n");
    for (int round = 0; round < 3; round++) {
        int kind;
        struct iommu_test_cmd p = {.op = chance(50) ? IOMMU_TEST_OP_ACCESS_PAGES : IOMMU_TEST_OP_ACCESS_RW, .id = (uint32_t)access};
        p.access_rw.iova = any_iova();
        p.access_rw.length = chance(70) ? 1 + below(2 * PAGE) : any_length();
        p.access_rw.uptr = any_user(&kind);
        p.access_rw.flags = (uint32_t)below(4);
        if (p.op == IOMMU_TEST_OP_ACCESS_PAGES) {
            p.access_pages.flags = (uint32_t)below(2);
            p.access_pages.iova = p.access_rw.iova;
            p.access_pages.length = p.access_rw.length;
            p.access_pages.uptr = p.access_rw.uptr;
        }
        char more[128];
        snprintf(more, sizeof more, " op=%u iova=%#" PRIx64 " length=%#" PRIx64 " user=%d", p.op, (uint64_t)p.access_rw.iova,
                 (uint64_t)p.access_rw.length, kind);
        int r = issue("TEST_ACCESS", IOMMU_TEST_CMD, &p, sizeof p, 0, more);
        if (r == 0 && p.op == IOMMU_TEST_OP_ACCESS_PAGES) {
            printf(" pages=%u", p.access_pages.out_access_pages_id);
            struct iommu_test_cmd d = {.size = sizeof d, .op = IOMMU_TEST_OP_DESTROY_ACCESS_PAGES, .id = (uint32_t)access};
            d.destroy_access_pages.access_pages_id = p.access_pages.out_access_pages_id;
            printf("\n");
            issue("TEST_DESTROY_ACCESS_PAGES", IOMMU_TEST_CMD, &d, sizeof d, 0, "");
        }
        if (round < 2) printf("\n");
    }
    close(access);
}

static void op_pasid(void) {
    struct iommu_test_cmd c = {.op = IOMMU_TEST_OP_PASID_ATTACH + (uint32_t)below(3), .id = any_stdev()};
    c.pasid_attach.pasid = (uint32_t)below(4) + (chance(10) ? 1u << 20 : 0);
    c.pasid_attach.pt_id = any_id();
    char extra[64];
    snprintf(extra, sizeof extra, " op=%u stdev=%u pasid=%u pt=%u", c.op, c.id, c.pasid_attach.pasid, c.pasid_attach.pt_id);
    test_cmd("TEST_PASID", &c, extra);
}

static void op_unknown(void) {
    unsigned long request = _IO(IOMMUFD_TYPE, 0x80 + below(64));
    char extra[32];
    snprintf(extra, sizeof extra, " nr=%#lx", request & 0xff);
    uint64_t buffer[8] = {64};
    issue("UNKNOWN", request, buffer, sizeof buffer, 1, extra);
}

/* ---- the extended set (-x) ------------------------------------------------------------------ */

/* Queue descriptors the run keeps open: fault queues and vEVENT queues, with their IDs. */
static int fault_fds[8], fault_ids[8], fault_count;
static int vevent_fds[8], vevent_count;

/* Objects that chains need, most recent first choice: nest parents, IOPF-capable nested HWPTs,
 * vIOMMUs. Without them random IDs almost never reach a vEVENT or a fault record. */
static uint32_t parents[8], iopf_hwpts[8], viommus[8];
static int parent_count, iopf_count, viommu_count;

static void remember_in(uint32_t *pool, int *count, uint32_t id) { pool[(*count)++ % 8] = id; }
static uint32_t recent_or_any(const uint32_t *pool, int count, int percent) {
    if (count && chance(percent)) return pool[below(count < 8 ? count : 8)];
    return any_id();
}

static void keep(int *fds, int *count, int fd) {
    if (*count < 8) { fds[(*count)++] = fd; return; }
    int slot = (int)below(8);
    close(fds[slot]);
    fds[slot] = fd;
}

static void op_fault_queue(void) {
    struct iommu_fault_alloc f = {0};
    int rc = issue("FAULT_QUEUE_ALLOC", IOMMU_FAULT_QUEUE_ALLOC, &f, sizeof f, 1, " kept");
    if (rc != 0) return;
    printf(" id=%u", f.out_fault_id);
    remember_id(f.out_fault_id);
    if (fault_count == 8) { int slot = (int)below(8); close(fault_fds[slot]); fault_fds[slot] = (int)f.out_fault_fd; fault_ids[slot] = (int)f.out_fault_id; return; }
    fault_ids[fault_count] = (int)f.out_fault_id;
    fault_fds[fault_count++] = (int)f.out_fault_fd;
}

static void op_nested_hwpt(void) {
    struct iommu_hwpt_selftest data = {.iotlb = chance(80) ? IOMMU_TEST_IOTLB_DEFAULT : (uint32_t)below(4)};
    struct iommu_hwpt_alloc h = {.dev_id = any_idev(), .pt_id = recent_or_any(parents, parent_count, 70), .data_type = IOMMU_HWPT_DATA_SELFTEST,
                                 .data_len = chance(90) ? sizeof data : (uint32_t)below(16), .data_uptr = (uintptr_t)&data};
    if (chance(50) && fault_count) { h.flags = IOMMU_HWPT_FAULT_ID_VALID; h.fault_id = (uint32_t)fault_ids[below(fault_count)]; }
    else if (chance(10)) { h.flags = IOMMU_HWPT_FAULT_ID_VALID; h.fault_id = any_id(); }
    if (chance(10)) h.flags |= (uint32_t)below(16);
    char extra[96];
    snprintf(extra, sizeof extra, " nested dev=%u pt=%u flags=%#x fault=%u len=%u", h.dev_id, h.pt_id, h.flags, h.fault_id, h.data_len);
    int rc = issue("HWPT_ALLOC", IOMMU_HWPT_ALLOC, &h, sizeof h, 1, extra);
    if (rc == 0) {
        printf(" id=%u", h.out_hwpt_id);
        remember_id(h.out_hwpt_id);
        if (h.flags == IOMMU_HWPT_FAULT_ID_VALID) remember_in(iopf_hwpts, &iopf_count, h.out_hwpt_id);
    }
}

static void op_nest_parent(void) {
    struct iommu_hwpt_alloc h = {.dev_id = any_idev(), .pt_id = any_id(), .flags = IOMMU_HWPT_ALLOC_NEST_PARENT};
    if (chance(30)) h.flags |= IOMMU_HWPT_ALLOC_DIRTY_TRACKING;
    char extra[64];
    snprintf(extra, sizeof extra, " parent dev=%u pt=%u flags=%#x", h.dev_id, h.pt_id, h.flags);
    int rc = issue("HWPT_ALLOC", IOMMU_HWPT_ALLOC, &h, sizeof h, 1, extra);
    if (rc == 0) { printf(" id=%u", h.out_hwpt_id); remember_id(h.out_hwpt_id); remember_in(parents, &parent_count, h.out_hwpt_id); }
}

/* A mock device moved onto an IOPF-capable nested HWPT, so that its page faults reach a queue. */
static void op_replace_iopf(void) {
    struct iommu_test_cmd c = {.op = IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, .id = any_stdev()};
    c.mock_domain_replace.pt_id = recent_or_any(iopf_hwpts, iopf_count, 80);
    char extra[48];
    snprintf(extra, sizeof extra, " iopf stdev=%u pt=%u", c.id, c.mock_domain_replace.pt_id);
    int rc = test_cmd("TEST_MOCK_REPLACE", &c, extra);
    if (rc == 0) printf(" out=%u", c.mock_domain_replace.pt_id);
}

static void op_selftest_viommu(void) {
    struct iommu_viommu_alloc v = {.type = chance(90) ? IOMMU_VIOMMU_TYPE_SELFTEST : (uint32_t)below(3), .dev_id = any_idev(),
                                   .hwpt_id = recent_or_any(parents, parent_count, 80)};
    char extra[64];
    snprintf(extra, sizeof extra, " selftest type=%#x dev=%u hwpt=%u", v.type, v.dev_id, v.hwpt_id);
    int rc = issue("VIOMMU_ALLOC", IOMMU_VIOMMU_ALLOC, &v, sizeof v, 1, extra);
    if (rc == 0) { printf(" id=%u", v.out_viommu_id); remember_id(v.out_viommu_id); remember_in(viommus, &viommu_count, v.out_viommu_id); }
}

static void op_vdevice(void) {
    struct iommu_vdevice_alloc v = {.viommu_id = recent_or_any(viommus, viommu_count, 80), .dev_id = any_idev(), .virt_id = chance(80) ? below(4) : next()};
    char extra[80];
    snprintf(extra, sizeof extra, " viommu=%u dev=%u virt=%#" PRIx64, v.viommu_id, v.dev_id, (uint64_t)v.virt_id);
    int rc = issue("VDEVICE_ALLOC", IOMMU_VDEVICE_ALLOC, &v, sizeof v, 1, extra);
    if (rc == 0) { printf(" id=%u", v.out_vdevice_id); remember_id(v.out_vdevice_id); }
}

static void op_veventq(void) {
    struct iommu_veventq_alloc v = {.viommu_id = recent_or_any(viommus, viommu_count, 80),
                                    .type = chance(80) ? IOMMU_VEVENTQ_TYPE_SELFTEST : (uint32_t)below(4), .flags = chance(5),
                                    .veventq_depth = chance(80) ? 1 + (uint32_t)below(4) : (uint32_t)below(1u << 20)};
    char extra[80];
    snprintf(extra, sizeof extra, " viommu=%u type=%#x depth=%u flags=%#x", v.viommu_id, v.type, v.veventq_depth, v.flags);
    int rc = issue("VEVENTQ_ALLOC", IOMMU_VEVENTQ_ALLOC, &v, sizeof v, 1, extra);
    if (rc == 0) { printf(" id=%u", v.out_veventq_id); remember_id(v.out_veventq_id); keep(vevent_fds, &vevent_count, (int)v.out_veventq_fd); }
}

static void op_hw_queue(void) {
    struct iommu_hw_queue_alloc q = {.viommu_id = recent_or_any(viommus, viommu_count, 80),
                                     .type = chance(80) ? IOMMU_HW_QUEUE_TYPE_SELFTEST : (uint32_t)below(3), .index = (uint32_t)below(3),
                                     .nesting_parent_iova = any_iova(), .length = chance(70) ? PAGE * (1 + below(2)) : any_length()};
    char extra[112];
    snprintf(extra, sizeof extra, " viommu=%u type=%#x index=%u iova=%#" PRIx64 " length=%#" PRIx64, q.viommu_id, q.type, q.index,
             (uint64_t)q.nesting_parent_iova, (uint64_t)q.length);
    int rc = issue("HW_QUEUE_ALLOC", IOMMU_HW_QUEUE_ALLOC, &q, sizeof q, 1, extra);
    if (rc == 0) { printf(" id=%u", q.out_hw_queue_id); remember_id(q.out_hw_queue_id); }
}

static void op_change_process(void) {
    struct iommu_ioas_change_process c = {.__reserved = chance(10)};
    issue("IOAS_CHANGE_PROCESS", IOMMU_IOAS_CHANGE_PROCESS, &c, sizeof c, 1, "");
}

/* Reads a queue descriptor with a random count (records are whole or nothing); prints what came. */
static void read_queue(const char *name, int fd, int fault) {
    static const size_t counts[] = {0, 8, 16, 39, 40, 48, 80, 120, 4096};
    size_t count = counts[below(sizeof counts / sizeof counts[0])];
    unsigned char buffer[4096];
    errno = 0;
    ssize_t got = read(fd, buffer, count);
    printf("\n%s count=%zu -> %zd %s", name, count, got < 0 ? -1 : got, got < 0 ? strerrorname_np(errno) : "OK");
    if (fault) {
        for (ssize_t at = 0; at + (ssize_t)sizeof(struct iommu_hwpt_pgfault) <= got; at += sizeof(struct iommu_hwpt_pgfault)) {
            struct iommu_hwpt_pgfault r;
            memcpy(&r, buffer + at, sizeof r);
            printf(" [flags=%#x dev=%u pasid=%u grp=%u perm=%#x addr=%#" PRIx64 " len=%u]", r.flags, r.dev_id, r.pasid, r.grpid, r.perm,
                   (uint64_t)r.addr, r.length);
            struct iommu_hwpt_page_response response = {.cookie = r.cookie, .code = (uint32_t)below(2)};
            errno = 0;
            ssize_t put = write(fd, &response, sizeof response);
            printf(" response code=%u -> %zd %s", response.code, put < 0 ? -1 : put, put < 0 ? strerrorname_np(errno) : "OK");
        }
    } else if (got >= (ssize_t)sizeof(struct iommufd_vevent_header)) {
        struct iommufd_vevent_header h;
        memcpy(&h, buffer, sizeof h);
        printf(" [flags=%#x sequence=%u]", h.flags, h.sequence);
    }
}

static void op_trigger_iopf(void) {
    struct iommu_test_cmd c = {.op = IOMMU_TEST_OP_TRIGGER_IOPF};
    c.trigger_iopf.dev_id = any_idev();
    c.trigger_iopf.pasid = (uint32_t)below(4);
    c.trigger_iopf.grpid = (uint32_t)below(4);
    c.trigger_iopf.perm = (uint32_t)below(4);
    c.trigger_iopf.addr = any_iova();
    char extra[96];
    snprintf(extra, sizeof extra, " dev=%u pasid=%u grp=%u perm=%#x addr=%#" PRIx64, c.trigger_iopf.dev_id, c.trigger_iopf.pasid,
             c.trigger_iopf.grpid, c.trigger_iopf.perm, (uint64_t)c.trigger_iopf.addr);
    test_cmd("TEST_TRIGGER_IOPF", &c, extra);
    if (fault_count) read_queue("FAULT_READ", fault_fds[below(fault_count)], 1);
}

static void op_trigger_vevent(void) {
    struct iommu_test_cmd c = {.op = IOMMU_TEST_OP_TRIGGER_VEVENT};
    c.trigger_vevent.dev_id = any_idev();
    char extra[32];
    snprintf(extra, sizeof extra, " dev=%u", c.trigger_vevent.dev_id);
    test_cmd("TEST_TRIGGER_VEVENT", &c, extra);
    if (vevent_count) read_queue("VEVENT_READ", vevent_fds[below(vevent_count)], 0);
}

static void op_mock_checks(void) {
    struct iommu_test_cmd c = {.id = any_id()};
    char extra[112];
    switch (below(3)) {
    case 0:
        c.op = IOMMU_TEST_OP_MD_CHECK_MAP;
        c.check_map.iova = any_iova();
        c.check_map.length = chance(70) ? PAGE * (1 + below(4)) : any_length() % (1UL << 20);
        c.check_map.uptr = BASE + PAGE * below(BUFFER_PAGES / 2);
        snprintf(extra, sizeof extra, " check_map id=%u iova=%#" PRIx64 " length=%#" PRIx64, c.id, (uint64_t)c.check_map.iova,
                 (uint64_t)c.check_map.length);
        break;
    case 1:
        c.op = IOMMU_TEST_OP_MD_CHECK_REFS;
        c.check_refs.length = PAGE * (1 + below(4));
        c.check_refs.uptr = BASE + PAGE * below(BUFFER_PAGES / 2);
        c.check_refs.refs = (uint32_t)below(3);
        snprintf(extra, sizeof extra, " check_refs length=%#" PRIx64 " refs=%u", (uint64_t)c.check_refs.length, c.check_refs.refs);
        break;
    default:
        c.op = IOMMU_TEST_OP_MD_CHECK_IOTLB;
        c.check_iotlb.id = (uint32_t)below(4);
        c.check_iotlb.iotlb = chance(70) ? IOMMU_TEST_IOTLB_DEFAULT : (uint32_t)below(4);
        snprintf(extra, sizeof extra, " check_iotlb hwpt=%u entry=%u", c.id, c.check_iotlb.id);
        break;
    }
    test_cmd("TEST_CHECK", &c, extra);
}

static void setup_memory(void) {
    int rw = PROT_READ | PROT_WRITE, flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE;
    if (mmap((void *)BASE, BUFFER_PAGES * PAGE, rw, flags, -1, 0) == MAP_FAILED ||
        mmap((void *)READ_ONLY, 16 * PAGE, PROT_READ, flags, -1, 0) == MAP_FAILED ||
        mmap((void *)NO_ACCESS, 16 * PAGE, PROT_NONE, flags, -1, 0) == MAP_FAILED ||
        mmap((void *)ARGUMENT, 2 * PAGE, rw, flags, -1, 0) == MAP_FAILED) {
        perror("difffuzz: mmap at the fixed addresses");
        exit(2);
    }
    mprotect((void *)(ARGUMENT + PAGE), PAGE, PROT_NONE);
    memset((void *)BASE, 0x5a, BUFFER_PAGES * PAGE);
    memfd = memfd_create("difffuzz", MFD_CLOEXEC);
    if (memfd < 0 || ftruncate(memfd, 64 * PAGE) != 0) { perror("difffuzz: memfd"); exit(2); }
}

int main(int argc, char **argv) {
    long count = 2000;
    uint64_t seed = 1;
    for (int opt; (opt = getopt(argc, argv, "n:s:Px")) != -1;) {
        if (opt == 'n') count = strtol(optarg, NULL, 0);
        else if (opt == 's') seed = strtoull(optarg, NULL, 0);
        else if (opt == 'P') allow_bad_pointers = 0;
        else if (opt == 'x') extended = 1;
        else { fprintf(stderr, "usage: %s [-n COUNT] [-s SEED] [-P] [-x]\n", argv[0]); return 2; }
    }
    rng_state = seed;
    setvbuf(stdout, NULL, _IOLBF, 0);
    setup_memory();
    iommufd = open("/dev/iommu", O_RDWR | O_CLOEXEC);
    if (iommufd < 0) { perror("difffuzz: open /dev/iommu"); return 2; }
    printf("# difffuzz seed=%" PRIu64 " count=%ld bad-pointers=%d%s\n", seed, count, allow_bad_pointers, extended ? " extended=1" : "");
    static void (*const ops[])(void) = {
        op_ioas_alloc, op_ioas_alloc, op_destroy, op_map, op_map, op_map, op_map_file, op_unmap, op_unmap, op_copy,
        op_iova_ranges, op_allow_iovas, op_option, op_vfio_ioas, op_hwpt_alloc, op_hw_info, op_dirty, op_fault_alloc,
        op_invalidate, op_viommu, op_mock_domain, op_mock_domain, op_mock_replace, op_add_reserved, op_access, op_pasid,
        op_unknown,
    };
    static void (*const extended_ops[])(void) = {
        op_fault_queue, op_nested_hwpt, op_nested_hwpt, op_nest_parent, op_vdevice, op_veventq, op_hw_queue,
        op_change_process, op_trigger_iopf, op_trigger_iopf, op_trigger_vevent, op_mock_checks, op_replace_iopf,
        op_selftest_viommu, op_selftest_viommu, op_vdevice,
    };
    const size_t plain = sizeof ops / sizeof ops[0], more = sizeof extended_ops / sizeof extended_ops[0];
    for (long i = 0; i < count; i++) {
        printf("%ld ", i);
        uint64_t pick = below(extended ? plain + more : plain);
        if (pick < plain) ops[pick]();
        else extended_ops[pick - plain]();
        printf("\n");
    }
    printf("# end\n");
    return 0;
}
