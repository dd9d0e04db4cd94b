/* Unit tests of the trapped-MMIO decoder (Sources/CIOASIDPreload/mmio_decoder.c), built with it
 * and run without the preload: each case is an instruction the assembler encodes, decoded and
 * compared field by field; each refused case is an encoding the hardware rejects or that is not
 * decoded, given as bytes. TrappedMMIOTests.swift builds and runs it. */
#include "fixture.h"
#include "mmio_decoder.h"

#include <stdint.h>

/* `name` and `name_end` around the assembled `text`, in read-only data. */
#define INSTRUCTION(name, text)                                                                \
    __asm__(".pushsection .rodata\n" #name ":\n\t" text "\n" #name "_end:\n\t.popsection");   \
    __attribute__((visibility("hidden"))) extern const uint8_t name[], name##_end[];

INSTRUCTION(vex_store_ymm1, "vmovdqu %ymm1, (%rdi)")
INSTRUCTION(vex3_load_ymm12, "{vex3} vmovdqu 0x10(%r13,%r14,4), %ymm12")
INSTRUCTION(evex_store_zmm17_disp8, "vmovdqu64 %zmm17, 0x40(%rdi)")
INSTRUCTION(evex_masked_zeroing_load, "vmovdqu8 -0x80(%rax,%r9,2), %zmm31{%k3}{z}")
INSTRUCTION(evex_masked_store_words, "vmovdqu16 %ymm20, (%rsi){%k1}")
INSTRUCTION(evex_store_xmm25, "vmovdqa32 %xmm25, 0x30(%rdx)")
INSTRUCTION(evex_ntdq_zmm8, "vmovntdq %zmm8, (%rcx)")
INSTRUCTION(evex_movd_store, "vmovd %xmm30, 0x8(%rdi)")
INSTRUCTION(evex_movq_load, "vmovq 0x10(%rbx), %xmm21")
INSTRUCTION(vex_movss_load, "vmovss 0x4(%rdi), %xmm3")
INSTRUCTION(evex_movsd_store, "vmovsd %xmm19, -0x8(%rsp)")
INSTRUCTION(vex_ntdqa_load, "vmovntdqa (%rdi), %ymm2")
INSTRUCTION(evex_rip_relative, "vmovups 0x1000(%rip), %zmm0")
INSTRUCTION(vex_address32, "addr32 vmovdqu (%edi), %xmm1")
INSTRUCTION(evex_apd_256, "vmovapd %ymm24, 0x7f(%r8)")
INSTRUCTION(rep_movsq, "rep movsq")
INSTRUCTION(movsw, "movsw")
INSTRUCTION(rep_stosb, "rep stosb")
INSTRUCTION(stosl, "stosl")
INSTRUCTION(addr32_rep_movsb, "addr32 rep movsb")
INSTRUCTION(fs_movsb, "movsb %fs:(%rsi), %es:(%rdi)")

struct expectation {
    const char *name;
    const uint8_t *code, *end;
    uint8_t operation, size, register_kind, register_number, encoding, element_size, opmask, zeroing, repeat;
    int8_t base, index;
    uint8_t scale;
    int64_t displacement;
};

#define CASE(n, ...) {#n, n, n##_end, __VA_ARGS__}

static const struct expectation cases[] = {
    /*                              op          size kind                  reg enc                el mask z rep base index scale disp */
    CASE(vex_store_ymm1,            MMIO_STORE, 32, MMIO_REGISTER_VECTOR, 1, MMIO_VECTOR_VEX,  0, 0, 0, 0, 7, -1, 1, 0),
    CASE(vex3_load_ymm12,           MMIO_LOAD,  32, MMIO_REGISTER_VECTOR, 12, MMIO_VECTOR_VEX, 0, 0, 0, 0, 13, 14, 4, 0x10),
    CASE(evex_store_zmm17_disp8,    MMIO_STORE, 64, MMIO_REGISTER_VECTOR, 17, MMIO_VECTOR_EVEX, 8, 0, 0, 0, 7, -1, 1, 0x40),
    CASE(evex_masked_zeroing_load,  MMIO_LOAD,  64, MMIO_REGISTER_VECTOR, 31, MMIO_VECTOR_EVEX, 1, 3, 1, 0, 0, 9, 2, -0x80),
    CASE(evex_masked_store_words,   MMIO_STORE, 32, MMIO_REGISTER_VECTOR, 20, MMIO_VECTOR_EVEX, 2, 1, 0, 0, 6, -1, 1, 0),
    CASE(evex_store_xmm25,          MMIO_STORE, 16, MMIO_REGISTER_VECTOR, 25, MMIO_VECTOR_EVEX, 4, 0, 0, 0, 2, -1, 1, 0x30),
    CASE(evex_ntdq_zmm8,            MMIO_STORE, 64, MMIO_REGISTER_VECTOR, 8, MMIO_VECTOR_EVEX, 0, 0, 0, 0, 1, -1, 1, 0),
    CASE(evex_movd_store,           MMIO_STORE, 4, MMIO_REGISTER_VECTOR, 30, MMIO_VECTOR_EVEX, 4, 0, 0, 0, 7, -1, 1, 8),
    CASE(evex_movq_load,            MMIO_LOAD,  8, MMIO_REGISTER_VECTOR, 21, MMIO_VECTOR_EVEX, 8, 0, 0, 0, 3, -1, 1, 0x10),
    CASE(vex_movss_load,            MMIO_LOAD,  4, MMIO_REGISTER_VECTOR, 3, MMIO_VECTOR_VEX,  0, 0, 0, 0, 7, -1, 1, 4),
    CASE(evex_movsd_store,          MMIO_STORE, 8, MMIO_REGISTER_VECTOR, 19, MMIO_VECTOR_EVEX, 8, 0, 0, 0, 4, -1, 1, -8),
    CASE(vex_ntdqa_load,            MMIO_LOAD,  32, MMIO_REGISTER_VECTOR, 2, MMIO_VECTOR_VEX,  0, 0, 0, 0, 7, -1, 1, 0),
    CASE(evex_rip_relative,         MMIO_LOAD,  64, MMIO_REGISTER_VECTOR, 0, MMIO_VECTOR_EVEX, 4, 0, 0, 0, -1, -1, 1, 0x1000),
    CASE(vex_address32,             MMIO_LOAD,  16, MMIO_REGISTER_VECTOR, 1, MMIO_VECTOR_VEX,  0, 0, 0, 0, 7, -1, 1, 0),
    CASE(evex_apd_256,              MMIO_STORE, 32, MMIO_REGISTER_VECTOR, 24, MMIO_VECTOR_EVEX, 8, 0, 0, 0, 8, -1, 1, 0x7f),
    CASE(rep_movsq,                 MMIO_MOVS,  8, MMIO_REGISTER_NONE, 0, 0, 0, 0, 0, 1, -1, -1, 1, 0),
    CASE(movsw,                     MMIO_MOVS,  2, MMIO_REGISTER_NONE, 0, 0, 0, 0, 0, 0, -1, -1, 1, 0),
    CASE(rep_stosb,                 MMIO_STOS,  1, MMIO_REGISTER_NONE, 0, 0, 0, 0, 0, 1, -1, -1, 1, 0),
    CASE(stosl,                     MMIO_STOS,  4, MMIO_REGISTER_NONE, 0, 0, 0, 0, 0, 0, -1, -1, 1, 0),
    CASE(addr32_rep_movsb,          MMIO_MOVS,  1, MMIO_REGISTER_NONE, 0, 0, 0, 0, 0, 1, -1, -1, 1, 0),
    CASE(fs_movsb,                  MMIO_MOVS,  1, MMIO_REGISTER_NONE, 0, 0, 0, 0, 0, 0, -1, -1, 1, 0),
};

struct refusal {
    const char *why;
    uint8_t bytes[MMIO_MAX_INSTRUCTION];
};

static const struct refusal refusals[] = {
    {"vmovntdq with an opmask (#UD)", {0x62, 0xF1, 0x7D, 0x49, 0xE7, 0x07}},
    {"vmovdqu64 with embedded broadcast (#UD)", {0x62, 0xF1, 0xFE, 0x58, 0x6F, 0x07}},
    {"vmovups with EVEX.W1 (#UD)", {0x62, 0xF1, 0xFC, 0x48, 0x10, 0x07}},
    {"EVEX.z on a store (#UD)", {0x62, 0xF1, 0xFE, 0xC9, 0x7F, 0x07}},
    {"EVEX.z without an opmask", {0x62, 0xF1, 0xFE, 0xC8, 0x6F, 0x07}},
    {"EVEX.L'L = 3 (#UD)", {0x62, 0xF1, 0xFE, 0x68, 0x6F, 0x07}},
    {"EVEX.V' clear on a move (#UD)", {0x62, 0xF1, 0xFE, 0x40, 0x6F, 0x07}},
    {"VEX.vvvv not 1111 (#UD)", {0xC5, 0xF2, 0x6F, 0x07}},
    {"VEX after a 66 prefix (#UD)", {0x66, 0xC5, 0xFE, 0x6F, 0x07}},
    {"VEX after REX (#UD)", {0x48, 0xC5, 0xFE, 0x6F, 0x07}},
    {"VEX.256 vmovd (#UD)", {0xC5, 0xFD, 0x6E, 0x07}},
    {"vmovdqu8 in VEX (no such instruction)", {0xC5, 0xFB, 0x6F, 0x07}},
    {"a register-to-register vmovdqu (no memory)", {0xC5, 0xFE, 0x6F, 0xD1}},
    {"repne movsb (not decoded)", {0xF2, 0xA4}},
    {"lodsb (not decoded)", {0xAC}},
    {"vpaddb with a memory operand (not a move)", {0xC5, 0xF5, 0xFC, 0x07}},
};

int main(void) {
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct expectation *e = &cases[i];
        struct mmio_instruction d;
        CHECK(ioasid_mmio_decode(e->code, &d) == 0, "%s: not decoded", e->name);
        CHECK(d.length == e->end - e->code, "%s: length %u, assembled %d", e->name, d.length, (int)(e->end - e->code));
        CHECK(d.operation == e->operation && d.size == e->size, "%s: operation %u size %u", e->name, d.operation, d.size);
        CHECK(d.register_kind == e->register_kind && (e->register_kind == MMIO_REGISTER_NONE || d.register_number == e->register_number),
              "%s: register kind %u number %u", e->name, d.register_kind, d.register_number);
        CHECK(d.vector_encoding == e->encoding && d.element_size == e->element_size && d.opmask == e->opmask &&
                  d.zeroing == e->zeroing && d.repeat == e->repeat,
              "%s: encoding %u element %u opmask %u zeroing %u repeat %u", e->name, d.vector_encoding, d.element_size,
              d.opmask, d.zeroing, d.repeat);
        if (e->operation != MMIO_MOVS && e->operation != MMIO_STOS) {
            CHECK(d.address.base == e->base && d.address.index == e->index && d.address.scale == e->scale &&
                      d.address.displacement == e->displacement && d.address.rip_relative == (e->base == -1 && e->index == -1),
                  "%s: base %d index %d scale %u displacement %lld", e->name, d.address.base, d.address.index,
                  d.address.scale, (long long)d.address.displacement);
        }
    }
    struct mmio_instruction d;
    CHECK(ioasid_mmio_decode(vex_address32, &d) == 0 && d.address.address32, "addr32 vmovdqu: 32-bit addressing");
    CHECK(ioasid_mmio_decode(addr32_rep_movsb, &d) == 0 && d.address.address32, "addr32 rep movsb: 32-bit addressing");
    CHECK(ioasid_mmio_decode(fs_movsb, &d) == 0 && d.address.segment == MMIO_SEGMENT_FS, "fs movsb: FS source");
    OK("%zu VEX, EVEX and string encodings decode field by field", sizeof cases / sizeof cases[0]);

    for (size_t i = 0; i < sizeof refusals / sizeof refusals[0]; i++)
        CHECK(ioasid_mmio_decode(refusals[i].bytes, &d) == -1, "decoded: %s", refusals[i].why);
    OK("%zu encodings refused (#UD on the hardware, or not decoded)", sizeof refusals / sizeof refusals[0]);
    return 0;
}
