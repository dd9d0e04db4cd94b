import CIOASIDSys
import IOASIDCore
import IOASIDTestDriver

extension IOMMUFile {
    /// `mmap` of the `/dev/iommu` descriptor: maps a vIOMMU's region at exactly the offset and
    /// length the driver reported; `ENXIO` for anything else. The region's owner cannot be
    /// destroyed while mapped.
    func mapRegion(address: UnsafeMutableRawPointer?, length: Int, protection: Int32, flags: Int32, offset: Int) -> Int {
        let found: (VIOMMU, MockVIOMMU)? = try? context.withState { s throws(IOMMUError) in
            for v in s.all(VIOMMU.self) {
                if let m = v.model as? MockVIOMMU, m.mmapRegion(offset: UInt64(offset), length: UInt64(length)) != nil {
                    v.retain()
                    return (v, m)
                }
            }
            return nil
        }
        guard let (viommu, mock) = found, let region = mock.region else { return -6 } // ENXIO
        let mapped = ioasid_sys_mmap(address, length, protection, 0x21 /* MAP_SHARED | MAP_ANONYMOUS */, -1, 0)
        if mapped < 0 {
            _ = try? context.withState { _ throws(IOMMUError) in viommu.release() }
            return mapped
        }
        UnsafeMutableRawPointer(bitPattern: Int(mapped))!.copyMemory(from: region, byteCount: min(length, 8192))
        mappedRegions.withLock { $0.append((viommu.objectID.rawValue, UInt(mapped), length)) }
        return mapped
    }

    public func mmap(address: UnsafeMutableRawPointer?, length: Int, protection: Int32, flags: Int32, offset: Int,
                     trace: inout TraceLine?) -> Int {
        trace?.mmapArguments(address: address, length: length, protection: protection, flags: flags, offset: offset)
        let r = mapRegion(address: address, length: length, protection: protection, flags: flags, offset: offset)
        if r >= 0 { trace?.result(r, hex: true) }
        if r == -6 { trace?.failure(errno: 6, reason: "no vIOMMU region at this offset and length") }
        return r
    }

    /// `munmap` of a region handed out by `mapRegion`; returns false when the span is not one.
    public func unmapRegion(address: UnsafeMutableRawPointer, length: Int) -> Bool {
        let a = UInt(bitPattern: address)
        guard let entry = mappedRegions.withLock({ regions -> (owner: UInt32, address: UInt, length: Int)? in
            guard let i = regions.firstIndex(where: { $0.address == a }) else { return nil }
            return regions.remove(at: i)
        }) else { return false }
        _ = try? context.withState { s throws(IOMMUError) in
            if let v = try? s.object(ObjectID(entry.owner), as: VIOMMU.self) { v.release() }
        }
        _ = ioasid_sys_munmap(address, entry.length)
        return true
    }

}
