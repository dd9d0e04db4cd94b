import CIOASIDSys
import IOASIDCore
import IOASIDStructures
import IOASIDTestDriver

extension IOMMUFile {
    /// `IOMMU_TEST_CMD`: decodes the op and its union member and calls the test driver.
    static let testCommand: IoctlOp.Handler = { f, u throws(IOMMUError) in
        guard let t = f.testDriver else { throw .notTTY("test driver is off") }
        var c = u.load(iommu_test_cmd.self)
        let id = ObjectID(c.id)
        switch c.op {
        case UAPI.IOMMU_TEST_OP_ADD_RESERVED:
            let a = c.add_reserved
            guard a.length != 0 else { throw .invalid("zero length") }
            guard let r = IOVARange(start: a.start, length: a.length) else { throw .overflow("start + length overflows") }
            try f.context.addReserved(IOAS.ID(id), r)
        case UAPI.IOMMU_TEST_OP_MOCK_DOMAIN, UAPI.IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS:
            let flags = c.op == UAPI.IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS ? c.mock_domain_flags.dev_flags : 0
            let r = try t.mockDomain(id, flags: flags)
            var m = c.mock_domain
            m.out_stdev_id = r.handle.rawValue
            m.out_hwpt_id = r.hwpt.rawValue
            m.out_idev_id = r.device.rawValue
            c.mock_domain = m
            try u.respond(c) { try? f.context.destroy(r.handle) }
        case UAPI.IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE:
            var m = c.mock_domain_replace
            m.pt_id = try t.mockDomainReplace(id, with: ObjectID(m.pt_id)).rawValue
            c.mock_domain_replace = m
            try u.respond(c)
        case UAPI.IOMMU_TEST_OP_MD_CHECK_MAP:
            let m = c.check_map
            try t.checkMap(id, iova: m.iova, length: m.length, address: m.uptr)
        case UAPI.IOMMU_TEST_OP_MD_CHECK_REFS:
            let m = c.check_refs
            try t.checkRefs(address: m.uptr, length: m.length, refs: m.refs)
        case UAPI.IOMMU_TEST_OP_MD_CHECK_IOTLB:
            try t.checkIOTLB(id, entry: c.check_iotlb.id, value: c.check_iotlb.iotlb)
        case UAPI.IOMMU_TEST_OP_DEV_CHECK_CACHE:
            try t.checkDeviceCache(Device.ID(id), entry: c.check_dev_cache.id, value: c.check_dev_cache.cache)
        case UAPI.IOMMU_TEST_OP_CREATE_ACCESS:
            let access = try t.createAccess(IOAS.ID(id), flags: c.create_access.flags)
            do throws(IOMMUError) { try u.prepareResponse() } catch {
                t.closeAccess(access)
                throw error
            }
            let file = QueueFile(owner: f)
            file.queue = .access(access)
            guard f.hold() else { t.closeAccess(access); throw .badDescriptor("the iommufd was closed") }
            file.holdsOwner = true
            let fd = f.host.install(file)
            guard fd >= 0 else {
                file.holdsOwner = false
                t.closeAccess(access)
                f.letGo()
                throw .noMemory("no descriptor for the access")
            }
            file.fd = fd
            var m = c.create_access
            m.out_access_fd = UInt32(bitPattern: fd)
            c.create_access = m
            try u.respondPrepared(c)
        case UAPI.IOMMU_TEST_OP_ACCESS_REPLACE_IOAS:
            try t.accessReplaceIOAS(try f.access(c.id), ioas: IOAS.ID(c.access_replace_ioas.ioas_id))
        case UAPI.IOMMU_TEST_OP_ACCESS_PAGES:
            var m = c.access_pages
            let access = try f.access(c.id)
            m.out_access_pages_id = try t.accessPages(access, iova: m.iova, length: m.length, address: m.uptr, flags: m.flags)
            c.access_pages = m
            try u.respond(c) { try? t.destroyAccessPages(access, item: m.out_access_pages_id) }
        case UAPI.IOMMU_TEST_OP_ACCESS_RW:
            let m = c.access_rw
            try t.accessRW(try f.access(c.id), iova: m.iova, length: m.length, address: m.uptr, flags: m.flags)
        case UAPI.IOMMU_TEST_OP_DESTROY_ACCESS_PAGES:
            try t.destroyAccessPages(try f.access(c.id), item: c.destroy_access_pages.access_pages_id)
        case UAPI.IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT:
            guard c.memory_limit.limit >= 12 else { throw .invalid("limit below one batch element") }
        case UAPI.IOMMU_TEST_OP_DIRTY:
            var m = c.dirty
            m.out_nr_dirty = try t.setDirty(id, iova: m.iova, length: m.length, pageSize: m.page_size, bitmap: m.uptr)
            c.dirty = m
            try u.respond(c)
        case UAPI.IOMMU_TEST_OP_TRIGGER_IOPF:
            let m = c.trigger_iopf
            try t.triggerIOPF(device: Device.ID(m.dev_id), pasid: m.pasid, group: m.grpid, permissions: m.perm, address: m.addr)
        case UAPI.IOMMU_TEST_OP_TRIGGER_VEVENT:
            try t.triggerVEvent(device: Device.ID(c.trigger_vevent.dev_id))
        case UAPI.IOMMU_TEST_OP_PASID_ATTACH:
            var m = c.pasid_attach
            m.pt_id = try t.pasidAttach(id, pasid: m.pasid, to: ObjectID(m.pt_id)).rawValue
            c.pasid_attach = m
            try u.respond(c)
        case UAPI.IOMMU_TEST_OP_PASID_REPLACE:
            var m = c.pasid_replace
            m.pt_id = try t.pasidReplace(id, pasid: m.pasid, with: ObjectID(m.pt_id)).rawValue
            c.pasid_replace = m
            try u.respond(c)
        case UAPI.IOMMU_TEST_OP_PASID_DETACH:
            try t.pasidDetach(id, pasid: c.pasid_detach.pasid)
        case UAPI.IOMMU_TEST_OP_PASID_CHECK_HWPT:
            try t.pasidCheck(id, pasid: c.pasid_check.pasid, hwpt: ObjectID(c.pasid_check.hwpt_id))
        case UAPI.IOMMU_TEST_OP_DMABUF_GET:
            let m = c.dmabuf_get
            let length = (UInt64(m.length) + 4095) & ~4095
            guard length != 0, length <= 4096 * 512 else { throw .invalid("DMA-buf length out of range") }
            let fd = ioasid_sys_memfd(length, m.open_flags & 0o2000000 != 0 ? 1 : 0)
            guard fd >= 0 else { throw .noMemory("cannot make the DMA-buf") }
            var device: UInt64 = 0, inode: UInt64 = 0, size: UInt64 = 0
            var mappable: Int32 = 0
            _ = ioasid_sys_file_info(Int32(fd), &device, &inode, &size, &mappable)
            DMABufRegistry.shared.register(FileIdentity(device: device, inode: inode))
            return Int(fd)
        case UAPI.IOMMU_TEST_OP_DMABUF_REVOKE:
            let m = c.dmabuf_revoke
            var device: UInt64 = 0, inode: UInt64 = 0, size: UInt64 = 0
            var mappable: Int32 = 0
            guard ioasid_sys_file_info(m.dmabuf_fd, &device, &inode, &size, &mappable) == 0 else { throw .badDescriptor("not an open descriptor") }
            guard DMABufRegistry.shared.setRevoked(FileIdentity(device: device, inode: inode), m.revoked != 0) else {
                throw .notSupported("not a test DMA-buf")
            }
        default:
            throw .notSupported("unknown test op")
        }
        return 0
    }

    /// The mock access behind the access file descriptor `fd`.
    func access(_ fd: UInt32) throws(IOMMUError) -> MockAccess {
        guard let file = host.file(for: Int32(bitPattern: fd)) as? QueueFile, case .access(let a) = file.queue else {
            throw .badFileState("not an access descriptor")
        }
        return a
    }
}

/// The names the trace gives `IOMMU_TEST_CMD`'s ops (`IOMMU_TEST_OP_` dropped) and the union
/// member of `iommu_test_cmd` each op uses.
enum TestCommandNames {
    static let ops: [Int: String] = Dictionary(uniqueKeysWithValues: [
        "ADD_RESERVED", "MOCK_DOMAIN", "MD_CHECK_MAP", "MD_CHECK_REFS", "CREATE_ACCESS", "DESTROY_ACCESS_PAGES",
        "ACCESS_PAGES", "ACCESS_RW", "SET_TEMP_MEMORY_LIMIT", "MOCK_DOMAIN_REPLACE", "ACCESS_REPLACE_IOAS",
        "MOCK_DOMAIN_FLAGS", "DIRTY", "MD_CHECK_IOTLB", "TRIGGER_IOPF", "DEV_CHECK_CACHE", "TRIGGER_VEVENT",
        "PASID_ATTACH", "PASID_REPLACE", "PASID_DETACH", "PASID_CHECK_HWPT", "DMABUF_GET", "DMABUF_REVOKE",
    ].enumerated().map { ($0.offset + 1, $0.element) })

    static let members: [Int: String] = [
        1: "add_reserved", 2: "mock_domain", 3: "check_map", 4: "check_refs", 5: "create_access", 6: "destroy_access_pages",
        7: "access_pages", 8: "access_rw", 9: "memory_limit", 10: "mock_domain_replace", 11: "access_replace_ioas",
        12: "mock_domain_flags", 13: "dirty", 14: "check_iotlb", 15: "trigger_iopf", 16: "check_dev_cache",
        17: "trigger_vevent", 18: "pasid_attach", 19: "pasid_replace", 20: "pasid_detach", 21: "pasid_check",
        22: "dmabuf_get", 23: "dmabuf_revoke",
    ]
}
