import CIOASIDSys
import Glibc
import IOASIDCore
import IOASIDStructures

// VFIO_DEVICE_IOEVENTFD: an eventfd whose every signal writes a fixed value to a BAR register of
// the device, without the program (or the VMM, for KVM's ioeventfds) making a call. vfio-pci's
// rules, with its errnos:
// - EFAULT for an unreadable argument; EINVAL for argsz below `fd`, flags outside the size mask,
//   not exactly one size bit, or fd < -1;
// - EINVAL for a region other than BAR0-5, a write that does not fit the BAR (an unimplemented
//   BAR has length 0), one that touches the MSI-X table, or an 8-byte write (vfio-pci refuses
//   those);
// - the same (BAR, offset, data, size) again: EEXIST with an eventfd, removed with fd -1;
//   fd -1 for one that is not there: ENODEV;
// - at most 1000 per device (ENOSPC); EBADF for a closed descriptor, EINVAL for one that is not
//   an eventfd (or is one of the engine's own);
// - a write to a memory BAR happens only while COMMAND's memory decoding is on, as vfio-pci
//   tests it; all of them end when the device's last descriptor is closed.
// The engine watches a duplicate of the eventfd, so closing the program's own descriptor does not
// end an ioeventfd (in the kernel the eventfd's release does; fd -1 ends it in both).
//
// Layout (include/uapi/linux/vfio.h):
//   vfio_device_ioeventfd { u32 argsz, flags; u64 offset, data; s32 fd; u32 reserved }   minsz 28

/// One ioeventfd of a device: what its signal writes, and the watch on its eventfd.
struct VFIOIOEventfd {
    let bar: Int
    let position: UInt64
    let data: UInt64
    let size: Int
    let watch: VFIOEventfdWatch
}

extension VFIODeviceRequests {
    static let ioeventfdSizeMask: UInt32 = 0xf
    static let ioeventfdMaximum = 1000

    static func ioeventfd(_ pci: VFIOPCIDevice, _ user: UInt64) throws(IOMMUError) -> Int {
        var raw = [UInt8](repeating: 0, count: 28)
        let rc = raw.withUnsafeMutableBytes { ioasid_sys_copy_in($0.baseAddress, user, 28) }
        guard rc == 0 else { throw .fault("argument not readable") }
        let (argsz, flags, offset, data, fd) = raw.withUnsafeBytes { b in
            (b.loadUnaligned(fromByteOffset: 0, as: UInt32.self), b.loadUnaligned(fromByteOffset: 4, as: UInt32.self),
             b.loadUnaligned(fromByteOffset: 8, as: UInt64.self), b.loadUnaligned(fromByteOffset: 16, as: UInt64.self),
             b.loadUnaligned(fromByteOffset: 24, as: Int32.self))
        }
        guard argsz >= 28 else { throw .invalid("argsz below fd") }
        guard flags & ~ioeventfdSizeMask == 0 else { throw .invalid("unknown flags") }
        let size = Int(flags & ioeventfdSizeMask)
        guard size.nonzeroBitCount == 1, fd >= -1 else { throw .invalid("not exactly one write size, or a bad fd") }
        try pci.setIOEventfd(offset: offset, data: data, size: size, fd: fd)
        return 0
    }
}

extension VFIOPCIDevice {
    /// Adds (`fd` ≥ 0) or removes (`fd` == -1) the ioeventfd writing `data` (`size` bytes) at
    /// device offset `offset`, with vfio-pci's checks (above).
    func setIOEventfd(offset: UInt64, data: UInt64, size: Int, fd: Int32) throws(IOMMUError) {
        let bar = Int(offset >> VFIORegion.offsetShift)
        let position = offset & VFIORegion.offsetMask
        guard bar < 6 else { throw .invalid("ioeventfds are for BARs only") }
        guard position + UInt64(size) <= slot.barSize(bar) else { throw .invalid("the write does not fit the BAR") }
        if bar == slot.layout.msixTableBAR {
            let table = slot.layout.msixTableOffset
            let end = table + UInt64(slot.layout.msixVectors) * 16
            guard position + UInt64(size) <= table || position >= end else { throw .invalid("the write touches the MSI-X table") }
        }
        guard size != 8 else { throw .invalid("8-byte ioeventfds are not supported") }
        let value = data
        let existing: VFIOIOEventfd?? = ioeventfds.withLock { list in
            guard let i = list.firstIndex(where: { $0.position == position && $0.bar == bar && $0.data == value && $0.size == size }) else { return .none }
            return fd == -1 ? .some(list.remove(at: i)) : .some(nil)
        }
        switch existing {
        case .some(.some(let removed)):
            removed.watch.cancel()
            return
        case .some(.none): throw .exists("that ioeventfd is set already")
        case .none: break
        }
        guard fd >= 0 else { throw .noDevice("no such ioeventfd") }
        guard ioeventfds.withLock({ $0.count }) < Self.ioeventfdLimit else { throw .noSpace("too many ioeventfds") }
        let copy = try interrupts.reference(fd)
        let slot = self.slot
        let memory = !slot.barIsIO(bar)
        let watch = try VFIOEventfdWatcher.shared.watch(copy) {
            if memory, !slot.memoryEnabled { return }
            slot.barWrite(bar, offset: position, size: size, value: value)
        }
        let added = ioeventfds.withLock { list -> Bool in
            // A second call for the same write may have raced this one in.
            guard list.count < Self.ioeventfdLimit,
                  !list.contains(where: { $0.position == position && $0.bar == bar && $0.data == value && $0.size == size }) else { return false }
            list.append(VFIOIOEventfd(bar: bar, position: position, data: value, size: size, watch: watch))
            return true
        }
        if !added {
            watch.cancel()
            throw .exists("that ioeventfd is set already")
        }
    }

    static let ioeventfdLimit = VFIODeviceRequests.ioeventfdMaximum

    /// How many `VFIO_DEVICE_IOEVENTFD`s the device has.
    public var ioeventfdCount: Int { ioeventfds.withLock { $0.count } }

    /// Ends every ioeventfd (the device's last descriptor is closed).
    func removeIOEventfds() {
        let all = ioeventfds.withLock { list -> [VFIOIOEventfd] in defer { list = [] }; return list }
        for e in all { e.watch.cancel() }
    }
}
