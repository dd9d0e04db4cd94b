// Section 12 of ioasid-benchmark: the I/OAT device model's memory copy through VT-d.
//
//   - one IOAT memcpy of 4 KiB, 64 KiB and 1 MiB, driven as the VFIO selftests' driver drives it
//     (CHAINADDR, CHANCTRL, DMACOUNT = 1 of a descriptor in mapped memory; the engine runs in the
//     DMACOUNT write), every access through the VT-d unit by IOVA with its IOTLB warm (hits),
//     against `memcpy` of the same size between the same host buffers in the same runs;
//   - the same copy through `PCIFunction.copy` alone (the bulk DMA path without the device);
//   - mallocs per IOAT memcpy: `ioatBenchMemcpy()` is counted in section 4's child.

import IOASIDProcessMemory
import Glibc
import IOASIDCore
import IOASIDLinuxABI
import IOASIDSoftDrivers
import IOASIDSoftIOMMU

/// The machine's side of the plugged IOAT: bus mastering on, interrupts counted.
private final class IOATBenchHost: PCIDeviceHost, @unchecked Sendable {
    let function: PCIFunction
    var busMasterEnabled: Bool { true }
    nonisolated(unsafe) var signals = 0
    init(function: PCIFunction) { self.function = function }
    func signal(vector: Int) { signals += 1 }
}

/// An IOAT behind a VT-d unit, attached to an IOAS mapping 2 MiB of copy buffers and a
/// descriptor page at `iova`.
private final class IOATRig {
    static let iova: UInt64 = 0x1_0000_0000
    static let bufferSize = 1 << 20
    let machine = SoftMachine(vtdDelivery: .manual)
    let context = Context(memory: ProcessMemory.shared)
    let memory: UnsafeMutableRawPointer
    let length = 2 * IOATRig.bufferSize + 4096
    let ioat = IOATDevice()
    let host: IOATBenchHost
    var source: UnsafeMutableRawPointer { memory + 4096 }
    var destination: UnsafeMutableRawPointer { memory + 4096 + Self.bufferSize }

    init() {
        memory = anonymous(length, populate: true)
        let device = try! machine.addVTdDevice(capabilities: PCIFunction.Capabilities())
        let id = try! context.bind(device)
        let ioas = try! context.allocateIOAS()
        _ = try! context.map(ioas, source: .user(address: UInt64(UInt(bitPattern: memory))), length: UInt64(length),
                             iova: Self.iova, access: .readWrite)
        _ = try! context.attach(id, to: ioas.object)
        host = IOATBenchHost(function: device.function)
        ioat.plug(into: host)
        for i in 0..<Self.bufferSize { source.storeBytes(of: UInt8(truncatingIfNeeded: i &* 31 &+ 7), toByteOffset: i, as: UInt8.self) }
        // The selftests' driver's reset.
        ioat.write(bar: 0, offset: 0x84, size: 1, value: UInt64(IOATRegister.commandReset))
        ioat.write(bar: 0, offset: 0x03, size: 1, value: UInt64(IOATRegister.interruptMSIXVectorControl))
    }

    /// The descriptors of the prepared copy.
    private(set) var descriptors = 1

    /// Places the descriptors of a `size`-byte copy at the start of the memory, a ring of one
    /// descriptor per 2^XFERCAP bytes (what a driver splits a larger copy into).
    func prepare(size: Int) {
        let chunk = 1 << Int(IOATDevice.transferCapacityLog2)
        descriptors = max(1, (size + chunk - 1) / chunk)
        for i in 0..<descriptors {
            let offset = UInt64(i * chunk)
            let d = IOATDescriptor.copy(size: UInt32(min(chunk, size - i * chunk)), from: Self.iova + 4096 + offset,
                                        to: Self.iova + 4096 + UInt64(Self.bufferSize) + offset,
                                        next: Self.iova + UInt64((i + 1) % descriptors * IOATDescriptor.size))
            d.bytes.withUnsafeBytes { (memory + i * IOATDescriptor.size).copyMemory(from: $0.baseAddress!, byteCount: IOATDescriptor.size) }
        }
    }

    /// One memcpy as the selftests' driver issues it; fails the benchmark on an error.
    @inline(__always) func memcpy() {
        ioat.write(bar: 0, offset: 0x90, size: 8, value: Self.iova)
        ioat.write(bar: 0, offset: 0x80, size: 2, value: UInt64(IOATRegister.controlInterruptRearm | IOATRegister.controlAnyErrorAbortEnable))
        ioat.write(bar: 0, offset: 0x86, size: 2, value: UInt64(descriptors))
        if ioat.read(bar: 0, offset: 0x88, size: 8) & 7 != IOATChannelState.idle.rawValue { fail("IOAT copy did not complete") }
    }

    /// The same copy through the function's bulk path alone.
    @inline(__always) func functionCopy(_ size: Int) {
        if case .failure = host.function.copy(from: Self.iova + 4096, to: Self.iova + 4096 + UInt64(Self.bufferSize), count: size) {
            fail("PCIFunction.copy failed")
        }
    }

    func verify(_ size: Int) {
        if Glibc.memcmp(source, destination, size) != 0 { fail("IOAT copy of \(size) bytes differs") }
        Glibc.memset(destination, 0, size)
    }
}

/// A closure doing one 64 KiB IOAT memcpy through VT-d (IOTLB warm), for section 4's malloc counting.
func ioatBenchMemcpy() -> () -> Void {
    let rig = IOATRig()
    rig.prepare(size: 65536)
    return { rig.memcpy() }
}

/// 8-byte DMA writes by the rig's function at 256 addresses of the copy buffers (IOTLB hits),
/// and the same number of lookups in an IOTLB holding the same pages: the DMA against the
/// lookup alone.
private struct CachedDMARig {
    let rig: IOATRig
    let addresses: [UInt64]
    let lookupCache = TranslationCache(.iotlb)
    let tag = TranslationTag(domain: 1)
    static let batch = 256
    /// The IOVAs lie in the first 64 KiB of the copy buffers (16 pages): the data stays in the
    /// CPU's caches, as a device's ring or descriptors would, so the figure is the DMA path's.
    static let span = 64 << 10

    init(_ rig: IOATRig) {
        self.rig = rig
        var state: UInt64 = 7
        addresses = (0..<Self.batch).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return IOATRig.iova + 4096 + ((state >> 24) % UInt64(Self.span)) & ~7
        }
        for page in stride(from: IOATRig.iova, to: IOATRig.iova + UInt64(rig.length), by: 4096) {
            lookupCache.insert(Translation(inputBase: page, outputBase: 0x8_0000_0000 + page, permissions: .readWrite), tag: tag)
        }
    }

    /// `batch` 8-byte DMA writes (or reads).
    @inline(__always) func dma(write: Bool) {
        var word: UInt64 = 0x1234
        let f = rig.host.function
        for a in addresses {
            let ok = withUnsafeMutableBytes(of: &word) { b in
                if write { if case .success = f.write(address: a, from: UnsafeRawBufferPointer(b)) { return true } }
                else if case .success = f.read(address: a, into: b) { return true }
                return false
            }
            if !ok { fail("cached DMA failed") }
        }
        softIOMMUBlackHole(word)
    }

    /// `batch` IOTLB lookups of the same addresses.
    @inline(__always) func lookups() {
        var acc: UInt64 = 0
        for a in addresses { acc &+= lookupCache.lookup(tag, address: a)?.outputBase ?? 0 }
        softIOMMUBlackHole(acc)
    }
}

/// A closure doing one 8-byte DMA write with a cached translation, for section 4's malloc counting.
func ioatBenchCachedDMA() -> () -> Void {
    let rig = IOATRig()
    let f = rig.host.function
    var word: UInt64 = 1
    return {
        word &+= 1
        _ = withUnsafeBytes(of: &word) { f.write(address: IOATRig.iova + 4096, from: $0) }
    }
}

/// The DMA hot path: an 8-byte DMA through VT-d with the translation cached, against the IOTLB
/// lookup alone (same run).
private func cachedDMATable(_ rig: IOATRig) {
    let d = CachedDMARig(rig)
    d.dma(write: true)
    d.dma(write: false)
    let walks = rig.machine.vtd!.unit.statistics.walks
    let n = calibrate { d.dma(write: true); d.lookups() }
    let w = paired(iterations: n, op: { d.dma(write: true) }, baseline: { d.lookups() })
    let r = paired(iterations: n, op: { d.dma(write: false) }, baseline: { d.lookups() })
    let b = Double(CachedDMARig.batch)
    func row(_ name: String, _ p: (op: Stats, base: Stats, ratio: Stats)) -> [String] {
        [name, fmt(p.op.median / b, 1), "\(fmt(p.op.min / b, 1))..\(fmt(p.op.max / b, 1))", fmt(p.base.median / b, 2),
         fmt(p.ratio.median, 1), p.op.median / b <= 50 ? "yes" : "NO"]
    }
    printTable(["8-byte DMA, translation cached (PCIFunction -> VT-d IOTLB hit -> memory)", "ns", "spread",
                "IOTLB lookup alone ns", "ratio", "goal <= 50 ns"], [
        row("DMA write (PCIFunction.write(address:from:))", w),
        row("DMA read (PCIFunction.read(address:into:))", r),
    ])
    let more = rig.machine.vtd!.unit.statistics.walks - walks
    print("(batches of \(CachedDMARig.batch) DMAs at random 8-byte-aligned IOVAs in 64 KiB (16 pages) of the mapping, data cache-warm;"
          + " the lookups: the same IOVAs in an IOTLB of the same geometry; walks during the runs: \(more))")
}

func ioatSection() {
    print("== 12. I/OAT device model: memcpy descriptors through VT-d (IOTLB hits) vs memcpy ==")
    let rig = IOATRig()
    cachedDMATable(rig)
    var rows: [[String]] = []
    var ratios: [Int: Double] = [:]
    for size in [4096, 65536, 1 << 20] {
        rig.prepare(size: size)
        rig.memcpy()
        rig.verify(size)
        let n = calibrate { rig.memcpy() }
        let device = paired(iterations: n, op: { rig.memcpy() }, baseline: { Glibc.memcpy(rig.destination, rig.source, size) })
        let bulk = paired(iterations: n, op: { rig.functionCopy(size) }, baseline: { Glibc.memcpy(rig.destination, rig.source, size) })
        rig.memcpy()
        rig.verify(size)
        func gbps(_ ns: Double) -> String { fmt(Double(size) / ns, 2) }
        let label = size >= 1 << 20 ? "\(size >> 20) MiB" : "\(size >> 10) KiB"
        ratios[size] = 1 / device.ratio.median
        rows.append([label, fmt(device.op.median / 1000, 2), "\(fmt(device.op.min / 1000, 2))..\(fmt(device.op.max / 1000, 2))",
                     gbps(device.op.median), fmt(device.base.median / 1000, 2), gbps(device.base.median),
                     fmt(100 / device.ratio.median, 1) + "%", fmt(100 / bulk.ratio.median, 1) + "%",
                     size >= 65536 ? (100 / device.ratio.median >= 60 ? "yes" : "NO") : "-"])
    }
    printTable(["copy size", "IOAT us", "spread", "IOAT GB/s", "memcpy us", "memcpy GB/s", "IOAT / memcpy",
                "PCIFunction.copy / memcpy", "goal >= 60%"], rows)
    let unit = rig.machine.vtd!.unit
    let stats = unit.iotlb.statistics
    print("(one copy: CHAINADDR + CHANCTRL + DMACOUNT writes, descriptor fetch, copy, CHANSTS read; ratio = memcpy time / IOAT time,")
    print(" median of the per-run ratios; VT-d IOTLB over the whole section: \(stats.hits) hits, \(stats.misses) misses,")
    print(" \(unit.statistics.walks) page-table walks; \(rig.host.signals) interrupts)")
    print("")
}
