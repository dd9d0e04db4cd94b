/* Trapped MMIO under libioasid-preload.so: `mmio MODE`. The API is found with
 * dlsym(RTLD_DEFAULT), as the engine finds it. The device behind every region is `device`: 16 KiB
 * of registers that loads read and stores write, and a log of every access in order.
 *
 * Modes: accesses (every decoded form, in order, with registers and flags checked), volatile
 * (C code with volatile pointers, as compiled), bus-error, bus-error-default, own-handlers,
 * stack-overflow, default-segv, ignored-segv, unknown, munmap, threads. PreloadTests.swift builds this file with
 * each available compiler at -O0 and -O2. */
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

struct device {
    uint8_t registers[4 * 4096];
    struct access log[LOG_SIZE];
    _Atomic unsigned count;
    uint64_t bus_error_offset; /* loads and stores here fail */
    int counting_status;       /* offset 0x100 counts up on every read */
};

static int device_access(void *context, uint64_t offset, unsigned size, int is_write, void *data) {
    struct device *device = context;
    if (offset == device->bus_error_offset) return -1;
    unsigned index = atomic_fetch_add(&device->count, 1);
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

static void absolute_addressing(void) {
    /* A region below 2 GiB: an absolute disp32 with an index and no base, and a moffs64. */
    uint8_t *low = trap_map(4096, (void *)0x50000000, device_access, &device);
    if (low != (uint8_t *)0x50000000) {
        if (low != MAP_FAILED) trap_unmap(low, 4096);
        OK("absolute addressing skipped (0x50000000 taken)");
        return;
    }
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
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    printf("mmio %s ok\n", mode);
    return 0;
}
