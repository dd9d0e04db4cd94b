// Invalidation descriptors of the VT-d invalidation queue (spec §6.5.2), 256-bit as scalable
// mode uses them (IQA_REG.DW = 1), bit-exact in both directions: `VTdInvalidation` is the typed
// form, `VTdDescriptor` the four words in the queue.

/// One 256-bit descriptor of the invalidation queue (or of the page request queue): four
/// 64-bit words, bits 63:0 first.
public struct VTdDescriptor: Hashable, Sendable, CustomStringConvertible {
    /// Bits 63:0.
    public var qw0: UInt64
    /// Bits 127:64.
    public var qw1: UInt64
    /// Bits 191:128.
    public var qw2: UInt64
    /// Bits 255:192.
    public var qw3: UInt64

    /// Creates a descriptor from its words.
    public init(_ qw0: UInt64, _ qw1: UInt64 = 0, _ qw2: UInt64 = 0, _ qw3: UInt64 = 0) {
        self.qw0 = qw0; self.qw1 = qw1; self.qw2 = qw2; self.qw3 = qw3
    }

    /// The size of a scalable-mode descriptor in bytes.
    public static let size: UInt64 = 32

    /// The 7-bit descriptor type: bits 3:0 and 11:9.
    public var type: UInt8 { UInt8(qw0 & 0xF) | UInt8((qw0 >> 9) & 7) << 4 }

    /// Reads a descriptor at `address`.
    public static func read(_ memory: PhysicalMemory, at address: UInt64) -> VTdDescriptor {
        VTdDescriptor(memory.read64(address), memory.read64(address + 8), memory.read64(address + 16), memory.read64(address + 24))
    }
    /// Writes the descriptor at `address`.
    public func write(_ memory: PhysicalMemory, at address: UInt64) {
        memory.write64(address, qw0); memory.write64(address + 8, qw1)
        memory.write64(address + 16, qw2); memory.write64(address + 24, qw3)
    }

    /// The four words in hexadecimal.
    public var description: String {
        "[" + [qw0, qw1, qw2, qw3].map { "0x" + String($0, radix: 16) }.joined(separator: " ") + "]"
    }
}

/// The page-selective address of an IOTLB or PASID-based IOTLB invalidation: `address` with its
/// low `mask` page-number bits ignored, covering 2^mask 4 KiB pages (the AM field).
public struct VTdPageRange: Hashable, Sendable {
    /// ADDR (bits 63:12 of the second word), 4 KiB aligned.
    public var address: UInt64
    /// AM (bits 5:0): the address mask, 0 … 63.
    public var mask: UInt8
    /// IH (bit 6): invalidation hint — only leaf entries changed, paging-structure caches may
    /// be kept.
    public var invalidationHint: Bool

    /// Creates a range; `address` is aligned down to 4 KiB.
    public init(address: UInt64, mask: UInt8, invalidationHint: Bool = false) {
        self.address = address & VTdAddress.pageMask
        self.mask = mask & 0x3F
        self.invalidationHint = invalidationHint
    }

    /// The first and last (inclusive) addresses covered.
    public var first: UInt64 { mask >= 52 ? 0 : address & ~((UInt64(1) << (12 + UInt64(mask))) - 1) }
    /// The last address covered.
    public var last: UInt64 { mask >= 52 ? .max : first | ((UInt64(1) << (12 + UInt64(mask))) - 1) }

    /// The smallest naturally aligned range (as the kernel computes it) covering `first…last`.
    public static func covering(first: UInt64, last: UInt64, invalidationHint: Bool = false) -> VTdPageRange {
        let start = first & VTdAddress.pageMask
        let bits = 64 - (start ^ last).leadingZeroBitCount   // fls(start ^ last)
        if bits <= 12 { return VTdPageRange(address: start, mask: 0, invalidationHint: invalidationHint) }
        if bits >= 64 { return VTdPageRange(address: 0, mask: 52, invalidationHint: invalidationHint) }
        let aligned = start & ~((UInt64(1) << UInt64(bits)) - 1)
        return VTdPageRange(address: aligned, mask: UInt8(bits - 12), invalidationHint: invalidationHint)
    }

    /// Whether the range overlaps the inclusive span `lo…hi`.
    public func overlaps(_ lo: UInt64, _ hi: UInt64) -> Bool { lo <= last && first <= hi }
}

/// The size-encoded address of a device-TLB invalidation (ATS Invalidate Request encoding):
/// with S = 0 one 4 KiB page; with S = 1 the lowest clear bit of ADDR[63:12] gives the size.
public struct VTdDeviceTLBRange: Hashable, Sendable {
    /// ADDR (bits 63:12) as encoded, including the trailing one bits of a sized range.
    public var encodedAddress: UInt64
    /// S: the range is larger than one page.
    public var sized: Bool

    /// Wraps encoded fields.
    public init(encodedAddress: UInt64, sized: Bool) {
        self.encodedAddress = encodedAddress & VTdAddress.pageMask
        self.sized = sized
    }

    /// The encoding of 2^order pages at `address` (aligned down to the range size); order 52 or
    /// more is the whole address space.
    public init(address: UInt64, order: Int) {
        if order == 0 {
            self.init(encodedAddress: address, sized: false)
        } else if order >= 52 {
            self.init(encodedAddress: 0x7FFF_FFFF_FFFF_F000, sized: true)
        } else {
            let size = UInt64(1) << UInt64(12 + order)
            var a = address & ~(size - 1)
            a |= (size / 2 - 1) & VTdAddress.pageMask      // ones below the size bit
            self.init(encodedAddress: a, sized: true)
        }
    }

    /// The inclusive span of untranslated addresses covered.
    public var span: (first: UInt64, last: UInt64) {
        guard sized else { return (encodedAddress, encodedAddress | 0xFFF) }
        let ones = (~(encodedAddress >> 12)).trailingZeroBitCount   // trailing ones of the page number
        if ones >= 51 { return (0, .max) }
        let size = UInt64(1) << UInt64(12 + ones + 1)
        let first = encodedAddress & ~(size - 1)
        return (first, first + (size - 1))
    }
}

/// The typed form of the invalidation-queue descriptors the model executes.
public enum VTdInvalidation: Hashable, Sendable {
    /// Context-cache invalidation granularity (bits 5:4 of type 1).
    public enum ContextGranularity: Hashable, Sendable {
        /// 01b: every context-cache entry.
        case global
        /// 10b: entries of a domain (scalable-mode context entries hold no DID: every entry).
        case domain(UInt16)
        /// 11b: the entry of one source ID, with the function mask FM (0 … 3 low bits of the
        /// function number ignored).
        case device(domain: UInt16, sourceID: UInt16, functionMask: UInt8)
    }
    /// IOTLB invalidation granularity (bits 5:4 of type 2).
    public enum IOTLBGranularity: Hashable, Sendable {
        /// 01b: everything.
        case global
        /// 10b: every second-stage and nested translation of a domain.
        case domain(UInt16)
        /// 11b: second-stage translations of a domain in a page range (nested translations of
        /// the domain go too: their second-stage inputs are not known).
        case page(UInt16, VTdPageRange)
    }
    /// PASID-cache invalidation granularity (bits 5:4 of type 7).
    public enum PASIDCacheGranularity: Hashable, Sendable {
        /// 00b: every PASID of a domain.
        case domain(UInt16)
        /// 01b: one PASID of a domain.
        case pasid(UInt16, UInt32)
        /// 11b: everything.
        case global
    }
    /// PASID-based IOTLB invalidation granularity (bits 5:4 of type 6).
    public enum PASIDIOTLBGranularity: Hashable, Sendable {
        /// 10b: every non-global first-stage, nested and pass-through translation of a PASID
        /// in a domain.
        case pasid(UInt16, UInt32)
        /// 11b: those in a page range.
        case page(UInt16, UInt32, VTdPageRange)
    }

    /// Type 1: context-cache invalidation.
    case contextCache(ContextGranularity)
    /// Type 2: IOTLB invalidation (requests without PASID and second-stage translations).
    /// `drainReads`/`drainWrites` are the DR/DW bits.
    case iotlb(IOTLBGranularity, drainReads: Bool = true, drainWrites: Bool = true)
    /// Type 3: device-TLB invalidation of translations without PASID (ATS, to the device
    /// `sourceID`); `physicalFunction` is PFSID, `maxPending` the MIP/queue-depth field.
    case deviceTLB(sourceID: UInt16, physicalFunction: UInt16, maxPending: UInt8, range: VTdDeviceTLBRange)
    /// Type 5: invalidation wait. With `statusWrite`, hardware writes `statusData` (32 bits) at
    /// `statusAddress` once every earlier descriptor completed; `fence` orders later ones after
    /// it; `pageRequestDrain` also waits for page requests in flight.
    case wait(statusWrite: Bool, statusData: UInt32, statusAddress: UInt64, interrupt: Bool = false,
              fence: Bool = false, pageRequestDrain: Bool = false)
    /// Type 6: PASID-based IOTLB invalidation (first-stage, nested and pass-through translations).
    case pasidIOTLB(PASIDIOTLBGranularity)
    /// Type 7: PASID-cache invalidation.
    case pasidCache(PASIDCacheGranularity)
    /// Type 8: PASID-based device-TLB invalidation; `global` also removes global translations
    /// of other PASIDs.
    case pasidDeviceTLB(sourceID: UInt16, physicalFunction: UInt16, pasid: UInt32, maxPending: UInt8,
                        global: Bool, range: VTdDeviceTLBRange)
    /// Type 9: page group response, to the device `requesterID` for its page request group
    /// `groupIndex` (PASID given when the requests carried one). `code` is the PCIe PRG
    /// response code: 0 success, 1 invalid request, 0xF response failure.
    case pageGroupResponse(requesterID: UInt16, pasid: UInt32?, code: UInt8, groupIndex: UInt16)

    /// The descriptor type codes (bits 11:9 and 3:0 of the first word).
    public enum TypeCode {
        /// 1: context-cache invalidation.
        public static let contextCache: UInt8 = 1
        /// 2: IOTLB invalidation.
        public static let iotlb: UInt8 = 2
        /// 3: device-TLB invalidation.
        public static let deviceTLB: UInt8 = 3
        /// 4: interrupt entry cache invalidation (interrupt remapping; not modelled).
        public static let interruptEntryCache: UInt8 = 4
        /// 5: invalidation wait.
        public static let wait: UInt8 = 5
        /// 6: PASID-based IOTLB invalidation.
        public static let pasidIOTLB: UInt8 = 6
        /// 7: PASID-cache invalidation.
        public static let pasidCache: UInt8 = 7
        /// 8: PASID-based device-TLB invalidation.
        public static let pasidDeviceTLB: UInt8 = 8
        /// 9: page group response.
        public static let pageGroupResponse: UInt8 = 9
    }

    /// Page group response codes (PCIe PRG Response Message).
    public enum ResponseCode {
        /// The pages were made resident; the device retries.
        public static let success: UInt8 = 0
        /// The request cannot be satisfied.
        public static let invalidRequest: UInt8 = 1
        /// A catastrophic failure: the device disables its PRI.
        public static let responseFailure: UInt8 = 0xF
    }

    // MARK: Encoding

    /// The descriptor's bit-exact 256-bit encoding.
    public var descriptor: VTdDescriptor {
        switch self {
        case .contextCache(let g):
            var q0 = UInt64(TypeCode.contextCache)
            switch g {
            case .global: q0 |= 1 << 4
            case .domain(let did): q0 |= 2 << 4 | UInt64(did) << 16
            case .device(let did, let sid, let fm):
                q0 |= 3 << 4 | UInt64(did) << 16 | UInt64(sid) << 32 | UInt64(fm & 3) << 48
            }
            return VTdDescriptor(q0)
        case .iotlb(let g, let dr, let dw):
            var q0 = UInt64(TypeCode.iotlb) | (dw ? 1 << 6 : 0) | (dr ? 1 << 7 : 0)
            var q1: UInt64 = 0
            switch g {
            case .global: q0 |= 1 << 4
            case .domain(let did): q0 |= 2 << 4 | UInt64(did) << 16
            case .page(let did, let r):
                q0 |= 3 << 4 | UInt64(did) << 16
                q1 = r.address | (r.invalidationHint ? 1 << 6 : 0) | UInt64(r.mask)
            }
            return VTdDescriptor(q0, q1)
        case .deviceTLB(let sid, let pfsid, let mip, let range):
            let q0 = UInt64(TypeCode.deviceTLB) | UInt64(pfsid & 0xF) << 12 | UInt64(mip & 0x1F) << 16
                | UInt64(sid) << 32 | UInt64(pfsid >> 4) << 52
            return VTdDescriptor(q0, range.encodedAddress | (range.sized ? 1 : 0))
        case .wait(let sw, let data, let address, let intr, let fence, let drain):
            let q0 = UInt64(TypeCode.wait) | (intr ? 1 << 4 : 0) | (sw ? 1 << 5 : 0) | (fence ? 1 << 6 : 0)
                | (drain ? 1 << 7 : 0) | UInt64(data) << 32
            return VTdDescriptor(q0, address & ~3)
        case .pasidIOTLB(let g):
            var q0 = UInt64(TypeCode.pasidIOTLB)
            var q1: UInt64 = 0
            switch g {
            case .pasid(let did, let pasid): q0 |= 2 << 4 | UInt64(did) << 16 | UInt64(pasid & 0xF_FFFF) << 32
            case .page(let did, let pasid, let r):
                q0 |= 3 << 4 | UInt64(did) << 16 | UInt64(pasid & 0xF_FFFF) << 32
                q1 = r.address | (r.invalidationHint ? 1 << 6 : 0) | UInt64(r.mask)
            }
            return VTdDescriptor(q0, q1)
        case .pasidCache(let g):
            var q0 = UInt64(TypeCode.pasidCache)
            switch g {
            case .domain(let did): q0 |= 0 << 4 | UInt64(did) << 16
            case .pasid(let did, let pasid): q0 |= 1 << 4 | UInt64(did) << 16 | UInt64(pasid & 0xF_FFFF) << 32
            case .global: q0 |= 3 << 4
            }
            return VTdDescriptor(q0)
        case .pasidDeviceTLB(let sid, let pfsid, let pasid, let mip, let global, let range):
            let q0 = UInt64(TypeCode.pasidDeviceTLB) | UInt64(mip & 0x1F) << 4 | UInt64(pfsid & 0xF) << 12
                | UInt64(sid) << 16 | UInt64(pasid & 0xF_FFFF) << 32 | UInt64(pfsid >> 4) << 52
            return VTdDescriptor(q0, range.encodedAddress | (range.sized ? 1 << 11 : 0) | (global ? 1 : 0))
        case .pageGroupResponse(let rid, let pasid, let code, let index):
            let q0 = UInt64(TypeCode.pageGroupResponse) | (pasid != nil ? 1 << 4 : 0) | UInt64(code & 0xF) << 12
                | UInt64(rid) << 16 | UInt64((pasid ?? 0) & 0xF_FFFF) << 32
            return VTdDescriptor(q0, UInt64(index & 0x1FF) << 3)
        }
    }

    // MARK: Decoding

    /// The defined (non-reserved) bits of the first word of each descriptor type.
    enum Valid {
        static let contextCache: UInt64 = 0x0003_FFFF_FFFF_003F      // G, DID, SID, FM
        static let iotlb: UInt64 = 0x0000_0000_FFFF_00FF             // G, DW, DR, DID
        static let deviceTLB: UInt64 = 0xFFF0_FFFF_001F_F00F         // PFSID, MIP, SID
        static let wait: UInt64 = 0xFFFF_FFFF_0000_00FF              // IF, SW, FN, PD, status data
        static let pasidIOTLB: UInt64 = 0x000F_FFFF_FFFF_003F        // G, DID, PASID
        static let pasidCache: UInt64 = 0x000F_FFFF_FFFF_003F        // G, DID, PASID
        static let pasidDeviceTLB: UInt64 = ~0xE00                   // MIP, PFSID, SID, PASID
        static let pageGroupResponse: UInt64 = 0x000F_FFFF_FFFF_F01F // PP, RC, RID, PASID
    }

    /// Decodes a descriptor as the hardware does; nil for a type the model does not execute, a
    /// reserved granularity, or a reserved field that is set (hardware reports an invalidation
    /// queue error).
    public init?(_ d: VTdDescriptor) {
        let q0 = d.qw0, q1 = d.qw1
        switch d.type {
        case TypeCode.contextCache:
            guard q0 & ~Valid.contextCache == 0, q1 == 0 else { return nil }
            let did = UInt16(truncatingIfNeeded: q0 >> 16)
            switch q0 >> 4 & 3 {
            case 1: self = .contextCache(.global)
            case 2: self = .contextCache(.domain(did))
            case 3: self = .contextCache(.device(domain: did, sourceID: UInt16(truncatingIfNeeded: q0 >> 32),
                                                 functionMask: UInt8(q0 >> 48 & 3)))
            default: return nil
            }
        case TypeCode.iotlb:
            guard q0 & ~Valid.iotlb == 0 else { return nil }
            let did = UInt16(truncatingIfNeeded: q0 >> 16)
            let dr = q0 >> 7 & 1 != 0, dw = q0 >> 6 & 1 != 0
            switch q0 >> 4 & 3 {
            case 1: self = .iotlb(.global, drainReads: dr, drainWrites: dw)
            case 2: self = .iotlb(.domain(did), drainReads: dr, drainWrites: dw)
            case 3:
                guard q1 & 0xF80 == 0 else { return nil }
                self = .iotlb(.page(did, VTdPageRange(address: q1, mask: UInt8(q1 & 0x3F), invalidationHint: q1 >> 6 & 1 != 0)),
                              drainReads: dr, drainWrites: dw)
            default: return nil
            }
        case TypeCode.deviceTLB:
            guard q0 & ~Valid.deviceTLB == 0, q1 & 0xFFE == 0 else { return nil }
            let pfsid = UInt16(q0 >> 12 & 0xF) | UInt16(truncatingIfNeeded: q0 >> 52) << 4
            self = .deviceTLB(sourceID: UInt16(truncatingIfNeeded: q0 >> 32), physicalFunction: pfsid,
                              maxPending: UInt8(q0 >> 16 & 0x1F),
                              range: VTdDeviceTLBRange(encodedAddress: q1, sized: q1 & 1 != 0))
        case TypeCode.wait:
            guard q0 & ~Valid.wait == 0, q1 & 3 == 0 else { return nil }
            self = .wait(statusWrite: q0 >> 5 & 1 != 0, statusData: UInt32(truncatingIfNeeded: q0 >> 32), statusAddress: q1,
                         interrupt: q0 >> 4 & 1 != 0, fence: q0 >> 6 & 1 != 0, pageRequestDrain: q0 >> 7 & 1 != 0)
        case TypeCode.pasidIOTLB:
            guard q0 & ~Valid.pasidIOTLB == 0 else { return nil }
            let did = UInt16(truncatingIfNeeded: q0 >> 16)
            let pasid = UInt32(q0 >> 32 & 0xF_FFFF)
            switch q0 >> 4 & 3 {
            case 2: self = .pasidIOTLB(.pasid(did, pasid))
            case 3:
                guard q1 & 0xF80 == 0 else { return nil }
                self = .pasidIOTLB(.page(did, pasid, VTdPageRange(address: q1, mask: UInt8(q1 & 0x3F),
                                                                  invalidationHint: q1 >> 6 & 1 != 0)))
            default: return nil
            }
        case TypeCode.pasidCache:
            guard q0 & ~Valid.pasidCache == 0, q1 == 0 else { return nil }
            let did = UInt16(truncatingIfNeeded: q0 >> 16)
            switch q0 >> 4 & 3 {
            case 0: self = .pasidCache(.domain(did))
            case 1: self = .pasidCache(.pasid(did, UInt32(q0 >> 32 & 0xF_FFFF)))
            case 3: self = .pasidCache(.global)
            default: return nil
            }
        case TypeCode.pasidDeviceTLB:
            guard q0 & ~Valid.pasidDeviceTLB == 0, q1 & 0x7FE == 0 else { return nil }
            let pfsid = UInt16(q0 >> 12 & 0xF) | UInt16(truncatingIfNeeded: q0 >> 52) << 4
            self = .pasidDeviceTLB(sourceID: UInt16(truncatingIfNeeded: q0 >> 16), physicalFunction: pfsid,
                                   pasid: UInt32(q0 >> 32 & 0xF_FFFF), maxPending: UInt8(q0 >> 4 & 0x1F),
                                   global: q1 & 1 != 0,
                                   range: VTdDeviceTLBRange(encodedAddress: q1, sized: q1 >> 11 & 1 != 0))
        case TypeCode.pageGroupResponse:
            guard q0 & ~Valid.pageGroupResponse == 0, q1 & ~0xFF8 == 0 else { return nil }
            let pasidPresent = q0 >> 4 & 1 != 0
            self = .pageGroupResponse(requesterID: UInt16(truncatingIfNeeded: q0 >> 16),
                                      pasid: pasidPresent ? UInt32(q0 >> 32 & 0xF_FFFF) : nil,
                                      code: UInt8(q0 >> 12 & 0xF), groupIndex: UInt16(q1 >> 3 & 0x1FF))
        default:
            return nil
        }
    }
}
