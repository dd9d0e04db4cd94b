/*
 * The x86-64 instruction decoder behind trapped MMIO (trap.c): what one faulting instruction
 * does to memory and to registers, so that trap.c can do the same through a device handler.
 *
 * Vocabulary: the *memory operand* is the instruction's ModRM r/m operand (or a moffs, or for
 * MOVDIR64B the 64-byte destination named by the ModRM reg register); the *register operand*
 * is the general-purpose or vector register the instruction loads, stores or combines with it.
 * String instructions have two implicit operands instead: the source at RSI and the destination
 * at RDI (STOS: RDI only), with RCX as the count under REP.
 *
 * Decoded: MOV r/m<->reg (88, 89, 8A, 8B), MOV r/m<-imm (C6, C7), MOV A<->moffs (A0-A3),
 * MOVZX/MOVSX (0F B6/B7/BE/BF), MOVSXD (63), MOVNTI (0F C3), MOVDIRI (0F 38 F9),
 * MOVDIR64B (66 0F 38 F8), XCHG (86, 87), the ALU forms that clang emits for volatile
 * read-modify-write and compare (ADD OR ADC SBB AND SUB XOR CMP on r/m with reg or imm, TEST,
 * INC, DEC, NOT, NEG), the string moves MOVS and STOS (A4, A5, AA, AB; with F3 for REP), and
 * the vector moves between a register and memory:
 *  - legacy SSE: MOVD/MOVQ, MOVSS/MOVSD, MOVUPS/MOVAPS/MOVUPD/MOVAPD, MOVDQA/MOVDQU, MOVNTDQ,
 *    MOVNTPS/MOVNTPD;
 *  - VEX (C4, C5), 128 and 256 bits: VMOVUPS/VMOVAPS/VMOVUPD/VMOVAPD, VMOVDQU/VMOVDQA,
 *    VMOVNTDQ, VMOVNTPS/VMOVNTPD, VMOVNTDQA, VMOVSS/VMOVSD, VMOVD/VMOVQ;
 *  - EVEX (62), 128, 256 and 512 bits, registers 0-31, disp8*N: the same moves, with
 *    VMOVDQU8/16/32/64 and VMOVDQA32/64 for VMOVDQU/VMOVDQA, and opmask k1-k7 merging or
 *    zeroing where the instruction allows it (`opmask`, `zeroing`, `element_size`).
 * Prefixes: 66, 67, F0, F2, F3, segment overrides, REX. Encodings that raise #UD on the
 * hardware (a VEX/EVEX prefix after 66/F2/F3/REX, vvvv not 1111, EVEX broadcast or zeroing on a
 * store, masking where it is not allowed, a wrong EVEX.W) are refused like unknown ones.
 *
 * Everything here is pure and async-signal-safe: no allocation, no system calls, no globals.
 */
#ifndef IOASID_MMIO_DECODER_H
#define IOASID_MMIO_DECODER_H

#include <stdint.h>

/* Internal to the preload: not exported into the program's namespace. */
#pragma GCC visibility push(hidden)

#define MMIO_MAX_INSTRUCTION 15

/* What the instruction does with its memory operand. */
enum mmio_operation {
    MMIO_LOAD,      /* register <- memory (zero/sign extended for MOVZX/MOVSX/MOVSXD) */
    MMIO_STORE,     /* memory <- register or immediate */
    MMIO_EXCHANGE,  /* XCHG: register <- memory, memory <- old register */
    MMIO_ALU,       /* memory (or the register) <- memory OP source, flags updated */
    MMIO_COPY64,    /* MOVDIR64B: 64 bytes from a normal-memory source to the destination */
    MMIO_MOVS,      /* MOVS: `size` bytes from [RSI] to [RDI], RSI and RDI stepped (REP: RCX times) */
    MMIO_STOS,      /* STOS: `size` bytes of RAX to [RDI], RDI stepped (REP: RCX times) */
};

enum mmio_alu {
    MMIO_ALU_ADD, MMIO_ALU_OR, MMIO_ALU_ADC, MMIO_ALU_SBB,
    MMIO_ALU_AND, MMIO_ALU_SUB, MMIO_ALU_XOR, MMIO_ALU_CMP,
    MMIO_ALU_TEST, MMIO_ALU_INC, MMIO_ALU_DEC, MMIO_ALU_NOT, MMIO_ALU_NEG,
};

enum mmio_register_kind { MMIO_REGISTER_NONE, MMIO_REGISTER_GPR, MMIO_REGISTER_VECTOR };

/* How a vector move was encoded, which decides what a load does to the register's other bits:
 * legacy SSE keeps bits 255:128 and up; VEX and EVEX zero every bit above the loaded ones up to
 * the largest vector length the CPU has. */
enum mmio_vector_encoding { MMIO_VECTOR_LEGACY, MMIO_VECTOR_VEX, MMIO_VECTOR_EVEX };
enum mmio_extension { MMIO_EXTEND_NONE, MMIO_EXTEND_ZERO, MMIO_EXTEND_SIGN };
enum mmio_segment { MMIO_SEGMENT_DEFAULT, MMIO_SEGMENT_FS, MMIO_SEGMENT_GS };

/* A memory operand: base + index * scale + displacement, or RIP-relative, or absolute. For
 * MOVS/STOS only `address32` (the count and pointers are ECX, ESI, EDI) and `segment` (MOVS's
 * source; the destination is always ES) apply. */
struct mmio_address {
    int8_t base;          /* register number 0-15, or -1 */
    int8_t index;         /* register number 0-15, or -1 */
    uint8_t scale;        /* 1, 2, 4, 8 */
    uint8_t rip_relative; /* relative to the next instruction */
    uint8_t address32;    /* 67 prefix: computed in 32 bits */
    uint8_t segment;      /* enum mmio_segment */
    int64_t displacement; /* or the absolute moffs */
};

struct mmio_instruction {
    uint8_t length;          /* bytes, prefixes included */
    uint8_t operation;       /* enum mmio_operation */
    uint8_t alu;             /* enum mmio_alu, for MMIO_ALU */
    uint8_t size;            /* bytes of memory accessed: 1, 2, 4, 8, 16, 32 or 64 (MOVS/STOS: per element) */
    uint8_t register_kind;   /* enum mmio_register_kind */
    uint8_t register_number; /* 0-15 (RAX RCX RDX RBX RSP RBP RSI RDI R8-R15), or 0-31 (XMM/YMM/ZMM) */
    uint8_t register_width;  /* bytes of the register written or read (GPR), or of the vector move */
    uint8_t high_byte;       /* the 8-bit register is AH, CH, DH or BH (no REX prefix) */
    uint8_t extension;       /* enum mmio_extension, for loads narrower than the register */
    uint8_t has_immediate;   /* the source is `immediate` rather than the register */
    uint8_t memory_is_source;/* MMIO_ALU: the register is the destination (ADD r, r/m) */
    uint8_t zero_upper_xmm;  /* a legacy XMM load clears the rest of the low 128 bits (MOVD/MOVQ/MOVSS/MOVSD) */
    uint8_t vector_encoding; /* enum mmio_vector_encoding */
    uint8_t element_size;    /* EVEX: bytes per element that `opmask` selects (1, 2, 4, 8) */
    uint8_t opmask;          /* EVEX.aaa: 0 for none, 1-7 for k1-k7 */
    uint8_t zeroing;         /* EVEX.z: a masked load zeroes the elements it does not load */
    uint8_t repeat;          /* MOVS/STOS with the F3 (REP) prefix */
    uint64_t immediate;      /* sign-extended to `size` bytes as the instruction does */
    struct mmio_address address;
    int8_t copy_destination; /* MOVDIR64B: register holding the destination address */
};

/* Decodes the instruction whose first byte is at `code`, reading only as many bytes as the
 * instruction has (so a short instruction at the end of a mapping is safe). 0 on success; -1
 * when it is not one of the forms above. */
int ioasid_mmio_decode(const uint8_t *code, struct mmio_instruction *out);

/* The linear address of the memory operand (not meaningful for MOVS/STOS). `registers` holds RAX..R15 in x86 numbering, `rip`
 * is the address of the instruction; `segment_base` is added for FS/GS overrides. For
 * MOVDIR64B this is the 64-byte source, and the destination is registers[copy_destination]. */
uint64_t ioasid_mmio_effective_address(const struct mmio_instruction *instruction,
                                       const uint64_t registers[16], uint64_t rip,
                                       uint64_t segment_base);

/* The value a store or an ALU source takes from a general-purpose register: `width` bytes, or
 * bits 8-15 for AH..BH. */
uint64_t ioasid_mmio_read_register(uint64_t register_value, unsigned width, int high_byte);

/* The register after writing `value` with `width` bytes as x86-64 does: 1 and 2 bytes replace
 * only those bits (bits 8-15 for AH..BH), 4 bytes zero-extend to 64, 8 bytes replace all. */
uint64_t ioasid_mmio_write_register(uint64_t register_value, uint64_t value, unsigned width, int high_byte);

/* `value` of `from` bytes extended to 64 bits. */
uint64_t ioasid_mmio_extend(uint64_t value, unsigned from, int extension);

/* Computes `destination OP source` in `size` bytes on this CPU, returning the result and
 * updating the arithmetic flags (CF PF AF ZF SF OF) in *rflags as the instruction would
 * (ADC and SBB read CF from *rflags; INC and DEC keep it; NOT changes no flag). */
uint64_t ioasid_mmio_alu(int alu, unsigned size, uint64_t destination, uint64_t source, uint64_t *rflags);

/* Whether the ALU operation writes its destination (CMP and TEST do not). */
static inline int ioasid_mmio_alu_writes(int alu) { return alu != MMIO_ALU_CMP && alu != MMIO_ALU_TEST; }

#pragma GCC visibility pop

#endif /* IOASID_MMIO_DECODER_H */
