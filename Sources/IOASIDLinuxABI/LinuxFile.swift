/// The files the Linux binary interface hands out: the `/dev/iommu` file itself and the
/// anonymous files some ioctls return (fault queues, vEVENT queues, test-driver accesses).
///
/// A front door (the preload engine, a test) owns the descriptors; this layer only decodes and
/// answers. Every method returns a non-negative result or a negated errno, as a system call does.
public protocol LinuxFile: AnyObject, Sendable {
    /// Handles `ioctl(fd, request, argument)`.
    func ioctl(request: UInt, argument: UnsafeMutableRawPointer?) -> Int
    /// Handles `read(fd, buffer, count)`.
    func read(into buffer: UnsafeMutableRawBufferPointer) -> Int
    /// Handles `write(fd, buffer, count)`.
    func write(from buffer: UnsafeRawBufferPointer) -> Int
    /// Handles `mmap(addr, length, prot, flags, fd, offset)`; returns the address or -errno.
    func mmap(address: UnsafeMutableRawPointer?, length: Int, protection: Int32, flags: Int32, offset: Int) -> Int
    /// Handles `pread(fd, buffer, count, offset)`; `address` is the program's buffer, to be
    /// written fault-safely. Returns the bytes read or -errno.
    func pread(into address: UInt64, count: Int, offset: Int64) -> Int
    /// Handles `pwrite(fd, buffer, count, offset)`; bytes written or -errno.
    func pwrite(from address: UInt64, count: Int, offset: Int64) -> Int
    /// Called when the last descriptor naming this file is closed.
    func release()

    /// What the trace calls this kind of file (`iommu`, `fault-queue`, …; see `TraceLine`).
    var traceKind: String { get }
    /// `ioctl`, describing the call on `trace` (name, arguments, the reason for an error) when
    /// it is not nil. The default names the request and runs `ioctl(request:argument:)`.
    func ioctl(request: UInt, argument: UnsafeMutableRawPointer?, trace: inout TraceLine?) -> Int
    /// `read`, described on `trace` when it is not nil.
    func read(into buffer: UnsafeMutableRawBufferPointer, trace: inout TraceLine?) -> Int
    /// `write`, described on `trace` when it is not nil.
    func write(from buffer: UnsafeRawBufferPointer, trace: inout TraceLine?) -> Int
    /// `mmap`, described on `trace` when it is not nil.
    func mmap(address: UnsafeMutableRawPointer?, length: Int, protection: Int32, flags: Int32, offset: Int,
              trace: inout TraceLine?) -> Int
}

extension LinuxFile {
    public func read(into buffer: UnsafeMutableRawBufferPointer) -> Int { -Int(EINVAL_) }
    public func write(from buffer: UnsafeRawBufferPointer) -> Int { -Int(EINVAL_) }
    public func mmap(address: UnsafeMutableRawPointer?, length: Int, protection: Int32, flags: Int32, offset: Int) -> Int { -Int(ENODEV_) }
    public func ioctl(request: UInt, argument: UnsafeMutableRawPointer?) -> Int { -Int(ENOTTY_) }

    public var traceKind: String { "file" }

    public func ioctl(request: UInt, argument: UnsafeMutableRawPointer?, trace: inout TraceLine?) -> Int {
        trace?.call(TraceLine.requestName(request))
        trace?.hex("arg", UInt(bitPattern: argument))
        return ioctl(request: request, argument: argument)
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, trace: inout TraceLine?) -> Int {
        trace?.call("read")
        trace?.decimal("count", buffer.count)
        let r = read(into: buffer)
        if r == -Int(EINVAL_) { trace?.failure(errno: EINVAL_, reason: "\(traceKind) has no read") }
        return r
    }

    public func write(from buffer: UnsafeRawBufferPointer, trace: inout TraceLine?) -> Int {
        trace?.call("write")
        trace?.decimal("count", buffer.count)
        let r = write(from: buffer)
        if r == -Int(EINVAL_) { trace?.failure(errno: EINVAL_, reason: "\(traceKind) has no write") }
        return r
    }

    public func mmap(address: UnsafeMutableRawPointer?, length: Int, protection: Int32, flags: Int32, offset: Int,
                     trace: inout TraceLine?) -> Int {
        trace?.mmapArguments(address: address, length: length, protection: protection, flags: flags, offset: offset)
        let r = mmap(address: address, length: length, protection: protection, flags: flags, offset: offset)
        if r >= 0 { trace?.result(r, hex: true) }
        return r
    }

    /// Files without positioned I/O answer as a pipe or eventfd does.
    public func pread(into address: UInt64, count: Int, offset: Int64) -> Int { -Int(ESPIPE_) }
    public func pwrite(from address: UInt64, count: Int, offset: Int64) -> Int { -Int(ESPIPE_) }
}

let EINVAL_: Int32 = 22
let ENODEV_: Int32 = 19
let ENOTTY_: Int32 = 25
let ESPIPE_: Int32 = 29

/// Creates and signals the real kernel descriptors behind `LinuxFile`s.
///
/// The preload engine implements it with eventfds so that `poll` and `epoll` work on every
/// descriptor; tests implement it in memory.
public protocol DescriptorHost: AnyObject, Sendable {
    /// Creates a descriptor for `file`; returns the fd or -errno.
    func install(_ file: any LinuxFile) -> Int32
    /// Sets whether the descriptors naming `file` poll readable. The file is named by identity,
    /// not by a number: the descriptor it was installed under may have been closed while a
    /// `dup` of it keeps the file open, and the number reused for another file.
    func setReadable(_ file: any LinuxFile, _ readable: Bool)
    /// The file behind a descriptor this host installed, if any.
    func file(for fd: Int32) -> (any LinuxFile)?
}

/// Options of one open of `/dev/iommu`.
public struct EngineConfiguration: Sendable {
    /// Whether `IOMMU_TEST_CMD` is served (the kernel's `CONFIG_IOMMUFD_TEST`).
    public var testDriver: Bool
    /// Treat the caller as holding the capabilities the kernel checks, whatever it really holds.
    public var privileged = false

    public init(testDriver: Bool = true) {
        self.testDriver = testDriver
    }
}
