import CIOASIDSys
import Glibc
import IOASIDCore
import IOASIDLinuxABI
import IOASIDSoftDrivers
import IOASIDSoftIOMMU
import Synchronization

/// The in-process engine behind `libioasid-preload.so`: the table of the descriptors it hands
/// out and the `LinuxFile` each one names.
///
/// **Descriptors.** Every descriptor is a real kernel eventfd, created here through `CIOASIDSys`
/// and claimed in the preload's table with `ioasid_preload_claim`, so `poll`, `epoll`, `select`,
/// `fstat`, `fork` and `exec` see an ordinary file. The engine keeps an eventfd's counter
/// non-zero exactly while its file says it is readable (`setReadable`), which is what `poll`
/// reports. The `/dev/iommu` descriptor itself always polls readable and writable, as a kernel
/// file without a poll method does.
///
/// **Sharing.** `dup`, `dup2`, `dup3` and `F_DUPFD` make several descriptors name one
/// `OpenFile`; the file is released when the last of them is closed. `setReadable` finds the
/// open file by the file's identity, so readiness follows the file to whatever descriptors name
/// it, never to a number the kernel has since handed to another file.
///
/// **Locking.** `state` is a leaf lock: no `LinuxFile` method is called while it is held (files
/// call back into `install` and `setReadable`), and under it only non-blocking system calls on
/// the engine's own eventfds are made. Lookups on the ioctl path take it once and do not allocate.
///
/// **Processes.** The engine holds no lock across calls, and the preload's `fork` handler waits
/// until no program thread is inside the engine, so a `fork`ed child (the kselftest harness forks
/// one per test) inherits a consistent copy of the table that names the descriptors it inherited.
final class Engine: DescriptorHost {
    /// The engine of this process, created by the first `open("/dev/iommu")`.
    static let shared = Engine(environment: EngineEnvironment())

    private let state = Mutex(State())
    private let configuration: EngineConfiguration
    /// Traces every call on the engine's descriptors (`IOASID_TRACE`); nil when tracing is off,
    /// and then the entry points call the files directly.
    let tracer: CallTracer?
    /// `ioasid_preload_claim` when the preload is loaded (nil when the engine runs without it).
    private let claim: PreloadClaim?

    /// The report of this process (`IOASID_REPORT`), or nil when none is asked for.
    private let report: ReportFile?

    /// The modelled machine's devices (`IOASID_MACHINE`), or the reason the specification was refused.
    private let machine: Result<Machine, Machine.SpecError>
    /// The sysfs and /dev/vfio view of the machine, written on first use (`sysfsView`).
    private let view = Mutex<SysfsViewSlot>(.notYet)
    /// Whether the kernel's fault-injection files are shown (`IOASID_FAULT_INJECTION`).
    let faultInjection: Bool
    /// The folder shown as `/sys/kernel/debug` with fault injection on, made on first use.
    private let debugfs = Mutex<(made: Bool, path: String?)>((false, nil))

    init(environment: EngineEnvironment) {
        let isEngineDescriptor: @Sendable (Int32) -> Bool = { fd in Engine.shared.file(for: fd) != nil }
        var vtd = VTdConfiguration()
        vtd.dropsAccessedDirtyUpdates = environment.noDirtyBits
        if environment.noDirtyBits {
            (environment.traceSink ?? .standardError).write(
                "ioasid: IOASID_TEST_NO_DIRTY_BITS is set: the software VT-d records no device write as dirty (a test knob)")
        }
        do throws(Machine.SpecError) {
            machine = .success(try Machine.parse(environment.machine ?? "", isEngineDescriptor: isEngineDescriptor, vtdConfiguration: vtd))
        } catch {
            machine = .failure(error)
            // Said whether or not tracing is on: otherwise every device open just fails with ENOENT.
            (environment.traceSink ?? .standardError).write("ioasid: IOASID_MACHINE refused: \(error)")
        }
        var configuration = EngineConfiguration(testDriver: environment.testDriver)
        configuration.privileged = environment.privileged
        self.tracer = environment.traceSink.map { sink in CallTracer(timing: environment.traceTime) { sink.write($0) } }
        self.configuration = configuration
        self.claim = PreloadClaim.resolve()
        report = environment.report.map { ReportFile(path: $0) }
        faultInjection = environment.faultInjection
        if environment.faultInjection || !environment.faultRules.isEmpty {
            // With faults injected, say at exit what the program left behind (the shared engine only).
            let sink = environment.traceSink ?? .standardError
            atexit { Engine.leakCheckAtExit() }
            Engine.leakSink.withLock { $0 = sink }
        }
        do throws(FaultRuleError) {
            FaultInjection.install(try environment.faultRules.map { r throws(FaultRuleError) in try FaultRule.parse(r) })
        } catch {
            (environment.traceSink ?? .standardError).write("ioasid: IOASID_FAIL refused: \(error)")
        }
        if report != nil {
            // `exit` and a return from `main` write the page (the shared engine only: tests make their own).
            atexit { Engine.reportAtExit() }
        }
    }

    private static let leakSink = Mutex<TraceSink?>(nil)

    /// At exit, with fault injection on: one line per `/dev/iommu` still open that holds
    /// objects (a program that exits without destroying them, or whose error path forgot them),
    /// or one line saying that nothing is left.
    private static func leakCheckAtExit() {
        guard let sink = leakSink.withLock({ $0 }) else { return }
        for line in shared.leakLines() { sink.write(line) }
    }

    /// The lines of `leakCheckAtExit`.
    func leakLines() -> [String] {
        let open: [(Int32, IOMMUFile)] = state.withLock { s in
            var seen: Set<ObjectIdentifier> = []
            return s.descriptors.keys.sorted().compactMap { fd in
                guard let file = s.descriptors[fd]?.file as? IOMMUFile, seen.insert(ObjectIdentifier(file)).inserted else { return nil }
                return (fd, file)
            }
        }
        var lines: [String] = []
        for (fd, file) in open {
            let objects = file.context.objects
            guard !objects.isEmpty else { continue }
            let named = objects.map { "\($0.kind) \($0.id.rawValue)" }.joined(separator: ", ")
            lines.append("ioasid: at exit, /dev/iommu (fd \(fd)) still holds \(objects.count) object\(objects.count == 1 ? "" : "s"): \(named)")
        }
        if lines.isEmpty { lines.append("ioasid: at exit, no /dev/iommu holds any object") }
        return lines
    }

    /// Writes the shared engine's report, if any (from `atexit`).
    private static func reportAtExit() { shared.report?.write() }

    // MARK: Entry points

    /// Opens `/dev/iommu`, or `/dev/vfio/vfio` (`node: .container`: the same iommufd, as the
    /// kernel's VFIO compatibility container, but `fstat` reports the container's node): a new
    /// `IOMMUFile` behind a new descriptor, or -errno.
    func openIOMMU(flags: Int32, node: DeviceNode = .iommu) -> Int32 {
        traceOpen(kind: "iommu", path: node == .container ? "/dev/vfio/vfio" : "/dev/iommu", flags: flags) {
            // The kernel allocates the context first (iommufd_fops_open): an injection point.
            do throws(IOMMUError) { try FaultInjection.check(.allocation(nil)) } catch { return -error.errno }
            let file = IOMMUFile(host: self, configuration: configuration)
            var eventFlags = IOASID_SYS_EFD_NONBLOCK
            if flags & O_CLOEXEC != 0 { eventFlags |= IOASID_SYS_EFD_CLOEXEC }
            let fd = install(file, eventFlags: eventFlags, readable: true, node: node)
            if fd < 0 { file.release() }
            if fd >= 0, let report {
                file.recorder = report.recorder(for: file, descriptor: fd)
                file.onContextClosed = { report.closed() }
            }
            return fd
        }
    }


    /// Opens `/dev/vfio/devices/vfio<index>` of the modelled machine: a new `VFIODeviceFile`, or
    /// -ENOENT when the machine has no such device.
    func openDevice(index: Int32, flags: Int32) -> Int32 {
        traceOpen(kind: "vfio\(index)", path: "/dev/vfio/devices/vfio\(index)", flags: flags) {
            guard case .success(let m) = machine, let device = m.devices.device(cdev: Int(index)) else { return -ENOENT }
            let file = VFIODeviceFile(host: self, model: device.model, pci: device.pci, name: "vfio\(index)")
            var eventFlags = IOASID_SYS_EFD_NONBLOCK
            if flags & O_CLOEXEC != 0 { eventFlags |= IOASID_SYS_EFD_CLOEXEC }
            device.openCount.add(1, ordering: .acquiringAndReleasing)
            let fd = install(file, eventFlags: eventFlags, readable: false, node: .cdev(Int(index))) {
                device.openCount.subtract(1, ordering: .acquiringAndReleasing)
            }
            if fd < 0 {
                file.release()
                device.openCount.subtract(1, ordering: .acquiringAndReleasing)
            }
            return fd
        }
    }

    /// Opens the VFIO group `/dev/vfio/<index>`: a new `VFIOGroupFile`, or -ENOENT when the
    /// machine has no such group (a `mock` device has none).
    func openGroup(index: Int32, flags: Int32) -> Int32 {
        traceOpen(kind: "vfio-group\(index)", path: "/dev/vfio/\(index)", flags: flags) {
            guard case .success(let m) = machine, let device = m.devices.device(group: Int(index)), let pci = device.pci else {
                return -ENOENT
            }
            let file = VFIOGroupFile(host: self, pci: pci)
            var eventFlags = IOASID_SYS_EFD_NONBLOCK
            if flags & O_CLOEXEC != 0 { eventFlags |= IOASID_SYS_EFD_CLOEXEC }
            let fd = install(file, eventFlags: eventFlags, readable: false, node: .group(Int(index)))
            if fd < 0 { file.release() }
            return fd
        }
    }

    /// Runs an open, traced as `KIND:FD open path=… flags=… -> FD`.
    private func traceOpen(kind: String, path: String, flags: Int32, _ body: () -> Int32) -> Int32 {
        guard let tracer else { return body() }
        var fd: Int32 = -1
        _ = tracer.call(kind: kind, fd: nil) { line in
            fd = body()
            if fd >= 0 { line.setDescriptor(fd) }
            line.call("open")
            line.text("path", path)
            line.hex("flags", UInt32(bitPattern: flags))
            if fd == -ENOENT { line.failure(errno: ENOENT, reason: "the modelled machine has no such device") }
            return Int(fd)
        }
        return fd
    }

    /// Records that `newfd` now names the file `oldfd` names; 0 or -errno.
    func duplicate(_ oldfd: Int32, as newfd: Int32) -> Int32 {
        if oldfd == newfd { return file(for: oldfd) == nil ? -EBADF : 0 }
        let (status, released): (Int32, OpenFile?) = state.withLock { state in
            guard let open = state.descriptors[oldfd] else { return (-EBADF, nil) }
            let released = state.forget(newfd)
            open.descriptors.append(newfd)
            state.descriptors[newfd] = open
            return (0, released)
        }
        releaseFiles(released)
        if let tracer {
            _ = tracer.call(kind: kind(of: newfd), fd: oldfd) { line in
                line.call("dup")
                return Int(status == 0 ? newfd : status)
            }
        }
        return status
    }

    /// Drops `fd`; releases its file if no other descriptor names it. 0 or -errno.
    func close(_ fd: Int32) -> Int32 {
        let fileKind = tracer == nil ? "" : kind(of: fd)
        let (found, released): (Bool, OpenFile?) = state.withLock { state in
            (state.descriptors[fd] != nil, state.forget(fd))
        }
        releaseFiles(released)
        if let tracer {
            _ = tracer.call(kind: fileKind, fd: fd) { line in
                line.call("close")
                line.result(found ? 0 : -Int(EBADF))
                line.note(released != nil ? "last descriptor: file released" : found ? "file still open" : "not an ioasid descriptor")
                return found ? 0 : -Int(EBADF)
            }
        }
        return found ? 0 : -EBADF
    }

    /// `munmap` of a region an engine file mapped, traced when tracing.
    func unmapRegion(_ file: IOMMUFile, address: UnsafeMutableRawPointer, length: Int) -> Bool {
        guard let tracer else { return file.unmapRegion(address: address, length: length) }
        var unmapped = false
        _ = tracer.call(kind: file.traceKind, fd: nil) { line in
            line.call("munmap")
            line.hex("addr", UInt(bitPattern: address))
            line.hex("length", UInt(bitPattern: length))
            unmapped = file.unmapRegion(address: address, length: length)
            return unmapped ? 0 : -Int(EINVAL)
        }
        return unmapped
    }

    /// The trace's name for the kind of file `fd` names (`?` when it names none of ours).
    private func kind(of fd: Int32) -> String {
        file(for: fd)?.traceKind ?? "?"
    }

    // MARK: Fault injection

    /// Opens the calling thread's `fail-nth` (`FailNthFile`); -ENOENT when fault injection is off.
    func openFailNth(flags: Int32) -> Int32 {
        traceOpen(kind: "fail-nth", path: "/proc/thread-self/fail-nth", flags: flags) {
            guard faultInjection else { return -ENOENT }
            var eventFlags = IOASID_SYS_EFD_NONBLOCK
            if flags & O_CLOEXEC != 0 { eventFlags |= IOASID_SYS_EFD_CLOEXEC }
            return install(FailNthFile(thread: ioasid_sys_gettid()), eventFlags: eventFlags, readable: true)
        }
    }

    /// The folder shown as `/sys/kernel/debug` (`FaultDebugfs`); nil when fault injection is off
    /// or the folder cannot be made. Removed when the process that made it exits.
    func faultDebugfs() -> String? {
        guard faultInjection else { return nil }
        return debugfs.withLock { slot in
            if slot.made { return slot.path }
            let base = EngineEnvironment.variable("IOASID_TESTBED_ROOT").flatMap { $0.isEmpty ? nil : $0 }
                ?? EngineEnvironment.variable("TMPDIR").flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
            let pid = ioasid_sys_getpid()
            slot = (true, FaultDebugfs.create(base: base, pid: pid))
            if let path = slot.path { FaultDebugfs.removeAtExit(path, creator: pid) }
            return slot.path
        }
    }

    // MARK: The sysfs view

    /// The machine's sysfs and /dev/vfio folder, made on first use; nil without a machine or
    /// when it cannot be made.
    func sysfsView() -> SysfsView? {
        guard case .success(let m) = machine, m.devices.physicalCount > 0 else { return nil }
        return view.withLock { slot in
            if case .made(let made) = slot { return made }
            let made = SysfsView(devices: m.devices)
            slot = .made(made)
            if made == nil { TraceSink.standardError.write("ioasid: cannot create the sysfs view of the machine") }
            return made
        }
    }

    /// Opens one of the live sysfs attributes of a modelled device, by its path under
    /// `/sys/bus/pci/devices/<bdf>/` or `/sys/devices/pci0100:00/<bdf>/`: `config` (a snapshot
    /// of the current configuration space in an anonymous file) or `sriov_numvfs` (an engine
    /// file). -ENOENT for anything else.
    func openSysfs(path: String, flags: Int32) -> Int32 {
        traceOpen(kind: "sysfs", path: path, flags: flags) {
            guard case .success(let m) = machine else { return -ENOENT }
            let parts = path.split(separator: "/").map(String.init)
            guard parts.count >= 2, let address = PCIAddress(parts[parts.count - 2]),
                  let device = m.devices.device(address: address) else { return -ENOENT }
            switch parts[parts.count - 1] {
            case "config":
                let bytes = m.devices.configSpace(of: device)
                let fd = ioasid_sys_memfd(0, 1)
                guard fd >= 0 else { return Int32(fd) }
                _ = bytes.withUnsafeBytes { ioasid_sys_write_all(Int32(fd), $0.baseAddress, $0.count) }
                _ = ioasid_sys_rewind(Int32(fd))
                return Int32(fd)
            case "sriov_numvfs" where device.physicalFunction == nil && device.description.sriov != nil:
                let file = SRIOVNumVFsFile(devices: m.devices, pf: device, view: sysfsView())
                var eventFlags = IOASID_SYS_EFD_NONBLOCK
                if flags & O_CLOEXEC != 0 { eventFlags |= IOASID_SYS_EFD_CLOEXEC }
                return install(file, eventFlags: eventFlags, readable: true)
            default:
                return -ENOENT
            }
        }
    }

    /// The device node `fd` was opened as (`/dev/iommu`, a VFIO node), for `fstat`; nil for the
    /// anonymous files ioctls hand out and for descriptors that are not the engine's.
    func node(for fd: Int32) -> DeviceNode? {
        state.withLock { $0.descriptors[fd]?.node }
    }

    // MARK: DescriptorHost

    func install(_ file: any LinuxFile) -> Int32 {
        install(file, eventFlags: IOASID_SYS_EFD_NONBLOCK | IOASID_SYS_EFD_CLOEXEC, readable: false)
    }

    /// The file a live descriptor of the engine names, or nil if `fd` is not the engine's.
    /// Used on every call from the preload: one lock, one dictionary lookup, no allocation.
    func file(for fd: Int32) -> (any LinuxFile)? {
        state.withLock { $0.descriptors[fd]?.file }
    }

    func setReadable(_ file: any LinuxFile, _ readable: Bool) {
        state.withLock { state in
            guard let open = state.byFile[ObjectIdentifier(file)], open.readable != readable,
                  let live = open.descriptors.first else { return }
            _ = readable ? ioasid_sys_eventfd_signal(live) : ioasid_sys_eventfd_drain(live)
            open.readable = readable
        }
    }

    // MARK: Internals

    private func install(_ file: any LinuxFile, eventFlags: Int32, readable: Bool, node: DeviceNode? = nil,
                         onRelease: (@Sendable () -> Void)? = nil) -> Int32 {
        let created = ioasid_sys_eventfd(readable ? 1 : 0, eventFlags)
        guard created >= 0 else { return Int32(created) }
        let fd = Int32(created)
        // Claimed before it is in the table: a call on the number from another thread (which can
        // only guess it) then reaches the engine, which answers EBADF until the file is there,
        // rather than the kernel's eventfd.
        claim?.claim(fd)
        let stale: OpenFile? = state.withLock { state in
            // A number the kernel just handed out can only be in the table if the program closed
            // it behind the preload's back (raw syscall); forget that file first.
            let stale = state.forget(fd)
            let open = OpenFile(file: file, fd: fd, readable: readable, node: node, onRelease: onRelease)
            state.descriptors[fd] = open
            state.byFile[ObjectIdentifier(file)] = open
            return stale
        }
        releaseFiles(stale)
        return fd
    }

    /// Releases a file whose last descriptor is gone.
    private func releaseFiles(_ open: OpenFile?) {
        guard let open else { return }
        open.releaseAll()
    }
}

/// What `Engine.state` protects.
private struct State: ~Copyable {
    /// Every live descriptor of the engine → the open file it names.
    var descriptors: [Int32: OpenFile] = [:]
    /// Each live file, by identity → its open file (see `Engine`, "Sharing").
    var byFile: [ObjectIdentifier: OpenFile] = [:]

    /// Removes `fd`; returns its file if that was the last descriptor naming it.
    mutating func forget(_ fd: Int32) -> OpenFile? {
        guard let open = descriptors.removeValue(forKey: fd) else { return nil }
        open.descriptors.removeAll { $0 == fd }
        guard open.descriptors.isEmpty else { return nil }
        let identity = ObjectIdentifier(open.file)
        if byFile[identity] === open { byFile.removeValue(forKey: identity) }
        return open
    }
}

/// One file and the descriptors that name it; only touched while `Engine.state` is held.
private final class OpenFile {
    let file: any LinuxFile
    var descriptors: [Int32]
    /// Whether the eventfd's counter is non-zero.
    var readable: Bool
    /// The device node it was opened as (what `fstat` reports), if any.
    let node: DeviceNode?
    /// Runs after the file is released (with no lock held).
    let onRelease: (@Sendable () -> Void)?

    init(file: any LinuxFile, fd: Int32, readable: Bool, node: DeviceNode?, onRelease: (@Sendable () -> Void)?) {
        self.file = file
        self.descriptors = [fd]
        self.readable = readable
        self.node = node
        self.onRelease = onRelease
    }

    /// Releases the file (its last descriptor is gone), then runs `onRelease`.
    func releaseAll() {
        file.release()
        onRelease?()
    }
}

/// The character device an engine descriptor was opened as: what `fstat` on it reports
/// (`DeviceNumbers`).
enum DeviceNode: Sendable, Equatable {
    /// `/dev/iommu`.
    case iommu
    /// `/dev/vfio/vfio`.
    case container
    /// `/dev/vfio/<group>`.
    case group(Int)
    /// `/dev/vfio/devices/vfio<n>`.
    case cdev(Int)

    /// `(major, minor)`.
    var numbers: (major: UInt32, minor: UInt32) {
        switch self {
        case .iommu: (DeviceNumbers.miscMajor, DeviceNumbers.iommuMinor)
        case .container: (DeviceNumbers.miscMajor, DeviceNumbers.vfioContainerMinor)
        case .group(let g): (DeviceNumbers.groupMajor, UInt32(g))
        case .cdev(let n): (DeviceNumbers.cdevMajor, UInt32(n))
        }
    }
}

/// Whether the sysfs view was made yet.
private enum SysfsViewSlot {
    case notYet
    case made(SysfsView?)
}

/// `ioasid_preload_claim`, resolved in the global scope where `LD_PRELOAD` put it.
struct PreloadClaim: Sendable {
    private let address: UInt

    static func resolve() -> PreloadClaim? {
        guard let symbol = dlsym(nil, "ioasid_preload_claim") else { return nil }  // nil: RTLD_DEFAULT
        return PreloadClaim(address: UInt(bitPattern: symbol))
    }

    func claim(_ fd: Int32) {
        typealias Function = @convention(c) (Int32, Int32) -> Void
        let function = unsafeBitCast(UnsafeRawPointer(bitPattern: address)!, to: Function.self)
        function(fd, 1)
    }
}

/// Regions the engine's files mapped into the program (`mmap` of `/dev/iommu`), so `munmap`
/// of one reaches its file: a vIOMMU cannot be destroyed while its region is mapped.
enum MappedRegions {
    private static let regions = Mutex<[(address: UInt, file: IOMMUFile)]>([])

    static func record(_ address: UInt, _ file: IOMMUFile) { regions.withLock { $0.append((address, file)) } }

    /// The file that mapped the region at `address`, removed from the list.
    static func take(_ address: UInt) -> IOMMUFile? {
        regions.withLock { r in
            guard let i = r.firstIndex(where: { $0.address == address }) else { return nil }
            return r.remove(at: i).file
        }
    }
}
