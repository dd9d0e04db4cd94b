import CIOASIDSys
import Glibc
import IOASIDCore
import IOASIDSoftIOMMU
import IOASIDStructures
import Synchronization

// The regions of a vfio-pci device and their access paths: `pread`/`pwrite` at `index << 40`
// (config space through vfio-pci's virtualization; BARs through the slot, with the MSI-X table
// reading as all-ones and ignoring writes, as vfio-pci does; no ROM, no VGA), and `mmap` of a
// BAR through the preload's trapped-MMIO API, where every load and store becomes a call here.
//
// Region indexes: BAR0–BAR5 = 0–5, ROM = 6, config = 7, VGA = 8 (`VFIO_PCI_NUM_REGIONS` = 9).
// A BAR is mmap-able when it spans at least a page and the preload offers trapped MMIO; the BAR
// holding the MSI-X table then carries the `VFIO_REGION_INFO_CAP_MSIX_MAPPABLE` capability (the
// whole BAR may be mapped; the table is still the machine's).

enum VFIORegion {
    static let offsetShift: UInt64 = 40
    static let offsetMask: UInt64 = (1 << 40) - 1
    static let rom = 6, config = 7, vga = 8, count = 9
    static let flagRead: UInt32 = 1 << 0, flagWrite: UInt32 = 1 << 1, flagMMAP: UInt32 = 1 << 2, flagCaps: UInt32 = 1 << 3
    static let capabilityMSIXMappable: UInt16 = 3
    static let pageSize: UInt64 = 4096
}

/// The preload's trapped-MMIO API, resolved at run time (absent: BARs do not mmap).
enum TrapAPI {
    typealias Handler = @convention(c) (UnsafeMutableRawPointer?, UInt64, UInt32, Int32, UnsafeMutableRawPointer?) -> Int32
    typealias Map = @convention(c) (Int, UnsafeMutableRawPointer?, Handler?, UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer?
    typealias Unmap = @convention(c) (UnsafeMutableRawPointer?, Int) -> Int32

    static let functions: (map: Map, unmap: Unmap)? = {
        guard let map = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "ioasid_trap_map"),
              let unmap = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "ioasid_trap_unmap") else { return nil }
        return (unsafeBitCast(map, to: Map.self), unsafeBitCast(unmap, to: Unmap.self))
    }()

    /// Whether BARs can be mapped.
    static var available: Bool { functions != nil }
}

/// One mmap of a BAR: the trap handler's context.
final class VFIOMappedBAR: @unchecked Sendable {
    let slot: PCIDeviceSlot
    let bar: Int
    let base: UInt64
    let length: Int

    init(slot: PCIDeviceSlot, bar: Int, base: UInt64, length: Int) {
        self.slot = slot
        self.bar = bar
        self.base = base
        self.length = length
    }

    /// One trapped access; 0, or -1 for a bus error (memory decoding off). 1, 2, 4 and 8 bytes
    /// are one register access; 16, 32 and 64 (vector moves, `MOVDIR64B`) a wide write as one
    /// access (`PCIDeviceSlot.barWrite(_:offset:bytes:)`) or a read of ascending 8-byte pieces.
    func access(_ offset: UInt64, _ size: UInt32, _ isWrite: Bool, _ data: UnsafeMutableRawPointer) -> Int32 {
        guard slot.memoryEnabled else { return -1 }
        let at = base + offset
        if size == 16 || size == 32 || size == 64 {
            if isWrite {
                slot.barWrite(bar, offset: at, bytes: UnsafeRawBufferPointer(start: data, count: Int(size)))
            } else {
                slot.barRead(bar, offset: at, into: UnsafeMutableRawBufferPointer(start: data, count: Int(size)))
            }
            return 0
        }
        guard size == 1 || size == 2 || size == 4 || size == 8 else { return -1 }
        if isWrite {
            var value: UInt64 = 0
            for i in 0..<Int(size) { value |= UInt64(data.load(fromByteOffset: i, as: UInt8.self)) << (8 * UInt64(i)) }
            slot.barWrite(bar, offset: at, size: Int(size), value: value)
        } else {
            let value = slot.barRead(bar, offset: at, size: Int(size))
            for i in 0..<Int(size) { data.storeBytes(of: UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))), toByteOffset: i, as: UInt8.self) }
        }
        return 0
    }

    static let handler: TrapAPI.Handler = { context, offset, size, isWrite, data in
        guard let context, let data else { return -1 }
        return Unmanaged<VFIOMappedBAR>.fromOpaque(context).takeUnretainedValue().access(offset, size, isWrite != 0, data)
    }
}

/// BAR mappings by address, so that `munmap` reaches the trap API (and the context is kept alive).
public enum VFIOMappings {
    private static let mappings = Mutex<[UInt: VFIOMappedBAR]>([:])

    static func record(_ address: UInt, _ mapping: VFIOMappedBAR) { mappings.withLock { $0[address] = mapping } }

    /// Unmaps a BAR mapping at `address`; false when `address` is not one.
    public static func unmap(_ address: UInt, length: Int) -> Bool {
        guard let mapping = mappings.withLock({ $0.removeValue(forKey: address) }), let api = TrapAPI.functions else { return false }
        _ = api.unmap(UnsafeMutableRawPointer(bitPattern: address), mapping.length)
        return true
    }
}

extension VFIOPCIDevice {
    /// Whether BAR `index` is mmap-able (`bar_mmap_supported`, and trapped MMIO is available).
    func barMappable(_ index: Int) -> Bool {
        let size = slot.barSize(index)
        return size >= VFIORegion.pageSize && TrapAPI.available
    }

    /// `VFIO_DEVICE_GET_REGION_INFO` for `index`: flags, size and the capabilities (as
    /// `(id, version)` headers without payload), or EINVAL for an index beyond the regions or VGA.
    func regionInfo(_ index: UInt32) throws(IOMMUError) -> (flags: UInt32, size: UInt64, capabilities: [UInt16]) {
        switch Int(index) {
        case 0..<6:
            let size = slot.barSize(Int(index))
            guard size > 0 else { return (0, 0, []) }
            var flags = VFIORegion.flagRead | VFIORegion.flagWrite
            var caps: [UInt16] = []
            if barMappable(Int(index)) {
                flags |= VFIORegion.flagMMAP
                if Int(index) == slot.layout.msixTableBAR { caps.append(VFIORegion.capabilityMSIXMappable) }
            }
            return (flags, size, caps)
        case VFIORegion.rom: return (0, 0, [])
        case VFIORegion.config: return (VFIORegion.flagRead | VFIORegion.flagWrite, UInt64(VFIOConfigSpace.size), [])
        default: throw .invalid("no such region")
        }
    }

    /// `pread`/`pwrite` at `position` (`index << 40 | offset`) to or from user memory at
    /// `user`: the bytes moved or -errno.
    func regionAccess(_ position: Int64, user: UInt64, count: Int, write: Bool) -> Int {
        if count == 0 { return 0 }
        let index = Int(UInt64(bitPattern: position) >> VFIORegion.offsetShift)
        let offset = UInt64(bitPattern: position) & VFIORegion.offsetMask
        guard position >= 0, index < VFIORegion.count else { return -Int(EINVAL) }
        switch index {
        case VFIORegion.config: return configAccess(Int(offset), user: user, count: count, write: write)
        case 0..<6: return barAccess(index, offset, user: user, count: count, write: write)
        default: return -Int(EINVAL)   // no ROM (and no write to it), no VGA
        }
    }

    private func configAccess(_ position: Int, user: UInt64, count: Int, write: Bool) -> Int {
        let result: Int? = withConfig { config in
            guard position >= 0, position < VFIOConfigSpace.size, position + count <= VFIOConfigSpace.size else { return -Int(EFAULT) }
            var done = 0
            while done < count {
                let pos = position + done
                let chunk = config.chunkSize(pos, count - done)
                var value: UInt32 = 0
                if write {
                    guard ioasid_sys_copy_in(&value, user + UInt64(done), chunk) == 0 else { return -Int(EFAULT) }
                    config.writeChunk(pos, chunk, value)
                } else {
                    value = config.readChunk(pos, chunk)
                    guard ioasid_sys_copy_out(user + UInt64(done), &value, chunk) == 0 else { return -Int(EFAULT) }
                }
                done += chunk
            }
            return done
        }
        return result ?? -Int(EINVAL)
    }

    private func barAccess(_ bar: Int, _ offset: UInt64, user: UInt64, count requested: Int, write: Bool) -> Int {
        let size = slot.barSize(bar)
        guard size > 0, offset < size else { return -Int(EINVAL) }
        let count = Int(min(UInt64(requested), size - offset))
        var excludedStart: UInt64 = 0, excludedEnd: UInt64 = 0
        if bar == slot.layout.msixTableBAR {
            excludedStart = slot.layout.msixTableOffset
            excludedEnd = excludedStart + UInt64(slot.layout.msixVectors) * 16
        }
        var done = 0
        while done < count {
            guard slot.memoryEnabled else { return -Int(EIO) }
            let at = offset + UInt64(done)
            let remaining = count - done
            let fillable: Int
            if at < excludedStart { fillable = min(remaining, Int(excludedStart - at)) }
            else if at >= excludedEnd { fillable = remaining }
            else { fillable = 0 }
            if fillable > 0 {
                let width = fillable >= 8 && at % 8 == 0 ? 8 : fillable >= 4 && at % 4 == 0 ? 4 : fillable >= 2 && at % 2 == 0 ? 2 : 1
                var value: UInt64 = 0
                if write {
                    guard ioasid_sys_copy_in(&value, user + UInt64(done), width) == 0 else { return -Int(EFAULT) }
                    slot.barWrite(bar, offset: at, size: width, value: value)
                } else {
                    value = slot.barRead(bar, offset: at, size: width)
                    guard ioasid_sys_copy_out(user + UInt64(done), &value, width) == 0 else { return -Int(EFAULT) }
                }
                done += width
            } else {
                let filled = min(remaining, Int(excludedEnd - at))
                if !write {
                    var ones: UInt8 = 0xff
                    for i in 0..<filled {
                        guard ioasid_sys_copy_out(user + UInt64(done + i), &ones, 1) == 0 else { return -Int(EFAULT) }
                    }
                }
                done += filled
            }
        }
        return done
    }

    /// `mmap` of a BAR region: the trapped mapping's address or -errno.
    func mapBAR(address: UnsafeMutableRawPointer?, length: Int, flags: Int32, offset: Int) -> Int {
        let index = Int(UInt64(bitPattern: Int64(offset)) >> VFIORegion.offsetShift)
        guard offset >= 0, index < VFIORegion.count, length > 0 else { return -Int(EINVAL) }
        guard flags & MAP_SHARED != 0 else { return -Int(EINVAL) }
        guard index < VFIORegion.rom, barMappable(index), let api = TrapAPI.functions else { return -Int(EINVAL) }
        let start = UInt64(offset) & VFIORegion.offsetMask
        let physical = (slot.barSize(index) + VFIORegion.pageSize - 1) & ~(VFIORegion.pageSize - 1)
        guard start % VFIORegion.pageSize == 0, start + UInt64(length) <= physical else { return -Int(EINVAL) }
        let mapping = VFIOMappedBAR(slot: slot, bar: index, base: start, length: length)
        guard let mapped = api.map(length, address, VFIOMappedBAR.handler, Unmanaged.passUnretained(mapping).toOpaque()) else {
            return -Int(ENOMEM)
        }
        if Int(bitPattern: mapped) == -1 { return -Int(ENOMEM) }
        VFIOMappings.record(UInt(bitPattern: mapped), mapping)
        return Int(bitPattern: mapped)
    }
}
