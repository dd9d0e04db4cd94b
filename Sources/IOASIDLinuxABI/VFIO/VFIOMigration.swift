import CIOASIDSys
import IOASIDCore
import IOASIDSoftIOMMU
import IOASIDStructures

// vfio's migration interface (include/uapi/linux/vfio.h, "VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE")
// for a modelled device that can save its state (`MigratableDeviceModel`).
//
// States and arcs. The device supports STOP_COPY, P2P and PRE_COPY, so every state of the
// uAPI is reachable. The direct arcs are those vfio.h lists; any other request is carried out as
// the shortest chain of direct arcs whose interior states are not in the saving group (PRE_COPY,
// PRE_COPY_P2P, STOP_COPY), as vfio's core computes it. ERROR cannot be requested; a failed
// RESUMING -> STOP (a stream that is not a complete state of this device) fails with EINVAL and
// leaves the device in ERROR until VFIO_DEVICE_RESET. The device runs (DMA, interrupts) in
// RUNNING and PRE_COPY only: the P2P states stop all its DMA (it cannot tell peer-to-peer DMA
// from other DMA), STOP, STOP_COPY and RESUMING stop it too.
//
// The data stream. A saving session (entered by RUNNING -> PRE_COPY, RUNNING_P2P ->
// PRE_COPY_P2P or STOP -> STOP_COPY) returns a new descriptor; reading it yields records, each a
// 32-bit little-endian length and the model's saved state: one written when PRE_COPY begins
// (the pre-copy "initial bytes"), one when STOP_COPY begins (the final state). In a pre-copy
// state a read with nothing left is ENOMSG (a temporary end of stream); in STOP_COPY it is 0
// (the end). A resuming session (STOP -> RESUMING) takes the same bytes by `write`, in any
// segmentation; leaving RESUMING restores the last record. Leaving a session's states ends it:
// its descriptor then answers ENODEV, as the kernel's drivers do.

/// The states of `enum vfio_device_mig_state`.
public enum VFIOMigrationState: UInt32, Sendable, CaseIterable {
    case error = 0, stop = 1, running = 2, stopCopy = 3, resuming = 4, runningP2P = 5, preCopy = 6, preCopyP2P = 7

    /// Whether the state belongs to the saving group (shares one data session).
    public var isSaving: Bool { self == .preCopy || self == .preCopyP2P || self == .stopCopy }

    /// Whether the device runs (does DMA and sends interrupts) in this state.
    public var deviceRuns: Bool { self == .running || self == .preCopy }

    /// The direct arcs out of this state (vfio.h), those leaving the saving group first.
    public var arcs: [VFIOMigrationState] {
        switch self {
        case .running: [.runningP2P, .preCopy]
        case .runningP2P: [.stop, .running, .preCopyP2P]
        case .stop: [.runningP2P, .stopCopy, .resuming]
        case .stopCopy: [.stop]
        case .resuming: [.stop]
        case .preCopy: [.running, .preCopyP2P]
        case .preCopyP2P: [.runningP2P, .preCopy, .stopCopy]
        case .error: []
        }
    }

    /// The direct arcs from `self` to `target`: the shortest chain whose interior states are not
    /// saving states, except that a chain starting in the saving group may go on within it (the
    /// session continues); among chains of one length, the one that leaves the saving group
    /// first. nil when there is none: from or to ERROR, and from STOP_COPY back to a pre-copy
    /// state (vfio.h forbids those arcs).
    public func path(to target: VFIOMigrationState) -> [VFIOMigrationState]? {
        guard self != .error, target != .error else { return nil }
        if self == .stopCopy, target == .preCopy || target == .preCopyP2P { return nil }
        if self == target { return [] }
        var previous: [VFIOMigrationState: VFIOMigrationState] = [:]
        // States reached without leaving the saving group the chain started in.
        var withinSession: Set<VFIOMigrationState> = isSaving ? [self] : []
        var frontier = [self]
        while !frontier.isEmpty {
            var next: [VFIOMigrationState] = []
            for state in frontier {
                if state != self, state.isSaving, !withinSession.contains(state) { continue }
                for arc in state.arcs where arc != self && previous[arc] == nil {
                    previous[arc] = state
                    if arc.isSaving, withinSession.contains(state) { withinSession.insert(arc) }
                    if arc == target {
                        var chain = [arc]
                        var at = state
                        while at != self { chain.insert(at, at: 0); at = previous[at]! }
                        return chain
                    }
                    next.append(arc)
                }
            }
            frontier = next
        }
        return nil
    }
}

/// The migration state of one device and its data session.
final class VFIOMigration: @unchecked Sendable {
    /// `VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P | VFIO_MIGRATION_PRE_COPY`.
    static let flags: UInt64 = 0b111
    /// The largest stream a resuming session takes.
    static let maximumStream = 1 << 20

    let model: any MigratableDeviceModel
    private struct Current {
        var state: VFIOMigrationState = .running
        var session: VFIOMigrationDataFile?
    }
    private let current = Locked(Current())

    init(model: any MigratableDeviceModel) { self.model = model }

    /// The current state.
    var state: VFIOMigrationState { current.withLock { $0.state } }

    /// The bytes STOP_COPY would stream now (`VFIO_DEVICE_FEATURE_MIG_DATA_SIZE`).
    var stopCopyLength: Int { 4 + model.saveState().count }

    /// Moves to `target` arc by arc; returns the new session's file when the last arc opened one
    /// (the caller installs it). On a failed arc the device stays where that arc began (or
    /// ERROR for a failed restore).
    func set(_ target: VFIOMigrationState) throws(IOMMUError) -> VFIOMigrationDataFile? {
        let result: Result<VFIOMigrationDataFile?, IOMMUError> = current.withLock { c in
            guard let chain = c.state.path(to: target) else {
                return .failure(.invalid("no migration arc to that state"))
            }
            var opened: VFIOMigrationDataFile? = nil
            for next in chain {
                switch (c.state, next) {
                case (.running, .preCopy), (.runningP2P, .preCopyP2P), (.stop, .stopCopy):
                    let file = VFIOMigrationDataFile(migration: self, resuming: false)
                    file.append(record: model.saveState())
                    c.session = file
                    opened = file
                case (.preCopyP2P, .stopCopy):
                    c.session?.append(record: model.saveState())
                case (.stop, .resuming):
                    let file = VFIOMigrationDataFile(migration: self, resuming: true)
                    c.session = file
                    opened = file
                case (.resuming, .stop):
                    let restored = c.session?.lastRecord().map { model.restoreState($0) } ?? false
                    c.session?.end()
                    c.session = nil
                    guard restored else {
                        c.state = .error
                        return .failure(.invalid("the migration data is not a complete device state"))
                    }
                case (.stopCopy, .stop), (.preCopy, .running), (.preCopyP2P, .runningP2P):
                    c.session?.end()
                    c.session = nil
                default: break
                }
                c.state = next
                model.setRunning(next.deviceRuns)
            }
            return .success(opened)
        }
        return try result.get()
    }

    /// `VFIO_DEVICE_RESET` or the device's last close: RUNNING, any session ended.
    func reset() {
        current.withLock { c in
            c.session?.end()
            c.session = nil
            c.state = .running
        }
        model.setRunning(true)
    }

    /// `VFIO_MIG_GET_PRECOPY_INFO` for `file`: initial and dirty bytes, or EINVAL outside the
    /// pre-copy states (or for a session that is not the current one).
    func precopyInfo(_ file: VFIOMigrationDataFile) throws(IOMMUError) -> (initial: Int, dirty: Int) {
        let state = current.withLock { c -> VFIOMigrationState? in c.session === file ? c.state : nil }
        guard let state, state == .preCopy || state == .preCopyP2P else { throw .invalid("not in a pre-copy state") }
        return (file.unread, 0)
    }

    /// Whether the saving session has reached its permanent end of stream (STOP_COPY).
    func isFinal(_ file: VFIOMigrationDataFile) -> Bool {
        current.withLock { c in c.session === file && c.state == .stopCopy }
    }
}

/// The data descriptor of a migration session (`data_fd`).
final class VFIOMigrationDataFile: LinuxFile, @unchecked Sendable {
    /// `VFIO_MIG_GET_PRECOPY_INFO`: `_IO(';', 100 + 21)`.
    static let getPrecopyInfo: UInt = 0x3B79

    private weak var migration: VFIOMigration?
    let resuming: Bool
    private struct Stream {
        var bytes: [UInt8] = []
        var position = 0
        var ended = false
    }
    private let stream = Locked(Stream())

    init(migration: VFIOMigration, resuming: Bool) {
        self.migration = migration
        self.resuming = resuming
    }

    var traceKind: String { "vfio-migration" }

    /// Appends a record (length, bytes) to a saving stream.
    func append(record: [UInt8]) {
        stream.withLock { s in
            withUnsafeBytes(of: UInt32(record.count).littleEndian) { s.bytes.append(contentsOf: $0) }
            s.bytes.append(contentsOf: record)
        }
    }

    /// Ends the session: the descriptor answers ENODEV from now on.
    func end() { stream.withLock { $0.ended = true } }

    /// Bytes not yet read.
    var unread: Int { stream.withLock { $0.bytes.count - $0.position } }

    /// The last complete record of a resuming stream; nil if there is none or bytes trail it.
    func lastRecord() -> [UInt8]? {
        stream.withLock { s in
            var at = 0
            var last: [UInt8]? = nil
            while at < s.bytes.count {
                guard s.bytes.count - at >= 4 else { return nil }
                var length = 0
                for i in 0..<4 { length |= Int(s.bytes[at + i]) << (8 * i) }
                at += 4
                guard s.bytes.count - at >= length else { return nil }
                last = Array(s.bytes[at..<at + length])
                at += length
            }
            return last
        }
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        guard !resuming else { return -Int(EINVAL_) }
        let final = migration.map { $0.isFinal(self) } ?? false
        return stream.withLock { s in
            if s.ended { return -Int(ENODEV_) }
            let n = min(buffer.count, s.bytes.count - s.position)
            if n == 0 { return final ? 0 : -Int(ENOMSG_) }
            let rc = s.bytes.withUnsafeBytes {
                ioasid_sys_copy_out(UInt64(UInt(bitPattern: buffer.baseAddress)), $0.baseAddress! + s.position, n)
            }
            guard rc == 0 else { return -Int(EFAULT_) }
            s.position += n
            return n
        }
    }

    func write(from buffer: UnsafeRawBufferPointer) -> Int {
        guard resuming else { return -Int(EINVAL_) }
        return stream.withLock { s in
            if s.ended { return -Int(ENODEV_) }
            guard buffer.count <= VFIOMigration.maximumStream - s.bytes.count else { return -Int(ENOMEM_) }
            let start = s.bytes.count
            s.bytes.append(contentsOf: repeatElement(0, count: buffer.count))
            let rc = s.bytes.withUnsafeMutableBytes {
                ioasid_sys_copy_in($0.baseAddress! + start, UInt64(UInt(bitPattern: buffer.baseAddress)), buffer.count)
            }
            guard rc == 0 else { s.bytes.removeLast(buffer.count); return -Int(EFAULT_) }
            return buffer.count
        }
    }

    func ioctl(request: UInt, argument: UnsafeMutableRawPointer?) -> Int {
        guard IOCTL.normalized(request) == Self.getPrecopyInfo else { return -Int(ENOTTY_) }
        guard !resuming, let migration else { return -Int(EINVAL_) }
        if stream.withLock({ $0.ended }) { return -Int(ENODEV_) }
        let user = UInt64(UInt(bitPattern: argument))
        do throws(IOMMUError) {
            // struct vfio_precopy_info { u32 argsz, flags; u64 initial_bytes, dirty_bytes }
            guard try VFIODeviceRequests.argsz(user, minimum: 24) >= 24 else { return -Int(EINVAL_) }
            let info = try migration.precopyInfo(self)
            try VFIODeviceRequests.store32(user, 4, 0)
            try VFIODeviceRequests.store64(user, 8, UInt64(info.initial))
            try VFIODeviceRequests.store64(user, 16, UInt64(info.dirty))
            return 0
        } catch {
            return -Int(error.errno)
        }
    }

    func release() { end() }
}

let ENOMSG_: Int32 = 42
let EFAULT_: Int32 = 14
let ENOMEM_: Int32 = 12
