import Glibc
import IOASIDCore

// `ioasid run --trace`: one line per call on every descriptor ioasid serves.
//
// The format (docs/architecture.md, "Trace"):
//
//     KIND:FD CALL KEY=VALUE ... -> RESULT [(NOTE)] [+DURATION]
//
// - KIND names the file (`iommu`, `fault-queue`, `vevent-queue`, `access`, `vfioN` for a VFIO
//   device cdev); FD is the descriptor the call was made on (`-` when the call names none).
// - CALL is the ioctl's name (`IOMMU_IOAS_MAP`, `ioctl 0x3b7f` when unknown), or `open`, `read`,
//   `write`, `mmap`, `munmap`, `dup`, `close`.
// - Arguments as KEY=VALUE, each key at most once per line. IDs, counts, sizes of structures
//   and buffers, types, ops and indices are decimal; flags, masks, register values,
//   addresses, IOVAs and the lengths of IOVA or address spans are hex (`0x…`).
// - RESULT is the value returned (hex for `mmap`'s address), or the errno by name
//   (`-ENOENT`), followed by the reason in parentheses. When the size of an argument is the
//   error, `size=N` is on the line.
// - With `--trace-time`, ` +1.2us`: the call's duration on the monotonic clock.
//
// The sink adds the `[pid N] ` prefix and writes each line with one write(2).

/// One trace line under construction: the formatting rules in one place.
///
/// A `TraceLine` exists only while tracing; the untraced paths carry `nil` and build nothing.
public struct TraceLine: Sendable, CustomStringConvertible {
    private let kind: String
    private var fd: Int32?
    private var body = ""
    private var keys: [Substring] = []
    private var finished = false

    /// A line for a call on the descriptor `fd` (nil: the call names no descriptor) of a file of
    /// `kind`. The call's name comes next (`call(_:)`).
    public init(kind: String, fd: Int32?) {
        self.kind = kind
        self.fd = fd
    }

    /// Sets the descriptor the line is about (an `open` learns it from its result).
    public mutating func setDescriptor(_ fd: Int32) {
        self.fd = fd
    }

    /// Names the call (`IOMMU_IOAS_MAP`, `read`, …). A second call replaces nothing: the first
    /// name given stays (a file may name a call more precisely before a generic fallback runs).
    public mutating func call(_ name: String) {
        guard !hasCall else { return }
        body += " " + name
        hasCall = true
    }

    /// Whether the call has been named.
    public private(set) var hasCall = false

    /// The name of an ioctl request: its uAPI name, else `ioctl 0x…`.
    public static func requestName(_ request: UInt) -> String {
        if let name = IOCTL.name(of: request) { return name }
        if let row = IOASIDUAPI.allRequests.first(where: { $0.request == IOCTL.normalized(request) }) { return row.name }
        return "ioctl 0x" + String(IOCTL.normalized(request), radix: 16)
    }

    /// `key=value` in decimal: IDs, counts, sizes of structures and buffers, types, ops, indices.
    public mutating func decimal<T: BinaryInteger>(_ key: String, _ value: T) {
        argument(key, String(value))
    }

    /// `key=0x…`: flags, masks, register values, addresses, IOVAs, lengths of address spans.
    public mutating func hex<T: BinaryInteger>(_ key: String, _ value: T) {
        argument(key, "0x" + String(value, radix: 16))
    }

    /// `key=text` (a path, a name).
    public mutating func text(_ key: String, _ value: String) {
        argument(key, value)
    }

    /// Adds `key=value`; a key already on the line is not written again (the first value stays).
    private mutating func argument(_ key: String, _ value: String) {
        guard !finished, !keys.contains(Substring(key)) else { return }
        keys.append(Substring(key))
        body += " " + key + "=" + value
    }

    /// Whether `key` is on the line already.
    public func contains(_ key: String) -> Bool { keys.contains(Substring(key)) }

    /// Ends the arguments with the call's result: `-> N`, or `-> -ENAME` for a negated errno.
    public mutating func result(_ value: Int, hex: Bool = false) {
        guard !finished else { return }
        finished = true
        if value < 0 {
            body += " -> -" + Self.errnoName(Int32(clamping: -value))
        } else {
            body += " -> " + (hex ? "0x" + String(value, radix: 16) : String(value))
        }
    }

    /// Ends the arguments with a failure: `-> -ENAME (reason)`.
    public mutating func failure(_ error: IOMMUError) {
        failure(errno: error.errno, reason: "\(error.reason)")
    }

    /// Ends the arguments with a failure: `-> -ENAME (reason)`.
    public mutating func failure(errno: Int32, reason: String) {
        guard !finished else { return }
        result(-Int(errno))
        note(reason)
    }

    /// A note after the result, in parentheses (why it failed; what else happened).
    public mutating func note(_ note: String) {
        body += " (" + note + ")"
    }

    /// Whether the result has been written.
    public var hasResult: Bool { finished }

    /// Appends the call's duration, ` +1.2us`.
    public mutating func duration(nanoseconds: UInt64) {
        body += " +" + Self.formatDuration(nanoseconds)
    }

    /// The line (without the pid prefix and newline the sink adds).
    public var description: String { kind + ":" + (fd.map { String($0) } ?? "-") + body }

    // MARK: Rules

    /// `850ns`, `1.2us`, `3.4ms`, `1.5s`.
    public static func formatDuration(_ nanoseconds: UInt64) -> String {
        func oneDecimal(_ value: UInt64, _ unit: UInt64, _ suffix: String) -> String {
            let tenths = (value * 10 + unit / 2) / unit
            return "\(tenths / 10).\(tenths % 10)" + suffix
        }
        if nanoseconds < 1_000 { return "\(nanoseconds)ns" }
        if nanoseconds < 1_000_000 { return oneDecimal(nanoseconds, 1_000, "us") }
        if nanoseconds < 1_000_000_000 { return oneDecimal(nanoseconds, 1_000_000, "ms") }
        return oneDecimal(nanoseconds, 1_000_000_000, "s")
    }

    /// Whether a uAPI field (its last name component) is shown in hex: flags, masks, register
    /// values and permissions; addresses, IOVAs and lengths of address spans. Everything else
    /// (IDs, counts, byte sizes of buffers, types, ops, indices, values) is decimal.
    public static func isHexField(_ name: Substring) -> Bool {
        if name.hasSuffix("flags") || name.hasSuffix("iova") || name.hasSuffix("uptr") || name.hasSuffix("_ptr")
            || name.hasSuffix("_addr") || name.hasSuffix("_reg") || name.hasSuffix("_va") { return true }
        return hexFields.contains(name)
    }

    private static let hexFields: Set<Substring> = [
        "addr", "vaddr", "data", "start", "last", "length", "size", "allowed_iovas", "iova_ranges", "page_size",
        "iova_pgsizes", "out_iova_alignment", "out_capabilities", "out_mmap_offset", "out_mmap_length",
        "out_vintf_mmap_offset", "out_vintf_mmap_length", "perm", "efr", "efr2", "idr", "iidr", "aidr", "dte",
        "ste", "cmd", "evt", "iotlb", "cache", "lvcmdq_err_map",
    ]

    /// The name of an errno (`ENOTTY`), or `errno N`.
    public static func errnoName(_ e: Int32) -> String {
        switch e {
        case 1: "EPERM"; case 2: "ENOENT"; case 3: "ESRCH"; case 4: "EINTR"; case 5: "EIO"; case 6: "ENXIO"
        case 7: "E2BIG"; case 9: "EBADF"; case 11: "EAGAIN"; case 12: "ENOMEM"; case 13: "EACCES"
        case 14: "EFAULT"; case 16: "EBUSY"; case 17: "EEXIST"; case 19: "ENODEV"; case 22: "EINVAL"
        case 23: "ENFILE"; case 24: "EMFILE"; case 25: "ENOTTY"; case 28: "ENOSPC"; case 29: "ESPIPE"
        case 34: "ERANGE"; case 35: "EDEADLOCK"; case 38: "ENOSYS"; case 52: "EBADE"; case 61: "ENODATA"
        case 75: "EOVERFLOW"; case 77: "EBADFD"; case 90: "EMSGSIZE"; case 95: "EOPNOTSUPP"
        case 98: "EADDRINUSE"; case 110: "ETIMEDOUT"
        default: "errno \(e)"
        }
    }
}

/// Traces the calls made on the files of the Linux binary interface: runs each call and writes
/// one `TraceLine` for it. The engine calls through a tracer only while tracing is on; the
/// untraced entry points call the files directly.
public struct CallTracer: Sendable {
    /// Whether each line ends with the call's duration.
    public let timing: Bool
    private let emit: @Sendable (String) -> Void

    /// A tracer that hands each finished line (no newline) to `emit`.
    public init(timing: Bool = false, emit: @escaping @Sendable (String) -> Void) {
        self.timing = timing
        self.emit = emit
    }

    /// `ioctl(fd, request, argument)` on `file`, traced.
    public func ioctl(_ file: any LinuxFile, fd: Int32, request: UInt, argument: UnsafeMutableRawPointer?) -> Int {
        traced(file, fd) { line in file.ioctl(request: request, argument: argument, trace: &line) }
    }

    /// `read(fd, buffer, count)` on `file`, traced.
    public func read(_ file: any LinuxFile, fd: Int32, into buffer: UnsafeMutableRawBufferPointer) -> Int {
        traced(file, fd) { line in file.read(into: buffer, trace: &line) }
    }

    /// `write(fd, buffer, count)` on `file`, traced.
    public func write(_ file: any LinuxFile, fd: Int32, from buffer: UnsafeRawBufferPointer) -> Int {
        traced(file, fd) { line in file.write(from: buffer, trace: &line) }
    }

    /// `mmap(address, length, protection, flags, fd, offset)` on `file`, traced.
    public func mmap(_ file: any LinuxFile, fd: Int32, address: UnsafeMutableRawPointer?, length: Int, protection: Int32,
                     flags: Int32, offset: Int) -> Int {
        traced(file, fd) { line in
            file.mmap(address: address, length: length, protection: protection, flags: flags, offset: offset, trace: &line)
        }
    }

    /// A call the front door answers itself (open, dup, close, munmap): `body` describes it on
    /// the line and returns the result.
    public func call(kind: String, fd: Int32?, _ body: (inout TraceLine) -> Int) -> Int {
        var line = TraceLine(kind: kind, fd: fd)
        let start = timing ? Self.now() : 0
        let r = body(&line)
        finish(&line, result: r, start: start)
        return r
    }

    private func traced(_ file: any LinuxFile, _ fd: Int32, _ body: (inout TraceLine?) -> Int) -> Int {
        var line: TraceLine? = TraceLine(kind: file.traceKind, fd: fd)
        let start = timing ? Self.now() : 0
        let r = body(&line)
        finish(&line!, result: r, start: start)
        return r
    }

    private func finish(_ line: inout TraceLine, result: Int, start: UInt64) {
        if !line.hasResult { line.result(result) }
        if timing { line.duration(nanoseconds: Self.now() &- start) }
        emit(line.description)
    }

    /// The monotonic clock in nanoseconds.
    static func now() -> UInt64 {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return UInt64(t.tv_sec) * 1_000_000_000 + UInt64(t.tv_nsec)
    }
}

extension TraceLine {
    /// `mmap addr=… length=… prot=… flags=… offset=…`.
    public mutating func mmapArguments(address: UnsafeMutableRawPointer?, length: Int, protection: Int32, flags: Int32, offset: Int) {
        call("mmap")
        hex("addr", UInt(bitPattern: address))
        hex("length", UInt(bitPattern: length))
        hex("prot", UInt32(bitPattern: protection))
        hex("flags", UInt32(bitPattern: flags))
        hex("offset", UInt(bitPattern: offset))
    }

    /// Every field of a uAPI struct in `buffer` (its layout table), except padding, reserved
    /// fields and the leading `size`; union members are filtered by `keep`. A field whose short
    /// name is on the line already is written under its dotted name.
    mutating func fields(of type: any UAPIStruct.Type, in buffer: UnsafeRawPointer,
                         skipping skip: (String) -> Bool = { _ in false }) {
        for f in type.layoutFields where !f.name.hasPrefix("__") && !f.name.contains("__reserved")
            && !((f.name == "size" || f.name == "argsz") && f.offset == 0) && !f.name.hasSuffix(".pad") && f.name != "pad" && !skip(f.name) {
            let v: UInt64
            switch f.size {
            case 1: v = UInt64(buffer.load(fromByteOffset: f.offset, as: UInt8.self))
            case 2: v = UInt64(buffer.loadUnaligned(fromByteOffset: f.offset, as: UInt16.self))
            case 4: v = UInt64(buffer.loadUnaligned(fromByteOffset: f.offset, as: UInt32.self))
            case 8: v = buffer.loadUnaligned(fromByteOffset: f.offset, as: UInt64.self)
            default: continue
            }
            let short = f.name.split(separator: ".").last ?? Substring(f.name)
            let key = contains(String(short)) ? f.name : String(short)
            if Self.isHexField(short) { hex(key, v) } else { decimal(key, v) }
        }
    }
}
