// IOASID_SVA_BIND / IOASID_SVA_UNBIND through IOMMUFile.ioctl, on VT-d devices and modelled
// processes registered with the host's SVA layer.
import CIOASIDSys
import Foundation
import IOASIDCore
import IOASIDLinuxABI
import IOASIDSets
import IOASIDSoftDrivers
import IOASIDSoftIOMMU
import Synchronization
import Testing

/// Descriptors by number, far above real ones (fault queues get one).
final class SVADescriptorHost: DescriptorHost, @unchecked Sendable {
    private let files = Mutex<[Int32: any LinuxFile]>([:])
    private let next = Atomic<Int32>(200_000)
    func install(_ file: any LinuxFile) -> Int32 {
        let fd = next.add(1, ordering: .relaxed).newValue
        files.withLock { $0[fd] = file }
        return fd
    }
    func setReadable(_ file: any LinuxFile, _ readable: Bool) {}
    func file(for fd: Int32) -> (any LinuxFile)? { files.withLock { $0[fd] } }
    func closeAll() {
        let all = files.withLock { f -> [any LinuxFile] in defer { f.removeAll() }; return Array(f.values) }
        for f in all { f.release() }
    }
}

/// Lines of a trace.
final class SVATraceLog: Sendable {
    private let lines = Mutex<[String]>([])
    var all: [String] { lines.withLock { $0 } }
    var sink: @Sendable (String) -> Void { { l in self.lines.withLock { $0.append(l) } } }
}

/// Files whose `svaCall`s are traced (as descriptor 3), and by which tracer.
let svaTracers = Mutex<[ObjectIdentifier: CallTracer]>([:])

extension IOMMUFile {
    /// Issues `request` with `value` (its `size` set to the struct's size).
    func svaCall<T: UAPIStruct>(_ request: UInt, _ value: inout T) -> Int {
        let tracer = svaTracers.withLock { $0[ObjectIdentifier(self)] }
        return withUnsafeMutableBytes(of: &value) { b in
            b.storeBytes(of: UInt32(b.count), as: UInt32.self)
            if let tracer { return tracer.ioctl(self, fd: 3, request: request, argument: b.baseAddress) }
            return ioctl(request: request, argument: b.baseAddress)
        }
    }
}

@Suite struct SVAABITests {
    @Test func bindAndUnbindThroughTheIoctls() throws {
        let trace = SVATraceLog()
        let host = SVADescriptorHost()
        let file = IOMMUFile(host: host, configuration: EngineConfiguration(testDriver: false))
        svaTracers.withLock { $0[ObjectIdentifier(file)] = CallTracer(emit: trace.sink) }
        defer { host.closeAll(); file.release(); svaTracers.withLock { $0[ObjectIdentifier(file)] = nil } }
        let driver = try VTdDriver(memory: VTdDriver.processMemory(), delivery: .manual)
        let device = try driver.addDevice(requesterID: RequesterID(bus: 0x40, device: 0, function: 0),
                                          capabilities: .init(pasidWidth: 20, ats: .deviceTLB, pageRequestCapacity: 16))
        let dev = try device.bind(to: file.context)
        let pid = Int32(1_000_000 + (ioasid_sys_getpid() & 0xFFFF))
        let process = try ModelledProcess(pid: pid, memory: driver.unit.memory)
        defer { process.exit(); IOASIDHost.sva.unregister(process) }
        let va: UInt64 = 0x5555_0000_0000
        try process.map(va, length: 0x1000)

        var bind = ioasid_sva_bind()
        bind.dev_id = dev.rawValue
        bind.pid = pid
        #expect(file.svaCall(IOASIDUAPI.IOASID_SVA_BIND, &bind) == -2, "no IOASID set yet: ENOENT")
        var sa = ioasid_set_alloc()
        sa.quota = 4
        #expect(file.svaCall(IOASIDUAPI.IOASID_SET_ALLOC, &sa) == 0)
        #expect(file.svaCall(IOASIDUAPI.IOASID_SVA_BIND, &bind) == -3, "not registered: ESRCH")
        try IOASIDHost.sva.register(process)
        // Flag rules.
        bind.flags = 1 << 7
        #expect(file.svaCall(IOASIDUAPI.IOASID_SVA_BIND, &bind) == -95)
        bind.flags = 0
        bind.pasid = 5
        #expect(file.svaCall(IOASIDUAPI.IOASID_SVA_BIND, &bind) == -22, "pasid without IOASID_SVA_BIND_PASID")
        bind.pasid = 0
        bind.fault_id = 3
        #expect(file.svaCall(IOASIDUAPI.IOASID_SVA_BIND, &bind) == -22, "fault_id without its flag")
        bind.flags = IOASIDUAPI.IOASID_SVA_BIND_FAULT_ID_VALID
        bind.fault_id = 999
        #expect(file.svaCall(IOASIDUAPI.IOASID_SVA_BIND, &bind) == -2, "no such fault queue")
        bind.flags = IOASIDUAPI.IOASID_SVA_BIND_PASID
        bind.fault_id = 0
        bind.pasid = 0x8_0000
        #expect(file.svaCall(IOASIDUAPI.IOASID_SVA_BIND, &bind) == -2, "a PASID the set does not hold")

        // The bind, with a fault queue.
        let queue = try file.context.allocateFaultQueue()
        bind.flags = IOASIDUAPI.IOASID_SVA_BIND_FAULT_ID_VALID
        bind.pasid = 0
        bind.fault_id = queue.objectID.rawValue
        #expect(file.svaCall(IOASIDUAPI.IOASID_SVA_BIND, &bind) == 0)
        let pasid = bind.out_pasid
        #expect(pasid != 0 && IOASIDHost.sva.pasid(of: process) == pasid)
        #expect(file.svaCall(IOASIDUAPI.IOASID_SVA_BIND, &bind) == -16, "bound already: EBUSY")
        var info = ioasid_set_info()
        #expect(file.svaCall(IOASIDUAPI.IOASID_SET_INFO, &info) == 0 && info.out_count == 1)

        // DMA through the process's page table, and a fault answered through the queue.
        guard case .completed = device.function.write(pasid: IOASIDSoftIOMMU.PASID(pasid), address: va + 8, bytes: [0x5A]) else {
            Issue.record("DMA failed"); return
        }
        #expect(try process.read(va + 8, count: 1) == [0x5A])
        guard case .waitingForPageResponse(let pending) = device.function.write(pasid: IOASIDSoftIOMMU.PASID(pasid), address: va + 0x1000,
                                                                                bytes: [1]) else {
            Issue.record("expected a page request"); return
        }
        driver.servicePageRequests()
        let f = try #require(try file.context.readFaults(queue, maxRecords: 2).first)
        #expect(f.pasid == pasid && f.address == va + 0x1000)
        try process.map(va + 0x1000, length: 0x1000)
        try file.context.respond(queue, cookie: f.cookie, code: 0)
        guard case .completed = device.function.resume(pending) else { Issue.record("retry failed"); return }

        // pid 0 is the caller's own registered process.
        var own = ioasid_sva_bind()
        own.dev_id = dev.rawValue
        #expect(file.svaCall(IOASIDUAPI.IOASID_SVA_BIND, &own) == -3, "the caller has no modelled process: ESRCH")

        // Unbind.
        var unbind = ioasid_sva_unbind()
        unbind.dev_id = dev.rawValue
        unbind.pasid = pasid
        unbind.flags = 1
        #expect(file.svaCall(IOASIDUAPI.IOASID_SVA_UNBIND, &unbind) == -95)
        unbind.flags = 0
        #expect(file.svaCall(IOASIDUAPI.IOASID_SVA_UNBIND, &unbind) == 0)
        #expect(file.svaCall(IOASIDUAPI.IOASID_SVA_UNBIND, &unbind) == -2, "not bound any more: ENOENT")
        guard case .failed = device.function.write(pasid: IOASIDSoftIOMMU.PASID(pasid), address: va + 8, bytes: [1]) else {
            Issue.record("DMA after unbind must fail"); return
        }
        // The process keeps its PASID: a rebind names it, another PASID is EINVAL.
        bind = ioasid_sva_bind()
        bind.dev_id = dev.rawValue
        bind.pid = pid
        bind.flags = IOASIDUAPI.IOASID_SVA_BIND_PASID
        bind.pasid = pasid + 1
        #expect(file.svaCall(IOASIDUAPI.IOASID_SVA_BIND, &bind) == -22)
        bind.pasid = pasid
        #expect(file.svaCall(IOASIDUAPI.IOASID_SVA_BIND, &bind) == 0 && bind.out_pasid == pasid)

        // The process exits: the bind ends and its PASID goes back to the set.
        process.exit()
        #expect(file.svaCall(IOASIDUAPI.IOASID_SET_INFO, &info) == 0 && info.out_count == 0)
        #expect(file.svaCall(IOASIDUAPI.IOASID_SVA_UNBIND, &unbind) == -2)
        #expect(file.svaCall(IOASIDUAPI.IOASID_SVA_BIND, &bind) == -3, "exited: ESRCH")

        // --trace decodes the new requests from their layout tables.
        let lines = trace.all.filter { $0.hasPrefix("iommu:3 IOASID_SVA") }
        #expect(lines.contains { $0.hasPrefix("iommu:3 IOASID_SVA_BIND flags=0x2 dev_id=\(dev.rawValue) pid=\(pid) fault_id=") && $0.contains("out_pasid=\(pasid) -> 0") })
        #expect(lines.contains { $0 == "iommu:3 IOASID_SVA_UNBIND flags=0x0 dev_id=\(dev.rawValue) pasid=\(pasid) -> 0" })
        #expect(lines.contains { $0.hasSuffix("-> -ESRCH (no such process)") })
    }

    /// A set's other files share the process's PASID; a file acting for another set gets EPERM;
    /// closing the file that bound ends the bind.
    @Test func setsAuthorizeAndCloseEndsTheBind() throws {
        let host = SVADescriptorHost()
        let a = IOMMUFile(host: host, configuration: EngineConfiguration(testDriver: false))
        let b = IOMMUFile(host: host, configuration: EngineConfiguration(testDriver: false))
        defer { host.closeAll(); b.release() }
        let driver = try VTdDriver(memory: VTdDriver.processMemory(), delivery: .manual)
        let caps = PCIFunction.Capabilities(pasidWidth: 20, ats: .deviceTLB)
        let da = try driver.addDevice(requesterID: RequesterID(bus: 0x41, device: 0, function: 0), capabilities: caps)
        let db = try driver.addDevice(requesterID: RequesterID(bus: 0x41, device: 1, function: 0), capabilities: caps)
        let ida = try da.bind(to: a.context), idb = try db.bind(to: b.context)
        let pid = Int32(2_000_000 + (ioasid_sys_getpid() & 0xFFFF))
        let process = try ModelledProcess(pid: pid, memory: driver.unit.memory)
        defer { process.exit(); IOASIDHost.sva.unregister(process) }
        try IOASIDHost.sva.register(process)
        for f in [a, b] {
            var sa = ioasid_set_alloc()
            sa.quota = 2
            #expect(f.svaCall(IOASIDUAPI.IOASID_SET_ALLOC, &sa) == 0)
        }
        var bind = ioasid_sva_bind()
        bind.dev_id = ida.rawValue
        bind.pid = pid
        #expect(a.svaCall(IOASIDUAPI.IOASID_SVA_BIND, &bind) == 0)
        let pasid = bind.out_pasid
        bind.dev_id = idb.rawValue
        #expect(b.svaCall(IOASIDUAPI.IOASID_SVA_BIND, &bind) == -1, "the process's PASID is a's set's: EPERM")
        // Closing a ends its binds and frees its set (with the process's PASID).
        a.release()
        #expect(driver.tables.pasidEntry(da.requesterID, pasid: pasid)?.present != true)
        #expect(IOASIDHost.sva.pasid(of: process) == nil)
        // Now b's set gives the process a PASID.
        #expect(b.svaCall(IOASIDUAPI.IOASID_SVA_BIND, &bind) == 0)
    }
}
