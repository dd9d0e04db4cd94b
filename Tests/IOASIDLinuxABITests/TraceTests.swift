import IOASIDCore
import IOASIDLinuxABI
import Synchronization
import Testing

// The trace lines of calls made through the dispatcher and the queue files, and the rules of
// `TraceLine` (docs/architecture.md, "Trace").

/// Collects the lines a `CallTracer` writes.
final class TraceLog: Sendable {
    private let lines = Mutex<[String]>([])
    var all: [String] { lines.withLock { $0 } }
    var last: String? { lines.withLock { $0.last } }
    func tracer(timing: Bool = false) -> CallTracer { CallTracer(timing: timing) { line in self.lines.withLock { $0.append(line) } } }
}

@Suite struct TraceTests {
    /// An `IOMMUFile` on an in-memory host, called through a tracer as descriptor 3.
    struct Traced {
        let file: IOMMUFile
        let host: MemoryHost
        let log = TraceLog()
        let tracer: CallTracer

        init(timing: Bool = false) {
            let made = makeFile()
            file = made.0
            host = made.1
            tracer = log.tracer(timing: timing)
        }

        /// `ioctl(3, request, &value)` with `value.size` set to `size` (default: the struct's).
        func call<T: UAPIStruct>(_ request: UInt, _ value: inout T, size: Int? = nil) -> (result: Int, line: String) {
            let r = withUnsafeMutableBytes(of: &value) { b in
                b.storeBytes(of: UInt32(size ?? b.count), as: UInt32.self)
                return tracer.ioctl(file, fd: 3, request: request, argument: b.baseAddress)
            }
            return (r, log.last ?? "")
        }

        func close() { host.closeAll(); file.release() }
    }

    @Test func successShowsTheStructAfterTheCall() {
        let t = Traced()
        defer { t.close() }
        var alloc = iommu_ioas_alloc()
        let (r, line) = t.call(IOCTL.IOMMU_IOAS_ALLOC, &alloc)
        #expect(r == 0)
        #expect(line == "iommu:3 IOMMU_IOAS_ALLOC flags=0x0 out_ioas_id=\(alloc.out_ioas_id) -> 0")

        // IDs decimal; flags, addresses, IOVAs and lengths hex.
        let memory = ArgumentPages(pages: 4)
        var map = iommu_ioas_map()
        map.flags = UAPI.IOMMU_IOAS_MAP_READABLE | UAPI.IOMMU_IOAS_MAP_WRITEABLE | UAPI.IOMMU_IOAS_MAP_FIXED_IOVA
        map.ioas_id = alloc.out_ioas_id
        map.user_va = memory.address
        map.length = 0x4000
        map.iova = 0x10_0000
        let mapped = t.call(IOCTL.IOMMU_IOAS_MAP, &map)
        #expect(mapped.result == 0)
        #expect(mapped.line == "iommu:3 IOMMU_IOAS_MAP flags=0x7 ioas_id=\(alloc.out_ioas_id) user_va=0x\(String(memory.address, radix: 16)) length=0x4000 iova=0x100000 -> 0")
    }

    @Test func failureShowsTheErrnoByNameAndTheReason() {
        let t = Traced()
        defer { t.close() }
        var destroy = iommu_destroy()
        destroy.id = 77
        let (r, line) = t.call(IOCTL.IOMMU_DESTROY, &destroy)
        #expect(r == -2)
        #expect(line.hasPrefix("iommu:3 IOMMU_DESTROY id=77 -> -ENOENT ("), "\(line)")
        #expect(line.hasSuffix(")"))
    }

    @Test func unknownRequestIsENOTTY() {
        let t = Traced()
        defer { t.close() }
        #expect(t.tracer.ioctl(t.file, fd: 3, request: 0x3b7f, argument: nil) == -25)
        #expect(t.log.last == "iommu:3 ioctl 0x3b7f arg=0x0 -> -ENOTTY (unknown request)")
        #expect(t.tracer.ioctl(t.file, fd: 3, request: 0x5401, argument: nil) == -25)  // TCGETS
        #expect(t.log.last == "iommu:3 ioctl 0x5401 arg=0x0 -> -ENOTTY (not an iommufd request)")
    }

    @Test func badArgumentPointerIsEFAULT() {
        let t = Traced()
        defer { t.close() }
        #expect(t.tracer.ioctl(t.file, fd: 3, request: IOCTL.IOMMU_IOAS_ALLOC, argument: UnsafeMutableRawPointer(bitPattern: 0x10)) == -14)
        #expect(t.log.last == "iommu:3 IOMMU_IOAS_ALLOC arg=0x10 -> -EFAULT (argument pointer not readable)")
    }

    @Test func sizeErrorsShowTheSize() {
        let t = Traced()
        defer { t.close() }
        var map = iommu_ioas_map()
        let small = t.call(IOCTL.IOMMU_IOAS_MAP, &map, size: 8)
        #expect(small.result == -22)
        #expect(small.line == "iommu:3 IOMMU_IOAS_MAP size=8 -> -EINVAL (argument size below the last mandatory field, which ends at 40)")

        // A larger struct whose bytes past ours are not zero.
        let pages = ArgumentPages()
        pages.zero()
        pages.setSize(64)
        pages.base.storeBytes(of: UInt8(1), toByteOffset: 20, as: UInt8.self)
        #expect(t.tracer.ioctl(t.file, fd: 3, request: IOCTL.IOMMU_IOAS_ALLOC, argument: pages.base) == -7)
        #expect(t.log.last == "iommu:3 IOMMU_IOAS_ALLOC size=64 -> -E2BIG (non-zero bytes past the known struct, which ends at 12)")
    }

    @Test func testCommandShowsItsOpAndNoKeyTwice() {
        let t = Traced()
        defer { t.close() }
        var cmd = iommu_test_cmd()
        cmd.op = UAPI.IOMMU_TEST_OP_MD_CHECK_IOTLB
        cmd.id = 8
        let (r, line) = t.call(IOCTL.IOMMU_TEST_CMD, &cmd)
        #expect(r < 0)
        #expect(line.hasPrefix("iommu:3 IOMMU_TEST_CMD op=MD_CHECK_IOTLB id=8 check_iotlb.id=0 iotlb=0x0 -> -"), "\(line)")
    }

    @Test func queueReadsAndWrites() throws {
        let t = Traced()
        defer { t.close() }
        var alloc = iommu_fault_alloc()
        #expect(t.call(IOCTL.IOMMU_FAULT_QUEUE_ALLOC, &alloc).result == 0)
        let fd = Int32(bitPattern: alloc.out_fault_fd)
        #expect(t.log.last == "iommu:3 IOMMU_FAULT_QUEUE_ALLOC flags=0x0 out_fault_id=\(alloc.out_fault_id) out_fault_fd=\(fd) -> 0")
        let queue = try #require(t.host.file(for: fd))
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 8)
        defer { buffer.deallocate() }
        #expect(t.tracer.read(queue, fd: fd, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<40])) == 0)
        #expect(t.log.last == "fault-queue:\(fd) read count=40 -> 0")
        #expect(t.tracer.read(queue, fd: fd, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<7])) == -29)
        #expect(t.log.last == "fault-queue:\(fd) read count=7 -> -ESPIPE (count is not a multiple of the fault record size)")
        var response = iommu_hwpt_page_response()
        response.cookie = 5
        let written = withUnsafeBytes(of: &response) { t.tracer.write(queue, fd: fd, from: $0) }
        #expect(written < 0)
        #expect(t.log.last?.hasPrefix("fault-queue:\(fd) write count=8 -> -") == true, "\(t.log.all)")
        // /dev/iommu itself has no read.
        #expect(t.tracer.read(t.file, fd: 3, into: buffer) == -22)
        #expect(t.log.last == "iommu:3 read count=64 -> -EINVAL (iommu has no read)")
    }

    @Test func mmapOfNothingIsENXIO() {
        let t = Traced()
        defer { t.close() }
        #expect(t.tracer.mmap(t.file, fd: 3, address: nil, length: 0x1000, protection: 1, flags: 1, offset: 0x2000) == -6)
        #expect(t.log.last == "iommu:3 mmap addr=0x0 length=0x1000 prot=0x1 flags=0x1 offset=0x2000 -> -ENXIO (no vIOMMU region at this offset and length)")
    }

    @Test func timingEndsTheLineWithADuration() {
        let t = Traced(timing: true)
        defer { t.close() }
        var alloc = iommu_ioas_alloc()
        let line = t.call(IOCTL.IOMMU_IOAS_ALLOC, &alloc).line
        #expect(line.contains(/^iommu:3 IOMMU_IOAS_ALLOC flags=0x0 out_ioas_id=\d+ -> 0 \+\d+(\.\d)?(ns|us|ms|s)$/), "\(line)")
    }

    @Test func untracedCallsWriteNothing() {
        let t = Traced()
        defer { t.close() }
        var alloc = iommu_ioas_alloc()
        #expect(t.file.call(IOCTL.IOMMU_IOAS_ALLOC, &alloc) == 0)
        #expect(t.log.all.isEmpty)
    }

    // MARK: The rules

    @Test func durations() {
        #expect(TraceLine.formatDuration(850) == "850ns")
        #expect(TraceLine.formatDuration(1_234) == "1.2us")
        #expect(TraceLine.formatDuration(999_960) == "1000.0us")
        #expect(TraceLine.formatDuration(3_400_000) == "3.4ms")
        #expect(TraceLine.formatDuration(1_500_000_000) == "1.5s")
    }

    @Test func numberFormatsByField() {
        for hex in ["flags", "out_flags", "iova", "src_iova", "user_va", "data_uptr", "length", "addr", "start", "last", "out_capabilities", "perm"] {
            #expect(TraceLine.isHexField(Substring(hex)), "\(hex)")
        }
        for decimal in ["id", "ioas_id", "out_ioas_id", "dev_id", "pasid", "data_type", "data_len", "entry_num", "num_iovas", "op", "pid", "fd", "cookie"] {
            #expect(!TraceLine.isHexField(Substring(decimal)), "\(decimal)")
        }
    }

    @Test func aKeyIsWrittenOnce() {
        var line = TraceLine(kind: "iommu", fd: 3)
        line.call("X")
        line.decimal("id", 8)
        line.decimal("id", 0)
        line.result(0)
        #expect(line.description == "iommu:3 X id=8 -> 0")
        var open = TraceLine(kind: "vfio0", fd: nil)
        open.call("open")
        open.failure(errno: 2, reason: "no such device")
        #expect(open.description == "vfio0:- open -> -ENOENT (no such device)")
    }
}
