import CIOASIDSys
import Glibc
import IOASIDCore
import IOASIDLinuxABI

/// An open `/proc/self/task/TID/fail-nth` (also `/proc/thread-self/fail-nth`) of the thread that
/// opened it, as the kernel's (Documentation/fault-injection/fault-injection.rst): writing N
/// makes the Nth injection point that thread reaches in the engine fail, once (0 disarms);
/// reading gives the countdown, `0` once the fault fired. The text written is parsed as the
/// kernel's `kstrtouint(buf, 0)`: decimal, `0x` hex or `0` octal, one trailing newline.
///
/// The file is bound to its thread: a read or write from another thread is `EPERM` (the
/// counter is that thread's thread-local word, which no other thread can reach).
final class FailNthFile: LinuxFile, Sendable {
    private let thread: Int

    init(thread: Int) { self.thread = thread }

    func read(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        pread(into: UInt64(UInt(bitPattern: buffer.baseAddress)), count: buffer.count, offset: 0)
    }

    func write(from buffer: UnsafeRawBufferPointer) -> Int {
        pwrite(from: UInt64(UInt(bitPattern: buffer.baseAddress)), count: buffer.count, offset: 0)
    }

    func pread(into address: UInt64, count: Int, offset: Int64) -> Int {
        guard ioasid_sys_gettid() == thread else { return -Int(EPERM) }
        let text = Array("\(FaultInjection.nth)\n".utf8)
        guard offset >= 0, offset < Int64(text.count), count > 0 else { return 0 }
        let n = min(count, text.count - Int(offset))
        let rc = text.withUnsafeBytes { ioasid_sys_copy_out(address, $0.baseAddress! + Int(offset), n) }
        return rc == 0 ? n : -Int(EFAULT)
    }

    func pwrite(from address: UInt64, count: Int, offset: Int64) -> Int {
        guard ioasid_sys_gettid() == thread else { return -Int(EPERM) }
        guard count > 0, count < 64 else { return -Int(EINVAL) }
        var bytes = [UInt8](repeating: 0, count: count)
        guard bytes.withUnsafeMutableBytes({ ioasid_sys_copy_in($0.baseAddress, address, count) }) == 0 else { return -Int(EFAULT) }
        guard let n = Self.parse(bytes) else { return -Int(EINVAL) }
        FaultInjection.armNth(n)
        return count
    }

    func release() {}

    var traceKind: String { "fail-nth" }

    /// `kstrtouint(text, 0)`: nil when the text is not one unsigned 32-bit number.
    static func parse(_ bytes: [UInt8]) -> UInt32? {
        KernelNumberText.unsigned(bytes, maximum: UInt64(UInt32.max)).map { UInt32($0) }
    }
}

/// The kernel's fault-injection debugfs knobs (`/sys/kernel/debug/failslab`, `fail_page_alloc`,
/// `fail_usercopy`) as a folder of plain files, shown to the program in place of
/// `/sys/kernel/debug` when fault injection is on (`IOASID_FAULT_INJECTION`). The files hold
/// the kernel's defaults and take whatever is written; only fail-nth and `ioasid run --fail`
/// rules make the engine fail (the knobs' random modes are not modelled).
enum FaultDebugfs {
    /// The knobs every fault attribute has, with the kernel's defaults.
    static let commonKnobs: [(String, String)] = [
        ("probability", "0"), ("interval", "1"), ("times", "1"), ("space", "0"), ("verbose", "2"),
        ("verbose_ratelimit_interval_ms", "5000"), ("verbose_ratelimit_burst", "10"), ("task-filter", "N"),
        ("stacktrace-depth", "32"), ("require-start", "0"), ("require-end", "18446744073709551615"),
        ("reject-start", "0"), ("reject-end", "0"),
    ]

    /// The folders and their extra knobs.
    static let attributes: [(String, [(String, String)])] = [
        ("failslab", [("ignore-gfp-wait", "Y"), ("cache-filter", "N")]),
        ("fail_page_alloc", [("ignore-gfp-wait", "Y"), ("ignore-gfp-highmem", "Y"), ("min-order", "1")]),
        ("fail_usercopy", []),
    ]

    /// Writes the folder under `base`; its path, or nil when it cannot be made.
    static func create(base: String, pid: Int) -> String? {
        var root: String?
        for attempt in 0..<100 {
            let candidate = base + "/ioasid-debugfs-\(pid)-\(attempt)"
            let result = ioasid_sys_mkdirat(IOASID_SYS_AT_FDCWD, candidate, 0o755)
            if result == 0 { root = candidate; break }
            if result != -Int(EEXIST) { return nil }
        }
        guard let root else { return nil }
        for (folder, extra) in attributes {
            let path = root + "/" + folder
            guard ioasid_sys_mkdirat(IOASID_SYS_AT_FDCWD, path, 0o755) == 0 else { return nil }
            for (name, value) in commonKnobs + extra {
                let fd = ioasid_sys_openat(IOASID_SYS_AT_FDCWD, path + "/" + name,
                                           IOASID_SYS_O_WRONLY | IOASID_SYS_O_CREAT | IOASID_SYS_O_CLOEXEC, 0o644)
                guard fd >= 0 else { return nil }
                let text = Array((value + "\n").utf8)
                _ = text.withUnsafeBytes { ioasid_sys_write_all(Int32(fd), $0.baseAddress, $0.count) }
                _ = ioasid_sys_close(Int32(fd))
            }
        }
        return root
    }

    nonisolated(unsafe) private static var removal: (path: String, creator: Int)?

    /// Removes the folder when the process that made it exits (not a forked child).
    static func removeAtExit(_ path: String, creator: Int) {
        guard removal == nil else { return }
        removal = (path, creator)
        atexit {
            guard let (path, creator) = FaultDebugfs.removal, creator == ioasid_sys_getpid() else { return }
            _ = ioasid_sys_remove_tree(path)
        }
    }
}
