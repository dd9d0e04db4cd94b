/*
 * The x86-64 decoder for trapped MMIO: see mmio_decoder.h for the instruction forms and the
 * vocabulary. The encodings are those of the Intel SDM volume 2 (opcode map, ModRM/SIB tables,
 * mandatory prefixes); only forms with a memory operand are decoded, since only they fault.
 */
#include "mmio_decoder.h"

#include <stddef.h>

#define REX_W 8
#define REX_R 4
#define REX_X 2
#define REX_B 1

/* Reading state: bytes are read one at a time, only as far as the instruction goes. */
struct reader {
    const uint8_t *code;
    unsigned position;
};

static inline int next_byte(struct reader *reader, uint8_t *byte) {
    if (reader->position >= MMIO_MAX_INSTRUCTION) return -1;
    *byte = reader->code[reader->position++];
    return 0;
}

static int next_signed(struct reader *reader, unsigned bytes, int64_t *value) {
    uint64_t raw = 0;
    for (unsigned i = 0; i < bytes; i++) {
        uint8_t byte;
        if (next_byte(reader, &byte) != 0) return -1;
        raw |= (uint64_t)byte << (8 * i);
    }
    if (bytes < 8 && (raw >> (8 * bytes - 1)) & 1) raw |= ~0ull << (8 * bytes);
    *value = (int64_t)raw;
    return 0;
}

/* Parses ModRM (and SIB and displacement). Fails for a register operand (mod == 3): such an
 * instruction touches no memory and cannot have faulted on MMIO. `disp8_scale` is EVEX's N in
 * disp8*N (1 otherwise). */
static int parse_modrm_scaled(struct reader *reader, uint8_t rex, struct mmio_address *address, uint8_t *reg_field,
                              unsigned disp8_scale) {
    uint8_t modrm;
    if (next_byte(reader, &modrm) != 0) return -1;
    unsigned mod = modrm >> 6, rm = modrm & 7;
    *reg_field = (uint8_t)((modrm >> 3) & 7);
    if (mod == 3) return -1;
    address->base = -1;
    address->index = -1;
    address->scale = 1;
    address->rip_relative = 0;
    address->displacement = 0;
    unsigned displacement_bytes = mod == 1 ? 1 : mod == 2 ? 4 : 0;
    if (rm == 4) {
        uint8_t sib;
        if (next_byte(reader, &sib) != 0) return -1;
        unsigned index = ((sib >> 3) & 7) | ((rex & REX_X) ? 8 : 0);
        if (index != 4) {
            address->index = (int8_t)index;
            address->scale = (uint8_t)(1u << (sib >> 6));
        }
        if ((sib & 7) == 5 && mod == 0) {
            displacement_bytes = 4; /* no base */
        } else {
            address->base = (int8_t)((sib & 7) | ((rex & REX_B) ? 8 : 0));
        }
    } else if (rm == 5 && mod == 0) {
        address->rip_relative = 1;
        displacement_bytes = 4;
    } else {
        address->base = (int8_t)(rm | ((rex & REX_B) ? 8 : 0));
    }
    if (displacement_bytes == 0) return 0;
    if (next_signed(reader, displacement_bytes, &address->displacement) != 0) return -1;
    if (displacement_bytes == 1) address->displacement *= (int64_t)disp8_scale;
    return 0;
}

static int parse_modrm(struct reader *reader, uint8_t rex, struct mmio_address *address, uint8_t *reg_field) {
    return parse_modrm_scaled(reader, rex, address, reg_field, 1);
}

/* The 8-bit register named by a 3-bit field: AH..BH when no REX prefix is present. */
static void byte_register(struct mmio_instruction *out, unsigned number, int rex_present) {
    out->register_kind = MMIO_REGISTER_GPR;
    out->register_width = 1;
    if (!rex_present && number >= 4 && number < 8) {
        out->register_number = (uint8_t)(number - 4);
        out->high_byte = 1;
    } else {
        out->register_number = (uint8_t)number;
        out->high_byte = 0;
    }
}

static void word_register(struct mmio_instruction *out, unsigned number, unsigned width) {
    out->register_kind = MMIO_REGISTER_GPR;
    out->register_number = (uint8_t)number;
    out->register_width = (uint8_t)width;
    out->high_byte = 0;
}

static uint64_t truncate_to(uint64_t value, unsigned bytes) {
    return bytes >= 8 ? value : value & ((1ull << (8 * bytes)) - 1);
}

/* Reads an immediate of `bytes` bytes, sign-extended, then truncated to the operand size. */
static int immediate(struct reader *reader, struct mmio_instruction *out, unsigned bytes) {
    int64_t value;
    if (next_signed(reader, bytes, &value) != 0) return -1;
    out->has_immediate = 1;
    out->immediate = truncate_to((uint64_t)value, out->size);
    return 0;
}

/* The legacy SSE moves (two-byte opcode map, mandatory prefix 66/F2/F3 or none). */
static int decode_sse(struct mmio_instruction *out, uint8_t opcode, uint8_t mandatory, uint8_t rex,
                      uint8_t reg) {
    unsigned xmm = reg | ((rex & REX_R) ? 8 : 0);
    out->register_kind = MMIO_REGISTER_VECTOR;
    out->register_number = (uint8_t)xmm;
    switch (opcode) {
    case 0x10: case 0x11: /* MOVUPS, MOVUPD, MOVSS, MOVSD */
        out->operation = opcode == 0x10 ? MMIO_LOAD : MMIO_STORE;
        out->size = mandatory == 0xF3 ? 4 : mandatory == 0xF2 ? 8 : 16;
        out->zero_upper_xmm = mandatory == 0xF3 || mandatory == 0xF2;
        break;
    case 0x28: case 0x29: /* MOVAPS, MOVAPD */
        if (mandatory != 0 && mandatory != 0x66) return -1;
        out->operation = opcode == 0x28 ? MMIO_LOAD : MMIO_STORE;
        out->size = 16;
        break;
    case 0x2B: /* MOVNTPS, MOVNTPD */
        if (mandatory != 0 && mandatory != 0x66) return -1;
        out->operation = MMIO_STORE;
        out->size = 16;
        break;
    case 0x6E: /* MOVD/MOVQ xmm, r/m */
        if (mandatory != 0x66) return -1;
        out->operation = MMIO_LOAD;
        out->size = (rex & REX_W) ? 8 : 4;
        out->zero_upper_xmm = 1;
        break;
    case 0x7E: /* 66: MOVD/MOVQ r/m, xmm; F3: MOVQ xmm, m64 */
        if (mandatory == 0x66) {
            out->operation = MMIO_STORE;
            out->size = (rex & REX_W) ? 8 : 4;
        } else if (mandatory == 0xF3) {
            out->operation = MMIO_LOAD;
            out->size = 8;
            out->zero_upper_xmm = 1;
        } else {
            return -1;
        }
        break;
    case 0x6F: case 0x7F: /* MOVDQA, MOVDQU */
        if (mandatory != 0x66 && mandatory != 0xF3) return -1;
        out->operation = opcode == 0x6F ? MMIO_LOAD : MMIO_STORE;
        out->size = 16;
        break;
    case 0xD6: /* MOVQ m64, xmm */
        if (mandatory != 0x66) return -1;
        out->operation = MMIO_STORE;
        out->size = 8;
        break;
    case 0xE7: /* MOVNTDQ */
        if (mandatory != 0x66) return -1;
        out->operation = MMIO_STORE;
        out->size = 16;
        break;
    default:
        return -1;
    }
    out->register_width = out->size;
    return 0;
}

/* The fields of a VEX or EVEX prefix that the moves use. */
struct vector_prefix {
    uint8_t evex;
    uint8_t rex;       /* R, X, B as a REX prefix would give them (already un-inverted) */
    uint8_t high_reg;  /* EVEX.R': register 16-31 */
    uint8_t map;       /* 1 = 0F, 2 = 0F 38, 3 = 0F 3A */
    uint8_t w;
    uint8_t vvvv;      /* un-inverted: 0 when the encoding says 1111 */
    uint8_t high_v;    /* EVEX.V' un-inverted */
    uint8_t length;    /* VEX.L, or EVEX.L'L */
    uint8_t pp;        /* 0 none, 1 = 66, 2 = F3, 3 = F2 */
    uint8_t z, b, aaa; /* EVEX */
};

static int read_vector_prefix(struct reader *reader, uint8_t first, struct vector_prefix *p) {
    uint8_t b1, b2, b3;
    *p = (struct vector_prefix){0};
    if (next_byte(reader, &b1) != 0) return -1;
    if (first == 0xC5) {
        p->rex = (b1 & 0x80) ? 0 : REX_R;
        p->map = 1;
        p->vvvv = (uint8_t)((~b1 >> 3) & 15);
        p->length = (b1 >> 2) & 1;
        p->pp = b1 & 3;
        return 0;
    }
    if (next_byte(reader, &b2) != 0) return -1;
    p->rex = (uint8_t)(((b1 & 0x80) ? 0 : REX_R) | ((b1 & 0x40) ? 0 : REX_X) | ((b1 & 0x20) ? 0 : REX_B));
    p->w = b2 >> 7;
    p->vvvv = (uint8_t)((~b2 >> 3) & 15);
    p->pp = b2 & 3;
    if (first == 0xC4) {
        p->map = b1 & 0x1F;
        p->length = (b2 >> 2) & 1;
        return 0;
    }
    /* EVEX: P0 = R X B R' 0 0 m m, P1 = W vvvv 1 pp, P2 = z L'L b V' aaa. */
    if ((b1 & 0x0C) != 0 || (b2 & 0x04) == 0) return -1;
    if (next_byte(reader, &b3) != 0) return -1;
    p->evex = 1;
    p->high_reg = (b1 & 0x10) ? 0 : 1;
    p->map = b1 & 3;
    p->z = b3 >> 7;
    p->length = (b3 >> 5) & 3;
    p->b = (b3 >> 4) & 1;
    p->high_v = (b3 & 0x08) ? 0 : 1;
    p->aaa = b3 & 7;
    return 0;
}

/* What one VEX/EVEX move is, before its ModRM: the operation, the memory size (0: the full
 * vector length), the EVEX.W it requires (-1: any), the element size for masking (0: masking
 * not allowed), and whether the vector length must be 128. */
struct vector_form {
    int8_t operation;
    uint8_t size;
    int8_t evex_w;
    uint8_t element;
    uint8_t only128;
};

static int vector_form(const struct vector_prefix *p, uint8_t opcode, struct vector_form *f) {
    *f = (struct vector_form){.operation = -1, .evex_w = -1};
    if (p->map == 2) {
        if (opcode != 0x2A || p->pp != 1) return -1; /* VMOVNTDQA */
        *f = (struct vector_form){MMIO_LOAD, 0, 0, 0, 0};
        return 0;
    }
    if (p->map != 1) return -1;
    switch (opcode) {
    case 0x10: case 0x11: { /* VMOVUPS, VMOVUPD, VMOVSS, VMOVSD */
        static const uint8_t sizes[4] = {0, 0, 4, 8};
        static const int8_t ws[4] = {0, 1, 0, 1};
        static const uint8_t elements[4] = {4, 8, 4, 8};
        *f = (struct vector_form){opcode == 0x10 ? MMIO_LOAD : MMIO_STORE, sizes[p->pp], ws[p->pp], elements[p->pp], 0};
        return 0;
    }
    case 0x28: case 0x29: /* VMOVAPS, VMOVAPD */
        if (p->pp > 1) return -1;
        *f = (struct vector_form){opcode == 0x28 ? MMIO_LOAD : MMIO_STORE, 0, (int8_t)p->pp, p->pp ? 8 : 4, 0};
        return 0;
    case 0x2B: /* VMOVNTPS, VMOVNTPD */
        if (p->pp > 1) return -1;
        *f = (struct vector_form){MMIO_STORE, 0, (int8_t)p->pp, 0, 0};
        return 0;
    case 0x6E: /* VMOVD/VMOVQ xmm, m32/m64 */
        if (p->pp != 1) return -1;
        *f = (struct vector_form){MMIO_LOAD, p->w ? 8 : 4, -1, 0, 1};
        return 0;
    case 0x7E: /* 66: VMOVD/VMOVQ m32/m64, xmm; F3: VMOVQ xmm, m64 */
        if (p->pp == 1) *f = (struct vector_form){MMIO_STORE, p->w ? 8 : 4, -1, 0, 1};
        else if (p->pp == 2) *f = (struct vector_form){MMIO_LOAD, 8, 1, 0, 1};
        else return -1;
        return 0;
    case 0xD6: /* VMOVQ m64, xmm */
        if (p->pp != 1) return -1;
        *f = (struct vector_form){MMIO_STORE, 8, 1, 0, 1};
        return 0;
    case 0x6F: case 0x7F: { /* 66: VMOVDQA(32/64); F3: VMOVDQU(32/64); F2 (EVEX): VMOVDQU8/16 */
        if (p->pp == 0 || (p->pp == 3 && !p->evex)) return -1;
        uint8_t element = p->pp == 3 ? (p->w ? 2 : 1) : (p->w ? 8 : 4);
        *f = (struct vector_form){opcode == 0x6F ? MMIO_LOAD : MMIO_STORE, 0, -1, element, 0};
        return 0;
    }
    case 0xE7: /* VMOVNTDQ */
        if (p->pp != 1) return -1;
        *f = (struct vector_form){MMIO_STORE, 0, 0, 0, 0};
        return 0;
    default:
        return -1;
    }
}

/* A VEX (C4, C5) or EVEX (62) vector move; `first` is the prefix byte, already read. */
static int decode_vector(struct reader *reader, uint8_t first, struct mmio_instruction *out) {
    struct vector_prefix p;
    struct vector_form f;
    uint8_t opcode, reg;
    if (read_vector_prefix(reader, first, &p) != 0) return -1;
    if (next_byte(reader, &opcode) != 0) return -1;
    if (vector_form(&p, opcode, &f) != 0) return -1;
    if (p.vvvv != 0 || p.high_v) return -1; /* no second source: vvvv must be 1111 */
    unsigned vector_length;
    if (p.evex) {
        if (p.length == 3 || p.b) return -1; /* reserved length; no broadcast on moves */
        if (f.evex_w >= 0 && p.w != (unsigned)f.evex_w) return -1;
        if (p.aaa != 0 && f.element == 0) return -1;            /* no masking on this move */
        if (p.z && (p.aaa == 0 || f.operation == MMIO_STORE)) return -1;
        vector_length = 16u << p.length;
    } else {
        vector_length = 16u << p.length;
    }
    unsigned scalar = f.size != 0 && f.size < 16;
    if (f.only128 && p.length != 0) return -1;
    out->size = (uint8_t)(scalar ? f.size : vector_length);
    /* disp8*N: the full vector for whole-vector moves, the element for scalar ones. */
    if (parse_modrm_scaled(reader, p.rex, &out->address, &reg, p.evex ? out->size : 1) != 0) return -1;
    out->operation = (uint8_t)f.operation;
    out->register_kind = MMIO_REGISTER_VECTOR;
    out->register_number = (uint8_t)(reg | ((p.rex & REX_R) ? 8 : 0) | (p.high_reg ? 16 : 0));
    out->register_width = out->size;
    out->vector_encoding = p.evex ? MMIO_VECTOR_EVEX : MMIO_VECTOR_VEX;
    if (p.evex) {
        out->element_size = scalar ? out->size : f.element;
        out->opmask = p.aaa;
        out->zeroing = p.z;
    }
    return 0;
}

int ioasid_mmio_decode(const uint8_t *code, struct mmio_instruction *out) {
    struct reader reader = {code, 0};
    *out = (struct mmio_instruction){0};
    out->copy_destination = -1;
    uint8_t byte, rex = 0, operand16 = 0, mandatory = 0;
    int rex_present = 0;

    /* Prefixes; a REX prefix counts only directly before the opcode. */
    for (;;) {
        if (next_byte(&reader, &byte) != 0) return -1;
        switch (byte) {
        case 0x66: operand16 = 1; if (mandatory == 0) mandatory = 0x66; rex = 0; rex_present = 0; continue;
        case 0xF2: case 0xF3: mandatory = byte; rex = 0; rex_present = 0; continue;
        case 0x67: out->address.address32 = 1; rex = 0; rex_present = 0; continue;
        case 0xF0: case 0x2E: case 0x36: case 0x3E: case 0x26: rex = 0; rex_present = 0; continue;
        case 0x64: out->address.segment = MMIO_SEGMENT_FS; rex = 0; rex_present = 0; continue;
        case 0x65: out->address.segment = MMIO_SEGMENT_GS; rex = 0; rex_present = 0; continue;
        default: break;
        }
        if ((byte & 0xF0) == 0x40) {
            rex = byte & 0x0F;
            rex_present = 1;
            continue;
        }
        break;
    }
    uint8_t opcode = byte, reg;
    if (opcode == 0xC4 || opcode == 0xC5 || opcode == 0x62) { /* VEX, EVEX (never LES/LDS/BOUND in 64-bit mode) */
        if (rex_present || operand16 || mandatory != 0) return -1; /* #UD on the hardware */
        if (decode_vector(&reader, opcode, out) != 0) return -1;
        out->length = (uint8_t)reader.position;
        return 0;
    }
    unsigned operand_size = (rex & REX_W) ? 8 : operand16 ? 2 : 4;
    unsigned reg_number_extension = (rex & REX_R) ? 8 : 0;

    if (opcode == 0x0F) {
        if (next_byte(&reader, &opcode) != 0) return -1;
        if (opcode == 0x38) { /* MOVDIRI, MOVDIR64B */
            if (next_byte(&reader, &opcode) != 0) return -1;
            if (opcode == 0xF9 && mandatory == 0) {
                if (parse_modrm(&reader, rex, &out->address, &reg) != 0) return -1;
                out->operation = MMIO_STORE;
                out->size = (rex & REX_W) ? 8 : 4;
                word_register(out, reg | reg_number_extension, out->size);
            } else if (opcode == 0xF8 && mandatory == 0x66) {
                if (parse_modrm(&reader, rex, &out->address, &reg) != 0) return -1;
                out->operation = MMIO_COPY64;
                out->size = 64;
                out->copy_destination = (int8_t)(reg | reg_number_extension);
            } else {
                return -1;
            }
        } else if (opcode == 0xB6 || opcode == 0xB7 || opcode == 0xBE || opcode == 0xBF) {
            if (mandatory == 0xF2 || mandatory == 0xF3) return -1;
            if (parse_modrm(&reader, rex, &out->address, &reg) != 0) return -1;
            out->operation = MMIO_LOAD;
            out->size = (opcode & 1) ? 2 : 1;
            out->extension = opcode >= 0xBE ? MMIO_EXTEND_SIGN : MMIO_EXTEND_ZERO;
            word_register(out, reg | reg_number_extension, operand_size);
        } else if (opcode == 0xC3) { /* MOVNTI */
            if (mandatory != 0) return -1;
            if (parse_modrm(&reader, rex, &out->address, &reg) != 0) return -1;
            out->operation = MMIO_STORE;
            out->size = (rex & REX_W) ? 8 : 4;
            word_register(out, reg | reg_number_extension, out->size);
        } else {
            /* Check the opcode before reading further: a two-byte instruction that is none of
             * ours (UD2, say) may end at the last byte of a mapping. */
            if (decode_sse(out, opcode, mandatory, rex, 0) != 0) return -1;
            if (parse_modrm(&reader, rex, &out->address, &reg) != 0) return -1;
            if (decode_sse(out, opcode, mandatory, rex, reg) != 0) return -1;
        }
        out->length = (uint8_t)reader.position;
        return 0;
    }

    if (opcode == 0xA4 || opcode == 0xA5 || opcode == 0xAA || opcode == 0xAB) { /* MOVS, STOS */
        if (mandatory == 0xF2) return -1; /* REPNE on MOVS/STOS: not decoded */
        out->operation = opcode <= 0xA5 ? MMIO_MOVS : MMIO_STOS;
        out->size = (opcode & 1) ? (uint8_t)operand_size : 1;
        out->repeat = mandatory == 0xF3;
        out->address.base = -1;
        out->address.index = -1;
        out->address.scale = 1;
        out->length = (uint8_t)reader.position;
        return 0;
    }

    if (mandatory != 0 && mandatory != 0x66) return -1; /* REP/REPNE elsewhere (CMPS, SCAS, LODS...): not decoded */

    if (opcode < 0x40 && (opcode & 7) < 4) { /* ALU r/m, reg and reg, r/m */
        if (parse_modrm(&reader, rex, &out->address, &reg) != 0) return -1;
        out->operation = MMIO_ALU;
        out->alu = (uint8_t)(opcode >> 3);
        out->memory_is_source = (opcode & 2) != 0;
        if (opcode & 1) {
            out->size = (uint8_t)operand_size;
            word_register(out, reg | reg_number_extension, operand_size);
        } else {
            out->size = 1;
            byte_register(out, reg | reg_number_extension, rex_present);
        }
        out->length = (uint8_t)reader.position;
        return 0;
    }

    switch (opcode) {
    case 0x88: case 0x8A: /* MOV r/m8, r8 and r8, r/m8 */
        if (parse_modrm(&reader, rex, &out->address, &reg) != 0) return -1;
        out->operation = opcode == 0x88 ? MMIO_STORE : MMIO_LOAD;
        out->size = 1;
        byte_register(out, reg | reg_number_extension, rex_present);
        break;
    case 0x89: case 0x8B: /* MOV r/m, r and r, r/m */
        if (parse_modrm(&reader, rex, &out->address, &reg) != 0) return -1;
        out->operation = opcode == 0x89 ? MMIO_STORE : MMIO_LOAD;
        out->size = (uint8_t)operand_size;
        word_register(out, reg | reg_number_extension, operand_size);
        break;
    case 0x63: /* MOVSXD r64, r/m32 (a plain 32/16-bit load without REX.W) */
        if (parse_modrm(&reader, rex, &out->address, &reg) != 0) return -1;
        out->operation = MMIO_LOAD;
        if (rex & REX_W) {
            out->size = 4;
            out->extension = MMIO_EXTEND_SIGN;
        } else {
            out->size = (uint8_t)operand_size;
        }
        word_register(out, reg | reg_number_extension, operand_size);
        break;
    case 0x86: case 0x87: /* XCHG r/m, r */
        if (parse_modrm(&reader, rex, &out->address, &reg) != 0) return -1;
        out->operation = MMIO_EXCHANGE;
        if (opcode == 0x86) {
            out->size = 1;
            byte_register(out, reg | reg_number_extension, rex_present);
        } else {
            out->size = (uint8_t)operand_size;
            word_register(out, reg | reg_number_extension, operand_size);
        }
        break;
    case 0xC6: case 0xC7: /* MOV r/m, imm */
        if (parse_modrm(&reader, rex, &out->address, &reg) != 0 || reg != 0) return -1;
        out->operation = MMIO_STORE;
        out->size = opcode == 0xC6 ? 1 : (uint8_t)operand_size;
        if (immediate(&reader, out, out->size == 8 ? 4 : out->size) != 0) return -1;
        break;
    case 0xA0: case 0xA1: case 0xA2: case 0xA3: { /* MOV A, moffs and moffs, A */
        int64_t offset;
        if (next_signed(&reader, out->address.address32 ? 4 : 8, &offset) != 0) return -1;
        out->address.base = -1;
        out->address.index = -1;
        out->address.scale = 1;
        out->address.displacement = out->address.address32 ? (int64_t)(uint32_t)offset : offset;
        out->operation = (opcode & 2) ? MMIO_STORE : MMIO_LOAD;
        if (opcode & 1) {
            out->size = (uint8_t)operand_size;
            word_register(out, 0, operand_size);
        } else {
            out->size = 1;
            byte_register(out, 0, rex_present);
        }
        break;
    }
    case 0x80: case 0x81: case 0x83: /* ALU r/m, imm */
        if (parse_modrm(&reader, rex, &out->address, &reg) != 0) return -1;
        out->operation = MMIO_ALU;
        out->alu = reg;
        out->size = opcode == 0x80 ? 1 : (uint8_t)operand_size;
        if (immediate(&reader, out, opcode == 0x81 ? (out->size == 2 ? 2 : 4) : 1) != 0) return -1;
        break;
    case 0x84: case 0x85: /* TEST r/m, r */
        if (parse_modrm(&reader, rex, &out->address, &reg) != 0) return -1;
        out->operation = MMIO_ALU;
        out->alu = MMIO_ALU_TEST;
        if (opcode == 0x84) {
            out->size = 1;
            byte_register(out, reg | reg_number_extension, rex_present);
        } else {
            out->size = (uint8_t)operand_size;
            word_register(out, reg | reg_number_extension, operand_size);
        }
        break;
    case 0xF6: case 0xF7: /* TEST r/m, imm; NOT; NEG */
        if (parse_modrm(&reader, rex, &out->address, &reg) != 0) return -1;
        out->operation = MMIO_ALU;
        out->size = opcode == 0xF6 ? 1 : (uint8_t)operand_size;
        if (reg == 0 || reg == 1) {
            out->alu = MMIO_ALU_TEST;
            if (immediate(&reader, out, opcode == 0xF6 ? 1 : (out->size == 2 ? 2 : 4)) != 0) return -1;
        } else if (reg == 2) {
            out->alu = MMIO_ALU_NOT;
        } else if (reg == 3) {
            out->alu = MMIO_ALU_NEG;
        } else {
            return -1; /* MUL, IMUL, DIV, IDIV */
        }
        break;
    case 0xFE: case 0xFF: /* INC, DEC */
        if (parse_modrm(&reader, rex, &out->address, &reg) != 0 || reg > 1) return -1;
        out->operation = MMIO_ALU;
        out->alu = reg == 0 ? MMIO_ALU_INC : MMIO_ALU_DEC;
        out->size = opcode == 0xFE ? 1 : (uint8_t)operand_size;
        break;
    default:
        return -1;
    }
    out->length = (uint8_t)reader.position;
    return 0;
}

uint64_t ioasid_mmio_effective_address(const struct mmio_instruction *instruction,
                                       const uint64_t registers[16], uint64_t rip,
                                       uint64_t segment_base) {
    const struct mmio_address *address = &instruction->address;
    uint64_t linear = (uint64_t)address->displacement;
    if (address->rip_relative) linear += rip + instruction->length;
    if (address->base >= 0) linear += registers[address->base];
    if (address->index >= 0) linear += registers[address->index] * address->scale;
    if (address->address32) linear = (uint32_t)linear;
    return linear + segment_base;
}

uint64_t ioasid_mmio_read_register(uint64_t register_value, unsigned width, int high_byte) {
    if (high_byte) return (register_value >> 8) & 0xFF;
    return truncate_to(register_value, width);
}

uint64_t ioasid_mmio_write_register(uint64_t register_value, uint64_t value, unsigned width, int high_byte) {
    switch (width) {
    case 1:
        if (high_byte) return (register_value & ~0xFF00ull) | ((value & 0xFF) << 8);
        return (register_value & ~0xFFull) | (value & 0xFF);
    case 2:
        return (register_value & ~0xFFFFull) | (value & 0xFFFF);
    case 4:
        return (uint32_t)value;
    default:
        return value;
    }
}

uint64_t ioasid_mmio_extend(uint64_t value, unsigned from, int extension) {
    if (from >= 8) return value;
    value = truncate_to(value, from);
    if (extension == MMIO_EXTEND_SIGN && (value >> (8 * from - 1)) & 1) value |= ~0ull << (8 * from);
    return value;
}

/* Runs the operation on this CPU: CF is set from the caller's flags first (ADC, SBB, INC and
 * DEC depend on it or keep it), then LAHF and SETO collect the flags without touching the
 * stack (the signal handler's frame may use the red zone). */
#define ALU_ASM(text, suffix, mod)                                                        \
    __asm__("bt $0, %k[carry]\n\t" text suffix " %" mod "[source], %" mod "[value]\n\t"  \
            "lahf\n\tseto %b[overflow]"                                                   \
            : [value] "+r"(value), "=&a"(ah), [overflow] "=&r"(overflow)                  \
            : [source] "r"(source), [carry] "r"(carry)                                    \
            : "cc")
#define ALU_ASM1(text, suffix, mod)                                                       \
    __asm__("bt $0, %k[carry]\n\t" text suffix " %" mod "[value]\n\t"                    \
            "lahf\n\tseto %b[overflow]"                                                   \
            : [value] "+r"(value), "=&a"(ah), [overflow] "=&r"(overflow)                  \
            : [carry] "r"(carry)                                                          \
            : "cc")
#define ALU_SIZES(MACRO, text)                     \
    switch (size) {                                \
    case 1: MACRO(text, "b", "b"); break;          \
    case 2: MACRO(text, "w", "w"); break;          \
    case 4: MACRO(text, "l", "k"); break;          \
    default: MACRO(text, "q", "q"); break;         \
    }

uint64_t ioasid_mmio_alu(int alu, unsigned size, uint64_t destination, uint64_t source, uint64_t *rflags) {
    uint64_t value = destination, ah = 0, overflow = 0;
    uint64_t carry = *rflags & 1;
    switch (alu) {
    case MMIO_ALU_ADD: ALU_SIZES(ALU_ASM, "add"); break;
    case MMIO_ALU_OR: ALU_SIZES(ALU_ASM, "or"); break;
    case MMIO_ALU_ADC: ALU_SIZES(ALU_ASM, "adc"); break;
    case MMIO_ALU_SBB: ALU_SIZES(ALU_ASM, "sbb"); break;
    case MMIO_ALU_AND: case MMIO_ALU_TEST: ALU_SIZES(ALU_ASM, "and"); break;
    case MMIO_ALU_SUB: case MMIO_ALU_CMP: ALU_SIZES(ALU_ASM, "sub"); break;
    case MMIO_ALU_XOR: ALU_SIZES(ALU_ASM, "xor"); break;
    case MMIO_ALU_INC: ALU_SIZES(ALU_ASM1, "inc"); break;
    case MMIO_ALU_DEC: ALU_SIZES(ALU_ASM1, "dec"); break;
    case MMIO_ALU_NEG: ALU_SIZES(ALU_ASM1, "neg"); break;
    case MMIO_ALU_NOT: return truncate_to(~destination, size); /* no flag changes */
    default: return destination;
    }
    const uint64_t arithmetic = 0x8D5; /* OF SF ZF AF PF CF */
    *rflags = (*rflags & ~arithmetic) | ((ah >> 8) & 0xD5) | ((overflow & 1) << 11);
    return truncate_to(value, size);
}
