import CIOASIDSys
import Glibc
import IOASIDCore
import IOASIDSoftDrivers
import IOASIDSoftIOMMU
import IOASIDStructures

/// A descriptor of a VFIO device of the modelled machine: a cdev (`/dev/vfio/devices/vfioN`),
/// or a device descriptor from a group's `VFIO_GROUP_GET_DEVICE_FD`.
///
/// A cdev serves `VFIO_DEVICE_BIND_IOMMUFD` (with a VF token, `VFIO_DEVICE_BIND_FLAG_TOKEN`),
/// `VFIO_DEVICE_ATTACH_IOMMUFD_PT` (attach, or replace when attached; with
/// `VFIO_DEVICE_ATTACH_PASID` per PASID) and `VFIO_DEVICE_DETACH_IOMMUFD_PT`; before the bind
/// every other request is `EINVAL`, as in the kernel. A group's device descriptor is bound and
/// attached to the container's compatibility IOAS when it is created; on it the bind is `EINVAL`
/// and the attach/detach requests are `ENOTTY`.
///
/// Once access is granted, a PCI device answers vfio-pci's requests: `VFIO_DEVICE_GET_INFO`,
/// `VFIO_DEVICE_GET_REGION_INFO` (capability chains), `VFIO_DEVICE_GET_IRQ_INFO`,
/// `VFIO_DEVICE_SET_IRQS`, `VFIO_DEVICE_RESET`, `VFIO_DEVICE_FEATURE`, `pread`/`pwrite` on its
/// regions and `mmap` of its BARs (`VFIOPCIDevice`). Closing the descriptor unbinds the device.
/// A bound device holds its iommufd open, as the kernel's does: closing the iommufd first leaves
/// the device bound and attached, and the context closes when the device's descriptor does.
public final class VFIODeviceFile: LinuxFile, @unchecked Sendable {
    /// The host that installed the descriptors (to find the iommufd named in the bind).
    public let host: any DescriptorHost
    /// The modelled device behind the cdev.
    public let model: any DeviceModel
    /// The PCI face of the device (nil for a device of the test driver's mock IOMMU).
    public let pci: VFIOPCIDevice?
    /// `vfioN`.
    public let name: String
    /// Whether the descriptor came from a group (`VFIO_GROUP_GET_DEVICE_FD`).
    public let fromGroup: Bool
    /// The iommufd and device ID of the bind. What is attached is the core's to know (a PASID the
    /// IOASID layer frees is detached behind this file's back), so it is asked, never mirrored.
    private struct Binding { var file: IOMMUFile; var device: Device.ID }
    private let binding = Locked<Binding?>(nil)
    /// The DMA parked for a page response (`IOASID_DMA_PAGE_REQUEST`), resumed by `IOASID_DMA_RESUME`.
    private enum Parked { case read(PendingDMA<[UInt8]>, to: UInt64), write(PendingDMA<Void>) }
    private let parked = Locked<Parked?>(nil)

    /// A cdev of `model` (and its PCI face `pci`).
    public init(host: any DescriptorHost, model: any DeviceModel, pci: VFIOPCIDevice? = nil, name: String) {
        self.host = host
        self.model = model
        self.pci = pci
        self.name = name
        self.fromGroup = false
    }

    /// A group's device descriptor, already bound to `iommufd` as `device` (access granted),
    /// taking over a hold the caller took on `iommufd` (given back when the device is closed).
    init(host: any DescriptorHost, pci: VFIOPCIDevice, name: String, boundTo iommufd: IOMMUFile, as device: Device.ID) {
        self.host = host
        self.model = pci.device
        self.pci = pci
        self.name = name
        self.fromGroup = true
        binding.withLock { $0 = Binding(file: iommufd, device: device) }
        pci.open()
    }

    /// The device's ID in the iommufd it is bound to, if bound.
    public var boundDevice: (file: IOMMUFile, device: Device.ID)? { binding.withLock { b in b.map { ($0.file, $0.device) } } }

    public func ioctl(request: UInt, argument: UnsafeMutableRawPointer?) -> Int {
        var untraced: TraceLine? = nil
        return ioctl(request: request, argument: argument, trace: &untraced)
    }

    public var traceKind: String { name }

    public func ioctl(request: UInt, argument: UnsafeMutableRawPointer?, trace: inout TraceLine?) -> Int {
        let request = IOCTL.normalized(request)
        trace?.call(Self.requestName(request))
        do throws(IOMMUError) {
            let r = try perform(request, argument)
            if trace != nil { Self.describe(request, argument, &trace!) }
            return r
        } catch {
            if trace != nil {
                Self.describe(request, argument, &trace!)
                trace!.failure(error)
            }
            return -Int(error.errno)
        }
    }

    private func perform(_ request: UInt, _ argument: UnsafeMutableRawPointer?) throws(IOMMUError) -> Int {
        if request == IOCTL.VFIO_DEVICE_BIND_IOMMUFD {
            guard !fromGroup else { throw .invalid("a group's device descriptor is bound already") }
            return try bind(argument)
        }
        guard binding.withLock({ $0 != nil }) else { throw .invalid("the device is not bound to an iommufd") }
        switch request {
        case IOCTL.VFIO_DEVICE_ATTACH_IOMMUFD_PT where !fromGroup: return try attach(argument)
        case IOCTL.VFIO_DEVICE_DETACH_IOMMUFD_PT where !fromGroup: return try detach(argument)
        case IOASIDUAPI.IOASID_DEVICE_DMA: return try dma(argument)
        default:
            guard let pci else { throw .invalid("request not served by this device") }
            return try VFIODeviceRequests.handle(pci, request: request, argument: argument, host: host, cdev: !fromGroup)
        }
    }

    private static func requestName(_ request: UInt) -> String {
        if request == IOASIDUAPI.IOASID_DEVICE_DMA { return "IOASID_DEVICE_DMA" }
        if let row = IOCTL.vfioDeviceRequests.first(where: { $0.request == request }) { return row.name }
        return TraceLine.requestName(request)
    }

    /// The fields of the request's struct as they stand after the call (read fault-safely), or
    /// the argument pointer.
    private static func describe(_ request: UInt, _ argument: UnsafeMutableRawPointer?, _ line: inout TraceLine) {
        func fields<T: UAPIStruct>(_: T.Type, skipping skip: (String) -> Bool = { _ in false }) {
            var value = T()
            let rc = withUnsafeMutableBytes(of: &value) { ioasid_sys_copy_in($0.baseAddress, UInt64(UInt(bitPattern: argument)), MemoryLayout<T>.size) }
            guard rc == 0 else { line.hex("arg", UInt(bitPattern: argument)); return }
            withUnsafeBytes(of: &value) { line.fields(of: T.self, in: $0.baseAddress!, skipping: skip) }
        }
        switch request {
        case IOCTL.VFIO_DEVICE_BIND_IOMMUFD: fields(vfio_device_bind_iommufd.self)
        case IOCTL.VFIO_DEVICE_ATTACH_IOMMUFD_PT: fields(vfio_device_attach_iommufd_pt.self)
        case IOCTL.VFIO_DEVICE_DETACH_IOMMUFD_PT: fields(vfio_device_detach_iommufd_pt.self)
        case IOASIDUAPI.IOASID_DEVICE_DMA:
            // The outcome of the DMA by name: DONE, PAGE_REQUEST (parked for a page response), FAULT (blocked).
            fields(ioasid_device_dma.self) { $0 == "out_status" }
            var status: UInt32 = 0
            if ioasid_sys_copy_in(&status, UInt64(UInt(bitPattern: argument)) + 32, 4) == 0 {
                let names = ["DONE", "PAGE_REQUEST", "FAULT"]
                line.text("out_status", Int(status) < names.count ? names[Int(status)] : String(status))
            }
        default: line.hex("arg", UInt(bitPattern: argument))
        }
    }

    public func pread(into address: UInt64, count: Int, offset: Int64) -> Int {
        guard let pci, binding.withLock({ $0 != nil }) else { return -Int(EINVAL) }
        return pci.regionAccess(offset, user: address, count: count, write: false)
    }

    public func pwrite(from address: UInt64, count: Int, offset: Int64) -> Int {
        guard let pci, binding.withLock({ $0 != nil }) else { return -Int(EINVAL) }
        return pci.regionAccess(offset, user: address, count: count, write: true)
    }

    public func mmap(address: UnsafeMutableRawPointer?, length: Int, protection: Int32, flags: Int32, offset: Int) -> Int {
        guard let pci, binding.withLock({ $0 != nil }) else { return -Int(EINVAL) }
        return pci.mapBAR(address: address, length: length, flags: flags, offset: offset)
    }

    public func release() {
        guard let b = binding.withLock({ b -> Binding? in defer { b = nil }; return b }) else { return }
        if !fromGroup { pci?.cdevClosed() }
        pci?.close()
        try? b.file.context.unbind(b.device)
        b.file.letGo()
    }

    // MARK: requests

    /// Reads an extensible struct whose first `UInt32` is its size, with iommufd's rules
    /// (`StructCopy`): `EINVAL` below the end of `last`, `E2BIG` for non-zero bytes past our
    /// struct, `EFAULT` for an unreadable argument (read fault-safely: this is not the dispatcher).
    private func loadExtensible<T: UAPIStruct>(_: T.Type, from argument: UnsafeMutableRawPointer?, last: String) throws(IOMMUError) -> T {
        var size: UInt32 = 0
        guard ioasid_sys_copy_in(&size, UInt64(UInt(bitPattern: argument)), 4) == 0 else { throw .fault("argument not readable") }
        guard Int(size) >= T.layoutField(named: last)!.end else { throw .invalid("size below the last mandatory field") }
        var value = T()
        try copyIn(&value, from: argument, bytes: min(Int(size), MemoryLayout<T>.size))
        if Int(size) > MemoryLayout<T>.size, let p = argument {
            try StructCopy.checkZeroTail(p + MemoryLayout<T>.size, count: Int(size) - MemoryLayout<T>.size)
        }
        return value
    }

    private func copyIn<T: UAPIStruct>(_ value: inout T, from argument: UnsafeMutableRawPointer?, bytes: Int, at offset: Int = 0) throws(IOMMUError) {
        let address = UInt64(UInt(bitPattern: argument)) + UInt64(offset)
        let rc = withUnsafeMutableBytes(of: &value) { ioasid_sys_copy_in($0.baseAddress! + offset, address, bytes) }
        if rc != 0 { throw .fault("argument not readable") }
    }

    private func copyOut(_ value: UInt32, to argument: UnsafeMutableRawPointer?, at offset: Int) throws(IOMMUError) {
        var v = value
        let rc = ioasid_sys_copy_out(UInt64(UInt(bitPattern: argument)) + UInt64(offset), &v, 4)
        if rc != 0 { throw .fault("argument not writeable") }
    }

    private func bind(_ argument: UnsafeMutableRawPointer?) throws(IOMMUError) -> Int {
        let c = try loadExtensible(vfio_device_bind_iommufd.self, from: argument, last: "out_devid")
        guard c.iommufd >= 0, c.flags & ~UInt32(1) == 0 else { throw .invalid("bad iommufd or flags") }
        guard binding.withLock({ $0 == nil }) else { throw .invalid("the device is bound already") }
        var token: [UInt8]? = nil
        if c.flags & 1 != 0 {
            // VFIO_DEVICE_BIND_FLAG_TOKEN: a 16-byte UUID at token_uuid_ptr.
            guard pci != nil else { throw .invalid("the device takes no VF token") }
            var uuid = [UInt8](repeating: 0, count: 16)
            let rc = uuid.withUnsafeMutableBytes { ioasid_sys_copy_in($0.baseAddress, c.token_uuid_ptr, 16) }
            guard rc == 0 else { throw .fault("token not readable") }
            token = uuid
        }
        try pci?.matchToken(token)
        guard let file = host.file(for: c.iommufd) as? IOMMUFile else {
            throw fcntl(c.iommufd, F_GETFD) < 0 ? .badDescriptor("not a descriptor") : .badFileState("not an iommufd")
        }
        guard file.hold() else { throw .badDescriptor("the iommufd was closed") }
        let device: Device.ID
        do throws(IOMMUError) {
            device = try file.context.bind(model, ownedByDriver: true)
            do throws(IOMMUError) { try copyOut(device.rawValue, to: argument, at: 12) } catch {
                try? file.context.unbind(device)
                throw error
            }
        } catch {
            file.letGo()
            throw error
        }
        binding.withLock { $0 = Binding(file: file, device: device) }
        pci?.cdevOpened()
        pci?.open()
        return 0
    }

    private func bound() throws(IOMMUError) -> Binding {
        guard let b = binding.withLock({ $0 }) else { throw .invalid("the device is not bound to an iommufd") }
        return b
    }

    private func attach(_ argument: UnsafeMutableRawPointer?) throws(IOMMUError) -> Int {
        let b = try bound()
        var c = vfio_device_attach_iommufd_pt()
        try copyIn(&c, from: argument, bytes: 12)
        guard Int(c.argsz) >= 12 else { throw .invalid("argsz below pt_id") }
        guard c.flags & ~UInt32(1) == 0 else { throw .invalid("unknown flags") }
        let pasid: IOASIDCore.PASID?
        if c.flags & 1 != 0 {
            guard c.argsz >= 16 else { throw .invalid("argsz below pasid") }
            try copyIn(&c, from: argument, bytes: 4, at: 12)
            pasid = c.pasid
        } else {
            pasid = nil
        }
        let context = b.file.context
        let replacing = try context.attachedHWPT(b.device, pasid: pasid) != nil
        let hwpt = replacing ? try context.replace(b.device, pasid: pasid, with: ObjectID(c.pt_id))
                             : try context.attach(b.device, pasid: pasid, to: ObjectID(c.pt_id))
        do throws(IOMMUError) { try copyOut(hwpt.rawValue, to: argument, at: 8) } catch {
            if !replacing { try? context.detach(b.device, pasid: pasid) }
            throw error
        }
        return 0
    }

    /// `IOASID_DEVICE_DMA`: the device issues one DMA through its IOMMU (include/ioasid/ioasid.h).
    private func dma(_ argument: UnsafeMutableRawPointer?) throws(IOMMUError) -> Int {
        _ = try bound()
        let c = try loadExtensible(ioasid_device_dma.self, from: argument, last: "__reserved")
        let known = IOASIDUAPI.IOASID_DMA_WRITE | IOASIDUAPI.IOASID_DMA_PASID | IOASIDUAPI.IOASID_DMA_RESUME
        guard c.flags & ~known == 0, c.__reserved == 0 else { throw .notSupported("unknown flags or reserved field set") }
        guard let device = model as? any DMADevice else { throw .noDevice("this device cannot issue DMA") }
        // The test hook issues DMA on the function's behalf whatever COMMAND says (it stands for
        // the device's own engine, not for a driver's request).
        let status: UInt32
        if c.flags & IOASIDUAPI.IOASID_DMA_RESUME != 0 {
            // The device's retry after the page response: continue the parked DMA.
            guard let p = parked.withLock({ p -> Parked? in defer { p = nil }; return p }) else {
                throw .invalid("no DMA is waiting for a page response")
            }
            switch p {
            case .read(let pending, let destination):
                let result = device.function.resume(pending)
                status = try finishRead(result, to: destination)
            case .write(let pending):
                let result = device.function.resume(pending)
                if case .waitingForPageResponse(let again) = result { parked.withLock { $0 = .write(again) } }
                status = Self.status(result)
            }
        } else {
            guard c.length > 0, c.length <= 1 << 20 else { throw .invalid("length must be 1 byte to 1 MiB") }
            var pasid: IOASIDSoftIOMMU.PASID? = nil
            if c.flags & IOASIDUAPI.IOASID_DMA_PASID != 0 {
                guard let p = IOASIDSoftIOMMU.PASID(rawValue: c.pasid) else { throw .invalid("PASID out of range") }
                pasid = p
            }
            if c.flags & IOASIDUAPI.IOASID_DMA_WRITE != 0 {
                var bytes = [UInt8](repeating: 0, count: Int(c.length))
                let rc = bytes.withUnsafeMutableBytes { ioasid_sys_copy_in($0.baseAddress, c.data_uptr, Int(c.length)) }
                guard rc == 0 else { throw .fault("data not readable") }
                let result = device.function.write(pasid: pasid, address: c.iova, bytes: bytes)
                if case .waitingForPageResponse(let pending) = result { parked.withLock { $0 = .write(pending) } }
                status = Self.status(result)
            } else {
                status = try finishRead(device.function.read(pasid: pasid, address: c.iova, count: Int(c.length)), to: c.data_uptr)
            }
        }
        var out = status
        guard ioasid_sys_copy_out(UInt64(UInt(bitPattern: argument)) + 32, &out, 4) == 0 else { throw .fault("argument not writeable") }
        return 0
    }

    /// Copies a completed read out, or parks it; returns its status.
    private func finishRead(_ result: DMAResult<[UInt8]>, to destination: UInt64) throws(IOMMUError) -> UInt32 {
        switch result {
        case .completed(let bytes):
            let rc = bytes.withUnsafeBytes { ioasid_sys_copy_out(destination, $0.baseAddress, bytes.count) }
            guard rc == 0 else { throw .fault("data not writeable") }
        case .waitingForPageResponse(let pending): parked.withLock { $0 = .read(pending, to: destination) }
        case .failed: break
        }
        return Self.status(result)
    }

    private static func status<V>(_ result: DMAResult<V>) -> UInt32 {
        switch result {
        case .completed: IOASIDUAPI.IOASID_DMA_DONE
        case .waitingForPageResponse: IOASIDUAPI.IOASID_DMA_PAGE_REQUEST
        case .failed: IOASIDUAPI.IOASID_DMA_FAULT
        }
    }

    private func detach(_ argument: UnsafeMutableRawPointer?) throws(IOMMUError) -> Int {
        let b = try bound()
        var c = vfio_device_detach_iommufd_pt()
        try copyIn(&c, from: argument, bytes: 8)
        guard Int(c.argsz) >= 8 else { throw .invalid("argsz below flags") }
        guard c.flags & ~UInt32(1) == 0 else { throw .invalid("unknown flags") }
        if c.flags & 1 != 0 {
            guard c.argsz >= 12 else { throw .invalid("argsz below pasid") }
            try copyIn(&c, from: argument, bytes: 4, at: 8)
            try b.file.context.detach(b.device, pasid: c.pasid)
        } else {
            try b.file.context.detach(b.device, pasid: nil)
        }
        return 0
    }
}
