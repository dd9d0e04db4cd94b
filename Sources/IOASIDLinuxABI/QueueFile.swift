import CIOASIDSys
import IOASIDCore
import IOASIDTestDriver

/// The anonymous files ioctls hand out: a fault queue (read records, write responses), a
/// vEVENT queue (read events) or a test-driver access (no I/O; closing it ends the access).
final class QueueFile: LinuxFile, @unchecked Sendable {
    enum Queue {
        case none
        case fault(FaultQueue)
        case vevent(VEventQueue)
        case access(MockAccess)
    }
    /// The iommufd that handed the descriptor out; an installed queue or access holds it open.
    let owner: IOMMUFile
    /// The owner's context.
    let context: Context
    /// Whether this file took a hold on its owner (given back at release).
    var holdsOwner = false
    let host: any DescriptorHost
    var queue: Queue = .none
    var fd: Int32 = -1

    init(owner: IOMMUFile) {
        self.owner = owner
        self.context = owner.context
        self.host = owner.host
    }

    func setReadable(_ readable: Bool) {
        host.setReadable(self, readable)
    }

    static let recordSize = MemoryLayout<iommu_hwpt_pgfault>.size
    static let responseSize = MemoryLayout<iommu_hwpt_page_response>.size

    var traceKind: String {
        switch queue {
        case .fault: "fault-queue"
        case .vevent: "vevent-queue"
        case .access: "access"
        case .none: "file"
        }
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        readQueue(into: buffer).value
    }

    func write(from buffer: UnsafeRawBufferPointer) -> Int {
        writeQueue(from: buffer).value
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, trace: inout TraceLine?) -> Int {
        let outcome = readQueue(into: buffer)
        describe(&trace, "read", count: buffer.count, outcome)
        if trace != nil, case .fault = queue, outcome.value > 0 { trace!.decimal("records", outcome.value / Self.recordSize) }
        return outcome.value
    }

    func write(from buffer: UnsafeRawBufferPointer, trace: inout TraceLine?) -> Int {
        let outcome = writeQueue(from: buffer)
        describe(&trace, "write", count: buffer.count, outcome)
        if trace != nil, outcome.value > 0 { trace!.decimal("responses", outcome.value / Self.responseSize) }
        return outcome.value
    }

    private func describe(_ trace: inout TraceLine?, _ call: String, count: Int, _ outcome: Outcome) {
        guard trace != nil else { return }
        trace!.call(call)
        trace!.decimal("count", count)
        if case .failed(let errno, let reason) = outcome { trace!.failure(errno: errno, reason: "\(reason)") }
    }

    /// The result of a read or write: the byte count, or an errno with the check that failed.
    private enum Outcome {
        case done(Int)
        case failed(Int32, StaticString)

        init(_ error: IOMMUError) { self = .failed(error.errno, error.reason) }

        var value: Int {
            switch self {
            case .done(let n): n
            case .failed(let errno, _): -Int(errno)
            }
        }
    }

    private static let ESPIPE: Int32 = 29

    private func readQueue(into buffer: UnsafeMutableRawBufferPointer) -> Outcome {
        switch queue {
        case .fault(let q):
            guard buffer.count % Self.recordSize == 0 else { return .failed(Self.ESPIPE, "count is not a multiple of the fault record size") }
            do throws(IOMMUError) {
                let records = try context.readFaults(q, maxRecords: buffer.count / Self.recordSize)
                for (i, r) in records.enumerated() {
                    var c = iommu_hwpt_pgfault()
                    c.flags = r.flags; c.dev_id = r.deviceID; c.pasid = r.pasid; c.grpid = r.groupID
                    c.perm = r.permissions; c.addr = r.address; c.length = r.length; c.cookie = r.cookie
                    let rc = withUnsafeBytes(of: &c) {
                        ioasid_sys_copy_out(UInt64(UInt(bitPattern: buffer.baseAddress! + i * Self.recordSize)), $0.baseAddress, Self.recordSize)
                    }
                    if rc != 0 {
                        // The group not copied whole and those after it stay queued; a short read, or EFAULT.
                        let cut = records.firstIndex { $0.cookie == r.cookie } ?? i
                        context.unreadFaults(q, cookies: records[cut...].map(\.cookie))
                        return cut == 0 ? .failed(14, "buffer is not writeable") : .done(cut * Self.recordSize)
                    }
                }
                return .done(records.count * Self.recordSize)
            } catch { return Outcome(error) }
        case .vevent(let q):
            do throws(IOMMUError) {
                let events = try context.readVEvents(q, capacity: buffer.count)
                var at = 0
                for (i, e) in events.enumerated() {
                    var h = iommufd_vevent_header()
                    h.flags = e.flags
                    h.sequence = e.sequence
                    let target = UInt64(UInt(bitPattern: buffer.baseAddress! + at))
                    var rc = withUnsafeBytes(of: &h) { ioasid_sys_copy_out(target, $0.baseAddress, 8) }
                    if rc == 0 { rc = e.data.withUnsafeBytes { ioasid_sys_copy_out(target + 8, $0.baseAddress, e.data.count) } }
                    if rc != 0 {
                        // As the kernel: the event not copied and those after it stay queued.
                        context.unreadVEvents(q, Array(events[i...]))
                        return at == 0 ? .failed(14, "buffer is not writeable") : .done(at)
                    }
                    at += 8 + e.data.count
                }
                return .done(at)
            } catch { return Outcome(error) }
        default:
            return .failed(EINVAL_, "a test access has no read")
        }
    }

    private func writeQueue(from buffer: UnsafeRawBufferPointer) -> Outcome {
        switch queue {
        case .fault(let q):
            guard buffer.count % Self.responseSize == 0 else { return .failed(Self.ESPIPE, "count is not a multiple of the page response size") }
            var done = 0
            while done < buffer.count {
                var r = iommu_hwpt_page_response()
                let rc = withUnsafeMutableBytes(of: &r) {
                    ioasid_sys_copy_in($0.baseAddress, UInt64(UInt(bitPattern: buffer.baseAddress! + done)), Self.responseSize)
                }
                if rc != 0 { return done == 0 ? .failed(14, "buffer is not readable") : .done(done) }
                do throws(IOMMUError) { try context.respond(q, cookie: r.cookie, code: r.code) } catch {
                    return done == 0 ? Outcome(error) : .done(done)
                }
                done += Self.responseSize
            }
            return .done(done)
        case .vevent: return .failed(EINVAL_, "a vEVENT queue has no write")
        default: return .failed(EINVAL_, "a test access has no write")
        }
    }

    func release() {
        switch queue {
        case .fault(let q): context.retainQueue(q, false)
        case .vevent(let q): context.retainQueue(q, false)
        case .access(let a): TestDriver(context: context).closeAccess(a)
        case .none: break
        }
        queue = .none
        if holdsOwner {
            holdsOwner = false
            owner.letGo()
        }
    }
}
