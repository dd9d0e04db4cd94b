import CIOASIDSys
import IOASIDCore

/// The VFIO type1 container ioctls that iommufd serves on its own descriptor, mapped onto the
/// compatibility IOAS (`IOMMU_VFIO_IOAS`).
enum VFIOCompat {
    static func handle(_ f: IOMMUFile, request: UInt, argument: UnsafeMutableRawPointer?, trace: inout TraceLine?) -> Int {
        let result: Int
        trace?.call(TraceLine.requestName(request))
        do throws(IOMMUError) {
            switch request {
            case IOCTL.VFIO_GET_API_VERSION: result = UAPI.VFIO_API_VERSION
            case IOCTL.VFIO_CHECK_EXTENSION: result = checkExtension(f, UInt(bitPattern: argument))
            case IOCTL.VFIO_SET_IOMMU: result = try setIOMMU(f, UInt(bitPattern: argument))
            case IOCTL.VFIO_IOMMU_GET_INFO: result = try info(f, argument)
            case IOCTL.VFIO_IOMMU_MAP_DMA: result = try map(f, argument)
            case IOCTL.VFIO_IOMMU_UNMAP_DMA: result = try unmap(f, argument)
            default:
                if trace != nil {
                    trace!.hex("arg", UInt(bitPattern: argument))
                    trace!.failure(errno: ENOTTY_, reason: "unknown request")
                }
                return -Int(ENOTTY_)
            }
        } catch {
            if trace != nil {
                describe(request, argument, &trace!)
                trace!.failure(error)
            }
            return -Int(error.errno)
        }
        if trace != nil { describe(request, argument, &trace!) }
        return result
    }

    /// The argument of a VFIO request: the value passed for the by-value requests, the fields of
    /// the struct (read fault-safely, as it stands after the call) for the others.
    private static func describe(_ request: UInt, _ argument: UnsafeMutableRawPointer?, _ line: inout TraceLine) {
        func fields<T: UAPIStruct>(_: T.Type) {
            var value = T()
            let rc = withUnsafeMutableBytes(of: &value) { ioasid_sys_copy_in($0.baseAddress, UInt64(UInt(bitPattern: argument)), MemoryLayout<T>.size) }
            guard rc == 0 else { line.hex("arg", UInt(bitPattern: argument)); return }
            withUnsafeBytes(of: &value) { line.fields(of: T.self, in: $0.baseAddress!) }
        }
        switch request {
        case IOCTL.VFIO_CHECK_EXTENSION, IOCTL.VFIO_SET_IOMMU: line.decimal("arg", UInt(bitPattern: argument))
        case IOCTL.VFIO_IOMMU_GET_INFO: fields(vfio_iommu_type1_info.self)
        case IOCTL.VFIO_IOMMU_MAP_DMA: fields(vfio_iommu_type1_dma_map.self)
        case IOCTL.VFIO_IOMMU_UNMAP_DMA: fields(vfio_iommu_type1_dma_unmap.self)
        default: break
        }
    }

    static func checkExtension(_ f: IOMMUFile, _ type: UInt) -> Int {
        switch type {
        case UAPI.VFIO_TYPE1_IOMMU, UAPI.VFIO_TYPE1v2_IOMMU, UAPI.VFIO_UNMAP_ALL: return 1
        case UAPI.VFIO_DMA_CC_IOMMU: return (try? f.context.compatibilityIOAS(create: false)) == nil ? -19 : 1
        default: return 0
        }
    }

    static func setIOMMU(_ f: IOMMUFile, _ type: UInt) throws(IOMMUError) -> Int {
        guard type == UAPI.VFIO_TYPE1_IOMMU || type == UAPI.VFIO_TYPE1v2_IOMMU else { throw .invalid("unsupported IOMMU type") }
        let ioas = try f.context.compatibilityIOAS(create: false)
        if type == UAPI.VFIO_TYPE1_IOMMU { try f.context.setHugePages(ioas, false) }
        return 0
    }

    static func user(_ p: UnsafeMutableRawPointer?) throws(IOMMUError) -> UnsafeMutableRawPointer {
        guard let p, UInt(bitPattern: p) >= 4096 else { throw .fault("bad argument pointer") }
        return p
    }

    /// Reads a VFIO argument up to the end of `last` (VFIO structs are sized by `argsz`, which
    /// must reach that field); returns it, the caller's pointer and that size.
    static func argument<T: UAPIStruct>(_ type: T.Type, _ argument: UnsafeMutableRawPointer?, last: String) throws(IOMMUError)
        -> (value: T, user: UnsafeMutableRawPointer, minimum: Int) {
        let p = try user(argument)
        let minimum = T.layoutField(named: last)!.end
        var value = T()
        let rc = withUnsafeMutableBytes(of: &value) { ioasid_sys_copy_in($0.baseAddress, UInt64(UInt(bitPattern: p)), minimum) }
        guard rc == 0 else { throw .fault("argument is not readable") }
        let argsz = withUnsafeBytes(of: &value) { $0.load(as: UInt32.self) }
        guard Int(argsz) >= minimum else { throw .invalid("argsz below the last mandatory field") }
        return (value, p, minimum)
    }

    static func map(_ f: IOMMUFile, _ argument: UnsafeMutableRawPointer?) throws(IOMMUError) -> Int {
        let (m, _, _) = try Self.argument(vfio_iommu_type1_dma_map.self, argument, last: "size")
        guard m.flags & ~UInt32(3) == 0 else { throw .invalid("unknown map flags") }
        let ioas = try f.context.compatibilityIOAS(create: false)
        var access: MapAccess = []
        if m.flags & 1 != 0 { access.insert(.read) }
        if m.flags & 2 != 0 { access.insert(.write) }
        guard !access.isEmpty else { throw .invalid("mapping must be readable or writeable") }
        _ = try f.context.map(ioas, source: .user(address: m.vaddr), length: m.size, iova: m.iova, access: access)
        return 0
    }

    static func unmap(_ f: IOMMUFile, _ argument: UnsafeMutableRawPointer?) throws(IOMMUError) -> Int {
        var (m, p, minimum) = try Self.argument(vfio_iommu_type1_dma_unmap.self, argument, last: "size")
        guard m.flags & ~UAPI.VFIO_DMA_UNMAP_FLAG_ALL == 0 else { throw .invalid("unknown unmap flags") }
        let ioas = try f.context.compatibilityIOAS(create: false)
        var unmapped: UInt64 = 0
        if m.flags & UAPI.VFIO_DMA_UNMAP_FLAG_ALL != 0 {
            guard m.iova == 0, m.size == 0 else { throw .invalid("unmap-all takes no range") }
            unmapped = try f.context.unmapAll(ioas)
        } else {
            // Type1 (v1) may unmap part of a mapping: cut the areas at the span's edges first.
            if try !f.context.hugePages(ioas), m.size != 0 {
                var cuts = [m.iova &+ m.size &- 1]
                if m.iova != 0 { cuts.append(m.iova - 1) }
                try f.context.cutAreas(ioas, after: cuts)
            }
            unmapped = try f.context.unmap(ioas, iova: m.iova, length: m.size, requireMapped: false)
        }
        m.size = unmapped
        try withUnsafeBytes(of: &m) { b throws(IOMMUError) in try StructCopy.copyOut(b.baseAddress!, count: minimum, to: p) }
        return 0
    }

    static func info(_ f: IOMMUFile, _ argument: UnsafeMutableRawPointer?) throws(IOMMUError) -> Int {
        var (info, p, _) = try Self.argument(vfio_iommu_type1_info.self, argument, last: "iova_pgsizes")
        let copyBack = min(Int(info.argsz), MemoryLayout<vfio_iommu_type1_info>.size)
        let ioas = try f.context.compatibilityIOAS(create: false)
        let (ranges, _) = try f.context.iovaRanges(ioas)
        info.flags = UAPI.VFIO_IOMMU_INFO_PGSIZES
        info.iova_pgsizes = try f.context.supportedPageSizes(ioas)
        info.cap_offset = 0
        let argsz = Int(info.argsz)
        let memory = f.context.memory
        let base = UInt64(UInt(bitPattern: p))
        var total = MemoryLayout<vfio_iommu_type1_info>.size
        // 1: DMA available (no limit), 2: the IOVA ranges.
        let dmaAvailSize = MemoryLayout<vfio_iommu_type1_info_dma_avail>.size
        if argsz > total, argsz - total >= dmaAvailSize {
            var cap = vfio_iommu_type1_info_dma_avail()
            cap.header.id = UAPI.VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL
            cap.header.version = 1
            cap.avail = UInt32.max
            try withUnsafeBytes(of: &cap) { b throws(IOMMUError) in try memory.copyOut(b, to: base + UInt64(total)) }
        }
        let lastCap = total
        total += (dmaAvailSize + 7) & ~7
        let rangesSize = 16 + ranges.count * 16
        if argsz >= total {
            var next = UInt32(total)
            try withUnsafeBytes(of: &next) { b throws(IOMMUError) in try memory.copyOut(b, to: base + UInt64(lastCap) + 4) }
        }
        if argsz > total, argsz - total >= rangesSize {
            var cap = vfio_iommu_type1_info_cap_iova_range()
            cap.header.id = UAPI.VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE
            cap.header.version = 1
            cap.nr_iovas = UInt32(ranges.count)
            try withUnsafeBytes(of: &cap) { b throws(IOMMUError) in try memory.copyOut(UnsafeRawBufferPointer(rebasing: b[0..<16]), to: base + UInt64(total)) }
            for (i, r) in ranges.enumerated() {
                var v = (r.start, r.last)
                try withUnsafeBytes(of: &v) { b throws(IOMMUError) in try memory.copyOut(b, to: base + UInt64(total + 16 + i * 16)) }
            }
        }
        total += (rangesSize + 7) & ~7
        if argsz >= total { info.cap_offset = UInt32(MemoryLayout<vfio_iommu_type1_info>.size) }
        info.argsz = UInt32(total)
        info.flags |= UAPI.VFIO_IOMMU_INFO_CAPS
        try withUnsafeBytes(of: &info) { b throws(IOMMUError) in try StructCopy.copyOut(b.baseAddress!, count: copyBack, to: p) }
        return 0
    }
}
