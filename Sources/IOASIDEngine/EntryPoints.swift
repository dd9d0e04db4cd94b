import Glibc
import IOASIDLinuxABI
import IOASIDSoftDrivers
import Synchronization

// The C entry points the preload resolves with dlsym after dlopen'ing this library
// (docs/architecture.md, "Preload contract"). Each returns a result >= 0 or a negated errno.
// They are the only public symbols of the engine; all state lives in `Engine.shared`.

/// `open("/dev/iommu", flags)`: a new fd naming a new `IOMMUFile`, or -errno.
@_cdecl("ioasid_engine_open")
public func ioasid_engine_open(_ flags: Int32) -> Int32 {
    Engine.shared.openIOMMU(flags: flags)
}

/// `open("/dev/vfio/vfio", flags)`: an iommufd (the kernel's VFIO compatibility container) whose
/// `fstat` reports the container's node (10:196), or -errno.
@_cdecl("ioasid_engine_open_container")
public func ioasid_engine_open_container(_ flags: Int32) -> Int32 {
    Engine.shared.openIOMMU(flags: flags, node: .container)
}

/// `open("/dev/vfio/devices/vfio<index>", flags)` when a modelled machine is configured:
/// a new fd naming that device's VFIO cdev, or -errno (-ENOENT: no such device).
@_cdecl("ioasid_engine_open_device")
public func ioasid_engine_open_device(_ index: Int32, _ flags: Int32) -> Int32 {
    Engine.shared.openDevice(index: index, flags: flags)
}

/// `open("/dev/vfio/<index>")` (a VFIO group) when a modelled machine is configured: a new fd
/// naming that group, or -errno (-ENOENT: no such group). `/dev/vfio/vfio`, the container, is
/// opened with `ioasid_engine_open`: it is an iommufd (iommufd's VFIO compatibility).
@_cdecl("ioasid_engine_open_group")
public func ioasid_engine_open_group(_ index: Int32, _ flags: Int32) -> Int32 {
    Engine.shared.openGroup(index: index, flags: flags)
}

/// `pread(fd, buffer, count, offset)` on an engine fd: bytes read or -errno.
@_cdecl("ioasid_engine_pread")
public func ioasid_engine_pread(_ fd: Int32, _ buffer: UnsafeMutableRawPointer?, _ count: UInt, _ offset: Int64) -> Int {
    guard let file = Engine.shared.file(for: fd) else { return -Int(EBADF) }
    return file.pread(into: UInt64(UInt(bitPattern: buffer)), count: Int(clamping: count), offset: offset)
}

/// `pwrite(fd, buffer, count, offset)` on an engine fd: bytes written or -errno.
@_cdecl("ioasid_engine_pwrite")
public func ioasid_engine_pwrite(_ fd: Int32, _ buffer: UnsafeRawPointer?, _ count: UInt, _ offset: Int64) -> Int {
    guard let file = Engine.shared.file(for: fd) else { return -Int(EBADF) }
    return file.pwrite(from: UInt64(UInt(bitPattern: buffer)), count: Int(clamping: count), offset: offset)
}

/// `ioctl(fd, request, argument)` on an engine fd.
@_cdecl("ioasid_engine_ioctl")
public func ioasid_engine_ioctl(_ fd: Int32, _ request: UInt, _ argument: UnsafeMutableRawPointer?) -> Int {
    let engine = Engine.shared
    guard let file = engine.file(for: fd) else { return -Int(EBADF) }
    if let tracer = engine.tracer { return tracer.ioctl(file, fd: fd, request: request, argument: argument) }
    return file.ioctl(request: request, argument: argument)
}

/// `read(fd, buffer, count)` on an engine fd.
@_cdecl("ioasid_engine_read")
public func ioasid_engine_read(_ fd: Int32, _ buffer: UnsafeMutableRawPointer?, _ count: UInt) -> Int {
    let engine = Engine.shared
    guard let file = engine.file(for: fd) else { return -Int(EBADF) }
    let count = Int(clamping: count)
    if count > 0 && buffer == nil { return -Int(EFAULT) }
    let target = UnsafeMutableRawBufferPointer(start: count > 0 ? buffer : nil, count: count)
    if let tracer = engine.tracer { return tracer.read(file, fd: fd, into: target) }
    return file.read(into: target)
}

/// `write(fd, buffer, count)` on an engine fd.
@_cdecl("ioasid_engine_write")
public func ioasid_engine_write(_ fd: Int32, _ buffer: UnsafeRawPointer?, _ count: UInt) -> Int {
    let engine = Engine.shared
    guard let file = engine.file(for: fd) else { return -Int(EBADF) }
    let count = Int(clamping: count)
    if count > 0 && buffer == nil { return -Int(EFAULT) }
    let source = UnsafeRawBufferPointer(start: count > 0 ? buffer : nil, count: count)
    if let tracer = engine.tracer { return tracer.write(file, fd: fd, from: source) }
    return file.write(from: source)
}

/// `mmap(address, length, protection, flags, fd, offset)` on an engine fd: the address or -errno.
@_cdecl("ioasid_engine_mmap")
public func ioasid_engine_mmap(
    _ address: UnsafeMutableRawPointer?, _ length: UInt, _ protection: Int32, _ flags: Int32, _ fd: Int32, _ offset: Int
) -> Int {
    let engine = Engine.shared
    guard let file = engine.file(for: fd) else { return -Int(EBADF) }
    let length = Int(clamping: length)
    let result = engine.tracer.map { $0.mmap(file, fd: fd, address: address, length: length, protection: protection, flags: flags, offset: offset) }
        ?? file.mmap(address: address, length: length, protection: protection, flags: flags, offset: offset)
    if result >= 0, let iommu = file as? IOMMUFile { MappedRegions.record(UInt(result), iommu) }
    return result
}

/// `munmap(address, length)`: 1 when the engine did it — the region was one an engine file
/// mapped (now unmapped), or program memory an IOAS maps (unmapped but for the parts an IOAS
/// maps, kept reserved: `PinnedUnmap`) — and 0 when it is the program's own to unmap (the
/// preload then calls the real munmap).
@_cdecl("ioasid_engine_munmap")
public func ioasid_engine_munmap(_ address: UnsafeMutableRawPointer?, _ length: UInt) -> Int32 {
    guard let address else { return 0 }
    if VFIOMappings.unmap(UInt(bitPattern: address), length: Int(clamping: length)) { return 1 }
    if let file = MappedRegions.take(UInt(bitPattern: address)) {
        return Engine.shared.unmapRegion(file, address: address, length: Int(clamping: length)) ? 1 : 0
    }
    return PinnedUnmap.unmap(UInt(bitPattern: address), length: Int(clamping: length)) ? 1 : 0
}

/// The program duplicated an engine fd (dup, dup2, dup3, F_DUPFD): `newfd` now names the same file.
@_cdecl("ioasid_engine_dup")
public func ioasid_engine_dup(_ oldfd: Int32, _ newfd: Int32) -> Int32 {
    Engine.shared.duplicate(oldfd, as: newfd)
}

/// The program is closing an engine fd: drop its reference; the file is released with the last one.
@_cdecl("ioasid_engine_close")
public func ioasid_engine_close(_ fd: Int32) -> Int32 {
    Engine.shared.close(fd)
}

/// The folder that holds the modelled machine's sysfs and /dev/vfio view (`SysfsView`), made on
/// the first call; NULL when no machine is configured. The string lives as long as the process.
@_cdecl("ioasid_engine_testbed")
public func ioasid_engine_testbed() -> UnsafePointer<CChar>? {
    guard let view = Engine.shared.sysfsView() else { return nil }
    return testbedPath.cString(view.root)
}

/// `open(path, flags)` of a live sysfs attribute of a modelled device (`config`, `sriov_numvfs`);
/// `path` is the path the program named. A new fd or -errno.
@_cdecl("ioasid_engine_open_sysfs")
public func ioasid_engine_open_sysfs(_ path: UnsafePointer<CChar>?, _ flags: Int32) -> Int32 {
    guard let path else { return -EFAULT }
    return Engine.shared.openSysfs(path: String(cString: path), flags: flags)
}

/// `open` of the calling thread's `fail-nth` (`/proc/self/task/TID/fail-nth`,
/// `/proc/thread-self/fail-nth`) when fault injection is on: a new fd or -errno (-ENOENT: off).
@_cdecl("ioasid_engine_open_fail_nth")
public func ioasid_engine_open_fail_nth(_ flags: Int32) -> Int32 {
    Engine.shared.openFailNth(flags: flags)
}

/// The folder shown as `/sys/kernel/debug` with fault injection on (the `fail*` knobs); NULL
/// when fault injection is off. The string lives as long as the process.
@_cdecl("ioasid_engine_fault_debugfs")
public func ioasid_engine_fault_debugfs() -> UnsafePointer<CChar>? {
    guard let path = Engine.shared.faultDebugfs() else { return nil }
    return debugfsPath.cString(path)
}

/// The character device an engine fd was opened as, for `fstat`: 1 with `major`/`minor` set, or
/// 0 when `fd` is an anonymous engine file (or not the engine's).
@_cdecl("ioasid_engine_node")
public func ioasid_engine_node(_ fd: Int32, _ major: UnsafeMutablePointer<UInt32>?, _ minor: UnsafeMutablePointer<UInt32>?) -> Int32 {
    guard let node = Engine.shared.node(for: fd) else { return 0 }
    major?.pointee = node.numbers.major
    minor?.pointee = node.numbers.minor
    return 1
}

/// A path handed to C as a string that is never freed: the first path given is kept for the
/// life of the process.
private final class PermanentPath: Sendable {
    private let stored = Mutex<UnsafeMutablePointer<CChar>?>(nil)

    func cString(_ path: String) -> UnsafePointer<CChar>? {
        stored.withLock { pointer in
            if pointer == nil { pointer = strdup(path) }
            return UnsafePointer(pointer)
        }
    }
}

/// The testbed path (`ioasid_engine_testbed`).
private let testbedPath = PermanentPath()
/// The fault-injection folder's path (`ioasid_engine_fault_debugfs`).
private let debugfsPath = PermanentPath()

/// `ioasid devices --engine PATH`: the lines `ioasid devices` prints for machine specification
/// `spec`, with this engine's device kinds (`EngineExtensions`). Writes at most `capacity` bytes
/// of text, NUL-terminated, to `buffer`. Returns the text's full length (call again with a
/// larger buffer when it is not below `capacity`), or, when the specification is refused (or
/// `spec` is NULL), the negated length of the reason, which is then the text written.
/// Touches no engine state: the tool calls it after `dlopen`ing the library.
@_cdecl("ioasid_engine_describe_machine")
public func ioasid_engine_describe_machine(_ spec: UnsafePointer<CChar>?, _ buffer: UnsafeMutablePointer<CChar>?,
                                           _ capacity: UInt) -> Int {
    EngineExtensions.load()
    var text = "no machine specification"
    var refused = true
    if let spec {
        do throws(MachineSpec.ParseError) {
            text = MachineLayout(try MachineSpec.parse(String(cString: spec))).listing
            refused = false
        } catch {
            text = error.description
        }
    }
    let bytes = Array(text.utf8)
    if let buffer, capacity > 0 {
        let n = min(bytes.count, Int(capacity) - 1)
        for i in 0..<n { buffer[i] = CChar(bitPattern: bytes[i]) }
        buffer[n] = 0
    }
    return refused ? -bytes.count : bytes.count
}
