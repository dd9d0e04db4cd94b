// Reading outcomes back from the modelled hardware, the way the hardware itself finds them
// (registers, stream table, CD tables, fault recording registers), and wording them.

import IOASIDCore
import IOASIDSoftIOMMU

/// The STE the SMMU uses for `streamID`, found from STRTAB_BASE and STRTAB_BASE_CFG as the SMMU
/// finds it (linear, or two-level with the configured split).
func streamTableEntry(_ smmu: SMMUv3, memory: PhysicalMemory, streamID: UInt32) -> SMMUv3StreamTableEntry? {
    let base = smmu.read64(.strtabBase) & 0x000F_FFFF_FFFF_FFC0
    let cfg = smmu.read32(.strtabBaseCfg)
    let twoLevel = (cfg >> 16) & 3 == 1
    guard twoLevel else { return SMMUv3StreamTableEntry(memory: memory, at: base + UInt64(streamID) * 64) }
    let split = (cfg >> 6) & 0x1F
    let l1 = SMMUv3L1StreamTableDescriptor(word: memory.read64(base + UInt64(streamID >> split) * 8))
    guard l1.span != 0 else { return nil }
    return SMMUv3StreamTableEntry(memory: memory, at: l1.l2Ptr + UInt64(streamID & ((1 << split) - 1)) * 64)
}

/// CD `ssid` of the CD table an STE points at (linear, or two-level with 64 KiB leaves).
func contextDescriptor(_ ste: SMMUv3StreamTableEntry, memory: PhysicalMemory, ssid: UInt32) -> SMMUv3ContextDescriptor? {
    switch ste.s1Fmt {
    case 0:
        return SMMUv3ContextDescriptor(memory: memory, at: ste.s1ContextPtr + UInt64(ssid) * 64)
    case 2:
        let l1 = SMMUv3L1ContextDescriptor(word: memory.read64(ste.s1ContextPtr + UInt64(ssid / 1024) * 8))
        guard l1.valid else { return nil }
        return SMMUv3ContextDescriptor(memory: memory, at: l1.l2Ptr + UInt64(ssid % 1024) * 64)
    default:
        return nil
    }
}

/// `0x…` in hexadecimal.
func hex<T: BinaryInteger>(_ v: T) -> String { "0x" + String(v, radix: 16) }

/// Bytes as text when they are printable ASCII, else as hex.
func show(_ bytes: [UInt8]) -> String {
    if bytes.allSatisfy({ (0x20..<0x7F).contains($0) }) { return "\"" + String(decoding: bytes, as: UTF8.self) + "\"" }
    if bytes.allSatisfy({ $0 == 0 }) { return "zeros" }
    return bytes.map { String($0, radix: 16) }.joined(separator: " ")
}

/// The symbolic name of the errno values the demo meets.
func errnoName(_ errno: Int32) -> String {
    switch errno {
    case 1: "EPERM"
    case 2: "ENOENT"
    case 5: "EIO"
    case 12: "ENOMEM"
    case 16: "EBUSY"
    case 17: "EEXIST"
    case 22: "EINVAL"
    case 28: "ENOSPC"
    case 95: "EOPNOTSUPP"
    default: "errno \(errno)"
    }
}

/// An error as `EPERM (reason)`.
func describe(_ error: any Error) -> String {
    if let e = error as? IOMMUError { return "\(errnoName(e.errno)) (\(e.reason))" }
    return "\(error)"
}

/// Why a DMA did not complete.
func describe(_ error: DMAError) -> String {
    switch error {
    case .fault(let f): "IOMMU fault \(f.reason)"
    case .noTranslation: "no translation"
    case .translationRequestFailed(let c): "ATS translation request failed (\(c))"
    case .pageRequestFailed(let code): "page request answered \(code)"
    case .pageRequestsStopped: "page requests stopped"
    case .pageRequestLimit: "page request limit"
    case .pasidNotEnabled: "PASID not enabled"
    case .pasidOutOfRange(let p): "\(p) out of range"
    case .unsupportedAccess: "unsupported access"
    case .memory(let m): "memory error \(m)"
    }
}

/// A VT-d fault record as the host's fault handler reports it.
func describe(_ record: VTdFaultRecord) -> String {
    let reason = record.reason.map { "\($0)" } ?? "reason \(hex(record.reasonCode))"
    return "fault record \(hex(record.reasonCode)) (\(reason)) from \(RequesterID(rawValue: record.sourceID)), "
        + (record.pasid.map { "PASID \($0)" } ?? "no PASID") + ", \(record.requestType) at \(hex(record.faultInfo))"
}
