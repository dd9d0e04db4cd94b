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

func ioatSection() {
    print("== 12. I/OAT device model: memcpy descriptors through VT-d (IOTLB hits) vs memcpy ==")
    let rig = IOATRig()
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
