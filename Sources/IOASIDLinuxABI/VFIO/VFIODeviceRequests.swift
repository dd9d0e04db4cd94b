import CIOASIDSys
import Glibc
import IOASIDCore

// The vfio-pci ioctls of a device descriptor, once access is granted. Arguments are read and
// written fault-safely; VFIO structs are sized by `argsz`, which must reach the last mandatory
// field (EINVAL), and only that much is copied back, as vfio does.
//
// Layouts (include/uapi/linux/vfio.h):
//   vfio_device_info  { u32 argsz, flags, num_regions, num_irqs, cap_offset, pad }   minsz 16
//   vfio_region_info  { u32 argsz, flags, index, cap_offset; u64 size, offset }      minsz 32
//   vfio_irq_info     { u32 argsz, flags, index, count }                            minsz 16
//   vfio_irq_set      { u32 argsz, flags, index, start, count; u8 data[] }          minsz 20
//   vfio_device_feature { u32 argsz, flags; u8 data[] }                             minsz 8
//   vfio_info_cap_header { u16 id, version; u32 next }

enum VFIODeviceRequests {
    static let flagsReset: UInt32 = 1 << 0, flagsPCI: UInt32 = 1 << 1
    static let irqInfoEventfd: UInt32 = 1 << 0, irqInfoMaskable: UInt32 = 1 << 1, irqInfoAutomasked: UInt32 = 1 << 2, irqInfoNoResize: UInt32 = 1 << 3
    static let featureMask: UInt32 = 0xffff, featureGet: UInt32 = 1 << 16, featureSet: UInt32 = 1 << 17, featureProbe: UInt32 = 1 << 18
    static let featurePCIVFToken: UInt32 = 0, featureLowPowerEntry: UInt32 = 3, featureLowPowerEntryWithWakeup: UInt32 = 4, featureLowPowerExit: UInt32 = 5, featureMigrationPrecopyInfo: UInt32 = 12
    static let featureMigration: UInt32 = 1, featureMigrationDeviceState: UInt32 = 2, featureMigrationDataSize: UInt32 = 9

    /// Serves `request` on a device descriptor; `cdev` says whether it was opened as the cdev
    /// (else it came from a group).
    static func handle(_ pci: VFIOPCIDevice, request: UInt, argument: UnsafeMutableRawPointer?, host: any DescriptorHost,
                       cdev: Bool) throws(IOMMUError) -> Int {
        let user = UInt64(UInt(bitPattern: argument))
        switch request {
        case IOCTL.VFIO_DEVICE_GET_INFO: return try info(pci, user)
        case IOCTL.VFIO_DEVICE_GET_REGION_INFO: return try regionInfo(pci, user)
        case IOCTL.VFIO_DEVICE_GET_IRQ_INFO: return try irqInfo(pci, user)
        case IOCTL.VFIO_DEVICE_SET_IRQS: return try setIRQs(pci, user)
        case IOCTL.VFIO_DEVICE_RESET:
            guard pci.resetWorks else { throw .invalid("the device cannot reset") }
            pci.reset()
            return 0
        case IOCTL.VFIO_DEVICE_FEATURE: return try feature(pci, user, host: host)
        case IOCTL.VFIO_DEVICE_GET_PCI_HOT_RESET_INFO: return try hotResetInfo(user)
        case IOCTL.VFIO_DEVICE_PCI_HOT_RESET: return try hotReset(user, cdev: cdev)
        case IOCTL.VFIO_DEVICE_IOEVENTFD: return try ioeventfd(pci, user)
        default: throw .notTTY("request not served by vfio-pci")
        }
    }

    // MARK: user memory

    static func load32(_ user: UInt64, _ offset: Int) throws(IOMMUError) -> UInt32 {
        var v: UInt32 = 0
        guard ioasid_sys_copy_in(&v, user + UInt64(offset), 4) == 0 else { throw .fault("argument not readable") }
        return v
    }

    static func store32(_ user: UInt64, _ offset: Int, _ value: UInt32) throws(IOMMUError) {
        var v = value
        guard ioasid_sys_copy_out(user + UInt64(offset), &v, 4) == 0 else { throw .fault("argument not writeable") }
    }

    static func store64(_ user: UInt64, _ offset: Int, _ value: UInt64) throws(IOMMUError) {
        var v = value
        guard ioasid_sys_copy_out(user + UInt64(offset), &v, 8) == 0 else { throw .fault("argument not writeable") }
    }

    /// Reads `argsz` (and checks it reaches `minimum`).
    static func argsz(_ user: UInt64, minimum: Int) throws(IOMMUError) -> UInt32 {
        var head = [UInt32](repeating: 0, count: minimum / 4)
        let rc = head.withUnsafeMutableBytes { ioasid_sys_copy_in($0.baseAddress, user, minimum) }
        guard rc == 0 else { throw .fault("argument not readable") }
        guard Int(head[0]) >= minimum else { throw .invalid("argsz below the last mandatory field") }
        return head[0]
    }

    // MARK: requests

    /// `VFIO_DEVICE_GET_INFO`: PCI, RESET when reset works, 9 regions, 5 IRQ indexes, no
    /// capabilities (vfio-pci adds them only for zPCI and PCIe AtomicOps completers).
    static func info(_ pci: VFIOPCIDevice, _ user: UInt64) throws(IOMMUError) -> Int {
        _ = try argsz(user, minimum: 16)
        try store32(user, 4, flagsPCI | (pci.resetWorks ? flagsReset : 0))
        try store32(user, 8, UInt32(VFIORegion.count))
        try store32(user, 12, VFIOIRQIndex.count)
        return 0
    }

    /// `VFIO_DEVICE_GET_REGION_INFO` with its capability chain.
    static func regionInfo(_ pci: VFIOPCIDevice, _ user: UInt64) throws(IOMMUError) -> Int {
        let size = try argsz(user, minimum: 32)
        let index = try load32(user, 8)
        let (flags, regionSize, capabilities) = try pci.regionInfo(index)
        var outFlags = flags
        var capOffset: UInt32 = 0
        var outArgsz = size
        if !capabilities.isEmpty {
            outFlags |= VFIORegion.flagCaps
            let capsSize = capabilities.count * 8
            if Int(size) < 32 + capsSize {
                outArgsz = UInt32(32 + capsSize)
            } else {
                for (i, id) in capabilities.enumerated() {
                    let at = 32 + i * 8
                    let next: UInt32 = i + 1 < capabilities.count ? UInt32(at + 8) : 0
                    try store32(user, at, UInt32(id) | 1 << 16)      // id, version 1
                    try store32(user, at + 4, next)
                }
                capOffset = 32
            }
        }
        try store32(user, 0, outArgsz)
        try store32(user, 4, outFlags)
        try store32(user, 12, capOffset)
        try store64(user, 16, regionSize)
        try store64(user, 24, UInt64(index) << VFIORegion.offsetShift)
        return 0
    }

    /// `VFIO_DEVICE_GET_IRQ_INFO`.
    static func irqInfo(_ pci: VFIOPCIDevice, _ user: UInt64) throws(IOMMUError) -> Int {
        _ = try argsz(user, minimum: 16)
        let index = try load32(user, 8)
        guard index < VFIOIRQIndex.count else { throw .invalid("no such IRQ index") }
        if index == VFIOIRQIndex.err.rawValue, pci.slot.layout.express == 0 { throw .invalid("ERR needs PCI Express") }
        var flags = irqInfoEventfd
        if index == VFIOIRQIndex.intx.rawValue { flags |= irqInfoMaskable | irqInfoAutomasked }
        else if index != VFIOIRQIndex.msix.rawValue { flags |= irqInfoNoResize }
        try store32(user, 4, flags)
        try store32(user, 12, UInt32(irqCount(pci, index)))
        return 0
    }

    static func irqCount(_ pci: VFIOPCIDevice, _ index: UInt32) -> Int {
        let pin = pci.withConfig { UInt8(truncatingIfNeeded: $0.readChunk(0x3d, 1)) } ?? 0
        return pci.interrupts.count(index, interruptPin: pin)
    }

    /// `VFIO_DEVICE_SET_IRQS`: vfio's validation, then the index's handler.
    static func setIRQs(_ pci: VFIOPCIDevice, _ user: UInt64) throws(IOMMUError) -> Int {
        var head = [UInt32](repeating: 0, count: 5)
        let rc = head.withUnsafeMutableBytes { ioasid_sys_copy_in($0.baseAddress, user, 20) }
        guard rc == 0 else { throw .fault("argument not readable") }
        let (argsz, flags, index, start, count) = (head[0], head[1], head[2], head[3], head[4])
        let maximum = irqCount(pci, index)
        guard argsz >= 20, index < VFIOIRQIndex.count, count < UInt32.max - start,
              flags & ~(VFIOInterrupts.dataTypeMask | VFIOInterrupts.actionTypeMask) == 0 else {
            throw .invalid("bad argsz, index, range or flags")
        }
        guard Int(start) < maximum, Int(start) + Int(count) <= maximum else { throw .invalid("vectors beyond the index's count") }
        let elementSize: Int
        switch flags & VFIOInterrupts.dataTypeMask {
        case VFIOInterrupts.dataNone: elementSize = 0
        case VFIOInterrupts.dataBool: elementSize = 1
        case VFIOInterrupts.dataEventfd: elementSize = 4
        default: throw .invalid("one data type")
        }
        var data: [UInt8] = []
        if elementSize > 0 {
            guard Int(argsz) - 20 >= Int(count) * elementSize else { throw .invalid("argsz too small for the data") }
            data = [UInt8](repeating: 0, count: Int(count) * elementSize)
            if !data.isEmpty {
                let rc = data.withUnsafeMutableBytes { ioasid_sys_copy_in($0.baseAddress, user + 20, $0.count) }
                guard rc == 0 else { throw .fault("data not readable") }
            }
        }
        try pci.interrupts.set(flags: flags, index: index, start: Int(start), count: Int(count), data: data)
        let msiActive = pci.interrupts.mode == .msi
        _ = pci.withConfig { $0.msiActive = msiActive }
        return 0
    }

    /// `VFIO_DEVICE_FEATURE`: vfio's flag checks, then the VFIO core's migration features for a
    /// model that can save its state (MIGRATION, MIG_DEVICE_STATE with its data descriptor,
    /// MIG_DATA_SIZE, MIG_PRECOPY_INFOv2; see VFIOMigration.swift) and vfio-pci's features (VF
    /// token; the low-power entries and exit); every other feature is ENOTTY.
    static func feature(_ pci: VFIOPCIDevice, _ user: UInt64, host: any DescriptorHost) throws(IOMMUError) -> Int {
        let argsz = try argsz(user, minimum: 8)
        let flags = try load32(user, 4)
        guard flags & ~(featureMask | featureGet | featureSet | featureProbe) == 0 else { throw .invalid("unknown flags") }
        if flags & featureProbe == 0, flags & featureSet != 0, flags & featureGet != 0 { throw .invalid("GET and SET together") }
        let dataSize = Int(argsz) - 8
        func check(_ supported: UInt32, minimum: Int) throws(IOMMUError) -> Bool {
            if flags & (featureGet | featureSet) & ~supported != 0 { throw .invalid("operation not supported by the feature") }
            if flags & featureProbe != 0 { return false }
            if flags & (featureGet | featureSet) == 0 { throw .invalid("neither GET nor SET") }
            if dataSize < minimum { throw .invalid("argsz too small for the feature") }
            return true
        }
        switch flags & featureMask {
        case featurePCIVFToken:
            guard pci.hasVFToken else { throw .notTTY("not an SR-IOV physical function") }
            guard try check(featureSet, minimum: 16) else { return 0 }
            var uuid = [UInt8](repeating: 0, count: 16)
            let rc = uuid.withUnsafeMutableBytes { ioasid_sys_copy_in($0.baseAddress, user + 8, 16) }
            guard rc == 0 else { throw .fault("token not readable") }
            pci.setVFToken(uuid)
            return 0
        case featureLowPowerEntry, featureLowPowerExit:
            _ = try check(featureSet, minimum: 0)
            return 0
        case featureLowPowerEntryWithWakeup:
            guard try check(featureSet, minimum: 8) else { return 0 }
            return 0
        case featureMigration:
            // struct vfio_device_feature_migration { u64 flags }
            guard pci.migration != nil else { throw .notTTY("the device has no migration driver") }
            guard try check(featureGet, minimum: 8) else { return 0 }
            try store64(user, 8, VFIOMigration.flags)
            return 0
        case featureMigrationDeviceState:
            // struct vfio_device_feature_mig_state { u32 device_state; s32 data_fd }
            guard let migration = pci.migration else { throw .notTTY("the device has no migration driver") }
            guard try check(featureGet | featureSet, minimum: 8) else { return 0 }
            if flags & featureGet != 0 {
                try store32(user, 8, migration.state.rawValue)
                try store32(user, 12, UInt32(bitPattern: -1))
                return 0
            }
            guard let target = VFIOMigrationState(rawValue: try load32(user, 8)) else {
                throw .invalid("no such migration state")
            }
            let opened: VFIOMigrationDataFile?
            do throws(IOMMUError) { opened = try migration.set(target) } catch {
                try store32(user, 12, UInt32(bitPattern: -1))
                throw error
            }
            guard let file = opened else {
                try store32(user, 12, UInt32(bitPattern: -1))
                return 0
            }
            let fd = host.install(file)
            guard fd >= 0 else { file.end(); throw .noMemory("no descriptor for the data session") }
            do throws(IOMMUError) { try store32(user, 12, UInt32(bitPattern: fd)) } catch {
                _ = Glibc.close(fd)
                throw error
            }
            return 0
        case featureMigrationDataSize:
            // struct vfio_device_feature_mig_data_size { u64 stop_copy_length }
            guard let migration = pci.migration else { throw .notTTY("the device has no migration driver") }
            guard try check(featureGet, minimum: 8) else { return 0 }
            try store64(user, 8, UInt64(migration.stopCopyLength))
            return 0
        case featureMigrationPrecopyInfo:
            // VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2: an opt-in to REINIT reports, which this
            // device never makes; accepted for a device with PRE_COPY, EINVAL otherwise.
            guard pci.migration != nil else { throw .invalid("no migration") }
            _ = try check(featureSet, minimum: 0)
            return 0
        default:
            throw .notTTY("feature not supported by vfio-pci")
        }
    }
}
