// The I/OAT device model driven as Linux's ioatdma driver and the VFIO selftests' IOAT driver
// drive it, on a VT-d and on an SMMUv3 function of a SoftMachine, with its DMA through the
// IOMMU by IOVA.

import IOASIDProcessMemory
import Foundation
import IOASIDCore
import IOASIDLinuxABI
import IOASIDSoftDrivers
import IOASIDSoftIOMMU
import Testing

/// The machine's side of a plugged device, for tests: a function, a bus-master bit, a record of
/// the vectors signalled.
final class TestDeviceHost: PCIDeviceHost, @unchecked Sendable {
    let function: PCIFunction
    private let lock = NSLock()
    private var busMaster = true
    private var vectors: [Int] = []

    init(function: PCIFunction) { self.function = function }

    var busMasterEnabled: Bool {
        get { lock.withLock { busMaster } }
        set { lock.withLock { busMaster = newValue } }
    }
    func signal(vector: Int) { lock.withLock { vectors.append(vector) } }
    /// The vectors signalled since the last call.
    func takeSignals() -> [Int] { lock.withLock { defer { vectors = [] }; return vectors } }
}

/// An IOAT on one IOMMU kind, with user memory mapped at `iova` and a driver's view of it.
private struct IOATRig {
    static let iova: UInt64 = 0x4000_0000
    static let unmappedIOVA: UInt64 = 0x9000_0000
    let machine = SoftMachine(vtdDelivery: .manual)
    let model: any DMADevice
    let context = Context(memory: ProcessMemory.shared)
    let memory: VTdUserBuffer
    let ioat = IOATDevice()
    let host: TestDeviceHost
    let ioas: IOAS.ID

    /// `pages` of user memory mapped at `iova`, the device attached to the IOAS.
    init(_ kind: String, pages: Int = 64) throws {
        let plain = PCIFunction.Capabilities()
        model = kind == "vtd" ? try machine.addVTdDevice(capabilities: plain) : try machine.addSMMUv3Device(capabilities: plain)
        memory = VTdUserBuffer(pages: pages)
        let device = try context.bind(model)
        ioas = try context.allocateIOAS()
        _ = try context.map(ioas, source: .user(address: memory.address), length: UInt64(pages * 4096), iova: Self.iova,
                            access: .readWrite)
        _ = try context.attach(device, to: ioas.object)
        host = TestDeviceHost(function: model.function)
        ioat.plug(into: host)
    }

    func iova(_ offset: Int) -> UInt64 { Self.iova + UInt64(offset) }

    /// Puts a descriptor in memory at `offset`.
    func place(_ d: IOATDescriptor, at offset: Int) {
        for (i, b) in d.bytes.enumerated() { memory[offset + i] = b }
    }

    // Register access as a driver does it (offsets in BAR 0; the channel at 0x80).
    func read8(_ o: UInt64) -> UInt8 { UInt8(ioat.read(bar: 0, offset: o, size: 1)) }
    func read32(_ o: UInt64) -> UInt32 { UInt32(ioat.read(bar: 0, offset: o, size: 4)) }
    func read64(_ o: UInt64) -> UInt64 { ioat.read(bar: 0, offset: o, size: 8) }
    func write8(_ o: UInt64, _ v: UInt8) { ioat.write(bar: 0, offset: o, size: 1, value: UInt64(v)) }
    func write16(_ o: UInt64, _ v: UInt16) { ioat.write(bar: 0, offset: o, size: 2, value: UInt64(v)) }
    func write32(_ o: UInt64, _ v: UInt32) { ioat.write(bar: 0, offset: o, size: 4, value: UInt64(v)) }
    func write64(_ o: UInt64, _ v: UInt64) { ioat.write(bar: 0, offset: o, size: 8, value: v) }

    var status: UInt64 { read64(0x88) }
    var state: UInt64 { status & 7 }
    var chanerr: UInt32 { read32(0xA8) }

    /// The selftest driver's reset: clear CHANERR, CHANCMD reset, wait for the bit to clear.
    func reset() {
        write32(0xA8, chanerr)
        write8(0x84, IOATRegister.commandReset)
        var polls = 0
        while read8(0x84) & IOATRegister.commandReset != 0 { polls += 1; precondition(polls < 1000) }
    }

    /// The addresses of the IOMMU's fault records since the last call.
    func takeFaults() -> [UInt64] {
        if let vtd = machine.vtd { return vtd.unit.takeFaults().map(\.faultInfo) }
        machine.smmu!.processInterrupts()
        return machine.smmu!.takeUnhandledEvents().compactMap(\.inputAddress)
    }
}

@Suite("I/OAT DMA engine model")
struct IOATDeviceTests {
    @Test func identityBARAndCapabilitiesAreTheCBDMAFunctions() {
        let ioat = IOATDevice()
        #expect(ioat.identity.vendorID == 0x8086 && ioat.identity.deviceID == 0x2021 && ioat.identity.classCode == 0x08_8000)
        #expect(ioat.bars == [PCIBAR(index: 0, size: 0x4000, kind: .memory64)])
        #expect(ioat.capabilities.contains(.msix(vectors: 1, tableBAR: 0, tableOffset: 0x2000, pbaBAR: 0, pbaOffset: 0x3000)))
        #expect(ioat.capabilities.contains(.pciExpress(deviceType: .rootComplexIntegratedEndpoint, functionLevelReset: true)))
        // What both drivers read before binding.
        #expect(ioat.read(bar: 0, offset: 0x00, size: 1) == 1, "CHANCNT")
        #expect(ioat.read(bar: 0, offset: 0x01, size: 1) == 16, "XFERCAP: 64 KiB")
        #expect(ioat.read(bar: 0, offset: 0x08, size: 1) == 0x33, "CBVER 3.3")
        #expect(ioat.read(bar: 0, offset: 0x14, size: 2) == 0, "no DCA registers")
        #expect(ioat.read(bar: 0, offset: 0x10, size: 4) & 0x300 == 0, "no XOR or P+Q")
        #expect(ioat.read(bar: 0, offset: 0x88, size: 8) & 7 == IOATChannelState.halted.rawValue, "halted at power-on")
        // A 4-byte read across CHANCNT, XFERCAP, GENCTRL and INTRCTRL reads each register.
        #expect(ioat.read(bar: 0, offset: 0x00, size: 4) == 0x0000_1001)
    }

    /// The VFIO selftests' IOAT driver: reset, one descriptor whose `next` is itself, DMACOUNT of
    /// a batch, poll CHANSTS for done, suspend; MSI-X through an interrupting descriptor.
    @Test(arguments: ["vtd", "smmuv3"])
    func selftestDriverSequence(kind: String) throws {
        try pinsShared {
            let rig = try IOATRig(kind)
            rig.reset()
            #expect(rig.state == IOATChannelState.halted.rawValue)
            rig.write8(0x03, IOATRegister.interruptMSIXVectorControl)
            let size = 5 * 4096 + 123
            let (src, dst, desc) = (4096, 16 * 4096, 0)
            for i in 0..<size { rig.memory[src + i] = UInt8(truncatingIfNeeded: i * 7 + 3) }
            for count: UInt16 in [1, 3] {
                for i in 0..<size { rig.memory[dst + i] = 0xEE }
                rig.place(.copy(size: UInt32(size), from: rig.iova(src), to: rig.iova(dst), next: rig.iova(desc)), at: desc)
                rig.write64(0x90, rig.iova(desc))
                rig.write16(0x80, IOATRegister.controlInterruptRearm | IOATRegister.controlAnyErrorAbortEnable)
                rig.write16(0x86, count)
                #expect(rig.state == IOATChannelState.idle.rawValue)
                #expect(rig.status & IOATRegister.statusAddressMask == rig.iova(desc))
                #expect((0..<size).allSatisfy { rig.memory[dst + $0] == UInt8(truncatingIfNeeded: $0 * 7 + 3) })
                #expect(rig.memory[dst + size] == 0, "not one byte more")
                rig.write8(0x84, IOATRegister.commandSuspend)
                #expect(rig.state == IOATChannelState.suspended.rawValue)
            }
            #expect(rig.host.takeSignals() == [], "no descriptor asked for an interrupt")
            // send_msi: an 8-byte copy with interrupt enable.
            rig.place(.copy(size: 8, from: rig.iova(src), to: rig.iova(dst), next: rig.iova(desc), interrupt: true), at: desc)
            rig.write64(0x90, rig.iova(desc))
            rig.write16(0x80, IOATRegister.controlInterruptRearm | IOATRegister.controlAnyErrorAbortEnable)
            rig.write16(0x86, 1)
            #expect(rig.host.takeSignals() == [0])
            #expect(rig.takeFaults() == [])
        }
    }

    /// Linux's ioatdma: CHANCTRL RUN, CHANCMP by halves, a ring whose first descriptor is a null
    /// descriptor, running DMACOUNT; completion writes and MSI-X; the read/write errors it
    /// recovers from; an unknown operation; then reset and the same channel works again.
    @Test(arguments: ["vtd", "smmuv3"])
    func linuxDriverSequenceAndErrors(kind: String) throws {
        try pinsShared {
            let rig = try IOATRig(kind, pages: 128)
            let ring = 0, completion = 8 * 64, src = 4096, dst = 64 * 4096
            func descriptor(_ i: Int) -> Int { ring + i * 64 }
            func next(_ i: Int) -> UInt64 { rig.iova(descriptor((i + 1) % 8)) }
            rig.reset()
            rig.write8(0x03, IOATRegister.interruptMSIXVectorControl | IOATRegister.interruptMasterEnable)
            rig.write16(0x80, 0x001D)  // IOAT_CHANCTRL_RUN
            rig.write32(0x98, UInt32(truncatingIfNeeded: rig.iova(completion)))
            rig.write32(0x9C, UInt32(truncatingIfNeeded: rig.iova(completion) >> 32))
            rig.place(IOATDescriptor(transferSize: 1, control: IOATDescriptor.null | IOATDescriptor.interruptEnable | IOATDescriptor.completionWrite,
                                     source: 0, destination: 0, next: next(0)), at: descriptor(0))
            rig.write32(0x90, UInt32(truncatingIfNeeded: rig.iova(descriptor(0))))
            rig.write32(0x94, UInt32(truncatingIfNeeded: rig.iova(descriptor(0)) >> 32))
            rig.write16(0x86, 1)
            #expect(rig.state == IOATChannelState.idle.rawValue)
            #expect(rig.memory.word(at: completion) == rig.iova(descriptor(0)) | IOATChannelState.idle.rawValue)
            #expect(rig.host.takeSignals() == [0])

            // Three copies; the last writes the completion and interrupts. Re-armed first, as the
            // driver's cleanup does.
            rig.write16(0x80, 0x001D)
            for i in 0..<(3 * 65536) { rig.memory[src + i] = UInt8(truncatingIfNeeded: i &* 131 &+ i >> 9) }
            for k in 1...3 {
                rig.place(.copy(size: 65536, from: rig.iova(src + (k - 1) * 65536), to: rig.iova(dst + (k - 1) * 65536), next: next(k),
                                interrupt: k == 3, completionWrite: k == 3), at: descriptor(k))
            }
            rig.write16(0x86, 4)
            #expect(rig.state == IOATChannelState.idle.rawValue)
            #expect(memcmp(rig.memory.base + src, rig.memory.base + dst, 3 * 65536) == 0)
            #expect(rig.memory.word(at: completion) == rig.iova(descriptor(3)) | IOATChannelState.idle.rawValue)
            #expect(rig.host.takeSignals() == [0])
            #expect(rig.takeFaults() == [])

            // A source at an unmapped IOVA: Read Data Error, halted at the last good descriptor,
            // the halted status written to CHANCMP, an error interrupt, the IOMMU's record.
            rig.write16(0x80, 0x001D)
            rig.place(.copy(size: 4096, from: IOATRig.unmappedIOVA, to: rig.iova(dst), next: next(4)), at: descriptor(4))
            rig.write16(0x86, 5)
            #expect(rig.state == IOATChannelState.halted.rawValue)
            #expect(rig.chanerr == IOATRegister.errorReadData)
            #expect(rig.status & IOATRegister.statusAddressMask == rig.iova(descriptor(3)))
            #expect(rig.memory.word(at: completion) == rig.iova(descriptor(3)) | IOATChannelState.halted.rawValue)
            #expect(rig.read64(0xA0) == rig.iova(descriptor(4)), "CDAR: the failing descriptor")
            #expect(rig.host.takeSignals() == [0])
            #expect(rig.takeFaults() == [IOATRig.unmappedIOVA])
            // Halted on an error: more work does nothing until the error is handled.
            rig.write16(0x86, 6)
            #expect(rig.state == IOATChannelState.halted.rawValue && rig.chanerr == IOATRegister.errorReadData)

            // Linux's recovery: clear CHANERR, reset, CHANCMP again, restart the chain.
            rig.write32(0xA8, rig.chanerr)
            rig.write8(0x84, IOATRegister.commandReset)
            #expect(rig.read8(0x84) == 0 && rig.state == IOATChannelState.halted.rawValue && rig.chanerr == 0)
            #expect(rig.read64(0x98) == 0 && rig.read16Control == 0, "reset clears CHANCMP and CHANCTRL")
            rig.write64(0x98, rig.iova(completion))
            rig.write16(0x80, 0x001D)
            // A destination at an unmapped IOVA: Write Data Error.
            rig.place(.copy(size: 100, from: rig.iova(src), to: IOATRig.unmappedIOVA + 0x3000, next: next(5), completionWrite: true),
                      at: descriptor(5))
            rig.write64(0x90, rig.iova(descriptor(5)))
            rig.write16(0x86, 1)
            #expect(rig.state == IOATChannelState.halted.rawValue && rig.chanerr == IOATRegister.errorWriteData)
            #expect(rig.takeFaults() == [IOATRig.unmappedIOVA + 0x3000])
            #expect(rig.host.takeSignals() == [0])

            // An operation the model does not perform (XOR, 0x87): Descriptor Control Error.
            rig.reset()
            rig.write64(0x98, rig.iova(completion))
            rig.write16(0x80, 0x001D)
            rig.place(IOATDescriptor(transferSize: 64, control: 0x87 << 24, source: rig.iova(src), destination: rig.iova(dst),
                                     next: next(6)), at: descriptor(6))
            rig.write64(0x90, rig.iova(descriptor(6)))
            rig.write16(0x86, 1)
            #expect(rig.chanerr == IOATRegister.errorDescriptorControl)
            // The error completion cannot land when CHANCMP is not mapped: Completion Address Error too.
            rig.reset()
            rig.write16(0x80, 0x001D)
            rig.write64(0x90, rig.iova(descriptor(6)))
            rig.write16(0x86, 1)
            #expect(rig.chanerr == IOATRegister.errorDescriptorControl | IOATRegister.errorCompletionAddress)
            #expect(rig.takeFaults() == [0], "CHANCMP reset to 0, which is not mapped")
            // Sizes of zero and above 2^XFERCAP: Descriptor Transfer Size Error.
            for size: UInt32 in [0, (1 << UInt32(IOATDevice.transferCapacityLog2)) + 1] {
                rig.reset()
                rig.place(.copy(size: size, from: rig.iova(src), to: rig.iova(dst), next: next(6)), at: descriptor(6))
                rig.write64(0x90, rig.iova(descriptor(6)))
                rig.write16(0x86, 1)
                #expect(rig.chanerr == IOATRegister.errorTransferSize)
            }
            // A chain starting at an unmapped or unaligned address: Chain Address Value Error;
            // a later descriptor's `next` unaligned: Descriptor Error.
            rig.reset()
            rig.write64(0x90, IOATRig.unmappedIOVA)
            rig.write16(0x86, 1)
            #expect(rig.chanerr == IOATRegister.errorChainAddressValue)
            #expect(rig.takeFaults() == [IOATRig.unmappedIOVA])
            rig.reset()
            rig.place(.copy(size: 8, from: rig.iova(src), to: rig.iova(dst), next: rig.iova(descriptor(7)) + 8), at: descriptor(6))
            rig.write64(0x90, rig.iova(descriptor(6)))
            rig.write16(0x86, 2)
            #expect(rig.chanerr == IOATRegister.errorNextDescriptorAlignment)
            #expect(rig.status & IOATRegister.statusAddressMask == rig.iova(descriptor(6)))

            // After all that, a reset channel copies again (the program and the machine unharmed).
            rig.reset()
            rig.write64(0x98, rig.iova(completion))
            for i in 0..<4096 { rig.memory[dst + i] = 0 }
            rig.place(.copy(size: 4096, from: rig.iova(src), to: rig.iova(dst), next: next(1), completionWrite: true), at: descriptor(1))
            rig.write64(0x90, rig.iova(descriptor(1)))
            rig.write16(0x86, 1)
            #expect(rig.state == IOATChannelState.idle.rawValue && rig.chanerr == 0)
            #expect(memcmp(rig.memory.base + src, rig.memory.base + dst, 4096) == 0)
            #expect(rig.memory.word(at: completion) == rig.iova(descriptor(1)) | IOATChannelState.idle.rawValue)
        }
    }

    @Test(arguments: ["vtd", "smmuv3"])
    func nothingMovesWithBusMasteringOff(kind: String) throws {
        try pinsShared {
            let rig = try IOATRig(kind)
            let completion = 512, src = 4096, dst = 8 * 4096
            rig.reset()
            rig.write8(0x03, IOATRegister.interruptMSIXVectorControl)
            rig.write64(0x98, rig.iova(completion))
            rig.write16(0x80, 0x001D)
            for i in 0..<8192 { rig.memory[src + i] = UInt8(truncatingIfNeeded: i | 1) }
            rig.place(.copy(size: 8192, from: rig.iova(src), to: rig.iova(dst), next: 0, interrupt: true, completionWrite: true), at: 0)
            rig.host.busMasterEnabled = false
            rig.write64(0x90, rig.iova(0))
            rig.write16(0x86, 1)
            #expect(rig.state == IOATChannelState.active.rawValue, "work it cannot fetch")
            #expect((0..<8192).allSatisfy { rig.memory[dst + $0] == 0 })
            #expect(rig.memory.word(at: completion) == 0 && rig.host.takeSignals() == [])
            #expect(rig.takeFaults() == [])
            rig.host.busMasterEnabled = true
            #expect(rig.state == IOATChannelState.idle.rawValue, "a CHANSTS read lets it go on")
            #expect(memcmp(rig.memory.base + src, rig.memory.base + dst, 8192) == 0)
            #expect(rig.memory.word(at: completion) == rig.iova(0) | IOATChannelState.idle.rawValue)
            #expect(rig.host.takeSignals() == [0])
        }
    }

    /// Interrupts: one per arming; one raised while disarmed is sent at the re-arm; none with
    /// INTRCTRL off; an error interrupts only with error interrupt enable.
    @Test func interruptsFollowArmingAndINTRCTRL() throws {
        try pinsShared {
            let rig = try IOATRig("vtd")
            let src = 4096, dst = 8192
            rig.reset()
            rig.write8(0x03, IOATRegister.interruptMSIXVectorControl)
            for i in 0..<4 {
                rig.place(.copy(size: 8, from: rig.iova(src), to: rig.iova(dst), next: rig.iova((i + 1) * 64), interrupt: true), at: i * 64)
            }
            rig.write64(0x90, rig.iova(0))
            rig.write16(0x80, IOATRegister.controlInterruptRearm)
            rig.write16(0x86, 2)
            #expect(rig.host.takeSignals() == [0], "two completions, one interrupt per arming")
            rig.write16(0x80, IOATRegister.controlInterruptRearm)
            #expect(rig.host.takeSignals() == [0], "the held one, at the re-arm")
            rig.write16(0x80, IOATRegister.controlInterruptRearm)
            #expect(rig.host.takeSignals() == [])
            rig.write8(0x03, 0)
            rig.write16(0x86, 3)
            #expect(rig.host.takeSignals() == [] && rig.read32(0x04) == 1, "INTRCTRL off: only ATTNSTATUS")
            #expect(rig.read32(0x04) == 0, "ATTNSTATUS clears on read")
            rig.write8(0x03, IOATRegister.interruptMasterEnable)
            rig.write16(0x86, 4)
            #expect(rig.host.takeSignals() == [0], "single-vector mode: vector 0, master enable")
            // An error without error interrupt enable: halted, nothing sent.
            rig.write16(0x80, IOATRegister.controlInterruptRearm | IOATRegister.controlAnyErrorAbortEnable)
            rig.place(.copy(size: 8, from: IOATRig.unmappedIOVA, to: rig.iova(dst), next: 0), at: 4 * 64)
            rig.write16(0x86, 5)
            #expect(rig.chanerr == IOATRegister.errorReadData && rig.host.takeSignals() == [])
        }
    }

    @Test func functionLevelResetRestoresPowerOnValues() throws {
        try pinsShared {
            let rig = try IOATRig("vtd")
            rig.write8(0x03, IOATRegister.interruptMSIXVectorControl)
            rig.write16(0x80, 0x001D)
            rig.write64(0x98, rig.iova(512))
            rig.place(.copy(size: 8, from: IOATRig.unmappedIOVA, to: rig.iova(4096), next: 0), at: 0)
            rig.write64(0x90, rig.iova(0))
            rig.write16(0x86, 1)
            #expect(rig.chanerr == IOATRegister.errorReadData)
            rig.ioat.reset()
            #expect(rig.chanerr == 0 && rig.read64(0x98) == 0 && rig.read64(0x90) == 0 && rig.read16Control == 0)
            #expect(rig.read8(0x03) == 0 && rig.state == IOATChannelState.halted.rawValue && rig.ioat.read(bar: 0, offset: 0x86, size: 2) == 0)
            _ = rig.takeFaults()
        }
    }

    /// DMACOUNT appends: a larger count continues the chain after the last completed descriptor.
    @Test func dmaCountAppendsToTheChain() throws {
        try pinsShared {
            let rig = try IOATRig("smmuv3")
            rig.reset()
            for i in 0..<6 {
                rig.memory[8192 + i] = UInt8(0xA0 + i)
                rig.place(.copy(size: 1, from: rig.iova(8192 + i), to: rig.iova(12288 + i), next: rig.iova((i + 1) * 64)), at: i * 64)
            }
            rig.write64(0x90, rig.iova(0))
            rig.write16(0x86, 2)
            #expect((0..<6).map { rig.memory[12288 + $0] } == [0xA0, 0xA1, 0, 0, 0, 0])
            rig.write16(0x86, 5)
            #expect((0..<6).map { rig.memory[12288 + $0] } == [0xA0, 0xA1, 0xA2, 0xA3, 0xA4, 0])
            #expect(rig.status & IOATRegister.statusAddressMask == rig.iova(4 * 64))
        }
    }
}

extension IOATRig {
    var read16Control: UInt16 { UInt16(ioat.read(bar: 0, offset: 0x80, size: 2)) }
}
