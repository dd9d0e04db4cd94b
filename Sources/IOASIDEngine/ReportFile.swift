import CIOASIDSys
import Glibc
import IOASIDLinuxABI
import IOASIDReport
import Synchronization

/// The report of this process (`IOASID_REPORT`): a recorder per open of `/dev/iommu`, and the
/// HTML page written from them when the program exits and whenever its last open is closed.
///
/// **Which file.** `IOASID_REPORT` names the run's report, e.g. `report.html`. The first process
/// of the run that opened `/dev/iommu` itself claims that name (created exclusively; `ioasid run`
/// removes a stale one before the program starts). Every other process of the run that used
/// ioasid writes the same name with its pid before the extension (`report.1234.html`): a forked
/// child (which inherits copies of its parent's opens) and a later program of the run that
/// finds the name taken.
///
/// **When.** The page is rewritten (atomically: a temporary file renamed over it) each time the
/// process's last open of `/dev/iommu` is closed, and once more at `exit` (also after returning
/// from `main`). A program that ends by `_exit` or a signal keeps the page of its last close.
final class ReportFile: Sendable {
    private struct State {
        var recorders: [ContextRecorder] = []
        /// The process that claimed the run's file name, if this process's engine did.
        var claimedBy: Int32?
    }

    private let state = Mutex(State())
    private let path: String
    /// The process the engine was created in (a forked child has another pid).
    private let enginePID: Int32

    init(path: String) {
        self.path = path
        enginePID = Int32(ioasid_sys_getpid())
    }

    /// A recorder for a new open, which the report will show.
    func recorder(for file: IOMMUFile, descriptor: Int32) -> ContextRecorder {
        state.withLock { s in
            let r = ContextRecorder(context: file.context, descriptor: descriptor, sequence: s.recorders.count + 1)
            s.recorders.append(r)
            return r
        }
    }

    /// An open was closed: write the page if it was the last one.
    func closed() {
        let allClosed = state.withLock { s in !s.recorders.isEmpty && s.recorders.allSatisfy(\.isClosed) }
        if allClosed { write() }
    }

    /// Writes the page if this process used ioasid; problems go to stderr, never to the program.
    func write() {
        let recorders = state.withLock { $0.recorders }
        guard !recorders.isEmpty else { return }
        let pid = Int32(ioasid_sys_getpid())
        let document = ReportDocument(program: Self.commandLine(), pid: pid, written: Self.now(),
                                      contexts: recorders.map(ContextReport.init))
        let page = ReportPage.html(document)
        guard let target = target(pid: pid) else { return }
        let temporary = "\(target).\(pid).tmp"
        // Raw system calls: the preload's own open and close must not see the engine's files.
        let fd = Self.create(temporary, exclusive: false)
        guard fd >= 0 else { return complain("cannot create \(temporary)", -fd) }
        let written = Array(page.utf8).withUnsafeBytes { ioasid_sys_write_all(fd, $0.baseAddress, $0.count) }
        _ = ioasid_sys_close(fd)
        guard written >= 0 else {
            unlink(temporary)
            return complain("cannot write \(temporary)", Int32(-written))
        }
        guard rename(temporary, target) == 0 else {
            let e = errno
            unlink(temporary)
            return complain("cannot rename \(temporary) to \(target)", e)
        }
    }

    /// The file this process writes: the run's name if it claimed it, else the name with its pid.
    private func target(pid: Int32) -> String? {
        if pid != enginePID { return Self.withPID(path, pid) }
        return state.withLock { s -> String in
            if s.claimedBy == pid { return path }
            if s.claimedBy == nil {
                let fd = Self.create(path, exclusive: true)
                if fd >= 0 {
                    _ = ioasid_sys_close(fd)
                    s.claimedBy = pid
                    return path
                }
                s.claimedBy = -1  // taken by another program of the run
            }
            return Self.withPID(path, pid)
        }
    }

    /// `report.html` → `report.1234.html`; a name without an extension gets `.1234` appended.
    static func withPID(_ path: String, _ pid: Int32) -> String {
        let slash = path.lastIndex(of: "/")
        if let dot = path.lastIndex(of: "."), slash.map({ dot > $0 }) ?? true, dot != path.startIndex,
           path[path.index(before: dot)] != "/" {
            return "\(path[..<dot]).\(pid)\(path[dot...])"
        }
        return "\(path).\(pid)"
    }

    /// Creates `path` for writing (truncated, or failing with -EEXIST when `exclusive`): fd or -errno.
    private static func create(_ path: String, exclusive: Bool) -> Int32 {
        var flags = IOASID_SYS_O_WRONLY | IOASID_SYS_O_CREAT | IOASID_SYS_O_CLOEXEC
        flags |= exclusive ? O_EXCL : IOASID_SYS_O_TRUNC
        return Int32(ioasid_sys_openat(IOASID_SYS_AT_FDCWD, path, flags, 0o644))
    }

    private func complain(_ what: String, _ error: Int32) {
        TraceSink.standardError.write("ioasid report: \(what): \(String(cString: strerror(error)))")
    }

    /// The process's command line, arguments separated by spaces.
    static func commandLine() -> String {
        let fd = Int32(ioasid_sys_openat(IOASID_SYS_AT_FDCWD, "/proc/self/cmdline", IOASID_SYS_O_CLOEXEC, 0))
        guard fd >= 0 else { return "?" }
        defer { _ = ioasid_sys_close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while bytes.count < 1 << 16 {
            let n = chunk.withUnsafeMutableBytes { ioasid_sys_read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            bytes += chunk[0..<Int(n)]
        }
        while bytes.last == 0 { bytes.removeLast() }
        return String(decoding: bytes.map { $0 == 0 ? UInt8(ascii: " ") : $0 }, as: UTF8.self)
    }

    /// Now, in UTC (`2026-12-03 11:41:34 UTC`).
    static func now() -> String {
        var t = time(nil)
        var parts = tm()
        gmtime_r(&t, &parts)
        var buffer = [CChar](repeating: 0, count: 64)
        let n = strftime(&buffer, buffer.count, "%Y-%m-%d %H:%M:%S UTC", &parts)
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
