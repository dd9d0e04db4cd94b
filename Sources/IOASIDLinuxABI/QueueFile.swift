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
    weak var owner: IOMMUFile?
    /// The owner's context, kept alive while the file is open.
    let context: Context
    let host: any DescriptorHost
    var queue: Queue = .none
    var fd: Int32 = -1

    init(owner: IOMMUFile) {
        self.owner = owner
        self.context = owner.context
        self.host = owner.host
    }

    func setReadable(_ readable: Bool) {
        if fd >= 0 { host.setReadable(fd, readable) }
    }

    static let recordSize = MemoryLayout<iommu_hwpt_pgfault>.size
    static let responseSize = MemoryLayout<iommu_hwpt_page_response>.size

    func read(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        let r = readQueue(into: buffer)
        trace("read", count: buffer.count, result: r)
        return r
    }

    func write(from buffer: UnsafeRawBufferPointer) -> Int {
        let r = writeQueue(from: buffer)
        trace("write", count: buffer.count, result: r)
        return r
    }

    private func trace(_ call: String, count: Int, result: Int) {
        guard let t = owner?.configuration.trace else { return }
        let what: String
        switch queue {
        case .fault(let q): what = "fault queue \(q.objectID.rawValue)"
        case .vevent(let q): what = "vEVENT queue \(q.objectID.rawValue)"
        default: what = "file"
        }
        t("\(call) fd=\(fd) (\(what)) count=\(count) -> " + (result < 0 ? "-\(Trace.errnoName(Int32(-result)))" : "\(result)"))
    }

    private func readQueue(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        switch queue {
        case .fault(let q):
            guard buffer.count % Self.recordSize == 0 else { return -29 } // ESPIPE
            do throws(IOMMUError) {
                let records = try context.readFaults(q, maxRecords: buffer.count / Self.recordSize)
                for (i, r) in records.enumerated() {
                    var c = iommu_hwpt_pgfault()
                    c.flags = r.flags; c.dev_id = r.deviceID; c.pasid = r.pasid; c.grpid = r.groupID
                    c.perm = r.permissions; c.addr = r.address; c.length = r.length; c.cookie = r.cookie
                    buffer.baseAddress!.storeBytes(of: c, toByteOffset: i * Self.recordSize, as: iommu_hwpt_pgfault.self)
                }
                return records.count * Self.recordSize
            } catch { return -Int(error.errno) }
        case .vevent(let q):
            do throws(IOMMUError) {
                let events = try context.readVEvents(q, capacity: buffer.count)
                var at = 0
                for e in events {
                    var h = iommufd_vevent_header()
                    h.flags = e.flags
                    h.sequence = e.sequence
                    buffer.baseAddress!.storeBytes(of: h, toByteOffset: at, as: iommufd_vevent_header.self)
                    at += 8
                    for b in e.data { buffer[at] = b; at += 1 }
                }
                return at
            } catch { return -Int(error.errno) }
        default:
            return -Int(EINVAL_)
        }
    }

    private func writeQueue(from buffer: UnsafeRawBufferPointer) -> Int {
        guard case .fault(let q) = queue else { return -Int(EINVAL_) }
        guard buffer.count % Self.responseSize == 0 else { return -29 }
        var done = 0
        while done < buffer.count {
            let r = buffer.baseAddress!.loadUnaligned(fromByteOffset: done, as: iommu_hwpt_page_response.self)
            do throws(IOMMUError) { try context.respond(q, cookie: r.cookie, code: r.code) } catch {
                return done == 0 ? -Int(error.errno) : done
            }
            done += Self.responseSize
        }
        return done
    }

    func release() {
        switch queue {
        case .fault(let q): context.retainQueue(q, false)
        case .vevent(let q): context.retainQueue(q, false)
        case .access(let a): TestDriver(context: context).closeAccess(a)
        case .none: break
        }
        queue = .none
    }
}
