import CIOASIDSys
import Glibc
import IOASIDCore
import IOASIDStructures

/// A VFIO group (`/dev/vfio/N`) of the modelled machine: one device per group.
///
/// The container is an iommufd: `/dev/vfio/vfio` is served by iommufd's VFIO compatibility
/// (the kernel's `IOMMUFD_VFIO_CONTAINER`), and `/dev/iommu` itself is accepted too, as the
/// kernel accepts any iommufd. Served, with the kernel's errnos:
/// - `VFIO_GROUP_GET_STATUS`: VIABLE, plus CONTAINER_SET once a container is set;
/// - `VFIO_GROUP_SET_CONTAINER`: takes a pointer to the container's descriptor; creates the
///   container's compatibility IOAS; the group then holds the container open until it is unset
///   or the group is closed; EINVAL when one is set already, EBADF for a closed
///   descriptor, EBADFD for one that is not a container;
/// - `VFIO_GROUP_UNSET_CONTAINER`: EINVAL without a container; device descriptors stay usable;
/// - `VFIO_GROUP_GET_DEVICE_FD`: `"BDF"` or `"BDF vf_token=UUID"`; binds the device to the
///   container's iommufd and attaches it to the compatibility IOAS, as the kernel's group open
///   does; ENODEV for another name, EINVAL without a container or with a malformed option,
///   EACCES or EINVAL for a VF token vfio-pci refuses.
public final class VFIOGroupFile: LinuxFile, @unchecked Sendable {
    /// The host that installed the descriptors.
    public let host: any DescriptorHost
    /// The group's device.
    public let pci: VFIOPCIDevice
    private let container = Locked<IOMMUFile?>(nil)

    /// The group of `pci`.
    public init(host: any DescriptorHost, pci: VFIOPCIDevice) {
        self.host = host
        self.pci = pci
    }

    static let flagViable: UInt32 = 1 << 0, flagContainerSet: UInt32 = 1 << 1

    public func ioctl(request: UInt, argument: UnsafeMutableRawPointer?) -> Int {
        var untraced: TraceLine? = nil
        return ioctl(request: request, argument: argument, trace: &untraced)
    }

    public var traceKind: String { "vfio-group\(pci.index)" }

    public func ioctl(request: UInt, argument: UnsafeMutableRawPointer?, trace: inout TraceLine?) -> Int {
        let request = IOCTL.normalized(request)
        let user = UInt64(UInt(bitPattern: argument))
        trace?.call(Self.requestName(request))
        trace?.hex("arg", user)
        let r: Int
        do throws(IOMMUError) {
            switch request {
            case IOCTL.VFIO_GROUP_GET_STATUS:
                _ = try VFIODeviceRequests.argsz(user, minimum: 8)
                // With a container: VIABLE | CONTAINER_SET; without: VIABLE unless the device is
                // open through its cdev (its DMA is owned elsewhere).
                let set = container.withLock { $0 != nil }
                let flags = set ? Self.flagViable | Self.flagContainerSet : (pci.openThroughCdev ? 0 : Self.flagViable)
                try VFIODeviceRequests.store32(user, 4, flags)
                r = 0
            case IOCTL.VFIO_GROUP_SET_CONTAINER: r = try setContainer(user)
            case IOCTL.VFIO_GROUP_UNSET_CONTAINER:
                guard let file = container.withLock({ c -> IOMMUFile? in defer { c = nil }; return c }) else { throw .invalid("no container is set") }
                file.letGo()
                r = 0
            case IOCTL.VFIO_GROUP_GET_DEVICE_FD: r = try deviceDescriptor(user)
            default: throw .notTTY("not a group request")
            }
        } catch {
            trace?.failure(error)
            return -Int(error.errno)
        }
        return r
    }

    /// Closing the group lets go of its container (the group held it open, as the kernel's does).
    public func release() { container.withLock { c -> IOMMUFile? in defer { c = nil }; return c }?.letGo() }

    private static func requestName(_ request: UInt) -> String {
        IOCTL.vfioDeviceRequests.first { $0.request == request }?.name ?? TraceLine.requestName(request)
    }

    private func setContainer(_ user: UInt64) throws(IOMMUError) -> Int {
        let fd = Int32(bitPattern: try VFIODeviceRequests.load32(user, 0))
        guard let file = host.file(for: fd) as? IOMMUFile else {
            if fd < 0 || fcntl(fd, F_GETFD) < 0 { throw .badDescriptor("not an open descriptor") }
            throw .badFileState("not a container")
        }
        guard container.withLock({ $0 == nil }) else { throw .invalid("a container is set already") }
        guard file.hold() else { throw .badDescriptor("the container was closed") }
        do throws(IOMMUError) { _ = try file.context.compatibilityIOAS(create: true) } catch {
            file.letGo()
            throw error
        }
        let installed = container.withLock { c -> Bool in
            guard c == nil else { return false }
            c = file
            return true
        }
        guard installed else {
            file.letGo()
            throw .invalid("a container is set already")
        }
        return 0
    }

    private func deviceDescriptor(_ user: UInt64) throws(IOMMUError) -> Int {
        // strndup_user(arg, PAGE_SIZE): EFAULT when unreadable, EINVAL without a terminator.
        var bytes: [UInt8] = []
        var at = user
        while true {
            var byte: UInt8 = 0
            guard ioasid_sys_copy_in(&byte, at, 1) == 0 else { throw .fault("name not readable") }
            if byte == 0 { break }
            bytes.append(byte)
            guard bytes.count < 4096 else { throw .invalid("name too long") }
            at += 1
        }
        let name = String(decoding: bytes, as: UTF8.self)
        guard case .some(let token) = try pci.matchName(name) else { throw .noDevice("no such device in the group") }
        try pci.matchToken(token)
        guard let file = container.withLock({ $0 }) else { throw .invalid("the group has no container") }
        let context = file.context
        guard file.hold() else { throw .badDescriptor("the container was closed") }
        let device: Device.ID
        do throws(IOMMUError) {
            let ioas = try context.compatibilityIOAS(create: false)
            device = try context.bind(pci.device, ownedByDriver: true)
            do throws(IOMMUError) { _ = try context.attach(device, to: ioas.object) } catch {
                try? context.unbind(device)
                throw error
            }
        } catch {
            file.letGo()
            throw error
        }
        let deviceFile = VFIODeviceFile(host: host, pci: pci, name: "vfio\(pci.index)", boundTo: file, as: device)
        let fd = host.install(deviceFile)
        if fd < 0 { deviceFile.release(); return Int(fd) }
        return Int(fd)
    }
}
