import Foundation
import IOASIDCore
import IOASIDLinuxABI
import Testing

@Suite("ioctl size rules")
struct SizeRuleTests {
    @Test func tableCoversEveryIommufdRequest() {
        let named = Set(IOCTL.all.filter { $0.name.hasPrefix("IOMMU_") }.map(\.request))
        #expect(Set(iommufdRows.map(\.request)) == named)
        for row in iommufdRows {
            #expect(row.minimumSize <= row.size, "\(row.name)")
            #expect(row.minimumSize >= 8, "\(row.name): size and at least one field")
        }
    }

    @Test(arguments: iommufdRows)
    func sizeBelowTheLastMandatoryFieldIsEINVAL(_ row: IoctlRow) {
        let (file, _) = makeFile()
        defer { file.release() }
        let arg = ArgumentPages()
        for userSize in Set([0, 4, row.minimumSize - 1]) {
            arg.zero()
            arg.setSize(userSize)
            #expect(file.ioctl(request: row.request, argument: arg.base) == -22, "\(row.name) size \(userSize)")
        }
        #expect(file.context.objects.isEmpty)
    }

    @Test(arguments: iommufdRows)
    func nonZeroByteBeyondOurStructIsE2BIG(_ row: IoctlRow) {
        let (file, _) = makeFile()
        defer { file.release() }
        let arg = ArgumentPages()
        for offset in [row.size, row.size + 7, row.size + 200] {
            arg.zero()
            arg.setSize(row.size + 256)
            arg.base.storeBytes(of: 1 as UInt8, toByteOffset: offset, as: UInt8.self)
            #expect(file.ioctl(request: row.request, argument: arg.base) == -7, "\(row.name) byte at \(offset)")
        }
        #expect(file.context.objects.isEmpty, "nothing ran")
    }

    @Test(arguments: iommufdRows)
    func zeroTailIsAcceptedAndUnreadableTailIsEFAULT(_ row: IoctlRow) {
        let (file, _) = makeFile()
        defer { file.release() }
        let arg = ArgumentPages(pages: 1, guardPage: true)
        arg.zero()
        arg.setSize(row.size + 512)
        let r = file.ioctl(request: row.request, argument: arg.base)
        #expect(r != -7 && r > -4096 && r <= Int(Int32.max), "\(row.name): a zero tail reaches the handler (got \(r))")
        if row.request == IOCTL.IOMMU_IOAS_ALLOC { #expect(r == 0) }
        file.release()

        let (file2, _) = makeFile()
        defer { file2.release() }
        arg.zero()
        arg.setSize(8192) // the tail runs into the unmapped page
        #expect(file2.ioctl(request: row.request, argument: arg.base) == -14, "\(row.name)")
    }

    @Test(arguments: iommufdRows)
    func requestWithSizeOrDirectionBitsIsENOTTY(_ row: IoctlRow) {
        let (file, _) = makeFile()
        defer { file.release() }
        let arg = ArgumentPages()
        arg.zero()
        arg.setSize(row.size)
        let encoded = row.request | (UInt(row.size) << 16) | (3 << 30) // _IOWR(';', nr, size)
        #expect(file.ioctl(request: encoded, argument: arg.base) == -25)
        // Only the low 32 bits of the request count, as the kernel's `unsigned int cmd`.
        if row.request == IOCTL.IOMMU_IOAS_ALLOC {
            #expect(file.ioctl(request: row.request | (1 << 40), argument: arg.base) == 0)
            #expect(arg.base.load(fromByteOffset: 8, as: UInt32.self) == 1)
        }
    }

    /// Every command number of the ';' type that names no request.
    static let unknownRequests: [UInt] = {
        let known = Set(IOCTL.all.map(\.request) + IOASIDUAPI.allRequests.map(\.request))
        var r: [UInt] = []
        for nr in UInt(0)...0xff {
            let req = IOCTL._IO(0x3b, nr)
            if !known.contains(req) { r.append(req) }
        }
        return r
    }()

    @Test func unknownRequestsOfTheSemicolonTypeAreENOTTY() {
        let (file, _) = makeFile()
        defer { file.release() }
        let arg = ArgumentPages()
        #expect(Self.unknownRequests.count == 256 - IOCTL.all.count - IOASIDUAPI.allRequests.count)
        for req in Self.unknownRequests {
            arg.zero()
            arg.setSize(64)
            #expect(file.ioctl(request: req, argument: arg.base) == -25, "request \(String(req, radix: 16))")
        }
        // Another type byte with an iommufd command number.
        #expect(file.ioctl(request: IOCTL._IO(0x54, 0x81), argument: arg.base) == -25)
        #expect(file.context.objects.isEmpty)
    }

    @Test func testCommandWithoutTheTestDriverIsENOTTY() {
        let (file, _) = makeFile(testDriver: false)
        defer { file.release() }
        var cmd = iommu_test_cmd()
        cmd.op = UAPI.IOMMU_TEST_OP_MOCK_DOMAIN
        #expect(file.call(IOCTL.IOMMU_TEST_CMD, &cmd) == -25)
    }

    @Test func nullOrUnmappedArgumentIsEFAULT() {
        let (file, _) = makeFile()
        defer { file.release() }
        for row in iommufdRows {
            #expect(file.ioctl(request: row.request, argument: nil) == -14, "\(row.name)")
            #expect(file.ioctl(request: row.request, argument: UnsafeMutableRawPointer(bitPattern: 0x10)) == -14, "\(row.name)")
        }
    }
}

@Suite("ioctl round trips")
struct IoctlRoundTripTests {
    @Test func allocMapRangesUnmapDestroy() {
        let (file, _) = makeFile()
        defer { file.release() }
        var alloc = iommu_ioas_alloc()
        #expect(file.call(IOCTL.IOMMU_IOAS_ALLOC, &alloc) == 0)
        #expect(alloc.out_ioas_id == 1)
        alloc.flags = 1
        #expect(file.call(IOCTL.IOMMU_IOAS_ALLOC, &alloc) == -95, "flags must be zero")

        let user = ArgumentPages(pages: 4)
        var map = iommu_ioas_map()
        map.ioas_id = alloc.out_ioas_id
        map.flags = UAPI.IOMMU_IOAS_MAP_READABLE | UAPI.IOMMU_IOAS_MAP_FIXED_IOVA
        map.user_va = user.address
        map.length = 2 * 4096
        map.iova = 1 << 30
        #expect(file.call(IOCTL.IOMMU_IOAS_MAP, &map) == 0)
        #expect(file.call(IOCTL.IOMMU_IOAS_MAP, &map) == -17)
        map.flags = UAPI.IOMMU_IOAS_MAP_READABLE
        #expect(file.call(IOCTL.IOMMU_IOAS_MAP, &map) == 0)
        #expect(map.iova != 1 << 30, "auto IOVA written back")
        map.flags = 1 << 5
        #expect(file.call(IOCTL.IOMMU_IOAS_MAP, &map) == -95)

        // IOVA ranges with a reserved hole: two ranges; an array of one is EMSGSIZE with the count.
        var reserve = iommu_test_cmd()
        reserve.op = UAPI.IOMMU_TEST_OP_ADD_RESERVED
        reserve.id = alloc.out_ioas_id
        var r = reserve.add_reserved
        r.start = 1 << 40
        r.length = 4096
        reserve.add_reserved = r
        #expect(file.call(IOCTL.IOMMU_TEST_CMD, &reserve) == 0)
        let array = ArgumentPages()
        var ranges = iommu_ioas_iova_ranges()
        ranges.ioas_id = alloc.out_ioas_id
        ranges.num_iovas = 1
        ranges.allowed_iovas = array.address
        #expect(file.call(IOCTL.IOMMU_IOAS_IOVA_RANGES, &ranges) == -90)
        #expect(ranges.num_iovas == 2)
        #expect(file.call(IOCTL.IOMMU_IOAS_IOVA_RANGES, &ranges) == 0)
        #expect(array.base.load(as: UInt64.self) == 0)
        #expect(array.base.load(fromByteOffset: 8, as: UInt64.self) == (1 << 40) - 1)
        #expect(array.base.load(fromByteOffset: 16, as: UInt64.self) == (1 << 40) + 4096)

        var unmap = iommu_ioas_unmap()
        unmap.ioas_id = alloc.out_ioas_id
        unmap.iova = 0
        unmap.length = .max
        #expect(file.call(IOCTL.IOMMU_IOAS_UNMAP, &unmap) == 0)
        #expect(unmap.length == 4 * 4096, "unmap-all reports the bytes")

        var destroy = iommu_destroy()
        destroy.id = alloc.out_ioas_id
        #expect(file.call(IOCTL.IOMMU_DESTROY, &destroy) == 0)
        #expect(file.call(IOCTL.IOMMU_DESTROY, &destroy) == -2)
    }

    @Test func faultQueueFileCarriesRecordsAndResponses() {
        let (file, host) = makeFile()
        defer { host.closeAll(); file.release() }
        var alloc = iommu_ioas_alloc()
        #expect(file.call(IOCTL.IOMMU_IOAS_ALLOC, &alloc) == 0)
        var md = iommu_test_cmd()
        md.op = UAPI.IOMMU_TEST_OP_MOCK_DOMAIN
        md.id = alloc.out_ioas_id
        #expect(file.call(IOCTL.IOMMU_TEST_CMD, &md) == 0)
        let dev = md.mock_domain.out_idev_id, stdev = md.mock_domain.out_stdev_id

        var fa = iommu_fault_alloc()
        #expect(file.call(IOCTL.IOMMU_FAULT_QUEUE_ALLOC, &fa) == 0)
        let fd = Int32(bitPattern: fa.out_fault_fd)
        #expect(host.file(for: fd) != nil)
        var destroyQueue = iommu_destroy()
        destroyQueue.id = fa.out_fault_id
        #expect(file.call(IOCTL.IOMMU_DESTROY, &destroyQueue) == -16, "the open file holds the queue")

        var hw = iommu_hwpt_alloc()
        hw.dev_id = dev
        hw.pt_id = alloc.out_ioas_id
        hw.flags = UAPI.IOMMU_HWPT_FAULT_ID_VALID
        hw.fault_id = fa.out_fault_id
        #expect(file.call(IOCTL.IOMMU_HWPT_ALLOC, &hw) == 0)
        var rep = iommu_test_cmd()
        rep.op = UAPI.IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE
        rep.id = stdev
        var m = rep.mock_domain_replace
        m.pt_id = hw.out_hwpt_id
        rep.mock_domain_replace = m
        #expect(file.call(IOCTL.IOMMU_TEST_CMD, &rep) == 0)

        var iopf = iommu_test_cmd()
        iopf.op = UAPI.IOMMU_TEST_OP_TRIGGER_IOPF
        var t = iopf.trigger_iopf
        t.dev_id = dev
        t.grpid = 0x12
        t.perm = 1
        t.addr = 0xdead_b000
        iopf.trigger_iopf = t
        #expect(file.call(IOCTL.IOMMU_TEST_CMD, &iopf) == 0)
        #expect(host.isReadable(fd))

        let q = host.file(for: fd)!
        let recordSize = MemoryLayout<iommu_hwpt_pgfault>.size
        var out = [UInt8](repeating: 0, count: recordSize * 2)
        #expect(out.withUnsafeMutableBytes { q.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<(recordSize - 1)])) } == -29,
                "not a multiple of the record size")
        #expect(out.withUnsafeMutableBytes { q.read(into: $0) } == recordSize)
        let rec = out.withUnsafeBytes { $0.load(as: iommu_hwpt_pgfault.self) }
        #expect(rec.dev_id == dev && rec.grpid == 0x12 && rec.addr == 0xdead_b000)
        #expect(!host.isReadable(fd))

        var resp = iommu_hwpt_page_response()
        resp.cookie = rec.cookie
        resp.code = 0
        #expect(withUnsafeBytes(of: &resp) { q.write(from: $0) } == MemoryLayout<iommu_hwpt_page_response>.size)
        #expect(withUnsafeBytes(of: &resp) { q.write(from: $0) } == -22, "the cookie was answered")
        host.close(fd)
        #expect(file.call(IOCTL.IOMMU_DESTROY, &destroyQueue) == -16, "the HWPT still uses the queue")
    }
}
