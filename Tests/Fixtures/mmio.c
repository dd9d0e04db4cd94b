/* Trapped MMIO under libioasid-preload.so: `mmio MODE`. The API is found with
 * dlsym(RTLD_DEFAULT), as the engine finds it. The device behind every region is `device`: 256 KiB
 * of registers that loads read and stores write, and a log of every access in order.
 *
 * Modes: accesses (every decoded form, in order, with registers and flags checked), volatile
 * (C code with volatile pointers, as compiled), bus-error, bus-error-default, own-handlers,
 * stack-overflow, default-segv, ignored-segv, unknown, munmap, threads, vector (VEX and EVEX
 * moves, masked ones included), strings (MOVS and STOS), string-segv-default, libc (glibc's
 * memcpy, memmove and memset on a BAR). TrappedMMIOTests.swift builds this file with each
 * available compiler at -O0 and -O2. */
#include "fixture.h"

#include <dlfcn.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

typedef int (*ioasid_mmio_handler)(void *context, uint64_t offset, unsigned size, int is_write, void *data);
typedef void *(*trap_map_fn)(size_t, void *, ioasid_mmio_handler, void *);
typedef int (*trap_unmap_fn)(void *, size_t);
static trap_map_fn trap_map;
static trap_unmap_fn trap_unmap;

/* ---- the device ---- */

#define LOG_SIZE 4096
struct access {
    uint64_t offset;
    unsigned size;
    int is_write;
    uint8_t data[64];
};

#define REGISTER_BYTES (64 * 4096)
struct device {
    uint8_t registers[REGISTER_BYTES];
    _Atomic unsigned sizes[65]; /* accesses by size */
    struct access log[LOG_SIZE];
    _Atomic unsigned count;
    uint64_t bus_error_offset; /* loads and stores here fail */
    int counting_status;       /* offset 0x100 counts up on every read */
};

static int device_access(void *context, uint64_t offset, unsigned size, int is_write, void *data) {
    struct device *device = context;
    if (offset == device->bus_error_offset) return -1;
    unsigned index = atomic_fetch_add(&device->count, 1);
    if (size <= 64) atomic_fetch_add(&device->sizes[size], 1);
    if (index < LOG_SIZE) {
        struct access *entry = &device->log[index];
        entry->offset = offset;
        entry->size = size;
        entry->is_write = is_write;
        if (is_write) memcpy(entry->data, data, size);
    }
    if (offset + size > sizeof device->registers) return -1;
    if (is_write) {
        memcpy(device->registers + offset, data, size);
    } else {
        if (device->counting_status && offset == 0x100) device->registers[0x100]++;
        memcpy(data, device->registers + offset, size);
        if (index < LOG_SIZE) memcpy(device->log[index].data, data, size);
    }
    return 0;
}

static struct device device = {.bus_error_offset = ~0ull};

static void reset(void) {
    memset(device.registers, 0, sizeof device.registers);
    atomic_store(&device.count, 0);
    for (unsigned size = 0; size <= 64; size++) atomic_store(&device.sizes[size], 0);
}

static uint64_t logged_value(unsigned index) {
    uint64_t value = 0;
    memcpy(&value, device.log[index].data, device.log[index].size > 8 ? 8 : device.log[index].size);
    return value;
}

#define EXPECT_ACCESS(index, write, off, sz, val)                                                     \
    CHECK(device.log[index].is_write == (write) && device.log[index].offset == (off) &&                \
              device.log[index].size == (sz) && logged_value(index) == (uint64_t)(val),                \
          "access %u: %s off 0x%llx size %u value 0x%llx; expected %s off 0x%llx size %u value 0x%llx", \
          (unsigned)(index), device.log[index].is_write ? "write" : "read",                            \
          (unsigned long long)device.log[index].offset, device.log[index].size,                        \
          (unsigned long long)logged_value(index), (write) ? "write" : "read",                         \
          (unsigned long long)(off), (unsigned)(sz), (unsigned long long)(val))

static void set_register(uint64_t offset, uint64_t value, unsigned size) {
    memcpy(device.registers + offset, &value, size);
}

static uint8_t *map_region(size_t length, void *hint) {
    uint8_t *region = trap_map(length, hint, device_access, &device);
    CHECK(region != MAP_FAILED, "ioasid_trap_map");
    return region;
}

/* ---- accesses: every decoded form ---- */

static void stores_and_loads(uint8_t *bar) {
    reset();
    *(volatile uint8_t *)(bar + 1) = 0xA1;
    *(volatile uint16_t *)(bar + 2) = 0xB2B3;
    *(volatile uint32_t *)(bar + 4) = 0xC4C5C6C7u;
    *(volatile uint64_t *)(bar + 8) = 0xD8D9DADBDCDDDEDFull;
    CHECK(atomic_load(&device.count) == 4, "four stores, four accesses");
    EXPECT_ACCESS(0, 1, 1, 1, 0xA1);
    EXPECT_ACCESS(1, 1, 2, 2, 0xB2B3);
    EXPECT_ACCESS(2, 1, 4, 4, 0xC4C5C6C7u);
    EXPECT_ACCESS(3, 1, 8, 8, 0xD8D9DADBDCDDDEDFull);
    uint8_t b = *(volatile uint8_t *)(bar + 1);
    uint16_t w = *(volatile uint16_t *)(bar + 2);
    uint32_t d = *(volatile uint32_t *)(bar + 4);
    uint64_t q = *(volatile uint64_t *)(bar + 8);
    CHECK(b == 0xA1 && w == 0xB2B3 && d == 0xC4C5C6C7u && q == 0xD8D9DADBDCDDDEDFull, "loads read back");
    EXPECT_ACCESS(4, 0, 1, 1, 0xA1);
    EXPECT_ACCESS(7, 0, 8, 8, 0xD8D9DADBDCDDDEDFull);
    OK("stores and loads of 1, 2, 4 and 8 bytes in order");

    set_register(0x20, 0x80, 1);
    set_register(0x22, 0x8001, 2);
    set_register(0x24, 0x80000001u, 4);
    int64_t s8 = *(volatile int8_t *)(bar + 0x20);
    int64_t s16 = *(volatile int16_t *)(bar + 0x22);
    int64_t s32 = *(volatile int32_t *)(bar + 0x24);
    uint64_t z8 = *(volatile uint8_t *)(bar + 0x20);
    uint64_t z16 = *(volatile uint16_t *)(bar + 0x22);
    uint64_t z32 = *(volatile uint32_t *)(bar + 0x24);
    CHECK(s8 == -128 && s16 == -32767 && s32 == -2147483647LL, "sign extension: %lld %lld %lld",
          (long long)s8, (long long)s16, (long long)s32);
    CHECK(z8 == 0x80 && z16 == 0x8001 && z32 == 0x80000001u, "zero extension");
    OK("sign and zero extension");
}

static void partial_registers(uint8_t *bar) {
    reset();
    set_register(0x40, 0x8877665544332211ull, 8);
    uint64_t rax = 0xAAAAAAAAAAAAAAAAull;
    __asm__ volatile("movb (%1), %%al" : "+a"(rax) : "r"(bar + 0x40) : "memory");
    CHECK(rax == 0xAAAAAAAAAAAAAA11ull, "movb -> al: %llx", (unsigned long long)rax);
    rax = 0xAAAAAAAAAAAAAAAAull;
    __asm__ volatile("movb (%1), %%ah" : "+a"(rax) : "r"(bar + 0x41) : "memory");
    CHECK(rax == 0xAAAAAAAAAAAA22AAull, "movb -> ah: %llx", (unsigned long long)rax);
    uint64_t rbx = 0xBBBBBBBBBBBBBBBBull;
    __asm__ volatile("movb (%1), %%bh" : "+b"(rbx) : "r"(bar + 0x42) : "memory");
    CHECK(rbx == 0xBBBBBBBBBBBB33BBull, "movb -> bh: %llx", (unsigned long long)rbx);
    uint64_t rsi = 0x5555555555555555ull;
    __asm__ volatile("movb (%1), %%sil" : "+S"(rsi) : "r"(bar + 0x43) : "memory");
    CHECK(rsi == 0x5555555555555544ull, "movb -> sil (REX): %llx", (unsigned long long)rsi);
    uint64_t r9 = 0x9999999999999999ull;
    __asm__ volatile("mov %0, %%r9\n\tmovb (%1), %%r9b\n\tmov %%r9, %0" : "+r"(r9) : "r"(bar + 0x44) : "memory", "r9");
    CHECK(r9 == 0x9999999999999955ull, "movb -> r9b: %llx", (unsigned long long)r9);
    rax = 0xAAAAAAAAAAAAAAAAull;
    __asm__ volatile("movw (%1), %%ax" : "+a"(rax) : "r"(bar + 0x40) : "memory");
    CHECK(rax == 0xAAAAAAAAAAAA2211ull, "movw -> ax: %llx", (unsigned long long)rax);
    rax = 0xAAAAAAAAAAAAAAAAull;
    __asm__ volatile("movl (%1), %%eax" : "+a"(rax) : "r"(bar + 0x40) : "memory");
    CHECK(rax == 0x44332211ull, "movl -> eax zero-extends: %llx", (unsigned long long)rax);
    uint64_t r12 = 0;
    __asm__ volatile("movq (%1), %%r12\n\tmov %%r12, %0" : "=r"(r12) : "r"(bar + 0x40) : "memory", "r12");
    CHECK(r12 == 0x8877665544332211ull, "movq -> r12");
    rax = 0xAAAAAAAAAAAAAAAAull;
    __asm__ volatile("movzbw (%1), %%ax" : "+a"(rax) : "r"(bar + 0x47) : "memory");
    CHECK(rax == 0xAAAAAAAAAAAA0088ull, "movzbw -> ax keeps the upper bits: %llx", (unsigned long long)rax);
    rax = 0xAAAAAAAAAAAAAAAAull;
    __asm__ volatile("movsbl (%1), %%eax" : "+a"(rax) : "r"(bar + 0x47) : "memory");
    CHECK(rax == 0xFFFFFF88ull, "movsbl -> eax: %llx", (unsigned long long)rax);
    rax = 0;
    __asm__ volatile("movswq (%1), %%rax" : "+a"(rax) : "r"(bar + 0x46) : "memory");
    CHECK(rax == 0xFFFFFFFFFFFF8877ull, "movswq -> rax: %llx", (unsigned long long)rax);
    __asm__ volatile("movslq (%1), %%rax" : "+a"(rax) : "r"(bar + 0x44) : "memory");
    CHECK(rax == 0xFFFFFFFF88776655ull, "movslq -> rax: %llx", (unsigned long long)rax);
    OK("partial register writes (al, ah, bh, sil, r9b, ax, eax, movzx, movsx, movsxd)");

    reset();
    uint64_t high = 0x00000000000077FFull; /* AH = 0x77 */
    __asm__ volatile("movb %%ah, (%0)" : : "r"(bar + 0x50), "a"(high) : "memory");
    uint64_t r10v = 0x0123456789ABCDEFull;
    __asm__ volatile("mov %1, %%r10\n\tmovw %%r10w, (%0)" : : "r"(bar + 0x52), "r"(r10v) : "memory", "r10");
    EXPECT_ACCESS(0, 1, 0x50, 1, 0x77);
    EXPECT_ACCESS(1, 1, 0x52, 2, 0xCDEF);
    OK("stores from ah and r10w");
}

static void immediates(uint8_t *bar) {
    reset();
    __asm__ volatile("movb $0x5a, (%0)" : : "r"(bar + 0x60) : "memory");
    __asm__ volatile("movw $0x1234, (%0)" : : "r"(bar + 0x62) : "memory");
    __asm__ volatile("movl $0xdeadbeef, (%0)" : : "r"(bar + 0x64) : "memory");
    __asm__ volatile("movq $-2, (%0)" : : "r"(bar + 0x68) : "memory");
    EXPECT_ACCESS(0, 1, 0x60, 1, 0x5A);
    EXPECT_ACCESS(1, 1, 0x62, 2, 0x1234);
    EXPECT_ACCESS(2, 1, 0x64, 4, 0xDEADBEEFu);
    EXPECT_ACCESS(3, 1, 0x68, 8, 0xFFFFFFFFFFFFFFFEull);
    OK("immediate stores (imm64 sign-extended from imm32)");
}

/* A page for generated code near `near` (RIP-relative encodings reach +-2 GiB). */
static uint8_t *code_page_near(uint8_t *near) {
    uint8_t *page = mmap(near - 64 * 4096, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(page != MAP_FAILED, "mmap code page");
    int64_t distance = (int64_t)(uint64_t)near - (int64_t)(uint64_t)page;
    CHECK(distance < (1ll << 30) && distance > -(1ll << 30), "code page within reach");
    return page;
}

/* Runs the code on `page` (ending in ret) as a function of two arguments. */
static uint64_t run_code(uint8_t *page, const uint8_t *code, size_t length, uint64_t rdi, uint64_t rsi) {
    memcpy(page, code, length);
    CHECK(mprotect(page, 4096, PROT_READ | PROT_EXEC) == 0, "mprotect code page");
    uint64_t (*function)(uint64_t, uint64_t) = (uint64_t (*)(uint64_t, uint64_t))(void *)page;
    uint64_t result = function(rdi, rsi);
    munmap(page, 4096);
    return result;
}

static void addressing(uint8_t *bar) {
    reset();
    set_register(0x98, 0x11223344u, 4);
    uint32_t value;
    uint64_t index = 3;
    __asm__ volatile("movl 0x80(%1,%2,8), %0" : "=r"(value) : "r"(bar), "r"(index) : "memory");
    CHECK(value == 0x11223344u, "base+index*8+disp");
    EXPECT_ACCESS(0, 0, 0x98, 4, 0x11223344u);
    uint8_t *minus = bar + 0x200;
    __asm__ volatile("movl %1, -0x1f4(%0,%2,4)" : : "r"(minus), "r"(0xABCDu), "r"(index) : "memory");
    EXPECT_ACCESS(1, 1, 0x18, 4, 0xABCDu);
    OK("base + index * scale + displacement");

    /* RIP-relative: mov eax, [rip + disp32]; mov [rip + disp32], edx; ret — from a page just
     * below the region. */
    uint8_t *code_page = code_page_near(bar);
    uint64_t next = (uint64_t)code_page + 6;
    int32_t disp = (int32_t)((int64_t)(uint64_t)(bar + 0x120) - (int64_t)next);
    uint64_t next_store = (uint64_t)code_page + 12;
    int32_t disp_store = (int32_t)((int64_t)(uint64_t)(bar + 0x124) - (int64_t)next_store);
    uint8_t code[13] = {0x8B, 0x05, 0, 0, 0, 0, 0x89, 0x35, 0, 0, 0, 0, 0xC3};
    memcpy(code + 2, &disp, 4);
    memcpy(code + 8, &disp_store, 4);
    reset();
    set_register(0x120, 0xCAFEF00Du, 4);
    uint64_t loaded = run_code(code_page, code, sizeof code, 0, 0x5EED);
    CHECK((uint32_t)loaded == 0xCAFEF00Du, "RIP-relative load: %llx", (unsigned long long)loaded);
    EXPECT_ACCESS(0, 0, 0x120, 4, 0xCAFEF00Du);
    EXPECT_ACCESS(1, 1, 0x124, 4, 0x5EED);
    OK("RIP-relative addressing");
}

/* A 4 KiB trapped region at 0x50000000 (below 2 GiB, for 32-bit addresses), or NULL after
 * printing "ok WHAT skipped" when that address is taken. */
static uint8_t *map_low_region(const char *what) {
    uint8_t *low = trap_map(4096, (void *)0x50000000, device_access, &device);
    if (low == (uint8_t *)0x50000000) return low;
    if (low != MAP_FAILED) trap_unmap(low, 4096);
    OK("%s skipped (0x50000000 taken)", what);
    return NULL;
}

static void absolute_addressing(void) {
    /* A region below 2 GiB: an absolute disp32 with an index and no base, and a moffs64. */
    uint8_t *low = map_low_region("absolute addressing");
    if (low == NULL) return;
    reset();
    set_register(0x30, 0x77665544u, 4);
    uint32_t value;
    __asm__ volatile("movl 0x50000010(,%1,4), %0" : "=r"(value) : "r"((uint64_t)8) : "memory");
    CHECK(value == 0x77665544u, "index*4 + disp32, no base");
    uint64_t rax = 0;
    __asm__ volatile("movabsl 0x50000030, %%eax" : "+a"(rax) : : "memory");
    CHECK(rax == 0x77665544u, "moffs load");
    __asm__ volatile("movabsb %%al, 0x50000031" : : "a"(0x99) : "memory");
    EXPECT_ACCESS(2, 1, 0x31, 1, 0x99);
    CHECK(trap_unmap(low, 4096) == 0, "unmap low region");
    OK("absolute addressing (SIB without base, moffs)");
}

static void exchange_and_alu(uint8_t *bar) {
    reset();
    set_register(0x400, 0x10, 4);
    uint64_t rax = 0x99;
    __asm__ volatile("xchgl %%eax, (%1)" : "+a"(rax) : "r"(bar + 0x400) : "memory");
    CHECK(rax == 0x10, "xchg returns the old value");
    EXPECT_ACCESS(0, 0, 0x400, 4, 0x10);
    EXPECT_ACCESS(1, 1, 0x400, 4, 0x99);

    reset();
    set_register(0x404, 0x6, 4);
    uint8_t zero, carry, sign;
    __asm__ volatile("orl $1, (%0)" : : "r"(bar + 0x404) : "memory", "cc");
    EXPECT_ACCESS(0, 0, 0x404, 4, 0x6);
    EXPECT_ACCESS(1, 1, 0x404, 4, 0x7);
    __asm__ volatile("testl $8, (%1)\n\tsetz %0" : "=r"(zero) : "r"(bar + 0x404) : "memory", "cc");
    CHECK(zero == 1 && atomic_load(&device.count) == 3, "testl sets ZF and only reads");
    __asm__ volatile("cmpl $7, (%1)\n\tsetz %0" : "=r"(zero) : "r"(bar + 0x404) : "memory", "cc");
    CHECK(zero == 1, "cmpl equal");
    __asm__ volatile("cmpl $8, (%2)\n\tsetc %0\n\tsets %1" : "=r"(carry), "=r"(sign) : "r"(bar + 0x404) : "memory", "cc");
    CHECK(carry == 1 && sign == 1, "cmpl below sets CF and SF");
    set_register(0x408, 0xFF, 1);
    __asm__ volatile("incb (%1)\n\tsetz %0" : "=r"(zero) : "r"(bar + 0x408) : "memory", "cc");
    CHECK(zero == 1 && device.registers[0x408] == 0, "incb wraps and sets ZF");
    uint64_t amount = 0x100000000ull;
    set_register(0x410, 0xFFFFFFFFull, 8);
    __asm__ volatile("addq %0, (%1)" : : "r"(amount), "r"(bar + 0x410) : "memory", "cc");
    uint64_t sum = 0;
    memcpy(&sum, device.registers + 0x410, 8);
    CHECK(sum == 0x1FFFFFFFFull, "addq reg to memory");
    uint32_t eax = 100;
    set_register(0x418, 30, 4);
    __asm__ volatile("subl (%1), %0" : "+r"(eax) : "r"(bar + 0x418) : "memory", "cc");
    CHECK(eax == 70, "subl memory source into a register");
    uint64_t stc_result = 0;
    set_register(0x41C, 1, 4);
    __asm__ volatile("stc\n\tadcl $0, (%1)\n\tmovl (%1), %k0" : "=r"(stc_result) : "r"(bar + 0x41C) : "memory", "cc");
    CHECK(stc_result == 2, "adc uses CF");
    __asm__ volatile("notl (%0)" : : "r"(bar + 0x41C) : "memory");
    CHECK(*(uint32_t *)(device.registers + 0x41C) == 0xFFFFFFFDu, "notl");
    OK("xchg and read-modify-write/compare forms with flags");
}

static void sse(uint8_t *bar) {
    reset();
    set_register(0x500, 0x0807060504030201ull, 8);
    set_register(0x508, 0x100F0E0D0C0B0A09ull, 8);
    uint64_t low = 0;
    __asm__ volatile("movd (%1), %%xmm1\n\tmovq %%xmm1, %0" : "=r"(low) : "r"(bar + 0x500) : "memory", "xmm1");
    CHECK(low == 0x04030201u, "movd xmm load zero-extends: %llx", (unsigned long long)low);
    __asm__ volatile("movq (%1), %%xmm2\n\tmovq %%xmm2, %0" : "=r"(low) : "r"(bar + 0x500) : "memory", "xmm2");
    CHECK(low == 0x0807060504030201ull, "movq xmm load");
    uint8_t out[16] __attribute__((aligned(16)));
    __asm__ volatile("movdqu (%0), %%xmm3\n\tmovdqu %%xmm3, (%1)" : : "r"(bar + 0x500), "r"(out) : "memory", "xmm3");
    for (int i = 0; i < 16; i++) CHECK(out[i] == i + 1, "movdqu load byte %d", i);
    __asm__ volatile("movdqa (%0), %%xmm4\n\tmovdqa %%xmm4, (%1)" : : "r"(out), "r"(bar + 0x520) : "memory", "xmm4");
    unsigned last = atomic_load(&device.count) - 1;
    CHECK(device.log[last].is_write && device.log[last].size == 16 && device.log[last].offset == 0x520 &&
              memcmp(device.log[last].data, out, 16) == 0, "movdqa store of 16 bytes");
    uint64_t value = 0x1122334455667788ull;
    __asm__ volatile("movq %0, %%xmm5\n\tmovq %%xmm5, (%1)\n\tmovd %%xmm5, (%2)" : : "r"(value), "r"(bar + 0x530), "r"(bar + 0x538) : "memory", "xmm5");
    EXPECT_ACCESS(last + 1, 1, 0x530, 8, 0x1122334455667788ull);
    EXPECT_ACCESS(last + 2, 1, 0x538, 4, 0x55667788u);
    if (__builtin_cpu_supports("avx")) {
        /* With every vector register zero (their init state), a load into one must still land. */
        __asm__ volatile("vzeroall\n\tmovd (%1), %%xmm0\n\tmovq %%xmm0, %0" : "=r"(low) : "r"(bar + 0x500)
                         : "memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8",
                           "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
        CHECK(low == 0x04030201u, "movd into xmm0 after vzeroall: %llx", (unsigned long long)low);
    }
    OK("SSE moves (movd, movq, movdqu, movdqa)");
}

static void direct_stores(uint8_t *bar) {
    reset();
    uint8_t source[64] __attribute__((aligned(64)));
    for (int i = 0; i < 64; i++) source[i] = (uint8_t)(0xC0 + i);
    /* movdir64b (%rdi), %rax: 66 0F 38 F8 /r, ModRM 0x07 (reg = rax: destination; rm = [rdi]). */
    __asm__ volatile(".byte 0x66, 0x0f, 0x38, 0xf8, 0x07" : : "a"(bar + 0x640), "D"(source) : "memory");
    CHECK(atomic_load(&device.count) == 1, "one access for MOVDIR64B");
    CHECK(device.log[0].is_write && device.log[0].size == 64 && device.log[0].offset == 0x640 &&
              memcmp(device.log[0].data, source, 64) == 0, "MOVDIR64B writes 64 bytes");
    /* movdiri %eax, (%rdi): 0F 38 F9 /r, ModRM 0x07; with REX.W for 8 bytes. */
    __asm__ volatile(".byte 0x0f, 0x38, 0xf9, 0x07" : : "a"(0x12345678u), "D"(bar + 0x700) : "memory");
    __asm__ volatile(".byte 0x48, 0x0f, 0x38, 0xf9, 0x07" : : "a"(0x1122334455667788ull), "D"(bar + 0x708) : "memory");
    EXPECT_ACCESS(1, 1, 0x700, 4, 0x12345678u);
    EXPECT_ACCESS(2, 1, 0x708, 8, 0x1122334455667788ull);
    /* movnti */
    __asm__ volatile("movnti %0, (%1)" : : "r"(0xFEEDu), "r"(bar + 0x710) : "memory");
    EXPECT_ACCESS(3, 1, 0x710, 4, 0xFEEDu);
    OK("MOVDIR64B, MOVDIRI and MOVNTI");
}

/* ---- volatile: what compilers emit ---- */

#define REG32(bar, offset) (*(volatile uint32_t *)((bar) + (offset)))
#define REG8(bar, offset) (*(volatile uint8_t *)((bar) + (offset)))
#define REG16(bar, offset) (*(volatile uint16_t *)((bar) + (offset)))
#define REG64(bar, offset) (*(volatile uint64_t *)((bar) + (offset)))

static __attribute__((noinline)) void driver(uint8_t *bar) {
    REG32(bar, 0x10) = 1;                 /* reset */
    while ((REG32(bar, 0x100) & 4) == 0); /* the status counts up: bit 2 after four reads */
    REG32(bar, 0x14) |= 0x80;             /* enable */
    REG8(bar, 0x18) += 1;
    if (REG16(bar, 0x1A) == 0) REG64(bar, 0x20) = 0x1234567890ull;
    REG32(bar, 0x14) &= ~1u;
}

static void volatile_code(uint8_t *bar) {
    reset();
    device.counting_status = 1;
    set_register(0x14, 0x3, 4);
    set_register(0x18, 0x41, 1);
    driver(bar);
    device.counting_status = 0;
    unsigned n = atomic_load(&device.count);
    unsigned i = 0;
    EXPECT_ACCESS(i, 1, 0x10, 4, 1); i++;
    for (unsigned status = 1; status <= 4; status++) { EXPECT_ACCESS(i, 0, 0x100, 4, status); i++; }
    EXPECT_ACCESS(i, 0, 0x14, 4, 0x3); i++;
    EXPECT_ACCESS(i, 1, 0x14, 4, 0x83); i++;
    EXPECT_ACCESS(i, 0, 0x18, 1, 0x41); i++;
    EXPECT_ACCESS(i, 1, 0x18, 1, 0x42); i++;
    EXPECT_ACCESS(i, 0, 0x1A, 2, 0); i++;
    EXPECT_ACCESS(i, 1, 0x20, 8, 0x1234567890ull); i++;
    EXPECT_ACCESS(i, 0, 0x14, 4, 0x83); i++;
    EXPECT_ACCESS(i, 1, 0x14, 4, 0x82); i++;
    CHECK(n == i, "%u accesses, expected %u", n, i);
    OK("volatile driver code: %u accesses in program order", n);
}

/* ---- signals ---- */

static sigjmp_buf jump;
static volatile sig_atomic_t handler_calls;
static siginfo_t last_info;
static int last_signal;

static void record_and_jump(int signo, siginfo_t *info, void *context) {
    (void)context;
    handler_calls++;
    last_signal = signo;
    last_info = *info;
    siglongjmp(jump, 1);
}

static void plain_handler(int signo) {
    handler_calls++;
    last_signal = signo;
    siglongjmp(jump, 1);
}

/* An address in the unmapped first page, hidden from the compiler's bounds checks. */
static uintptr_t volatile low_page;
static volatile int *unmapped(uintptr_t offset) { return (volatile int *)(low_page + offset); }

static void install(int signo, void (*handler)(int, siginfo_t *, void *), int flags) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = handler;
    action.sa_flags = SA_SIGINFO | flags;
    sigemptyset(&action.sa_mask);
    CHECK(sigaction(signo, &action, NULL) == 0, "sigaction");
}

static void no_core_dumps(void) {
    struct rlimit none = {0, 0};
    setrlimit(RLIMIT_CORE, &none);
}

static void bus_error(void) {
    uint8_t *bar = map_region(4096, NULL);
    device.bus_error_offset = 0xBA0;
    install(SIGBUS, record_and_jump, 0);
    handler_calls = 0;
    if (sigsetjmp(jump, 1) == 0) {
        (void)*(volatile uint32_t *)(bar + 0xBA0);
        CHECK(0, "the load returned");
    }
    CHECK(handler_calls == 1 && last_signal == SIGBUS, "SIGBUS reached the program's handler");
    CHECK(last_info.si_code == BUS_ADRERR && last_info.si_addr == bar + 0xBA0, "siginfo: code %d addr %p",
          last_info.si_code, last_info.si_addr);
    if (sigsetjmp(jump, 1) == 0) {
        *(volatile uint64_t *)(bar + 0xBA0) = 1;
        CHECK(0, "the store returned");
    }
    CHECK(handler_calls == 2, "a failed store raises SIGBUS too");
    (void)*(volatile uint32_t *)(bar + 0xBA4);
    OK("bus error from the handler raises SIGBUS with si_addr");
}

static void bus_error_default(void) {
    no_core_dumps();
    uint8_t *bar = map_region(4096, NULL);
    device.bus_error_offset = 0x10;
    printf("ready\n");
    fflush(stdout);
    (void)*(volatile uint32_t *)(bar + 0x10);
    CHECK(0, "survived a bus error without a handler");
}

static void own_handlers(void) {
    /* A handler installed before the first region, and one after. */
    install(SIGSEGV, record_and_jump, 0);
    uint8_t *bar = map_region(4096, NULL);
    struct sigaction query;
    CHECK(sigaction(SIGSEGV, NULL, &query) == 0 && (query.sa_flags & SA_SIGINFO) &&
              query.sa_sigaction == record_and_jump, "sigaction reports the program's handler, not ours");
    handler_calls = 0;
    if (sigsetjmp(jump, 1) == 0) {
        (void)*unmapped(0);
        CHECK(0, "NULL dereference returned");
    }
    CHECK(handler_calls == 1 && last_signal == SIGSEGV && last_info.si_addr == NULL &&
              last_info.si_code == SEGV_MAPERR, "the program's SIGSEGV handler saw its own fault (code %d)",
          last_info.si_code);
    *(volatile uint32_t *)(bar + 4) = 5; /* trapping still works */
    CHECK(device.registers[4] == 5, "trapping after the program's fault");
    OK("the program's SIGSEGV handler gets its own faults with siginfo");

    /* signal() after mapping: old handler returned; a handler without SA_SIGINFO. */
    sighandler_t previous = signal(SIGSEGV, plain_handler);
    CHECK(previous == (sighandler_t)(void *)record_and_jump, "signal() returns the previous handler");
    handler_calls = 0;
    if (sigsetjmp(jump, 1) == 0) (void)*unmapped(8);
    CHECK(handler_calls == 1 && last_signal == SIGSEGV, "plain handler called");

    /* SA_RESETHAND: called once, then the action is SIG_DFL. */
    install(SIGSEGV, record_and_jump, SA_RESETHAND | SA_NODEFER);
    if (sigsetjmp(jump, 1) == 0) (void)*unmapped(16);
    CHECK(sigaction(SIGSEGV, NULL, &query) == 0 && query.sa_handler == SIG_DFL, "SA_RESETHAND resets");
    OK("signal(), handlers without SA_SIGINFO, SA_RESETHAND");

    /* The mask in the program's handler: the signal itself and sa_mask are blocked. */
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = record_and_jump;
    action.sa_flags = SA_SIGINFO;
    sigemptyset(&action.sa_mask);
    sigaddset(&action.sa_mask, SIGUSR2);
    CHECK(sigaction(SIGSEGV, &action, NULL) == 0, "sigaction");
    static sigset_t seen;
    if (sigsetjmp(jump, 0) == 0) (void)*unmapped(24);
    sigprocmask(SIG_SETMASK, NULL, &seen); /* sigsetjmp(.., 0): the handler's mask is still in force */
    CHECK(sigismember(&seen, SIGSEGV) && sigismember(&seen, SIGUSR2), "handler mask has the signal and sa_mask");
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);

    /* SIGILL passes through to the program's handler (ud2 is not a direct store). */
    install(SIGILL, record_and_jump, 0);
    handler_calls = 0;
    if (sigsetjmp(jump, 1) == 0) __asm__ volatile("ud2");
    CHECK(handler_calls == 1 && last_signal == SIGILL && last_info.si_code == ILL_ILLOPN, "SIGILL reached the program");

    /* A user-sent SIGSEGV with SIG_IGN is ignored. */
    signal(SIGSEGV, SIG_IGN);
    kill(getpid(), SIGSEGV);
    OK("signal masks, SIGILL and ignored user-sent SIGSEGV");
}

/* Stack overflow caught on an alternate stack: our handler must run there too. */
static volatile int keep_going = 1;
static __attribute__((noinline)) int recurse(int depth) {
    volatile char frame[1024];
    frame[0] = (char)depth;
    if (!keep_going) return frame[0];
    return recurse(depth + 1) + frame[0];
}

static void stack_overflow(void) {
    struct rlimit stack = {8 << 20, 8 << 20};
    setrlimit(RLIMIT_STACK, &stack);
    (void)map_region(4096, NULL);
    static uint8_t alternate[64 * 1024];
    stack_t altstack = {.ss_sp = alternate, .ss_size = sizeof alternate, .ss_flags = 0};
    CHECK(sigaltstack(&altstack, NULL) == 0, "sigaltstack");
    install(SIGSEGV, record_and_jump, SA_ONSTACK);
    handler_calls = 0;
    if (sigsetjmp(jump, 1) == 0) {
        recurse(0);
        CHECK(0, "infinite recursion returned");
    }
    CHECK(handler_calls == 1 && last_signal == SIGSEGV, "the program's handler caught the stack overflow");
    OK("stack overflow caught on the program's alternate stack");
}

static void default_segv(int ignored) {
    no_core_dumps();
    (void)map_region(4096, NULL);
    if (ignored) signal(SIGSEGV, SIG_IGN);
    printf("ready\n");
    fflush(stdout);
    (void)*unmapped(0);
    CHECK(0, "survived a NULL dereference");
}

static void unknown(void) {
    no_core_dumps();
    uint8_t *bar = map_region(4096, NULL);
    install(SIGBUS, record_and_jump, 0); /* not called: the failure is ours, not the device's */
    printf("ready\n");
    fflush(stdout);
    uint32_t value = 3;
    __asm__ volatile("imull (%1), %0" : "+r"(value) : "r"(bar + 0x40) : "memory", "cc");
    CHECK(0, "an unknown instruction completed");
}

static void unmapping(void) {
    install(SIGSEGV, record_and_jump, 0);
    uint8_t *bar = map_region(3 * 4096, NULL);
    *(volatile uint32_t *)(bar + 4096 + 8) = 1;
    CHECK(munmap(bar + 4096, 4096) == 0, "munmap of the middle page");
    reset();
    *(volatile uint32_t *)(bar + 12) = 2;
    *(volatile uint32_t *)(bar + 2 * 4096 + 12) = 3;
    EXPECT_ACCESS(0, 1, 12, 4, 2);
    EXPECT_ACCESS(1, 1, 2 * 4096 + 12, 4, 3);
    handler_calls = 0;
    if (sigsetjmp(jump, 1) == 0) (void)*(volatile uint32_t *)(bar + 4096 + 8);
    CHECK(handler_calls == 1 && last_info.si_addr == bar + 4096 + 8, "the unmapped page faults to the program");
    CHECK(trap_unmap(bar, 4096) == 0, "ioasid_trap_unmap of the first page");
    if (sigsetjmp(jump, 1) == 0) (void)*(volatile uint32_t *)(bar + 12);
    CHECK(handler_calls == 2, "the first page faults after ioasid_trap_unmap");
    CHECK(munmap(bar + 2 * 4096, 4096) == 0, "munmap of the last page");
    if (sigsetjmp(jump, 1) == 0) (void)*(volatile uint32_t *)(bar + 2 * 4096);
    CHECK(handler_calls == 3 && atomic_load(&device.count) == 2, "no access after munmap");
    errno = 0;
    CHECK(trap_map(100, NULL, device_access, &device) == MAP_FAILED && errno == EINVAL, "length not a page multiple");
    OK("munmap and ioasid_trap_unmap end trapping (whole and part)");
}

/* ---- vector: VEX and EVEX moves between a register and memory ---- */

/* Every vector register a case may use, for the compiler (16-31 it does not know without
 * -mavx512f, and does not use either). */
#define VECTOR_CLOBBERS "memory", "cc", "r13", "r14", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", \
                        "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15"

static uint8_t vector_source[64] __attribute__((aligned(64)));
static uint8_t vector_ones[64] __attribute__((aligned(64)));
static uint8_t vector_out[64] __attribute__((aligned(64)));

static void fill_registers(uint64_t offset, size_t length, uint8_t seed) {
    for (size_t i = 0; i < length; i++) device.registers[offset + i] = (uint8_t)(seed + 7 * i);
}

/* The store `name` wrote `bytes` bytes of vector_source at `offset`, in one access. */
static void check_vector_store(unsigned before, uint64_t offset, unsigned bytes, const char *name) {
    unsigned count = atomic_load(&device.count);
    CHECK(count == before + 1, "%s: %u accesses", name, count - before);
    struct access *entry = &device.log[before];
    CHECK(entry->is_write && entry->offset == offset && entry->size == bytes &&
              memcmp(entry->data, vector_source, bytes) == 0,
          "%s: %s off 0x%llx size %u", name, entry->is_write ? "write" : "read", (unsigned long long)entry->offset,
          entry->size);
}

/* The load `name` read `bytes` bytes at `offset` in one access, and the whole register (saved
 * in vector_out, `saved` bytes) holds them with every bit above them zero. */
static void check_vector_load(unsigned before, uint64_t offset, unsigned bytes, unsigned saved, const char *name) {
    unsigned count = atomic_load(&device.count);
    CHECK(count == before + 1, "%s: %u accesses", name, count - before);
    struct access *entry = &device.log[before];
    CHECK(!entry->is_write && entry->offset == offset && entry->size == bytes, "%s: %s off 0x%llx size %u", name,
          entry->is_write ? "write" : "read", (unsigned long long)entry->offset, entry->size);
    CHECK(memcmp(vector_out, device.registers + offset, bytes) == 0, "%s: the register holds what was read", name);
    for (unsigned i = bytes; i < saved; i++)
        CHECK(vector_out[i] == 0, "%s: byte %u of the register is 0x%02x, not zeroed", name, i, vector_out[i]);
}

/* A store: `fill` loads vector_source (%rsi) into the register, `store` writes it to (%rdi). */
#define VSTORE(fill, store, bytes)                                                                   \
    do {                                                                                             \
        unsigned before_ = atomic_load(&device.count);                                               \
        __asm__ volatile(fill "\n\t" store : : "D"(bar + 0x900), "S"(vector_source) : VECTOR_CLOBBERS); \
        check_vector_store(before_, 0x900, bytes, store);                                            \
    } while (0)

/* A load: `fill` sets every bit of the register from vector_ones (%rsi), `load` reads (%rdi),
 * `save` writes the whole register to vector_out (%rdx). */
#define VLOAD(fill, load, save, bytes, saved)                                                        \
    do {                                                                                             \
        unsigned before_ = atomic_load(&device.count);                                               \
        memset(vector_out, 0x5A, sizeof vector_out);                                                 \
        __asm__ volatile(fill "\n\t" load "\n\t" save                                                \
                         : : "D"(bar + 0x900), "S"(vector_ones), "d"(vector_out) : VECTOR_CLOBBERS);  \
        check_vector_load(before_, 0x900, bytes, saved, load);                                       \
    } while (0)

#define ZMM_ONES(n) "vmovdqu64 (%%rsi), %%zmm" #n
#define ZMM_SAVE(n) "vmovdqu64 %%zmm" #n ", (%%rdx)"

static int have_avx512(void) {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw");
}

static void vex_moves(uint8_t *bar) {
    reset();
    fill_registers(0x900, 0x100, 0x31);
    for (int i = 0; i < 64; i++) vector_source[i] = (uint8_t)(0xA0 + i);
    memset(vector_ones, 0xFF, sizeof vector_ones);

    VSTORE("vmovdqu (%%rsi), %%ymm1", "vmovdqu %%ymm1, (%%rdi)", 32);
    VSTORE("vmovdqu (%%rsi), %%xmm2", "vmovdqu %%xmm2, (%%rdi)", 16);
    VSTORE("vmovdqu (%%rsi), %%ymm1", "%{vex3%} vmovdqu %%ymm1, (%%rdi)", 32);
    VSTORE("vmovdqa (%%rsi), %%ymm9", "vmovdqa %%ymm9, (%%rdi)", 32);
    VSTORE("vmovdqa (%%rsi), %%xmm15", "vmovdqa %%xmm15, (%%rdi)", 16);
    VSTORE("vmovdqu (%%rsi), %%ymm10", "vmovntdq %%ymm10, (%%rdi)", 32);
    VSTORE("vmovdqu (%%rsi), %%xmm10", "vmovntdq %%xmm10, (%%rdi)", 16);
    VSTORE("vmovups (%%rsi), %%ymm11", "vmovups %%ymm11, (%%rdi)", 32);
    VSTORE("vmovaps (%%rsi), %%xmm4", "vmovaps %%xmm4, (%%rdi)", 16);
    VSTORE("vmovupd (%%rsi), %%ymm12", "vmovupd %%ymm12, (%%rdi)", 32);
    VSTORE("vmovapd (%%rsi), %%ymm13", "vmovapd %%ymm13, (%%rdi)", 32);
    VSTORE("vmovups (%%rsi), %%ymm14", "vmovntps %%ymm14, (%%rdi)", 32);
    VSTORE("vmovups (%%rsi), %%xmm14", "vmovntpd %%xmm14, (%%rdi)", 16);
    VSTORE("vmovdqu (%%rsi), %%xmm5", "vmovd %%xmm5, (%%rdi)", 4);
    VSTORE("vmovdqu (%%rsi), %%xmm5", "vmovq %%xmm5, (%%rdi)", 8);
    /* vmovq %xmm5, (%rdi) as VEX.128.66.0F.W1 7E (the assembler picks D6 above). */
    VSTORE("vmovdqu (%%rsi), %%xmm5", ".byte 0xc4, 0xe1, 0xf9, 0x7e, 0x2f", 8);
    VSTORE("vmovdqu (%%rsi), %%xmm6", "vmovss %%xmm6, (%%rdi)", 4);
    VSTORE("vmovdqu (%%rsi), %%xmm6", "vmovsd %%xmm6, (%%rdi)", 8);
    VSTORE("vmovdqu (%%rsi), %%ymm8", "mov %%rdi, %%r13\n\tmov $0x10, %%r14\n\tvmovdqu %%ymm8, -0x20(%%r13,%%r14,2)", 32);
    OK("VEX stores (vmovdqu, vmovdqa, vmovntdq, vmovups, vmovaps, vmovupd, vmovapd, vmovntps, vmovntpd, vmovd, vmovq, vmovss, vmovsd; ymm0-15, 2- and 3-byte VEX)");

    if (have_avx512()) {
        /* A VEX.128 load zeroes bits 511:128, a VEX.256 load bits 511:256. */
        VLOAD(ZMM_ONES(3), "vmovdqu (%%rdi), %%xmm3", ZMM_SAVE(3), 16, 64);
        VLOAD(ZMM_ONES(3), "vmovdqu (%%rdi), %%ymm3", ZMM_SAVE(3), 32, 64);
        VLOAD(ZMM_ONES(9), "vmovdqa (%%rdi), %%ymm9", ZMM_SAVE(9), 32, 64);
        VLOAD(ZMM_ONES(15), "vmovups (%%rdi), %%xmm15", ZMM_SAVE(15), 16, 64);
        VLOAD(ZMM_ONES(7), "vmovapd (%%rdi), %%ymm7", ZMM_SAVE(7), 32, 64);
        VLOAD(ZMM_ONES(7), "vmovntdqa (%%rdi), %%ymm7", ZMM_SAVE(7), 32, 64);
        VLOAD(ZMM_ONES(8), "vmovd (%%rdi), %%xmm8", ZMM_SAVE(8), 4, 64);
        VLOAD(ZMM_ONES(8), "vmovq (%%rdi), %%xmm8", ZMM_SAVE(8), 8, 64);
        VLOAD(ZMM_ONES(0), ".byte 0xc4, 0xe1, 0xf9, 0x6e, 0x07", ZMM_SAVE(0), 8, 64); /* vmovq (%rdi), %xmm0: 6E W1 */
        VLOAD(ZMM_ONES(14), "vmovss (%%rdi), %%xmm14", ZMM_SAVE(14), 4, 64);
        VLOAD(ZMM_ONES(14), "vmovsd (%%rdi), %%xmm14", ZMM_SAVE(14), 8, 64);
        VLOAD(ZMM_ONES(12), "mov %%rdi, %%r13\n\t%{vex3%} vmovdqu (%%r13), %%ymm12", ZMM_SAVE(12), 32, 64);
        OK("VEX loads zero the register above what they load, up to 512 bits");
        /* After vzeroupper the upper halves are in their init state: the frame's XSTATE_BV says
         * so, and a load into them must set it again or sigreturn drops what was loaded. */
        VLOAD("vzeroupper", "vmovdqu (%%rdi), %%ymm3", ZMM_SAVE(3), 32, 64);
        VLOAD("vzeroupper", "vmovdqu64 (%%rdi), %%zmm4", ZMM_SAVE(4), 64, 64);
        OK("loads into vector state the frame holds in its init state (after vzeroupper)");
    } else if (__builtin_cpu_supports("avx2")) {
        VLOAD("vmovdqu (%%rsi), %%ymm3", "vmovdqu (%%rdi), %%xmm3", "vmovdqu %%ymm3, (%%rdx)", 16, 32);
        VLOAD("vmovdqu (%%rsi), %%ymm8", "vmovd (%%rdi), %%xmm8", "vmovdqu %%ymm8, (%%rdx)", 4, 32);
        OK("VEX loads zero the register above what they load, up to 256 bits");
    }
}

static void evex_moves(uint8_t *bar) {
    reset();
    fill_registers(0x900, 0x100, 0x53);
    for (int i = 0; i < 64; i++) vector_source[i] = (uint8_t)(0x40 + 3 * i);
    memset(vector_ones, 0xFF, sizeof vector_ones);

    VSTORE("vmovdqu64 (%%rsi), %%zmm16", "vmovdqu64 %%zmm16, (%%rdi)", 64);
    VSTORE("vmovdqu64 (%%rsi), %%zmm31", "vmovdqu32 %%zmm31, (%%rdi)", 64);
    VSTORE("vmovdqu64 (%%rsi), %%zmm17", "vmovdqu8 %%zmm17, (%%rdi)", 64);
    VSTORE("vmovdqu64 (%%rsi), %%zmm18", "vmovdqu16 %%zmm18, (%%rdi)", 64);
    VSTORE("vmovdqu64 (%%rsi), %%zmm19", "vmovdqa32 %%zmm19, (%%rdi)", 64);
    VSTORE("vmovdqu64 (%%rsi), %%zmm20", "vmovdqa64 %%zmm20, (%%rdi)", 64);
    VSTORE("vmovdqu64 (%%rsi), %%zmm21", "vmovups %%zmm21, (%%rdi)", 64);
    VSTORE("vmovdqu64 (%%rsi), %%zmm22", "vmovaps %%zmm22, (%%rdi)", 64);
    VSTORE("vmovdqu64 (%%rsi), %%zmm23", "vmovupd %%zmm23, (%%rdi)", 64);
    VSTORE("vmovdqu64 (%%rsi), %%zmm24", "vmovapd %%zmm24, (%%rdi)", 64);
    VSTORE("vmovdqu64 (%%rsi), %%zmm25", "vmovntdq %%zmm25, (%%rdi)", 64);
    VSTORE("vmovdqu64 (%%rsi), %%zmm26", "vmovntps %%zmm26, (%%rdi)", 64);
    VSTORE("vmovdqu64 (%%rsi), %%zmm27", "vmovntpd %%zmm27, (%%rdi)", 64);
    VSTORE("vmovdqu64 (%%rsi), %%zmm9", "vmovdqu64 %%zmm9, (%%rdi)", 64);
    VSTORE("vmovdqu64 (%%rsi), %%zmm28", "vmovdqu64 %%ymm28, (%%rdi)", 32);
    VSTORE("vmovdqu64 (%%rsi), %%zmm29", "vmovdqu32 %%xmm29, (%%rdi)", 16);
    VSTORE("vmovdqu64 (%%rsi), %%zmm1", "%{evex%} vmovdqu64 %%ymm1, (%%rdi)", 32);
    VSTORE("vmovdqu64 (%%rsi), %%zmm30", "vmovd %%xmm30, (%%rdi)", 4);
    VSTORE("vmovdqu64 (%%rsi), %%zmm30", "vmovq %%xmm30, (%%rdi)", 8);
    VSTORE("vmovdqu64 (%%rsi), %%zmm31", "vmovss %%xmm31, (%%rdi)", 4);
    VSTORE("vmovdqu64 (%%rsi), %%zmm31", "vmovsd %%xmm31, (%%rdi)", 8);
    /* disp8*N: the displacement byte counts vectors (64 bytes here), or elements for vmovq. */
    VSTORE("vmovdqu64 (%%rsi), %%zmm16", "sub $0x40, %%rdi\n\tvmovdqu64 %%zmm16, 0x40(%%rdi)\n\tadd $0x40, %%rdi", 64);
    VSTORE("vmovdqu64 (%%rsi), %%zmm16", "add $0x20, %%rdi\n\tvmovdqu64 %%ymm16, -0x20(%%rdi)\n\tsub $0x20, %%rdi", 32);
    VSTORE("vmovdqu64 (%%rsi), %%zmm16", "sub $0x8, %%rdi\n\tvmovq %%xmm16, 0x8(%%rdi)\n\tadd $0x8, %%rdi", 8);
    OK("EVEX stores (vmovdqu8/16/32/64, vmovdqa32/64, vmovups, vmovaps, vmovupd, vmovapd, vmovntdq, vmovntps, vmovntpd, vmovd, vmovq, vmovss, vmovsd; 128/256/512 bits, zmm0-31, disp8*N)");

    VLOAD(ZMM_ONES(16), "vmovdqu64 (%%rdi), %%zmm16", ZMM_SAVE(16), 64, 64);
    VLOAD(ZMM_ONES(17), "vmovdqu8 (%%rdi), %%ymm17", ZMM_SAVE(17), 32, 64);
    VLOAD(ZMM_ONES(18), "vmovdqu16 (%%rdi), %%xmm18", ZMM_SAVE(18), 16, 64);
    VLOAD(ZMM_ONES(19), "vmovdqa64 (%%rdi), %%zmm19", ZMM_SAVE(19), 64, 64);
    VLOAD(ZMM_ONES(31), "vmovdqa32 (%%rdi), %%ymm31", ZMM_SAVE(31), 32, 64);
    VLOAD(ZMM_ONES(20), "vmovups (%%rdi), %%zmm20", ZMM_SAVE(20), 64, 64);
    VLOAD(ZMM_ONES(21), "vmovaps (%%rdi), %%xmm21", ZMM_SAVE(21), 16, 64);
    VLOAD(ZMM_ONES(22), "vmovntdqa (%%rdi), %%zmm22", ZMM_SAVE(22), 64, 64);
    VLOAD(ZMM_ONES(23), "vmovd (%%rdi), %%xmm23", ZMM_SAVE(23), 4, 64);
    VLOAD(ZMM_ONES(24), "vmovq (%%rdi), %%xmm24", ZMM_SAVE(24), 8, 64);
    VLOAD(ZMM_ONES(25), "vmovss (%%rdi), %%xmm25", ZMM_SAVE(25), 4, 64);
    VLOAD(ZMM_ONES(26), "vmovsd (%%rdi), %%xmm26", ZMM_SAVE(26), 8, 64);
    VLOAD(ZMM_ONES(12), "vmovdqu64 (%%rdi), %%zmm12", ZMM_SAVE(12), 64, 64);
    VLOAD(ZMM_ONES(2), "%{evex%} vmovdqu32 (%%rdi), %%xmm2", ZMM_SAVE(2), 16, 64);
    VLOAD(ZMM_ONES(27), "add $0x40, %%rdi\n\tvmovdqu64 -0x40(%%rdi), %%zmm27\n\tsub $0x40, %%rdi", ZMM_SAVE(27), 64, 64);
    OK("EVEX loads (zmm0-31, 128/256/512 bits) zero the register above what they load");
}

/* Masked EVEX moves: only the selected elements reach the device, as aligned pieces. */
static void masked_moves(uint8_t *bar, uint8_t *page) {
    reset();
    fill_registers(0x900, 0x100, 0x11);
    uint8_t before[64];
    memcpy(before, device.registers + 0x900, 64);
    for (int i = 0; i < 64; i++) vector_source[i] = (uint8_t)(0xC0 + i);
    uint64_t mask = 0x8000000000FFFF7Eull; /* bytes 1-6, 8-23 and 63 */
    __asm__ volatile("kmovq %2, %%k1\n\tvmovdqu64 (%1), %%zmm16\n\tvmovdqu8 %%zmm16, (%0)%{%%k1%}"
                     : : "r"(bar + 0x900), "r"(vector_source), "r"(mask) : "memory");
    CHECK(atomic_load(&device.count) == 7, "vmovdqu8{k1}: %u accesses", atomic_load(&device.count));
    const uint64_t offsets[7] = {0x901, 0x902, 0x904, 0x906, 0x908, 0x910, 0x93F};
    const unsigned sizes[7] = {1, 2, 2, 1, 8, 8, 1};
    for (unsigned i = 0; i < 7; i++)
        CHECK(device.log[i].is_write && device.log[i].offset == offsets[i] && device.log[i].size == sizes[i],
              "vmovdqu8{k1} piece %u: off 0x%llx size %u", i, (unsigned long long)device.log[i].offset, device.log[i].size);
    for (unsigned i = 0; i < 64; i++) {
        uint8_t expected = ((mask >> i) & 1) ? vector_source[i] : before[i];
        CHECK(device.registers[0x900 + i] == expected, "vmovdqu8{k1}: byte %u is 0x%02x, expected 0x%02x", i,
              device.registers[0x900 + i], expected);
    }

    reset();
    uint64_t mask32 = 0xA5A5; /* elements 0 2 5 7 8 10 13 15 */
    __asm__ volatile("kmovw %k2, %%k2\n\tvmovdqu64 (%1), %%zmm17\n\tvmovdqu32 %%zmm17, (%0)%{%%k2%}"
                     : : "r"(bar + 0x900), "r"(vector_source), "r"(mask32) : "memory");
    const uint64_t offsets32[8] = {0x900, 0x908, 0x914, 0x91C, 0x920, 0x928, 0x934, 0x93C};
    CHECK(atomic_load(&device.count) == 8, "vmovdqu32{k2}: %u accesses", atomic_load(&device.count));
    for (unsigned i = 0; i < 8; i++)
        CHECK(device.log[i].is_write && device.log[i].offset == offsets32[i] && device.log[i].size == 4 &&
                  memcmp(device.log[i].data, vector_source + (offsets32[i] - 0x900), 4) == 0,
              "vmovdqu32{k2} element %u", i);
    OK("masked EVEX stores write the selected elements only, lowest first");

    /* Merging: unselected words keep the register's bits; bits above 256 are zeroed. */
    reset();
    fill_registers(0x900, 0x100, 0x21);
    uint64_t mask16 = 0x0000F00Full; /* words 0-3 and 12-15 of a 256-bit load */
    memset(vector_out, 0x5A, sizeof vector_out);
    __asm__ volatile("kmovd %k3, %%k3\n\tvmovdqu64 (%1), %%zmm18\n\tvmovdqu16 (%0), %%ymm18%{%%k3%}\n\tvmovdqu64 %%zmm18, (%2)"
                     : : "r"(bar + 0x900), "r"(vector_ones), "r"(vector_out), "r"(mask16) : "memory");
    CHECK(atomic_load(&device.count) == 2 && device.log[0].offset == 0x900 && device.log[0].size == 8 &&
              device.log[1].offset == 0x918 && device.log[1].size == 8 && !device.log[0].is_write,
          "vmovdqu16{k3} reads words 0-3 and 12-15: %u accesses", atomic_load(&device.count));
    for (unsigned i = 0; i < 64; i++) {
        unsigned word = i / 2;
        uint8_t expected = i >= 32 ? 0 : ((mask16 >> word) & 1) ? device.registers[0x900 + i] : 0xFF;
        CHECK(vector_out[i] == expected, "vmovdqu16{k3} merge: byte %u is 0x%02x, expected 0x%02x", i, vector_out[i], expected);
    }
    /* Zeroing: unselected quadwords become zero. */
    reset();
    fill_registers(0x900, 0x100, 0x23);
    uint64_t mask64 = 0x96; /* quadwords 1 2 4 7 */
    memset(vector_out, 0x5A, sizeof vector_out);
    __asm__ volatile("kmovw %k3, %%k4\n\tvmovdqu64 (%1), %%zmm19\n\tvmovdqu64 (%0), %%zmm19%{%%k4%}%{z%}\n\tvmovdqu64 %%zmm19, (%2)"
                     : : "r"(bar + 0x900), "r"(vector_ones), "r"(vector_out), "r"(mask64) : "memory");
    CHECK(atomic_load(&device.count) == 4, "vmovdqu64{k4}{z}: %u accesses", atomic_load(&device.count));
    for (unsigned i = 0; i < 64; i++) {
        uint8_t expected = ((mask64 >> (i / 8)) & 1) ? device.registers[0x900 + i] : 0;
        CHECK(vector_out[i] == expected, "vmovdqu64{k4}{z}: byte %u is 0x%02x, expected 0x%02x", i, vector_out[i], expected);
    }
    OK("masked EVEX loads merge or zero the unselected elements exactly");

    /* Unselected elements past the end of the region are not accessed (no fault, no error). */
    reset();
    uint64_t low16 = 0xFFFF;
    __asm__ volatile("kmovq %2, %%k5\n\tvmovdqu64 (%1), %%zmm20\n\tvmovdqu8 %%zmm20, (%0)%{%%k5%}"
                     : : "r"(page + 4096 - 16), "r"(vector_source), "r"(low16) : "memory");
    CHECK(atomic_load(&device.count) == 2 && device.log[0].offset == 4096 - 16 && device.log[1].offset == 4096 - 8,
          "a masked store at the region's end: %u accesses", atomic_load(&device.count));
    OK("a masked store whose unselected elements lie past the region's end");
}

static void vector_moves(void) {
    uint8_t *bar = map_region(2 * 4096, NULL);
    if (!__builtin_cpu_supports("avx2")) {
        OK("vector moves skipped: no AVX2");
        return;
    }
    vex_moves(bar);
    if (!have_avx512()) {
        OK("EVEX moves skipped: no AVX-512F/VL/BW");
        return;
    }
    evex_moves(bar);
    uint8_t *page = map_region(4096, NULL);
    masked_moves(bar, page);
}

/* ---- strings: MOVS and STOS, with and without REP ---- */

struct string_registers {
    uint64_t rsi, rdi, rcx;
};

#define EXPECT_REGISTERS(got, si, di, cx)                                                                    \
    CHECK((got).rsi == (uint64_t)(si) && (got).rdi == (uint64_t)(di) && (got).rcx == (uint64_t)(cx),         \
          "rsi 0x%llx rdi 0x%llx rcx 0x%llx; expected 0x%llx 0x%llx 0x%llx", (unsigned long long)(got).rsi,  \
          (unsigned long long)(got).rdi, (unsigned long long)(got).rcx, (unsigned long long)(si),             \
          (unsigned long long)(di), (unsigned long long)(cx))

#define STRING(text, si, di, cx, ax)                                                                     \
    ({                                                                                                   \
        struct string_registers r_ = {(uint64_t)(si), (uint64_t)(di), (uint64_t)(cx)};                   \
        __asm__ volatile(text : "+S"(r_.rsi), "+D"(r_.rdi), "+c"(r_.rcx) : "a"((uint64_t)(ax)) : "memory", "cc"); \
        r_;                                                                                              \
    })

static uint8_t string_buffer[3 * 4096] __attribute__((aligned(4096)));

static void string_moves(uint8_t *bar) {
    reset();
    for (int i = 0; i < 256; i++) string_buffer[i] = (uint8_t)(i * 5 + 3);

    /* rep movsb, normal memory to the BAR, upwards. */
    struct string_registers r = STRING("rep movsb", string_buffer, bar + 0xA00, 100, 0);
    EXPECT_REGISTERS(r, string_buffer + 100, bar + 0xA64, 0);
    CHECK(atomic_load(&device.count) == 100, "rep movsb: %u accesses", atomic_load(&device.count));
    for (unsigned i = 0; i < 100; i++) EXPECT_ACCESS(i, 1, 0xA00 + i, 1, string_buffer[i]);
    OK("rep movsb from memory to the BAR: 100 byte writes in order, rsi/rdi/rcx updated");

    /* rep movsq, the BAR to normal memory. */
    reset();
    fill_registers(0xB00, 0x100, 0x77);
    uint64_t out[10];
    memset(out, 0, sizeof out);
    r = STRING("rep movsq", bar + 0xB00, out, 10, 0);
    EXPECT_REGISTERS(r, bar + 0xB50, out + 10, 0);
    CHECK(memcmp(out, device.registers + 0xB00, 80) == 0, "rep movsq copied the BAR out");
    for (unsigned i = 0; i < 10; i++) CHECK(!device.log[i].is_write && device.log[i].offset == 0xB00 + 8 * i && device.log[i].size == 8, "rep movsq read %u", i);
    OK("rep movsq from the BAR to memory");

    /* rep movsl, BAR to BAR: read, write, read, write... */
    reset();
    fill_registers(0xC00, 0x40, 0x19);
    r = STRING("rep movsl", bar + 0xC00, bar + 0xD00, 4, 0);
    EXPECT_REGISTERS(r, bar + 0xC10, bar + 0xD10, 0);
    CHECK(atomic_load(&device.count) == 8, "rep movsl BAR to BAR: %u accesses", atomic_load(&device.count));
    for (unsigned i = 0; i < 4; i++) {
        uint32_t value;
        memcpy(&value, device.registers + 0xC00 + 4 * i, 4);
        EXPECT_ACCESS(2 * i, 0, 0xC00 + 4 * i, 4, value);
        EXPECT_ACCESS(2 * i + 1, 1, 0xD00 + 4 * i, 4, value);
    }
    OK("rep movsl from the BAR to the BAR, each element read then written");

    /* DF=1: rep movsw downwards from the last element; then stosb downwards. */
    reset();
    r = STRING("std\n\trep movsw\n\tcld", string_buffer + 14, bar + 0xE0E, 8, 0);
    EXPECT_REGISTERS(r, (uintptr_t)string_buffer - 2, bar + 0xDFE, 0);
    for (unsigned i = 0; i < 8; i++) {
        uint16_t value;
        memcpy(&value, string_buffer + 14 - 2 * i, 2);
        EXPECT_ACCESS(i, 1, 0xE0E - 2 * i, 2, value);
    }
    reset();
    r = STRING("std\n\trep stosb\n\tcld", 0, bar + 0xE20, 5, 0x1234);
    EXPECT_REGISTERS(r, 0, bar + 0xE1B, 0);
    for (unsigned i = 0; i < 5; i++) EXPECT_ACCESS(i, 1, 0xE20 - i, 1, 0x34);
    OK("DF=1: rep movsw and rep stosb go downwards");

    /* STOS and MOVS without REP, and rep stosq. */
    reset();
    r = STRING("stosl", 0, bar + 0xF00, 77, 0x8899AABBCCDDEEFFull);
    EXPECT_REGISTERS(r, 0, bar + 0xF04, 77);
    r = STRING("movsb", string_buffer + 3, bar + 0xF08, 77, 0);
    EXPECT_REGISTERS(r, string_buffer + 4, bar + 0xF09, 77);
    r = STRING("rep stosq", 0, bar + 0xF10, 3, 0x0102030405060708ull);
    EXPECT_REGISTERS(r, 0, bar + 0xF28, 0);
    EXPECT_ACCESS(0, 1, 0xF00, 4, 0xCCDDEEFFu);
    EXPECT_ACCESS(1, 1, 0xF08, 1, string_buffer[3]);
    EXPECT_ACCESS(2, 1, 0xF10, 8, 0x0102030405060708ull);
    EXPECT_ACCESS(4, 1, 0xF20, 8, 0x0102030405060708ull);
    CHECK(atomic_load(&device.count) == 5, "stos/movs: %u accesses", atomic_load(&device.count));
    OK("stosl and movsb without REP, rep stosq");

    /* More elements than one fault does: the instruction restarts until RCX is 0. */
    reset();
    r = STRING("rep stosb", 0, bar + 0x1000, 20000, 0x5C);
    EXPECT_REGISTERS(r, 0, bar + 0x1000 + 20000, 0);
    CHECK(atomic_load(&device.count) == 20000 && device.sizes[1] == 20000, "rep stosb of 20000: %u accesses",
          atomic_load(&device.count));
    for (unsigned i = 0; i < 20000; i++) CHECK(device.registers[0x1000 + i] == 0x5C, "rep stosb byte %u", i);
    for (unsigned i = 0; i < LOG_SIZE; i++) CHECK(device.log[i].offset == 0x1000 + i, "rep stosb in order (%u)", i);
    OK("rep stosb of 20000 bytes: every element, in order, across restarts");
}

/* 67 prefix: ESI, EDI and ECX, written back zero-extended. */
static void string_address32(void) {
    uint8_t *low = map_low_region("67-prefixed string instructions");
    if (low == NULL) return;
    reset();
    struct string_registers r = STRING("addr32 rep stosw", 0xFFFF000000000000ull, 0xABCD000050000100ull,
                                       0x7700000000000003ull, 0xBEEF);
    EXPECT_REGISTERS(r, 0xFFFF000000000000ull, 0x50000106ull, 0);
    EXPECT_ACCESS(0, 1, 0x100, 2, 0xBEEF);
    EXPECT_ACCESS(2, 1, 0x104, 2, 0xBEEF);
    CHECK(trap_unmap(low, 4096) == 0, "unmap low region");
    OK("67 prefix: rep stosw with EDI and ECX, zero-extended");
}

static ucontext_t fault_context;
static void record_context_and_jump(int signo, siginfo_t *info, void *context) {
    handler_calls++;
    last_signal = signo;
    last_info = *info;
    fault_context = *(ucontext_t *)context;
    siglongjmp(jump, 1);
}

/* A bad normal-memory operand is the program's SIGSEGV, at the element that faulted; a bus
 * error from the device stops at its element too. */
static void string_faults(uint8_t *bar) {
    install(SIGSEGV, record_context_and_jump, 0);
    install(SIGBUS, record_context_and_jump, 0);
    uint8_t *guarded = string_buffer + 4096;
    CHECK(mprotect(guarded + 4096, 4096, PROT_NONE) == 0, "mprotect");
    memset(guarded + 4096 - 10, 0x6B, 10);
    reset();
    handler_calls = 0;
    static volatile struct string_registers r;
    if (sigsetjmp(jump, 1) == 0) {
        r = STRING("rep movsb", guarded + 4096 - 10, bar + 0x200, 20, 0);
        CHECK(0, "rep movsb from a half-unreadable source completed");
    }
    CHECK(handler_calls == 1 && last_signal == SIGSEGV && last_info.si_addr == guarded + 4096 &&
              last_info.si_code == SEGV_ACCERR, "SIGSEGV at the first unreadable byte: addr %p code %d",
          last_info.si_addr, last_info.si_code);
    greg_t *g = fault_context.uc_mcontext.gregs;
    CHECK((uint64_t)g[REG_RSI] == (uint64_t)(guarded + 4096) && (uint64_t)g[REG_RDI] == (uint64_t)(bar + 0x20A) &&
              g[REG_RCX] == 10, "registers at the faulting element: rsi %llx rdi %llx rcx %lld",
          (unsigned long long)g[REG_RSI], (unsigned long long)g[REG_RDI], (long long)g[REG_RCX]);
    CHECK(atomic_load(&device.count) == 10, "the first 10 bytes reached the device");
    OK("rep movsb from memory that turns unreadable: SIGSEGV at that byte, registers at that element");

    reset();
    device.bus_error_offset = 0x308;
    handler_calls = 0;
    if (sigsetjmp(jump, 1) == 0) {
        r = STRING("rep stosq", 0, bar + 0x300, 4, 1);
        CHECK(0, "rep stosq through a bus error completed");
    }
    device.bus_error_offset = ~0ull;
    CHECK(handler_calls == 1 && last_signal == SIGBUS && last_info.si_addr == bar + 0x308 && fault_context.uc_mcontext.gregs[REG_RCX] == 3,
          "SIGBUS at the second element with rcx 3: addr %p rcx %lld", last_info.si_addr,
          (long long)fault_context.uc_mcontext.gregs[REG_RCX]);
    (void)r;
    CHECK(mprotect(guarded + 4096, 4096, PROT_READ | PROT_WRITE) == 0, "mprotect back");
    OK("a bus error in the middle of rep stosq stops at that element");
}

/* The same bad source with no SIGSEGV handler: the process dies of SIGSEGV, as without us. */
static void string_segv_default(void) {
    no_core_dumps();
    uint8_t *bar = map_region(4096, NULL);
    CHECK(mprotect(string_buffer + 4096, 4096, PROT_NONE) == 0, "mprotect");
    printf("ready\n");
    fflush(stdout);
    (void)STRING("rep movsb", string_buffer + 4096 - 4, bar, 8, 0);
    CHECK(0, "rep movsb from an unreadable source completed");
}

static void strings(void) {
    uint8_t *bar = map_region(8 * 4096, NULL);
    string_moves(bar);
    string_address32();
    string_faults(bar);
}

/* ---- libc: memcpy, memmove and memset as glibc picked them for this CPU ---- */

static void *(*volatile copy_function)(void *, const void *, size_t) = memcpy;
static void *(*volatile move_function)(void *, const void *, size_t) = memmove;
static void *(*volatile fill_function)(void *, int, size_t) = memset;

static uint8_t libc_source[192 * 1024] __attribute__((aligned(64)));
static uint8_t libc_back[192 * 1024] __attribute__((aligned(64)));
static uint8_t shadow[REGISTER_BYTES];

/* Every logged access (when all fit in the log) is a `write` inside [offset, offset + length),
 * or a read inside the 64-byte blocks that hold that range (glibc's SSSE3 copies read whole
 * aligned blocks, which never crosses a page on normal memory). */
static void check_accesses_inside(uint64_t offset, size_t length, int write, const char *what, size_t n) {
    unsigned count = atomic_load(&device.count);
    if (!write) {
        length = ((offset + length + 63) & ~63ull) - (offset & ~63ull);
        offset &= ~63ull;
    }
    CHECK(count > 0, "%s(%zu): no access reached the device", what, n);
    if (count > LOG_SIZE) return;
    for (unsigned i = 0; i < count; i++)
        CHECK(device.log[i].is_write == write && device.log[i].offset >= offset &&
                  device.log[i].offset + device.log[i].size <= offset + length,
              "%s(%zu): access %u %s off 0x%llx size %u outside [0x%llx, +%zu)", what, n, i,
              device.log[i].is_write ? "write" : "read", (unsigned long long)device.log[i].offset, device.log[i].size,
              (unsigned long long)offset, length);
}

static void start_round(size_t window) {
    atomic_store(&device.count, 0);
    for (unsigned size = 0; size <= 64; size++) atomic_store(&device.sizes[size], 0);
    for (size_t i = 0; i < window; i++) device.registers[i] = (uint8_t)(0xE5 ^ i);
    memcpy(shadow, device.registers, window);
}

static void check_device(size_t window, const char *what, size_t n) {
    for (size_t i = 0; i < window; i++)
        CHECK(device.registers[i] == shadow[i], "%s(%zu): device byte 0x%zx is 0x%02x, expected 0x%02x", what, n, i,
              device.registers[i], shadow[i]);
}

static void libc_round(uint8_t *bar, size_t n, uint64_t offset) {
    size_t window = offset + n + 256;
    for (size_t i = 0; i < n; i++) libc_source[i] = (uint8_t)(i * 131 + n);

    start_round(window);
    copy_function(bar + offset, libc_source, n);
    memcpy(shadow + offset, libc_source, n);
    check_device(window, "memcpy to the BAR", n);
    check_accesses_inside(offset, n, 1, "memcpy to the BAR", n);

    atomic_store(&device.count, 0);
    memset(libc_back, 0xEE, n + 64);
    copy_function(libc_back, bar + offset, n);
    CHECK(memcmp(libc_back, libc_source, n) == 0 && libc_back[n] == 0xEE, "memcpy from the BAR (%zu)", n);
    check_accesses_inside(offset, n, 0, "memcpy from the BAR", n);

    start_round(window);
    fill_function(bar + offset, (int)(n & 0xFF) ^ 0x3C, n);
    memset(shadow + offset, (int)(n & 0xFF) ^ 0x3C, n);
    check_device(window, "memset of the BAR", n);
    check_accesses_inside(offset, n, 1, "memset of the BAR", n);

    /* Overlapping moves inside the BAR, both ways. */
    size_t shift = 1 + n % 67;
    start_round(window + shift);
    move_function(bar + offset + shift, bar + offset, n);
    memmove(shadow + offset + shift, shadow + offset, n);
    check_device(window + shift, "memmove up inside the BAR", n);
    start_round(window + shift);
    move_function(bar + offset, bar + offset + shift, n);
    memmove(shadow + offset, shadow + offset + shift, n);
    check_device(window + shift, "memmove down inside the BAR", n);
}

static void libc_functions(void) {
    uint8_t *bar = map_region(REGISTER_BYTES, NULL);
    for (size_t n = 1; n <= 2048; n++) libc_round(bar, n, (n * 37) % 64);
    OK("memcpy, memset and memmove of 1..2048 bytes to, from and inside the BAR");

    const size_t large = 16384;
    libc_round(bar, large, 8);
    start_round(large + 64);
    copy_function(bar, libc_source, large);
    int rep_movsb = atomic_load(&device.sizes[1]) >= large / 2;
    start_round(large + 64);
    fill_function(bar, 0x42, large);
    int rep_stosb = atomic_load(&device.sizes[1]) >= large / 2;
    OK("memcpy, memset and memmove of 16 KiB (%s rep movsb, %s rep stosb)", rep_movsb ? "with" : "without",
       rep_stosb ? "with" : "without");

    const size_t huge = 160 * 1024;
    for (size_t i = 0; i < huge; i++) libc_source[i] = (uint8_t)(i * 29 + 5);
    start_round(huge);
    copy_function(bar + 64, libc_source, huge);
    CHECK(memcmp(device.registers + 64, libc_source, huge) == 0, "memcpy of 160 KiB to the BAR");
    memset(libc_back, 0, huge);
    copy_function(libc_back, bar + 64, huge);
    CHECK(memcmp(libc_back, libc_source, huge) == 0, "memcpy of 160 KiB from the BAR");
    OK("memcpy of 160 KiB to and from the BAR (sizes 1: %u, 16: %u, 32: %u, 64: %u)", atomic_load(&device.sizes[1]),
       atomic_load(&device.sizes[16]), atomic_load(&device.sizes[32]), atomic_load(&device.sizes[64]));
}

/* ---- threads ---- */

#define THREADS 4
#define ROUNDS 20000

struct counter_device {
    _Atomic uint64_t writes[THREADS];
    uint64_t last[THREADS];
    _Atomic int out_of_order;
};
static struct counter_device counters;

static int counter_access(void *context, uint64_t offset, unsigned size, int is_write, void *data) {
    struct counter_device *device = context;
    unsigned thread = (unsigned)(offset / 64);
    if (thread >= THREADS || size != 8) return -1;
    if (is_write) {
        uint64_t value;
        memcpy(&value, data, 8);
        if (value != device->last[thread] + 1) atomic_store(&device->out_of_order, 1);
        device->last[thread] = value;
        atomic_fetch_add(&device->writes[thread], 1);
    } else {
        memcpy(data, &device->last[thread], 8);
    }
    return 0;
}

static uint8_t *shared_bar;

static void *hammer(void *argument) {
    unsigned thread = (unsigned)(uintptr_t)argument;
    volatile uint64_t *reg = (volatile uint64_t *)(shared_bar + 64 * thread);
    for (uint64_t round = 1; round <= ROUNDS; round++) {
        *reg = round;
        if (*reg != round) return (void *)1;
    }
    return NULL;
}

static void threads(void) {
    shared_bar = trap_map(4096, NULL, counter_access, &counters);
    CHECK(shared_bar != MAP_FAILED, "map");
    pthread_t workers[THREADS];
    for (unsigned i = 0; i < THREADS; i++)
        CHECK(pthread_create(&workers[i], NULL, hammer, (void *)(uintptr_t)i) == 0, "pthread_create");
    /* Meanwhile, map and unmap other regions: the table changes under the faulting threads. */
    for (int i = 0; i < 200; i++) {
        uint8_t *other = map_region(4096, NULL);
        *(volatile uint32_t *)other = (uint32_t)i;
        CHECK(munmap(other, 4096) == 0, "munmap");
    }
    for (unsigned i = 0; i < THREADS; i++) {
        void *result;
        pthread_join(workers[i], &result);
        CHECK(result == NULL, "thread %u read back a wrong value", i);
        CHECK(atomic_load(&counters.writes[i]) == ROUNDS, "thread %u: %llu writes", i,
              (unsigned long long)atomic_load(&counters.writes[i]));
    }
    CHECK(!atomic_load(&counters.out_of_order), "every thread's stores arrived in order");
    OK("%d threads trapping concurrently, %d stores and loads each, in order", THREADS, ROUNDS);
}

int main(int argc, char **argv) {
    trap_map = (trap_map_fn)dlsym(RTLD_DEFAULT, "ioasid_trap_map");
    trap_unmap = (trap_unmap_fn)dlsym(RTLD_DEFAULT, "ioasid_trap_unmap");
    CHECK(trap_map != NULL && trap_unmap != NULL, "run under libioasid-preload.so");
    const char *mode = argc > 1 ? argv[1] : "accesses";
    if (strcmp(mode, "accesses") == 0) {
        uint8_t *bar = map_region(2 * 4096, NULL);
        stores_and_loads(bar);
        partial_registers(bar);
        immediates(bar);
        addressing(bar);
        absolute_addressing();
        exchange_and_alu(bar);
        sse(bar);
        direct_stores(bar);
    } else if (strcmp(mode, "volatile") == 0) {
        volatile_code(map_region(4096, NULL));
    } else if (strcmp(mode, "bus-error") == 0) {
        bus_error();
    } else if (strcmp(mode, "bus-error-default") == 0) {
        bus_error_default();
    } else if (strcmp(mode, "own-handlers") == 0) {
        own_handlers();
    } else if (strcmp(mode, "default-segv") == 0) {
        default_segv(0);
    } else if (strcmp(mode, "ignored-segv") == 0) {
        default_segv(1);
    } else if (strcmp(mode, "stack-overflow") == 0) {
        stack_overflow();
    } else if (strcmp(mode, "unknown") == 0) {
        unknown();
    } else if (strcmp(mode, "munmap") == 0) {
        unmapping();
    } else if (strcmp(mode, "threads") == 0) {
        threads();
    } else if (strcmp(mode, "vector") == 0) {
        vector_moves();
    } else if (strcmp(mode, "strings") == 0) {
        strings();
    } else if (strcmp(mode, "string-segv-default") == 0) {
        string_segv_default();
    } else if (strcmp(mode, "libc") == 0) {
        libc_functions();
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    printf("mmio %s ok\n", mode);
    return 0;
}
