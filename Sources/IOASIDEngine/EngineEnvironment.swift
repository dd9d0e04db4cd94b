import CIOASIDSys
import Glibc

/// The engine's settings, read once from the environment `ioasid run` prepares.
///
/// - `IOASID_TEST_DRIVER`: `0`, `false`, `no` or `off` disables `IOMMU_TEST_CMD` (the kernel's
///   `CONFIG_IOMMUFD_TEST`); anything else, or unset, enables it.
/// - `IOASID_PRIVILEGED`: `1` makes the engine treat the program as holding the capabilities the
///   kernel checks (`CAP_SYS_RESOURCE` for `IOMMU_OPTION_RLIMIT_MODE`), as a root program in a
///   VM would; otherwise the program's real capabilities decide.
/// - `IOASID_TRACE`: unset or empty disables tracing; `-` or `stderr` traces to fd 2; anything
///   else is a file the engine appends to (created with mode 0644 if missing).
/// - `IOASID_TRACE_TIME`: `1` (or any switch-on value) ends each trace line with the call's
///   duration on the monotonic clock.
/// - `IOASID_MACHINE`: the modelled machine's devices (`Machine`), served as
///   `/dev/vfio/devices/vfioN`; unset: none.
/// - `IOASID_REPORT`: unset or empty: no report; else the HTML report's path (`ReportFile`).
/// - `IOASID_FAULT_INJECTION`: a switch-on value shows the kernel's fault-injection files
///   (`/proc/self/task/TID/fail-nth`, the `/sys/kernel/debug/fail*` knobs); default off.
/// - `IOASID_FAIL`: user fault rules (`FaultRule`), separated by `,`; unset: none.
/// - `IOASID_TEST_NO_DIRTY_BITS`: **a test knob, off by default** — a switch-on value makes the
///   modelled machine's VT-d unit record no device write as dirty although it offers and
///   accepts dirty tracking (`VTdConfiguration.dropsAccessedDirtyUpdates`), to show that a
///   live-migration test notices lost dirty pages. Never set it otherwise.
struct EngineEnvironment {
    var testDriver: Bool
    var traceSink: TraceSink?
    var traceTime = false
    var privileged = false
    var machine: String?
    var report: String?
    var faultInjection = false
    var faultRules: [String] = []
    var noDirtyBits = false

    init(testDriver: Bool, traceSink: TraceSink?, privileged: Bool = false) {
        self.testDriver = testDriver
        self.traceSink = traceSink
        self.privileged = privileged
    }

    /// Reads the process environment.
    init() {
        self.init(
            testDriver: Self.parseSwitch(Self.variable("IOASID_TEST_DRIVER"), default: true),
            traceSink: TraceSink.open(Self.variable("IOASID_TRACE")),
            privileged: Self.parseSwitch(Self.variable("IOASID_PRIVILEGED"), default: false))
        machine = Self.variable("IOASID_MACHINE")
        traceTime = Self.parseSwitch(Self.variable("IOASID_TRACE_TIME"), default: false)
        report = Self.variable("IOASID_REPORT").flatMap { $0.isEmpty ? nil : $0 }
        faultInjection = Self.parseSwitch(Self.variable("IOASID_FAULT_INJECTION"), default: false)
        faultRules = (Self.variable("IOASID_FAIL") ?? "").split(separator: ",").map(String.init)
        noDirtyBits = Self.parseSwitch(Self.variable("IOASID_TEST_NO_DIRTY_BITS"), default: false)
    }

    static func variable(_ name: String) -> String? {
        guard let value = getenv(name) else { return nil }
        return String(cString: value)
    }

    static func parseSwitch(_ value: String?, default defaultValue: Bool) -> Bool {
        guard let value, !value.isEmpty else { return defaultValue }
        switch value.lowercased() {
        case "0", "false", "no", "off": return false
        default: return true
        }
    }
}

/// Where trace lines go: each line, prefixed with the writer's pid, leaves in one `write(2)`,
/// so lines from several processes (fork) appending to one file do not interleave.
struct TraceSink: Sendable {
    let fd: Int32

    static let standardError = TraceSink(fd: 2)

    /// The sink `IOASID_TRACE` names, or nil when tracing is off or the file cannot be opened.
    static func open(_ setting: String?) -> TraceSink? {
        guard let setting, !setting.isEmpty else { return nil }
        if setting == "-" || setting == "stderr" { return .standardError }
        let flags = IOASID_SYS_O_WRONLY | IOASID_SYS_O_CREAT | IOASID_SYS_O_APPEND | IOASID_SYS_O_CLOEXEC
        let fd = ioasid_sys_openat(IOASID_SYS_AT_FDCWD, setting, flags, 0o644)
        guard fd >= 0 else {
            TraceSink.standardError.write(
                "cannot open trace file \(setting): \(String(cString: strerror(Int32(-fd)))); tracing to stderr")
            return .standardError
        }
        return TraceSink(fd: Int32(fd))
    }

    func write(_ line: String) {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(line.utf8.count + 24)
        bytes.append(contentsOf: "[pid \(ioasid_sys_getpid())] ".utf8)
        bytes.append(contentsOf: line.utf8)
        if bytes.last != UInt8(ascii: "\n") { bytes.append(UInt8(ascii: "\n")) }
        _ = bytes.withUnsafeBytes { ioasid_sys_write_all(fd, $0.baseAddress, $0.count) }
    }
}
