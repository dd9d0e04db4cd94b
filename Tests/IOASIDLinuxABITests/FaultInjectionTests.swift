// Fault injection through the dispatcher: fail-nth swept over every injection point of an ioctl
// sequence, with the state checked after each injected failure; and the user rules.

import Foundation
import IOASIDCore
import IOASIDLinuxABI
import Synchronization
import Testing

/// What must come back to where it was when an ioctl fails: objects, descriptors, accounting
/// and pins of the buffer's pages.
private struct Footprint: Equatable, CustomStringConvertible {
    var objects: Int
    var descriptors: Int
    var chargedPages: UInt64
    var pinnedBufferPages: Int

    init(_ file: IOMMUFile, _ host: MemoryHost, buffer: ArgumentPages) {
        objects = file.context.objects.count
        descriptors = host.descriptors.count
        chargedPages = file.context.chargedPages(.perUser) + file.context.chargedPages(.perProcess)
        pinnedBufferPages = (0..<buffer.pages).reduce(0) { n, p in
            let a = buffer.address + UInt64(p * 4096)
            return n + PinRegistry.shared.pinCount(address: a, identity: .address(a))
        }
    }

    var description: String {
        "\(objects) objects, \(descriptors) descriptors, \(chargedPages) charged pages, \(pinnedBufferPages) pins"
    }
}

@Suite("Fault injection", .serialized)
struct FaultInjectionTests {
    /// The sequence: IOAS, map (no domain yet: nothing pinned), an access that pins two pages
    /// (pinned and charged by it alone, so a leaked pin shows), mock device (auto domain: pins
    /// the rest), IOVA ranges, a HWPT, a copy, an unmap. Each step is one ioctl; `step` runs it
    /// and stops the sequence at the first failure.
    private static func sequence(_ file: IOMMUFile, buffer: ArgumentPages, step: (String, () -> Int) -> Bool) {
        var alloc = iommu_ioas_alloc()
        guard step("IOAS_ALLOC", { file.call(IOCTL.IOMMU_IOAS_ALLOC, &alloc) }) else { return }
        let ioas = alloc.out_ioas_id
        var map = iommu_ioas_map()
        map.ioas_id = ioas
        map.flags = 7  // fixed IOVA, in the mock domain's aperture (attached later)
        map.iova = 1 << 24
        map.user_va = buffer.address
        map.length = UInt64(buffer.pages * 4096)
        guard step("IOAS_MAP", { file.call(IOCTL.IOMMU_IOAS_MAP, &map) }) else { return }
        var create = iommu_test_cmd()
        create.op = UAPI.IOMMU_TEST_OP_CREATE_ACCESS
        create.id = ioas
        var c = create.create_access
        c.flags = UAPI.MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES
        create.create_access = c
        guard step("CREATE_ACCESS", { file.call(IOCTL.IOMMU_TEST_CMD, &create) }) else { return }
        var pages = iommu_test_cmd()
        pages.op = UAPI.IOMMU_TEST_OP_ACCESS_PAGES
        pages.id = create.create_access.out_access_fd
        var p = pages.access_pages
        p.iova = map.iova
        p.length = 2 * 4096
        p.uptr = buffer.address
        pages.access_pages = p
        guard step("ACCESS_PAGES", { file.call(IOCTL.IOMMU_TEST_CMD, &pages) }) else { return }
        var md = iommu_test_cmd()
        md.op = UAPI.IOMMU_TEST_OP_MOCK_DOMAIN
        md.id = ioas
        guard step("MOCK_DOMAIN", { file.call(IOCTL.IOMMU_TEST_CMD, &md) }) else { return }
        let device = md.mock_domain.out_idev_id
        var rangesBuffer = [iommu_iova_range](repeating: iommu_iova_range(), count: 4)
        let rangesResult = rangesBuffer.withUnsafeMutableBytes { b in
            var ranges = iommu_ioas_iova_ranges()
            ranges.ioas_id = ioas
            ranges.num_iovas = 4
            ranges.allowed_iovas = UInt64(UInt(bitPattern: b.baseAddress))
            return file.call(IOCTL.IOMMU_IOAS_IOVA_RANGES, &ranges)
        }
        guard step("IOVA_RANGES", { rangesResult }) else { return }
        var hwpt = iommu_hwpt_alloc()
        hwpt.dev_id = device
        hwpt.pt_id = ioas
        guard step("HWPT_ALLOC", { file.call(IOCTL.IOMMU_HWPT_ALLOC, &hwpt) }) else { return }
        var copy = iommu_ioas_copy()
        copy.flags = 6
        copy.src_ioas_id = ioas
        copy.dst_ioas_id = ioas
        copy.src_iova = map.iova
        copy.length = 4096
        guard step("IOAS_COPY", { file.call(IOCTL.IOMMU_IOAS_COPY, &copy) }) else { return }
        var unmap = iommu_ioas_unmap()
        unmap.ioas_id = ioas
        unmap.iova = copy.dst_iova
        unmap.length = 4096
        _ = step("IOAS_UNMAP", { file.call(IOCTL.IOMMU_IOAS_UNMAP, &unmap) })
    }

    /// fail-nth at 1, 2, 3, ...: the armed point fails the ioctl that reaches it with the
    /// kernel's errno, and that ioctl leaves objects, descriptors, accounting and pins as they
    /// were before it; the sweep ends at the first N the sequence does not reach.
    @Test func everyInjectionPointFailsCleanly() {
        PinLock.exclusive {
            let buffer = ArgumentPages(pages: 4)
            var n: UInt32 = 1
            var failedAt: [String: Int] = [:]
            while n < 500 {
                let (file, host) = makeFile()
                var fired: String?
                FaultInjection.armNth(n)
                Self.sequence(file, buffer: buffer) { name, call in
                    let before = Footprint(file, host, buffer: buffer)
                    let result = call()
                    if result == 0 { return true }
                    let armed = FaultInjection.nth
                    #expect(armed == 0, "N=\(n): \(name) failed with \(result) although nothing was injected")
                    #expect(result == -12 || result == -14, "N=\(n): \(name) failed with \(result), not ENOMEM or EFAULT")
                    let after = Footprint(file, host, buffer: buffer)
                    if result == -14 && (name == "IOAS_MAP" || name == "IOAS_COPY") {
                        // The answer could not be written: the kernel keeps the mapping (its
                        // ioas.c does not undo it), so the caller can still unmap it.
                        #expect(after.objects == before.objects && after.descriptors == before.descriptors, "N=\(n): \(name)")
                    } else {
                        #expect(after == before, "N=\(n): \(name) failed and left \(after), it found \(before)")
                    }
                    fired = name
                    return false
                }
                let remaining = FaultInjection.nth
                FaultInjection.armNth(0)
                host.closeAll()
                file.release()
                #expect(Footprint(file, host, buffer: buffer) == Footprint.zero(host), "N=\(n): the last close left something")
                guard let name = fired else {
                    #expect(remaining > 0, "N=\(n): the sequence failed without an injected fault")
                    break
                }
                failedAt[name, default: 0] += 1
                n += 1
            }
            print("fault injection sweep: \(n - 1) injection points, failed per ioctl: \(failedAt.sorted { $0.key < $1.key })")
            // Each ioctl has at least its struct copy and its answer as injection points.
            #expect(n > 20, "the sweep ended after \(n - 1) injection points")
            for name in ["IOAS_ALLOC", "MOCK_DOMAIN", "IOAS_MAP", "CREATE_ACCESS", "ACCESS_PAGES", "IOVA_RANGES", "HWPT_ALLOC", "IOAS_COPY", "IOAS_UNMAP"] {
                #expect((failedAt[name] ?? 0) >= 2, "\(name) was failed \(failedAt[name] ?? 0) times")
            }
        }
    }

    @Test func failNthCountsOnlyTheArmingThread() {
        FaultInjection.armNth(1)
        defer { FaultInjection.armNth(0) }
        let other = Mutex<UInt32?>(nil)
        let thread = Thread { other.withLock { $0 = FaultInjection.nth } }
        thread.start()
        while other.withLock({ $0 }) == nil { usleep(1000) }
        #expect(FaultInjection.nth == 1)
        #expect(other.withLock { $0 } == 0)
    }

    @Test func rulesParse() throws {
        #expect(try FaultRule.parse("IOMMU_IOAS_MAP:3:ENOMEM") == FaultRule(target: .call("IOMMU_IOAS_MAP"), when: .nth(3), error: .noMemory("")))
        #expect(try FaultRule.parse("ioas_map") == FaultRule(target: .call("IOMMU_IOAS_MAP")))
        #expect(try FaultRule.parse("alloc:%5") == FaultRule(target: .anyAllocation, when: .every(5)))
        #expect(try FaultRule.parse("hwpt:2+:EINVAL") == FaultRule(target: .allocation(.hwptPaging), when: .from(2), error: .invalid("")))
        #expect(try FaultRule.parse("copy-to-user").error.errno == 14)
        #expect(try FaultRule.parse("pin:1:14").error.errno == 14)
        #expect(try FaultRule.parse("IOMMU_IOAS_MAP:3:ENOMEM").description == "IOMMU_IOAS_MAP:3:ENOMEM")
        for bad in ["", "alloc:0", "alloc:x", "alloc:1:EWHAT", "a:b:c:d", "io-as"] {
            #expect(throws: FaultRuleError.self, "\(bad)") { try FaultRule.parse(bad) }
        }
    }
}

extension Footprint {
    static func zero(_ host: MemoryHost) -> Footprint {
        var f = Footprint(objects: 0, descriptors: 0, chargedPages: 0, pinnedBufferPages: 0)
        f.descriptors = 0
        return f
    }

    init(objects: Int, descriptors: Int, chargedPages: UInt64, pinnedBufferPages: Int) {
        self.objects = objects
        self.descriptors = descriptors
        self.chargedPages = chargedPages
        self.pinnedBufferPages = pinnedBufferPages
    }
}
