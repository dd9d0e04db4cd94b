import IOASIDCore
import IOASIDStructures
import IOASIDTestDriver
import Testing

/// One row of the errno table: a request made on a fresh `Fixture` and the errno it must fail with.
struct ErrnoCase: Sendable, CustomTestStringConvertible {
    let name: String
    let errno: Int32
    let body: @Sendable (Fixture) throws -> Void
    init(_ name: String, _ errno: Int32, _ body: @escaping @Sendable (Fixture) throws -> Void) {
        self.name = name; self.errno = errno; self.body = body
    }
    var testDescription: String { "\(name) → \(errno)" }
}

let unmappedAddress: UInt64 = 0x1000 // below mmap_min_addr: never mapped

let errnoCases: [ErrnoCase] = [
    ErrnoCase("destroy unknown ID", 2) { f in try f.context.destroy(ObjectID(999)) },
    ErrnoCase("destroy ID 0", 2) { f in try f.context.destroy(ObjectID(0)) },
    ErrnoCase("destroy IOAS with a HWPT", 16) { f in try f.context.destroy(f.ioas.object) },
    ErrnoCase("destroy attached HWPT", 16) { f in try f.context.destroy(f.hwpt) },
    ErrnoCase("destroy driver-owned device", 16) { f in try f.context.destroy(f.device.object) },
    ErrnoCase("map over a mapping", 17) { f in
        _ = try f.context.map(f.ioas, source: .user(address: f.buffer.address), length: 4096, iova: f.iova, access: .read)
    },
    ErrnoCase("map length not domain aligned", 22) { f in
        _ = try f.context.map(f.ioas, source: .user(address: f.buffer.address(page: 8)), length: 100, iova: nil, access: .read)
    },
    ErrnoCase("map IOVA not domain aligned", 22) { f in
        _ = try f.context.map(f.ioas, source: .user(address: f.buffer.address(page: 8)), length: 4096, iova: (1 << 26) + 1024, access: .read)
    },
    ErrnoCase("map zero length", 22) { f in
        _ = try f.context.map(f.ioas, source: .user(address: f.buffer.address(page: 8)), length: 0, iova: nil, access: .read)
    },
    ErrnoCase("map with no permission", 22) { f in
        _ = try f.context.map(f.ioas, source: .user(address: f.buffer.address(page: 8)), length: 4096, iova: nil, access: [])
    },
    ErrnoCase("map below the aperture (reserved)", 22) { f in
        _ = try f.context.map(f.ioas, source: .user(address: f.buffer.address(page: 8)), length: 4096, iova: 0x1000, access: .read)
    },
    ErrnoCase("map user address overflows", 75) { f in
        _ = try f.context.map(f.ioas, source: .user(address: .max - 100), length: 4096, iova: nil, access: .read)
    },
    ErrnoCase("map unmapped user memory with a domain", 14) { f in
        _ = try f.context.map(f.ioas, source: .user(address: unmappedAddress), length: 4096, iova: 1 << 26, access: .read)
    },
    ErrnoCase("map into a HWPT ID", 2) { f in
        _ = try f.context.map(IOAS.ID(f.hwpt), source: .user(address: f.buffer.address), length: 4096, iova: nil, access: .read)
    },
    ErrnoCase("map file with a bad descriptor", 9) { f in
        _ = try f.context.map(f.ioas, source: .file(fd: -1, offset: 0), length: 4096, iova: nil, access: .read)
    },
    ErrnoCase("auto IOVA with no room", 28) { f in
        try f.context.allowIOVAs(f.ioas, [IOVARange(start: 1 << 27, last: (1 << 27) + 4095)])
        _ = try f.context.map(f.ioas, source: .user(address: f.buffer.address(page: 8)), length: 8192, iova: nil, access: .read)
    },
    ErrnoCase("unmap where nothing is mapped", 2) { f in _ = try f.context.unmap(f.ioas, iova: 1 << 28, length: 4096) },
    ErrnoCase("unmap that would split", 2) { f in _ = try f.context.unmap(f.ioas, iova: f.iova, length: 4096) },
    ErrnoCase("unmap zero length", 22) { f in _ = try f.context.unmap(f.ioas, iova: f.iova, length: 0) },
    ErrnoCase("unmap unknown IOAS", 2) { f in _ = try f.context.unmap(IOAS.ID(500), iova: f.iova, length: 4096) },
    ErrnoCase("copy of an unmapped span", 2) { f in
        _ = try f.context.copy(from: f.ioas, sourceIOVA: 1 << 28, to: f.ioas, destinationIOVA: nil, length: 4096, access: .read)
    },
    ErrnoCase("copy onto the source", 17) { f in
        _ = try f.context.copy(from: f.ioas, sourceIOVA: f.iova, to: f.ioas, destinationIOVA: f.iova, length: 4096, access: .read)
    },
    ErrnoCase("reserve over a mapping", 98) { f in try f.context.addReserved(f.ioas, IOVARange(start: f.iova, length: 1)!) },
    ErrnoCase("allow a reserved span", 98) { f in try f.context.allowIOVAs(f.ioas, [IOVARange(start: 0, last: 4095)]) },
    ErrnoCase("allow start >= last", 22) { f in try f.context.allowIOVAs(f.ioas, [IOVARange(start: 1 << 30, last: 1 << 30)]) },
    ErrnoCase("PASID attach, non-PASID device", 22) { f in _ = try f.driver.pasidAttach(f.handle, pasid: 1, to: f.ioas.object) },
    ErrnoCase("attach twice", 16) { f in _ = try f.context.attach(f.device, to: f.hwpt) },
    ErrnoCase("mock domain unknown flags", 22) { f in _ = try f.driver.mockDomain(f.ioas.object, flags: 1 << 5) },
    ErrnoCase("mock domain replace of a non-mock object", 2) { f in _ = try f.driver.mockDomainReplace(f.ioas.object, with: f.ioas.object) },
    ErrnoCase("accounting mode with objects", 16) { f in try f.context.setAccountingMode(.perProcess) },
    ErrnoCase("HWPT unknown flag", 95) { f in
        _ = try f.context.allocateHWPT(device: f.device, parent: f.ioas.object, flags: HWPTFlags(rawValue: 1 << 9), data: nil)
    },
    ErrnoCase("HWPT dirty tracking on a no-dirty device", 95) { f in
        let g = try f.driver.mockDomain(f.ioas.object, flags: Mock.deviceNoDirty)
        _ = try f.context.allocateHWPT(device: g.device, parent: f.ioas.object, flags: [.dirtyTracking], data: nil)
    },
    ErrnoCase("HWPT on a missing parent", 22) { f in
        _ = try f.context.allocateHWPT(device: f.device, parent: ObjectID(321), flags: [], data: nil)
    },
    ErrnoCase("vIOMMU of type 0", 95) { f in _ = try f.context.allocateVIOMMU(device: f.device, parent: HWPT.ID(f.hwpt), type: 0, data: nil) },
    ErrnoCase("vIOMMU over a non-nesting parent", 22) { f in
        _ = try f.context.allocateVIOMMU(device: f.device, parent: HWPT.ID(f.hwpt), type: Mock.viommuType, data: nil)
    },
    ErrnoCase("fault on a RID without a fault domain", 22) { f in
        try f.context.reportPageFault(device: f.device, pasid: nil, group: 1, permissions: 1, address: 0, last: true)
    },
    ErrnoCase("respond with an unknown cookie", 22) { f in
        let q = try f.context.allocateFaultQueue()
        try f.context.respond(q, cookie: 42, code: 0)
    },
    ErrnoCase("access pages where nothing is mapped", 2) { f in
        let a = try f.driver.createAccess(f.ioas, flags: 1)
        _ = try f.driver.accessPages(a, iova: 1 << 28, length: 4096, address: 0, flags: 0)
    },
    ErrnoCase("access of unknown flags", 95) { f in _ = try f.driver.createAccess(f.ioas, flags: 2) },
    ErrnoCase("access pages on a non-pinning access", 95) { f in
        let a = try f.driver.createAccess(f.ioas, flags: 0)
        _ = try f.driver.accessPages(a, iova: f.iova, length: 4096, address: 0, flags: 0)
    },
    ErrnoCase("access RW of an unmapped IOVA", 2) { f in
        let a = try f.driver.createAccess(f.ioas, flags: 0)
        try f.driver.accessRW(a, iova: 1 << 28, length: 8, address: f.buffer.address, flags: 0)
    },
    ErrnoCase("huge pages off while domains map areas", 22) { f in try f.context.setHugePages(f.ioas, false) },
    ErrnoCase("change process with user memory mapped", 22) { f in try f.context.changeProcess() },
    ErrnoCase("dirty tracking on a domain that cannot", 95) { f in try f.context.setDirtyTracking(HWPT.ID(f.hwpt), enabled: true) },
    ErrnoCase("compat IOAS not set", 19) { f in _ = try f.context.compatibilityIOAS(create: false) },
    ErrnoCase("HW queue ending at 2^64 - 1 where nothing is mapped", 2) { f in
        let parent = try f.context.allocateHWPT(device: f.device, parent: f.ioas.object, flags: [.nestParent], data: nil)
        let viommu = try f.context.allocateVIOMMU(device: f.device, parent: parent, type: Mock.viommuType, data: nil)
        _ = try f.context.allocateHWQueue(viommu: viommu, type: Mock.viommuType, index: 0, base: 0xffff_ffff_ffff_f000, length: 0x1000)
    },
    ErrnoCase("HW queue whose page array the kernel would not allocate", 12) { f in
        let parent = try f.context.allocateHWPT(device: f.device, parent: f.ioas.object, flags: [.nestParent], data: nil)
        let viommu = try f.context.allocateVIOMMU(device: f.device, parent: parent, type: Mock.viommuType, data: nil)
        _ = try f.context.allocateHWQueue(viommu: viommu, type: Mock.viommuType, index: 0, base: 0, length: 1 << 63)
    },
    ErrnoCase("vEVENT queue on a missing vIOMMU", 2) { f in
        _ = try f.context.allocateVEventQueue(viommu: VIOMMU.ID(ObjectID(300)), type: Mock.veventqType, depth: 4)
    },
]

@Suite("Errno table")
struct ErrnoTableTests {
    @Test(arguments: errnoCases)
    func fails(_ row: ErrnoCase) throws {
        try PinLock.shared {
            let f = try Fixture()
            defer { f.context.close() }
            expectErrno(row.errno, Comment(rawValue: row.name)) { try row.body(f) }
            // A failed request leaves the fixture's mapping intact and pinned.
            #expect(try f.context.areas(f.ioas).map(\.range) == [IOVARange(start: f.iova, length: 4 * 4096)!])
            #expect(pinCount(f.buffer.address) == 1)
        }
    }
}
