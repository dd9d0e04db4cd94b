import IOASIDCore

/// Decodes one ioctl for `ioasid run --trace`: the request name, every field of its struct
/// (from the layout table, so nothing is decoded by hand) and the result or errno.
enum Trace {
    static func line(_ op: IoctlOp, buffer: UnsafeMutableRawPointer, result: Int, error: IOMMUError? = nil) -> String {
        var s = "\(op.name)"
        var fields = op.type.layoutFields
        if op.request == IOCTL.IOMMU_TEST_CMD {
            let opcode = buffer.load(fromByteOffset: 4, as: UInt32.self)
            let member = testMembers[Int(opcode)] ?? ""
            s += " op=\(testOpNames[Int(opcode)] ?? String(opcode))"
            fields = fields.filter { f in
                f.name == "id" || (!member.isEmpty && f.name.hasPrefix(member + "."))
            }
        }
        // The in/out halves of a union share bytes: after the call only the "out" name is meaningful.
        for f in fields where !f.name.hasPrefix("__") && f.name != "size" && f.name != "op" && !f.name.contains("__reserved")
            && f.name != "in_data_type" {
            let v: UInt64
            switch f.size {
            case 1: v = UInt64(buffer.load(fromByteOffset: f.offset, as: UInt8.self))
            case 2: v = UInt64(buffer.loadUnaligned(fromByteOffset: f.offset, as: UInt16.self))
            case 4: v = UInt64(buffer.loadUnaligned(fromByteOffset: f.offset, as: UInt32.self))
            case 8: v = buffer.loadUnaligned(fromByteOffset: f.offset, as: UInt64.self)
            default: continue
            }
            let name = f.name.split(separator: ".").last.map(String.init) ?? f.name
            s += v > 0xffff ? " \(name)=0x\(String(v, radix: 16))" : " \(name)=\(v)"
        }
        if let error {
            s += " -> -\(errnoName(error.errno)) (\(error.reason))"
        } else {
            s += " -> \(result)"
        }
        return s
    }

    static let testOps = ["ADD_RESERVED", "MOCK_DOMAIN", "MD_CHECK_MAP", "MD_CHECK_REFS", "CREATE_ACCESS",
                          "DESTROY_ACCESS_PAGES", "ACCESS_PAGES", "ACCESS_RW", "SET_TEMP_MEMORY_LIMIT",
                          "MOCK_DOMAIN_REPLACE", "ACCESS_REPLACE_IOAS", "MOCK_DOMAIN_FLAGS", "DIRTY", "MD_CHECK_IOTLB",
                          "TRIGGER_IOPF", "DEV_CHECK_CACHE", "TRIGGER_VEVENT", "PASID_ATTACH", "PASID_REPLACE",
                          "PASID_DETACH", "PASID_CHECK_HWPT", "DMABUF_GET", "DMABUF_REVOKE"]
    static let testOpNames: [Int: String] = Dictionary(uniqueKeysWithValues: testOps.enumerated().map { ($0.offset + 1, $0.element) })
    static let testMembers: [Int: String] = [
        1: "add_reserved", 2: "mock_domain", 3: "check_map", 4: "check_refs", 5: "create_access", 6: "destroy_access_pages",
        7: "access_pages", 8: "access_rw", 9: "memory_limit", 10: "mock_domain_replace", 11: "access_replace_ioas",
        12: "mock_domain_flags", 13: "dirty", 14: "check_iotlb", 15: "trigger_iopf", 16: "check_dev_cache",
        17: "trigger_vevent", 18: "pasid_attach", 19: "pasid_replace", 20: "pasid_detach", 21: "pasid_check",
        22: "dmabuf_get", 23: "dmabuf_revoke",
    ]

    static func errnoName(_ e: Int32) -> String {
        switch e {
        case 1: "EPERM"; case 2: "ENOENT"; case 3: "ESRCH"; case 5: "EIO"; case 6: "ENXIO"; case 7: "E2BIG"; case 9: "EBADF"
        case 12: "ENOMEM"; case 14: "EFAULT"; case 16: "EBUSY"; case 17: "EEXIST"; case 19: "ENODEV"
        case 22: "EINVAL"; case 25: "ENOTTY"; case 28: "ENOSPC"; case 34: "ERANGE"; case 35: "EDEADLOCK"
        case 52: "EBADE"; case 75: "EOVERFLOW"; case 77: "EBADFD"; case 90: "EMSGSIZE"; case 95: "EOPNOTSUPP"
        case 98: "EADDRINUSE"
        default: "errno \(e)"
        }
    }
}
