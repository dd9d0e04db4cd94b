import CIOASIDSys
import IOASIDCore
import IOASIDTestDriver

/// One row of the ioctl table: the request, its struct, the end of its last mandatory field,
/// and the handler. The dispatcher applies the size rules to every row the same way.
struct IoctlOp: Sendable {
    typealias Handler = @Sendable (IOMMUFile, UserCommand) throws(IOMMUError) -> Int
    let request: UInt
    let name: StaticString
    let size: Int
    let minimumSize: Int
    let type: any UAPIStruct.Type
    /// The request creates an object or a descriptor and answers its ID: the caller's struct is
    /// checked writeable before the handler runs, so an answer that cannot be written creates
    /// nothing (the kernel creates, fails to respond, and destroys again: the same outcome).
    let creates: Bool
    let handler: Handler

    init<T: UAPIStruct>(_ request: UInt, _ name: StaticString, _ type: T.Type, last: String, creates: Bool = false,
                        _ handler: @escaping Handler) {
        self.request = request
        self.name = name
        self.size = MemoryLayout<T>.size
        self.minimumSize = T.layoutFields.first { $0.name == last }!.end
        self.type = type
        self.creates = creates
        self.handler = handler
    }
}

/// The iommufd ioctl table, indexed by `_IOC_NR(request) - 0x80`.
enum Dispatcher {
    static let base = 0x80

    static let table: [IoctlOp?] = {
        var rows: [IoctlOp] = [
            IoctlOp(IOCTL.IOMMU_DESTROY, "IOMMU_DESTROY", iommu_destroy.self, last: "id", IOMMUFile.destroy),
            IoctlOp(IOCTL.IOMMU_IOAS_ALLOC, "IOMMU_IOAS_ALLOC", iommu_ioas_alloc.self, last: "out_ioas_id", creates: true, IOMMUFile.ioasAlloc),
            IoctlOp(IOCTL.IOMMU_IOAS_ALLOW_IOVAS, "IOMMU_IOAS_ALLOW_IOVAS", iommu_ioas_allow_iovas.self, last: "allowed_iovas", IOMMUFile.allowIOVAs),
            IoctlOp(IOCTL.IOMMU_IOAS_COPY, "IOMMU_IOAS_COPY", iommu_ioas_copy.self, last: "src_iova", IOMMUFile.ioasCopy),
            IoctlOp(IOCTL.IOMMU_IOAS_IOVA_RANGES, "IOMMU_IOAS_IOVA_RANGES", iommu_ioas_iova_ranges.self, last: "out_iova_alignment", IOMMUFile.iovaRanges),
            IoctlOp(IOCTL.IOMMU_IOAS_MAP, "IOMMU_IOAS_MAP", iommu_ioas_map.self, last: "iova", IOMMUFile.ioasMap),
            IoctlOp(IOCTL.IOMMU_IOAS_UNMAP, "IOMMU_IOAS_UNMAP", iommu_ioas_unmap.self, last: "length", IOMMUFile.ioasUnmap),
            IoctlOp(IOCTL.IOMMU_OPTION, "IOMMU_OPTION", iommu_option.self, last: "val64", IOMMUFile.option),
            IoctlOp(IOCTL.IOMMU_VFIO_IOAS, "IOMMU_VFIO_IOAS", iommu_vfio_ioas.self, last: "__reserved", IOMMUFile.vfioIOAS),
            IoctlOp(IOCTL.IOMMU_HWPT_ALLOC, "IOMMU_HWPT_ALLOC", iommu_hwpt_alloc.self, last: "__reserved", creates: true, IOMMUFile.hwptAlloc),
            IoctlOp(IOCTL.IOMMU_GET_HW_INFO, "IOMMU_GET_HW_INFO", iommu_hw_info.self, last: "__reserved", IOMMUFile.hwInfo),
            IoctlOp(IOCTL.IOMMU_HWPT_SET_DIRTY_TRACKING, "IOMMU_HWPT_SET_DIRTY_TRACKING", iommu_hwpt_set_dirty_tracking.self, last: "__reserved", IOMMUFile.setDirtyTracking),
            IoctlOp(IOCTL.IOMMU_HWPT_GET_DIRTY_BITMAP, "IOMMU_HWPT_GET_DIRTY_BITMAP", iommu_hwpt_get_dirty_bitmap.self, last: "data", IOMMUFile.dirtyBitmap),
            IoctlOp(IOCTL.IOMMU_HWPT_INVALIDATE, "IOMMU_HWPT_INVALIDATE", iommu_hwpt_invalidate.self, last: "__reserved", IOMMUFile.hwptInvalidate),
            IoctlOp(IOCTL.IOMMU_FAULT_QUEUE_ALLOC, "IOMMU_FAULT_QUEUE_ALLOC", iommu_fault_alloc.self, last: "out_fault_fd", creates: true, IOMMUFile.faultAlloc),
            IoctlOp(IOCTL.IOMMU_IOAS_MAP_FILE, "IOMMU_IOAS_MAP_FILE", iommu_ioas_map_file.self, last: "iova", IOMMUFile.ioasMapFile),
            IoctlOp(IOCTL.IOMMU_VIOMMU_ALLOC, "IOMMU_VIOMMU_ALLOC", iommu_viommu_alloc.self, last: "out_viommu_id", creates: true, IOMMUFile.viommuAlloc),
            IoctlOp(IOCTL.IOMMU_VDEVICE_ALLOC, "IOMMU_VDEVICE_ALLOC", iommu_vdevice_alloc.self, last: "virt_id", creates: true, IOMMUFile.vdeviceAlloc),
            IoctlOp(IOCTL.IOMMU_IOAS_CHANGE_PROCESS, "IOMMU_IOAS_CHANGE_PROCESS", iommu_ioas_change_process.self, last: "__reserved", IOMMUFile.changeProcess),
            IoctlOp(IOCTL.IOMMU_VEVENTQ_ALLOC, "IOMMU_VEVENTQ_ALLOC", iommu_veventq_alloc.self, last: "out_veventq_fd", creates: true, IOMMUFile.veventqAlloc),
            IoctlOp(IOCTL.IOMMU_HW_QUEUE_ALLOC, "IOMMU_HW_QUEUE_ALLOC", iommu_hw_queue_alloc.self, last: "length", creates: true, IOMMUFile.hwQueueAlloc),
            IoctlOp(IOCTL.IOMMU_TEST_CMD, "IOMMU_TEST_CMD", iommu_test_cmd.self, last: "last", creates: true, IOMMUFile.testCommand),
        ]
        var t = [IoctlOp?](repeating: nil, count: 0x21)
        for r in rows { t[Int(r.request & 0xff) - base] = r }
        rows.removeAll()
        return t
    }()

    /// The largest struct of the table (the stack buffer's size).
    static let maximumSize = 128
}

extension IOMMUFile {
    /// Decodes and runs one ioctl; returns its result or a negated errno. With a `trace` line,
    /// describes the call on it: the request, the struct's fields after the call, the outcome
    /// (the untraced path builds nothing and allocates nothing).
    func dispatch(request: UInt, argument: UnsafeMutableRawPointer?, trace: inout TraceLine?) -> Int {
        let nr = Int(request & 0xff)
        let index = nr - Dispatcher.base
        guard (request >> 8) & 0xff == 0x3b else {
            return Self.refuse(&trace, request, argument, ENOTTY_, "not an iommufd request")
        }
        let op: IoctlOp
        let userSize: Int  // the caller's size field, read before the request is matched
        if index >= 0, index < Dispatcher.table.count {
            // As the kernel does, the size is read before the request is matched (EFAULT first,
            // for a number no request has too).
            guard let user = argument, let size = try? StructCopy.size(at: user) else {
                return Self.refuse(&trace, request, argument, 14, "argument pointer not readable")
            }
            userSize = size
            guard let row = Dispatcher.table[index], row.request == request & 0xffff_ffff else {
                return Self.refuse(&trace, request, argument, ENOTTY_, "unknown iommufd request")
            }
            op = row
        } else if nr >= Int(IOASIDUAPI.IOASID_CMD_BASE), nr - Int(IOASIDUAPI.IOASID_CMD_BASE) < IOMMUFile.ioasidTable.count {
            // The IOASID layer's own requests (include/ioasid/ioasid.h).
            guard let user = argument, let size = try? StructCopy.size(at: user) else {
                return Self.refuse(&trace, request, argument, 14, "argument pointer not readable")
            }
            userSize = size
            let row = IOMMUFile.ioasidTable[nr - Int(IOASIDUAPI.IOASID_CMD_BASE)]
            guard row.request == request & 0xffff_ffff else {
                return Self.refuse(&trace, request, argument, ENOTTY_, "unknown IOASID request")
            }
            op = row
        } else {
            return VFIOCompat.handle(self, request: request, argument: argument, trace: &trace)
        }
        let user = argument!
        if op.request == IOCTL.IOMMU_TEST_CMD, testDriver == nil {
            return Self.refuse(&trace, request, argument, ENOTTY_, "test driver is off")
        }
        // `ioasid run --fail` rules: one load when there are none.
        let ruled = FaultInjection.hasRules
        if ruled {
            do throws(IOMMUError) { try FaultInjection.callStarting(name: op.name) } catch {
                if trace != nil {
                    trace!.call("\(op.name)")
                    trace!.failure(error)
                }
                return -Int(error.errno)
            }
        }
        defer { if ruled { FaultInjection.callEnded() } }
        return withUnsafeTemporaryAllocation(byteCount: Dispatcher.maximumSize, alignment: 16) { raw -> Int in
            let buffer = raw.baseAddress!
            buffer.initializeMemory(as: UInt8.self, repeating: 0, count: op.size)
            do throws(IOMMUError) {
                do throws(IOMMUError) {
                    try StructCopy.copyIn(from: user, userSize: userSize, into: buffer, size: op.size, minimumSize: op.minimumSize)
                    if op.creates { try StructCopy.copyOut(buffer, count: min(userSize, op.size), to: user) }
                } catch {
                    // The size is the error (or the tail past our struct is): show it.
                    if trace != nil {
                        trace!.call("\(op.name)")
                        trace!.decimal("size", userSize)
                        switch error.errno {
                        case EINVAL_: trace!.failure(errno: EINVAL_, reason: "\(error.reason), which ends at \(op.minimumSize)")
                        case 7: trace!.failure(errno: 7, reason: "\(error.reason), which ends at \(op.size)")
                        default: trace!.failure(error)
                        }
                    }
                    return -Int(error.errno)
                }
                let r = try op.handler(self, UserCommand(user: user, userSize: userSize, buffer: buffer, size: op.size))
                if trace != nil { Self.describe(&trace!, op, buffer) }
                return r
            } catch {
                if trace != nil {
                    Self.describe(&trace!, op, buffer)
                    trace!.failure(error)
                }
                return -Int(error.errno)
            }
        }
    }

    /// Names a request refused before its struct was read, with the argument pointer.
    private static func refuse(_ trace: inout TraceLine?, _ request: UInt, _ argument: UnsafeMutableRawPointer?,
                               _ errno: Int32, _ reason: String) -> Int {
        if trace != nil {
            trace!.call(TraceLine.requestName(request))
            trace!.hex("arg", UInt(bitPattern: argument))
            trace!.failure(errno: errno, reason: reason)
        }
        return -Int(errno)
    }

    /// The request and every field of its struct as it stands after the call (the "out" fields
    /// hold the answer). `IOMMU_TEST_CMD` shows its op and the fields of that op's union member.
    private static func describe(_ line: inout TraceLine, _ op: IoctlOp, _ buffer: UnsafeMutableRawPointer) {
        line.call("\(op.name)")
        if op.request == IOCTL.IOMMU_TEST_CMD {
            let opcode = Int(buffer.load(fromByteOffset: 4, as: UInt32.self))
            let member = TestCommandNames.members[opcode] ?? ""
            line.text("op", TestCommandNames.ops[opcode] ?? String(opcode))
            line.fields(of: op.type, in: buffer) { name in
                name == "op" || (name != "id" && (member.isEmpty || !name.hasPrefix(member + ".")))
            }
        } else {
            // The in/out halves of a union share bytes: after the call only the "out" name is meaningful.
            line.fields(of: op.type, in: buffer) { $0 == "in_data_type" }
        }
    }
}
