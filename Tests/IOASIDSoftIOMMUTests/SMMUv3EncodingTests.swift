// Bit-exactness of the SMMUv3 structures against the architecture's field positions, written
// out as literal words (IHI 0070 §5.2 STE, §5.4 CD, chapter 4 commands, §7.3 events, §8 PRI).

import Testing
@testable import IOASIDSoftIOMMU

@Suite struct SMMUv3EncodingTests {
    @Test func streamTableEntryFieldsLandOnTheirArchitecturalBits() {
        var ste = SMMUv3StreamTableEntry()
        ste.valid = true
        #expect(ste.words[0] == 1)
        ste.config = .nested
        #expect(ste.words[0] == 0b1111)
        ste.s1Fmt = 1
        #expect(ste.words[0] == 0b01_1111)
        ste.s1ContextPtr = 0x0000_1234_5678_9000
        ste.s1CDMax = 20
        #expect(ste.words[0] == 0x0000_1234_5678_9000 | 0b01_1111 | (UInt64(20) << 59))
        ste.s1DSS = 2
        ste.s1CIR = 1; ste.s1COR = 1; ste.s1CSH = 3
        ste.mev = true
        ste.s2FWB = true
        ste.s1StallD = true
        ste.eats = 1
        ste.strw = 2
        ste.shcfg = 1
        #expect(ste.words[1] == 2 | (1 << 2) | (1 << 4) | (3 << 6) | (1 << 19) | (1 << 25) | (1 << 27) | (1 << 28) | (2 << 30) | (1 << 44))
        ste.s2VMID = 0xBEEF
        ste.s2T0SZ = 25; ste.s2SL0 = 1; ste.s2IR0 = 1; ste.s2OR0 = 1; ste.s2SH0 = 3; ste.s2TG = 0; ste.s2PS = 5
        ste.s2AA64 = true; ste.s2AFFD = true; ste.s2PTW = true; ste.s2HD = true; ste.s2HA = true; ste.s2S = true; ste.s2R = true
        let vtcr: UInt64 = 25 | (1 << 6) | (1 << 8) | (1 << 10) | (3 << 12) | (5 << 16)
        #expect(ste.words[2] == 0xBEEF | (vtcr << 32) | (1 << 51) | (1 << 53) | (1 << 54) | (1 << 55) | (1 << 56) | (1 << 57) | (1 << 58))
        ste.s2ENDI = true
        #expect(ste.words[2] & (1 << 52) != 0)
        ste.s2TTB = 0x0000_00AB_CDEF_1000
        #expect(ste.words[3] == 0x0000_00AB_CDEF_1000)
        // Round trip through memory.
        let memory = PhysicalMemory()
        ste.write(to: memory, at: 0x8000_0040)
        #expect(SMMUv3StreamTableEntry(memory: memory, at: 0x8000_0040) == ste)
        #expect(memory.read64(0x8000_0040 + 16) == ste.words[2])
    }

    @Test func reservedConfigValuesBehaveAsAbort() {
        var ste = SMMUv3StreamTableEntry(words: [0b0011])   // V = 1, Config = 0b001
        #expect(ste.configBits == 1)
        #expect(ste.config == .abort)
        ste.config = .bypass
        #expect(ste.words[0] == 0b1001)
    }

    @Test func contextDescriptorFieldsLandOnTheirArchitecturalBits() {
        var cd = SMMUv3ContextDescriptor()
        cd.t0SZ = 16; cd.tg0 = 0; cd.ir0 = 1; cd.or0 = 1; cd.sh0 = 3
        cd.epd1 = true; cd.valid = true; cd.ips = 5; cd.aa64 = true
        cd.record = true; cd.abort = true; cd.aset = true; cd.asid = 0x1234
        cd.ha = true; cd.hd = true
        let expected: UInt64 = 16 | (1 << 8) | (1 << 10) | (3 << 12) | (1 << 30) | (1 << 31) | (5 << 32)
            | (1 << 41) | (1 << 42) | (1 << 43) | (1 << 45) | (1 << 46) | (1 << 47) | (0x1234 << 48)
        #expect(cd.words[0] == expected)
        cd.epd0 = true; cd.endi = true; cd.t1SZ = 0x3F; cd.tg1 = 2; cd.affd = true; cd.wxn = true; cd.tbi0 = true; cd.stall = true
        #expect(cd.words[0] == expected | (1 << 14) | (1 << 15) | (0x3F << 16) | (2 << 22) | (1 << 35) | (1 << 36) | (1 << 38) | (1 << 44))
        cd.ttb0 = 0x0000_0080_0000_3000
        cd.haft = true
        #expect(cd.words[1] == 0x0000_0080_0000_3000 | (1 << 3))
        cd.ttb1 = 0x1000
        cd.mair = 0x0000_0000_0004_FF44
        #expect(cd.words[2] == 0x1000 && cd.words[3] == 0x4_FF44)
        #expect(cd.asid == 0x1234 && cd.ips == 5 && cd.t0SZ == 16 && cd.ttb0 == 0x80_0000_3000)
    }

    @Test func levelOneDescriptors() {
        let l1cd = SMMUv3L1ContextDescriptor(l2Ptr: 0x8_0000_5000)
        #expect(l1cd.word == 0x8_0000_5001 && l1cd.valid && l1cd.l2Ptr == 0x8_0000_5000)
        let l1std = SMMUv3L1StreamTableDescriptor(span: 9, l2Ptr: 0x8_0000_4000)
        #expect(l1std.word == 0x8_0000_4009 && l1std.span == 9 && l1std.l2Ptr == 0x8_0000_4000)
    }

    /// Literal encodings, each cross-checked with the field table of its command.
    @Test(arguments: [
        (SMMUv3Command.cfgiSTE(streamID: 0x1234, leaf: true), UInt64(0x0000_1234_0000_0003), UInt64(1)),
        (.cfgiSTERange(streamID: 0, range: 31), 0x04, 31),
        (.cfgiCD(streamID: 7, substreamID: 0xFFFFF, leaf: false), 0x0000_0007_FFFF_F005, 0),
        (.cfgiCDAll(streamID: 9), 0x0000_0009_0000_0006, 0),
        (.tlbiNHAll(vmid: 3), 0x0000_0003_0000_0010, 0),
        (.tlbiNHASID(vmid: 3, asid: 0xABCD), 0xABCD_0003_0000_0011, 0),
        (.tlbiNHVA(vmid: 1, asid: 2, address: 0x7F_FFFF_F000, leaf: true, range: .single), 0x0002_0001_0000_0012, 0x7F_FFFF_F001),
        (.tlbiNHVA(vmid: 1, asid: 2, address: 0x40_0000, leaf: false, range: SMMUv3TLBIRange(num: 3, scale: 2, tg: 1, ttl: 3)),
         0x0002_0001_0020_3012, 0x40_0000 | (1 << 10) | (3 << 8)),
        (.tlbiNHVAA(vmid: 5, address: 0x2000, leaf: false, range: .single), 0x0000_0005_0000_0013, 0x2000),
        (.tlbiS12VMAll(vmid: 0x8001), 0x0000_8001_0000_0028, 0),
        (.tlbiS2IPA(vmid: 2, address: 0xF_0000_1000, leaf: true, range: .single), 0x0000_0002_0000_002A, 0xF_0000_1001),
        (.tlbiNSNHAll, 0x30, 0),
        (.atcInv(streamID: 0x42, substreamID: 5, global: false, address: 0x10_0000, size: 52), 0x0000_0042_0000_5840, 0x10_0034),
        (.atcInv(streamID: 0x42, substreamID: nil, global: true, address: 0, size: 0), 0x0000_0042_0000_0240, 0),
        (.priResp(streamID: 0x42, substreamID: 9, group: 0x1FF, response: .success), 0x0000_0042_0000_9841, 0x21FF),
        (.prefetchConfig(streamID: 1, substreamID: nil), 0x0000_0001_0000_0001, 0),
        (.sync(completion: .irq, msiAddress: 0x8_0000_0010, msiData: 0, msh: 3, msiAttr: 0xF), 0x0000_0000_0FC0_1046, 0x8_0000_0010),
    ])
    func commandEncodingsRoundTrip(command: SMMUv3Command, w0: UInt64, w1: UInt64) throws {
        let words = command.words
        #expect(words.0 == w0, "word 0 of \(command)")
        #expect(words.1 == w1, "word 1 of \(command)")
        #expect(try SMMUv3Command(words: w0, w1) == command)
    }

    @Test(arguments: [
        (UInt64(0x00), UInt64(0), SMMUv3IllegalCommand.unsupportedOpcode(0)),         // reserved opcode
        (0x07, 0, .unsupportedOpcode(0x07)),                                            // CFGI_VMS_PIDM: no MPAM
        (0x20, 0, .unsupportedOpcode(0x20)),                                            // TLBI_EL2_ALL, HYP == 0
        (0x50, 0, .unsupportedOpcode(0x50)),                                            // TLBI_S_EL2_ALL
        (0x1000_0003, 0, .reservedBits),                                                // CFGI_STE with SSID bits
        (0x0403, 0, .illegalParameters),                                                // CFGI_STE with SSec
        (0x0003, 2, .reservedBits),                                                     // CFGI_STE word 1 bit 1
        (0x12, 1 << 10, .illegalParameters),                                            // TG != 0, NUM = SCALE = TTL = 0
        (0x12, (2 << 10) | (1 << 8), .illegalParameters),                               // TG 16K with TTL 1
        (0x12, 1 << 8, .reservedBits),                                                  // TTL without TG
        (0x1000_0012, 0, .reservedBits),                                                // NUM without TG
        (0x41, 3 << 12, .illegalParameters),                                            // PRI_RESP Resp = 0b11
        (0x3046, 0, .illegalParameters),                                                // CMD_SYNC CS = 0b11
        (0x0130, 0, .reservedBits),                                                     // TLBI_NSNH_ALL bit 8
    ])
    func malformedCommandsRaiseCERROR_ILL(w0: UInt64, w1: UInt64, why: SMMUv3IllegalCommand) {
        #expect(throws: why) { try SMMUv3Command(words: w0, w1) }
    }

    @Test func stageOneCommandsAreIllegalWithoutStageOneAndViceVersa() {
        let s2Only = SMMUv3CommandFeatures(stage1: false, stage2: true)
        #expect(throws: SMMUv3IllegalCommand.unsupportedOpcode(0x11)) { try SMMUv3Command(words: 0x11, 0, features: s2Only) }
        #expect(throws: SMMUv3IllegalCommand.unsupportedOpcode(0x05)) { try SMMUv3Command(words: 0x05, 0, features: s2Only) }
        let s1Only = SMMUv3CommandFeatures(stage1: true, stage2: false)
        #expect(throws: SMMUv3IllegalCommand.unsupportedOpcode(0x28)) { try SMMUv3Command(words: 0x28, 0, features: s1Only) }
        let noRange = SMMUv3CommandFeatures(rangeInvalidation: false)
        #expect(throws: SMMUv3IllegalCommand.reservedBits) {
            try SMMUv3Command(words: 0x0020_0012, (1 << 10) | 0x1000, features: noRange)
        }
    }

    @Test func rangeSizes() {
        #expect(SMMUv3TLBIRange.pages4K(1)?.byteCount == 4096)
        #expect(SMMUv3TLBIRange.pages4K(12) == SMMUv3TLBIRange(num: 2, scale: 2, tg: 1))
        #expect(SMMUv3TLBIRange.pages4K(12)?.byteCount == 12 * 4096)
        #expect(SMMUv3TLBIRange.pages4K(33) == nil)       // 33 = 33 << 0: NUM would be 32
        #expect(SMMUv3TLBIRange.pages4K(64)?.byteCount == 64 * 4096)
        #expect(SMMUv3TLBIRange.single.byteCount == nil)
    }

    @Test func eventRecordLayout() {
        var e = SMMUv3Event(id: .translation, streamID: 0x1234, substreamID: 0x55)
        e.stag = 0xBEEF
        e.stall = true
        e.privileged = true
        e.instruction = true
        e.read = true
        e.stage2 = true
        e.faultClass = .tableDescriptor
        e.tableRead = true
        e.inputAddress = 0xFFFF_0000_1234_5678
        e.ipa = 0x8_7654_3000
        #expect(e.words[0] == 0x0000_1234_0005_5810)
        #expect(e.words[1] == 0xBEEF | (1 << 31) | (1 << 33) | (1 << 34) | (1 << 35) | (1 << 39) | (1 << 40) | (1 << 44))
        #expect(e.words[2] == 0xFFFF_0000_1234_5678)
        #expect(e.words[3] == 0x8_7654_3000)
        #expect(e.id == .translation && e.substreamID == 0x55 && e.streamID == 0x1234)
        var fetch = SMMUv3Event(id: .cdFetch, streamID: 1)
        fetch.fetchAddress = 0x8_0000_0048
        #expect(fetch.words[0] == 0x0000_0001_0000_0009 && fetch.words[3] == 0x8_0000_0048 && fetch.substreamID == nil)
    }

    @Test func priQueueEntryLayout() {
        let r = SMMUv3PageRequestRecord(streamID: 0x10, substreamID: 0xABCDE, group: 0x1A5, last: true,
                                        address: 0x7000_1000, read: true, write: true, execute: false, privileged: true)
        #expect(r.word0 == 0x10 | (UInt64(0xABCDE) << 32) | (1 << 58) | (1 << 60) | (1 << 61) | (1 << 62) | (1 << 63))
        #expect(r.word1 == 0x7000_1000 | 0x1A5)
        #expect(r.streamID == 0x10 && r.substreamID == 0xABCDE && r.group == 0x1A5 && r.last && r.read && r.write && !r.execute)
    }

    @Test func idRegistersOfTheDefaultModel() {
        let id = SMMUv3Features().idRegisters
        // IDR0: S2P S1P TTF=AArch64 COHACC HTTU=0b10 ATS ASID16 MSI PRI VMID16 CD2L
        //       TTENDIAN=LE STALL_MODEL=0b01 TERM_MODEL ST_LEVEL=2-level.
        #expect(id.idr[0] == 0b1 | 0b10 | (2 << 2) | (1 << 4) | (2 << 6) | (1 << 10) | (1 << 12) | (1 << 13) | (1 << 16)
                | (1 << 18) | (1 << 19) | (2 << 21) | (1 << 24) | (1 << 26) | (1 << 27))
        #expect(id.idr[1] == 16 | (20 << 6) | (19 << 11) | (19 << 16) | (19 << 21))
        #expect(id.idr[3] == (1 << 8) | (1 << 10))
        #expect(id.idr[5] == 5 | (1 << 4))
        #expect(id.aidr == 2)
    }

    @Test func queueIndexArithmetic() {
        var q = SMMUv3QueueState(entrySize: 16, maxLog2Size: 19)
        q.base = 0x8_0000_0000 | 2          // 4 entries
        #expect(q.capacity == 4 && q.isEmpty && !q.isFull)
        q.prod = 4                          // index 0, wrap 1
        #expect(q.isFull && !q.isEmpty)
        #expect(q.advanced(7) == 0)
        #expect(q.slot(6) == 0x8_0000_0020)
        q.base = 0x8_0000_0000 | 25         // beyond IDR1.CMDQS: capped
        #expect(q.log2Size == 19)
    }
}
