// vfio's migration interface on the I/OAT model: the features, the state machine's arcs, the
// data descriptor, and a save -> restore into a second device that continues a descriptor chain.
import CIOASIDSys
import Glibc
import IOASIDCore
import IOASIDLinuxABI
import IOASIDSoftDrivers
import IOASIDSoftIOMMU
import Testing

let featureGet: UInt32 = 1 << 16, featureSet: UInt32 = 1 << 17, featureProbe: UInt32 = 1 << 18

/// An I/OAT behind VFIO with `pages` of memory mapped at `iova`, bus mastering on.
private final class MigrationRig {
    static let iova: UInt64 = 1 << 20
    let t: VFIOTestbed
    let ioat = IOATDevice()

    init(memory: UnsafeMutableRawPointer, pages: Int) throws {
        t = try VFIOTestbed(model: ioat)
        let ioas = try t.iommu.context.allocateIOAS()
        _ = try t.iommu.context.map(ioas, source: .user(address: UInt64(UInt(bitPattern: memory))), length: UInt64(pages * 4096),
                                    iova: Self.iova, access: .readWrite)
        var at = vfio_device_attach_iommufd_pt()
        at.pt_id = ioas.rawValue
        #expect(t.cdev.vfioCall(IOCTL.VFIO_DEVICE_ATTACH_IOMMUFD_PT, &at) == 0)
        t.setConfig(4, 2, t.config(4, 2) | UInt32(PCIRegister.commandBusMaster))
    }

    /// A feature request: the header, then `data` (32-bit words); the words after the call.
    func feature(_ flags: UInt32, _ data: [UInt32], result: inout Int) -> [UInt32] {
        var w = [UInt32(8 + 4 * data.count), flags] + data
        result = t.request(IOCTL.VFIO_DEVICE_FEATURE, &w)
        return Array(w.dropFirst(2))
    }

    /// MIG_DEVICE_STATE SET: the errno result and the data_fd.
    func set(_ state: VFIOMigrationState) -> (Int, Int32) {
        var r = 0
        let out = feature(featureSet | 2, [state.rawValue, 0x7777], result: &r)
        return (r, Int32(bitPattern: out[1]))
    }

    /// MIG_DEVICE_STATE GET.
    var state: VFIOMigrationState? {
        var r = 0
        let out = feature(featureGet | 2, [0, 0], result: &r)
        return r == 0 ? VFIOMigrationState(rawValue: out[0]) : nil
    }

    func file(_ fd: Int32) -> any LinuxFile { t.host.file(for: fd)! }

    /// Reads `fd` until it returns 0 or an error; the bytes and the last result.
    func drain(_ fd: Int32) -> ([UInt8], Int) {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 7)  // small reads: the stream is not record-aligned
        while true {
            let n = chunk.withUnsafeMutableBytes { file(fd).read(into: $0) }
            guard n > 0 else { return (bytes, n) }
            bytes += chunk[0..<n]
        }
    }

    func write(_ fd: Int32, _ bytes: [UInt8]) -> Int {
        var copy = bytes
        return copy.withUnsafeMutableBytes { file(fd).write(from: UnsafeRawBufferPointer($0)) }
    }

    // The channel's registers through the BAR region.
    func reg(_ offset: UInt64, _ size: Int) -> UInt64 { t.bar0(offset, size).1 }
    func setReg(_ offset: UInt64, _ size: Int, _ value: UInt64) { t.setBAR0(offset, size, value) }
}

@Suite("VFIO migration")
struct VFIOMigrationTests {
    @Test func featuresOfAMigratableDevice() throws {
        try PinLock.shared {
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 4096)
            defer { buffer.deallocate() }
            let m = try MigrationRig(memory: buffer, pages: 1)
            var r = 0
            let flags = m.feature(featureGet | 1, [0, 0], result: &r)
            #expect(r == 0 && flags == [0b111, 0], "STOP_COPY | P2P | PRE_COPY")
            _ = m.feature(featureSet | 1, [0, 0], result: &r)
            #expect(r == -22, "MIGRATION has no SET")
            _ = m.feature(featureProbe | featureGet | featureSet | 2, [], result: &r)
            #expect(r == 0, "MIG_DEVICE_STATE probes GET and SET")
            _ = m.feature(featureGet | 2, [0], result: &r)
            #expect(r == -22, "MIG_DEVICE_STATE needs 8 bytes")
            #expect(m.state == .running)
            let size = m.feature(featureGet | 9, [0, 0], result: &r)
            #expect(r == 0 && Int(size[0]) == 4 + IOATDevice().saveState().count && size[1] == 0, "MIG_DATA_SIZE: one record")
            _ = m.feature(featureSet | 12, [], result: &r)
            #expect(r == 0, "PRECOPY_INFOv2 opt-in")
            // A device without a migration driver answers ENOTTY.
            let plain = try VFIOTestbed()
            var w: [UInt32] = [16, featureGet | 1, 0, 0]
            #expect(plain.request(IOCTL.VFIO_DEVICE_FEATURE, &w) == -25)
        }
    }

    @Test func combinationArcsFollowTheShortestPathWithoutInteriorSavingStates() {
        typealias S = VFIOMigrationState
        #expect(S.running.path(to: .stopCopy) == [.runningP2P, .stop, .stopCopy])
        #expect(S.running.path(to: .resuming) == [.runningP2P, .stop, .resuming])
        #expect(S.stop.path(to: .running) == [.runningP2P, .running])
        #expect(S.runningP2P.path(to: .preCopy) == [.running, .preCopy], "not through PRE_COPY_P2P")
        #expect(S.preCopy.path(to: .stopCopy) == [.preCopyP2P, .stopCopy], "within the saving group")
        #expect(S.preCopy.path(to: .stop) == [.running, .runningP2P, .stop], "out of the saving group first")
        #expect(S.preCopy.path(to: .runningP2P) == [.running, .runningP2P])
        #expect(S.preCopyP2P.path(to: .running) == [.runningP2P, .running])
        #expect(S.preCopyP2P.path(to: .preCopy) == [.preCopy])
        #expect(S.stop.path(to: .preCopy) == [.runningP2P, .running, .preCopy])
        #expect(S.stopCopy.path(to: .running) == [.stop, .runningP2P, .running])
        #expect(S.stopCopy.path(to: .preCopy) == nil && S.stopCopy.path(to: .preCopyP2P) == nil, "forbidden arcs")
        #expect(S.running.path(to: .stopCopy)!.dropLast().allSatisfy { !$0.isSaving }, "no saving interior from outside")
        #expect(S.resuming.path(to: .running) == [.stop, .runningP2P, .running])
        #expect(S.stop.path(to: .stop) == [])
        #expect(S.running.path(to: .error) == nil && S.error.path(to: .running) == nil)
    }

    @Test func stateMachineAndDataDescriptor() throws {
        try PinLock.shared {
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 4096)
            defer { buffer.deallocate() }
            let m = try MigrationRig(memory: buffer, pages: 1)
            #expect(m.set(.error).0 == -22, "ERROR cannot be requested")
            #expect(m.set(VFIOMigrationState(rawValue: 7)!).0 == 0 && m.state == .preCopyP2P)
            #expect(m.set(.running).0 == 0 && m.state == .running)
            // RUNNING -> PRE_COPY opens a session: the initial record, then ENOMSG.
            let (r, fd) = m.set(.preCopy)
            #expect(r == 0 && fd >= 0)
            var info: [UInt32] = [24, 0, 0, 0, 0, 0]
            #expect(info.withUnsafeMutableBytes { m.file(fd).ioctl(request: 0x3B79, argument: $0.baseAddress) } == 0)
            let record = 4 + IOATDevice().saveState().count
            #expect(Int(info[2]) == record && info[4] == 0, "initial_bytes: the whole record; dirty_bytes 0")
            let (initial, end) = m.drain(fd)
            #expect(initial.count == record && end == -42, "a temporary end of stream: ENOMSG")
            #expect(info.withUnsafeMutableBytes { m.file(fd).ioctl(request: 0x3B79, argument: $0.baseAddress) } == 0 && info[2] == 0)
            #expect(m.write(fd, [1, 2, 3]) == -22, "a saving session is not written")
            // PRE_COPY -> STOP_COPY keeps the session and appends the final record, then the end.
            let (r2, fd2) = m.set(.stopCopy)
            #expect(r2 == 0 && fd2 == -1, "no new descriptor within the saving group")
            #expect(info.withUnsafeMutableBytes { m.file(fd).ioctl(request: 0x3B79, argument: $0.baseAddress) } == -22,
                    "PRECOPY_INFO outside the pre-copy states")
            let (final, end2) = m.drain(fd)
            #expect(final.count == record && end2 == 0, "the permanent end of stream: 0")
            #expect(m.set(.preCopy).0 == -22 && m.state == .stopCopy, "STOP_COPY -> PRE_COPY is forbidden")
            #expect(m.set(.running).0 == 0 && m.state == .running)
            var dead = [UInt8](repeating: 0, count: 8)
            #expect(dead.withUnsafeMutableBytes { m.file(fd).read(into: $0) } == -19, "the old session ended: ENODEV")
            // VFIO_DEVICE_RESET ends any session and returns to RUNNING.
            var none: [UInt32] = []
            #expect(none.withUnsafeMutableBytes { m.t.cdev.ioctl(request: IOCTL.VFIO_DEVICE_RESET, argument: $0.baseAddress) } == 0)
            #expect(m.state == .running)
            // A resuming session that receives garbage fails the way out to ERROR; reset recovers.
            let (r3, rfd) = m.set(.resuming)
            #expect(r3 == 0 && rfd >= 0 && m.state == .resuming)
            #expect(m.write(rfd, [4, 0, 0, 0, 1, 2, 3, 4]) == 8)
            #expect(m.set(.running).0 == -22 && m.state == .error)
            #expect(m.set(.stop).0 == -22, "no arc out of ERROR")
            #expect(none.withUnsafeMutableBytes { m.t.cdev.ioctl(request: IOCTL.VFIO_DEVICE_RESET, argument: $0.baseAddress) } == 0)
            #expect(m.state == .running)
        }
    }

    /// Device A runs the first descriptor of a three-descriptor chain, is stopped (a DMACOUNT
    /// written then moves nothing), and its state is streamed to device B on a second machine
    /// mapping the same memory; B, resumed and running, completes the rest of the chain from
    /// where A stopped.
    @Test func saveRestoreIntoASecondDeviceContinuesTheChain() throws {
        try PinLock.shared {
            let pages = 8
            let memory = UnsafeMutableRawPointer.allocate(byteCount: pages * 4096, alignment: 4096)
            defer { memory.deallocate() }
            memory.initializeMemory(as: UInt8.self, repeating: 0, count: pages * 4096)
            let iova = MigrationRig.iova
            let bytes = memory.assumingMemoryBound(to: UInt8.self)
            // Descriptors at 0, 64, 128 copy page 1 to pages 2, 3, 4; completions at 0x200.
            for i in 0..<4096 { bytes[4096 + i] = UInt8(truncatingIfNeeded: i * 13 + 1) }
            for k in 0..<3 {
                let d = IOATDescriptor.copy(size: 4096, from: iova + 4096, to: iova + UInt64(4096 * (2 + k)),
                                            next: iova + UInt64(64 * (k + 1)), completionWrite: true)
                for (i, b) in d.bytes.enumerated() { bytes[64 * k + i] = b }
            }
            func copied(_ page: Int) -> Bool { (0..<4096).allSatisfy { bytes[4096 * page + $0] == bytes[4096 + $0] } }
            let a = try MigrationRig(memory: memory, pages: pages)
            a.setReg(0x84, 1, UInt64(IOATRegister.commandReset))
            a.setReg(0x98, 8, iova + 0x200)         // CHANCMP
            a.setReg(0x90, 8, iova)                 // CHAINADDR
            a.setReg(0x86, 2, 1)                    // DMACOUNT: the first descriptor
            #expect(copied(2) && !copied(3))
            #expect(a.reg(0x88, 8) == iova | IOATChannelState.idle.rawValue)
            // Stop: a DMACOUNT written to a stopped device moves nothing.
            let (r, fd) = a.set(.stopCopy)
            #expect(r == 0 && fd >= 0 && a.state == .stopCopy)
            let (stream, end) = a.drain(fd)
            #expect(end == 0 && !stream.isEmpty)
            a.setReg(0x86, 2, 2)
            #expect(!copied(3), "a stopped device issues no DMA")
            #expect(a.reg(0x88, 8) & 7 == IOATChannelState.active.rawValue, "its work is held")
            // B: a second machine mapping the same memory at the same IOVA.
            let b = try MigrationRig(memory: memory, pages: pages)
            let (r2, rfd) = b.set(.resuming)
            #expect(r2 == 0 && rfd >= 0)
            // Any segmentation of the stream.
            for start in stride(from: 0, to: stream.count, by: 5) {
                #expect(b.write(rfd, Array(stream[start..<min(start + 5, stream.count)])) == min(5, stream.count - start))
            }
            #expect(b.set(.running).0 == 0 && b.state == .running)
            #expect(b.reg(0x88, 8) == iova | IOATChannelState.idle.rawValue, "B's channel is where A's was")
            #expect(b.reg(0x86, 2) == 1 && b.reg(0x90, 8) == iova && b.reg(0x98, 8) == iova + 0x200)
            b.setReg(0x86, 2, 3)                    // the rest of the chain
            #expect(copied(3) && copied(4))
            #expect(b.reg(0x88, 8) == (iova + 128) | IOATChannelState.idle.rawValue)
            let completion = UnsafeRawPointer(memory + 0x200).load(as: UInt64.self)
            #expect(completion == (iova + 128) | IOATChannelState.idle.rawValue, "B's completion write")
            // A state from another model (or a truncated one) is refused.
            #expect(!IOATDevice().restoreState(Array(stream.dropFirst(4).dropLast())))
        }
    }

    @Test func interruptsRaisedWhileStoppedAreSentOnRestart() throws {
        let ioat = IOATDevice()
        final class Host: PCIDeviceHost, @unchecked Sendable {
            let function: PCIFunction
            var signals: [Int] = []
            init(_ f: PCIFunction) { function = f }
            var busMasterEnabled: Bool { true }
            func signal(vector: Int) { signals.append(vector) }
        }
        let machine = SoftMachine(vtdDelivery: .manual)
        let host = Host(try machine.addVTdDevice(capabilities: PCIFunction.Capabilities()).function)
        ioat.plug(into: host)
        ioat.write(bar: 0, offset: 0x03, size: 1, value: UInt64(IOATRegister.interruptMSIXVectorControl))
        ioat.write(bar: 0, offset: 0x80, size: 2, value: UInt64(IOATRegister.controlErrorInterruptEnable))
        ioat.write(bar: 0, offset: 0x84, size: 1, value: UInt64(IOATRegister.commandStart))  // an error: interrupt held (disarmed)
        ioat.setRunning(false)
        ioat.write(bar: 0, offset: 0x80, size: 2, value: UInt64(IOATRegister.controlInterruptRearm))  // re-arm: the held one goes out
        #expect(host.signals == [], "a stopped device sends no interrupt")
        ioat.setRunning(true)
        #expect(host.signals == [0])
    }
}
