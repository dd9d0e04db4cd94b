// A PCI function that does DMA through an IOMMU: PASID, ATS (with an ATC) and PRI.
//
// The DMA engine moves a buffer page by page. For each page it needs a translation:
//   - with ATS enabled, from its ATC, or by an ATS translation request whose result it caches;
//     the access then goes out as a translated request (the IOMMU only checks it);
//   - without ATS, by sending the access untranslated and letting the IOMMU translate it.
// When the page is not accessible (an ATS completion without the rights, or a recoverable fault
// of an untranslated request) and PRI is enabled, the function sends a page request group for
// the page and parks the operation: the synchronous API returns `.waitingForPageResponse`, and
// `resume(_:)` continues it once the response has arrived (the `...WaitingForPages` async
// variants do that themselves). A success response lets it retry; Invalid Request fails it;
// Response Failure fails it and stops the function's PRI (as PCIe specifies).
//
// ATC invalidation is exact: each page's translate-and-access runs as a reader of `inFlight`,
// and `invalidate(_:)` removes the entries and then takes the writer side, so it returns (the
// Invalidate Completion) only after every access that might still use a removed translation
// has finished. A translation obtained while an invalidation ran is used for that one access
// (which completes before the invalidation does) but not cached (the cache's fill ticket).
//
// The bulk paths (`read(into:)`, `write(from:)`, `copy`) keep this exactness: each page (each
// source/destination page pair of a copy) is translated and accessed inside one reader section.
// The same writer side is `drainDMA()`, which an IOMMU calls before completing an invalidation
// wait: so no DMA, with or without ATS, lands after it with a translation it removed.
//
// Locks: `state` (control bits, page request bookkeeping) is a leaf lock. `inFlight` is held
// across calls into the IOMMU; so an IOMMU must not call `invalidate(_:)` while holding a lock
// its translate methods take.

import IOASIDStructures
import Synchronization

/// Why a function's DMA (or page request) failed.
public enum DMAError: Error, Hashable, Sendable {
    /// A PASID was given but the function has no PASID capability or it is not enabled.
    case pasidNotEnabled
    /// The PASID does not fit in the capability's Max PASID Width: the function never sends it.
    case pasidOutOfRange(PASID)
    /// Privileged or execute access was asked without a PASID, or the capability lacks it.
    case unsupportedAccess
    /// The IOMMU refused an untranslated request (unrecoverable, or PRI not available).
    case fault(FaultRecord)
    /// An ATS completion granted too few rights and PRI is not available.
    case noTranslation(address: UInt64)
    /// An ATS translation request failed (Unsupported Request or Completer Abort).
    case translationRequestFailed(ATSCompletion)
    /// The page request group was answered with Invalid Request or Response Failure.
    case pageRequestFailed(PageResponseCode)
    /// PRI is not enabled, or stopped after a Response Failure (until software re-enables it).
    case pageRequestsStopped
    /// Sending the page requests would exceed the Outstanding Page Request Allocation.
    case pageRequestLimit
    /// The translated address is not backed by RAM (the memory's error).
    case memory(PhysicalMemoryError)
}

/// A DMA operation parked until the response to its page request group arrives.
/// `Value` is what the operation produces: `[UInt8]` for a read, `Void` for a write.
public struct PendingDMA<Value>: Hashable, @unchecked Sendable {
    let operation: PCIFunction.Operation
    /// The page request group the operation waits for.
    public let groupIndex: UInt16
    /// The page (untranslated address) it asked for.
    public let address: UInt64

    /// The same parked operation and group.
    public static func == (a: Self, b: Self) -> Bool { a.operation === b.operation && a.groupIndex == b.groupIndex }
    /// Hashes the operation's identity and the group.
    public func hash(into h: inout Hasher) { h.combine(ObjectIdentifier(operation)); h.combine(groupIndex) }
}

/// The outcome of a synchronous DMA call.
public enum DMAResult<Value> {
    /// All bytes moved; a read's data.
    case completed(Value)
    /// A page was not accessible: a page request group was sent; call
    /// ``PCIFunction/resume(_:)-(PendingDMA<[UInt8]>)`` after the response has arrived.
    case waitingForPageResponse(PendingDMA<Value>)
    /// The DMA failed; bytes before the failing page may have moved.
    case failed(DMAError)
}

extension DMAResult: Sendable where Value: Sendable {}

/// A PCI function (an endpoint) with a requester ID and optional PASID, ATS and PRI
/// capabilities, doing DMA through a ``TranslationAgent``. Thread-safe.
public final class PCIFunction: DeviceEndpoint, @unchecked Sendable {
    /// What the function's capability structures advertise.
    public struct Capabilities: Hashable, Sendable {
        /// PASID capability: Max PASID Width (1–20); nil without the capability.
        public var pasidWidth: Int?
        /// PASID capability: Execute Permission Supported.
        public var executePermission: Bool
        /// PASID capability: Privileged Mode Supported.
        public var privilegedMode: Bool
        /// ATS capability, with the geometry of the function's ATC; nil without it.
        public var ats: TranslationCache.Configuration?
        /// PRI capability: Outstanding Page Request Capacity; nil without it (PRI needs ATS).
        public var pageRequestCapacity: Int?

        /// Creates capabilities; the defaults are a plain function without PASID, ATS or PRI.
        public init(pasidWidth: Int? = nil, executePermission: Bool = false, privilegedMode: Bool = false,
                    ats: TranslationCache.Configuration? = nil, pageRequestCapacity: Int? = nil) {
            precondition(pasidWidth.map { (1...PASID.maxWidth).contains($0) } ?? true, "Max PASID Width is 1...20")
            precondition(pageRequestCapacity == nil || ats != nil, "PRI requires ATS")
            precondition(pageRequestCapacity.map { $0 > 0 } ?? true, "PRI capacity must be positive")
            self.pasidWidth = pasidWidth
            self.executePermission = executePermission
            self.privilegedMode = privilegedMode
            self.ats = ats
            self.pageRequestCapacity = pageRequestCapacity
        }
    }

    /// The enable bits and settings software writes into the capabilities.
    public struct Control: Hashable, Sendable {
        /// PASID Enable.
        public var pasid = false
        /// ATS Enable. Clearing it empties the ATC.
        public var ats = false
        /// PRI Enable. Setting it clears a stop after Response Failure.
        public var pri = false
        /// Outstanding Page Request Allocation (at most the capacity; 0: the capacity).
        public var pageRequestAllocation = 0
        /// Creates control bits (everything disabled).
        public init(pasid: Bool = false, ats: Bool = false, pri: Bool = false, pageRequestAllocation: Int = 0) {
            self.pasid = pasid
            self.ats = ats
            self.pri = pri
            self.pageRequestAllocation = pageRequestAllocation
        }
    }

    /// The PRI status bits.
    public struct PRIStatus: Hashable, Sendable {
        /// Response Failure was received; no page requests are sent until PRI is re-enabled.
        public var responseFailure = false
        /// A response named a group with no outstanding requests (Unexpected PRG Index).
        public var unexpectedResponse = false
    }

    /// The function's requester ID.
    public let requesterID: RequesterID
    /// Its capabilities.
    public let capabilities: Capabilities
    /// The IOMMU in front of it.
    public let iommu: any TranslationAgent
    /// The IOMMU's memory (where translated requests land), kept so a DMA need not ask for it.
    private let memory: PhysicalMemory
    /// The address translation cache (with the ATS capability): domain 0, space = PASID.
    public let atc: TranslationCache?

    /// A DMA operation in progress (parked while it waits for a page response).
    final class Operation: @unchecked Sendable {
        let isWrite: Bool
        let pasid: PASID?
        let privileged: Bool
        let execute: Bool
        let address: UInt64
        /// A write's source or a read's destination.
        var data: [UInt8]
        /// Bytes moved so far (accessed only by the one caller running the operation).
        var done = 0
        /// Set under `state` by `receive(_:)`.
        var response: PageResponseCode?
        var continuation: CheckedContinuation<Void, Never>?

        init(isWrite: Bool, pasid: PASID?, privileged: Bool, execute: Bool, address: UInt64, data: [UInt8]) {
            self.isWrite = isWrite
            self.pasid = pasid
            self.privileged = privileged
            self.execute = execute
            self.address = address
            self.data = data
        }
    }

    /// What `lock` protects.
    private struct State {
        var control = Control()
        var priStatus = PRIStatus()
        /// Outstanding groups: requests in the group, and the operation waiting for it (none for
        /// groups sent with `requestPages`).
        var groups: [UInt16: (requests: Int, operation: Operation?)] = [:]
        var outstandingRequests = 0
        var nextGroup: UInt16 = 0
    }
    private let lock = Lock()
    private var state = State()
    /// `state.control` as one word (bit 0 PASID, 1 ATS, 2 PRI, 63:8 the allocation), stored
    /// under `lock` whenever it changes, so that a DMA reads it without the lock.
    private let controlWord = Atomic<UInt64>(0)

    /// The enable bits as a DMA sees them (no lock).
    @inline(__always)
    private var currentControl: Control {
        let w = controlWord.load(ordering: .acquiring)
        return Control(pasid: w & 1 != 0, ats: w & 2 != 0, pri: w & 4 != 0, pageRequestAllocation: Int(truncatingIfNeeded: w >> 8))
    }
    /// DMA accesses are readers; ATC invalidation drains them as the writer.
    private let inFlight = ReadMostlyLock()

    /// Creates a function and connects it to `iommu`.
    public init(requesterID: RequesterID, capabilities: Capabilities = Capabilities(), iommu: any TranslationAgent) {
        self.requesterID = requesterID
        self.capabilities = capabilities
        self.iommu = iommu
        memory = iommu.memory
        atc = capabilities.ats.map { TranslationCache($0) }
        iommu.connect(self)
    }

    // MARK: Configuration

    /// The enable bits. Setting bits the capabilities lack traps.
    public var control: Control {
        get { lock.withLock { state.control } }
        set {
            precondition(!newValue.pasid || capabilities.pasidWidth != nil, "no PASID capability")
            precondition(!newValue.ats || capabilities.ats != nil, "no ATS capability")
            precondition(!newValue.pri || capabilities.pageRequestCapacity != nil, "no PRI capability")
            precondition(newValue.pageRequestAllocation >= 0 && newValue.pageRequestAllocation <= (capabilities.pageRequestCapacity ?? 0),
                         "allocation beyond the capacity")
            let flush = lock.withLock {
                let old = state.control
                state.control = newValue
                controlWord.store((newValue.pasid ? 1 : 0) | (newValue.ats ? 2 : 0) | (newValue.pri ? 4 : 0)
                                  | UInt64(newValue.pageRequestAllocation) << 8, ordering: .releasing)
                if newValue.pri && !old.pri { state.priStatus = PRIStatus() }
                return old.ats && !newValue.ats
            }
            if flush { _ = invalidate(.all()) }
        }
    }

    /// Enables every capability the function has (with the full page request allocation).
    public func enableAll() {
        control = Control(pasid: capabilities.pasidWidth != nil, ats: capabilities.ats != nil,
                          pri: capabilities.pageRequestCapacity != nil, pageRequestAllocation: capabilities.pageRequestCapacity ?? 0)
    }

    /// The PRI status bits.
    public var priStatus: PRIStatus { lock.withLock { state.priStatus } }

    /// Page requests sent and not yet answered.
    public var outstandingPageRequests: Int { lock.withLock { state.outstandingRequests } }

    // MARK: DMA

    /// Reads `count` bytes at untranslated `address` in the address space of `pasid` (none: the
    /// requester's own).
    public func read(pasid: PASID? = nil, address: UInt64, count: Int, privileged: Bool = false,
                     execute: Bool = false) -> DMAResult<[UInt8]> {
        let op = Operation(isWrite: false, pasid: pasid, privileged: privileged, execute: execute, address: address,
                           data: [UInt8](repeating: 0, count: count))
        return finish(op, run(op))
    }

    /// Writes `bytes` at untranslated `address` in the address space of `pasid`.
    public func write(pasid: PASID? = nil, address: UInt64, bytes: [UInt8], privileged: Bool = false) -> DMAResult<Void> {
        let op = Operation(isWrite: true, pasid: pasid, privileged: privileged, execute: false, address: address, data: bytes)
        return finish(op, run(op))
    }

    /// Continues a read parked for a page response: still waiting if the response has not
    /// arrived; else it retries (success) or fails.
    public func resume(_ pending: PendingDMA<[UInt8]>) -> DMAResult<[UInt8]> {
        finish(pending.operation, proceed(pending.operation, pending.groupIndex))
    }

    /// Continues a write parked for a page response (see the read variant).
    public func resume(_ pending: PendingDMA<Void>) -> DMAResult<Void> {
        finish(pending.operation, proceed(pending.operation, pending.groupIndex))
    }

    /// Whether the response for `pending`'s group has arrived (so ``resume(_:)-(PendingDMA<[UInt8]>)`` will not wait).
    public func isAnswered<V>(_ pending: PendingDMA<V>) -> Bool {
        lock.withLock { pending.operation.response != nil }
    }

    /// Reads like ``read(pasid:address:count:privileged:execute:)``, but waits for page responses
    /// and retries until the read completes or fails.
    public func readWaitingForPages(pasid: PASID? = nil, address: UInt64, count: Int, privileged: Bool = false,
                                    execute: Bool = false) async throws(DMAError) -> [UInt8] {
        var result = read(pasid: pasid, address: address, count: count, privileged: privileged, execute: execute)
        while true {
            switch result {
            case .completed(let data): return data
            case .failed(let error): throw error
            case .waitingForPageResponse(let p):
                await waitForResponse(p.operation)
                result = resume(p)
            }
        }
    }

    /// Writes like ``write(pasid:address:bytes:privileged:)``, but waits for page responses and
    /// retries until the write completes or fails.
    public func writeWaitingForPages(pasid: PASID? = nil, address: UInt64, bytes: [UInt8],
                                     privileged: Bool = false) async throws(DMAError) {
        var result = write(pasid: pasid, address: address, bytes: bytes, privileged: privileged)
        while true {
            switch result {
            case .completed: return
            case .failed(let error): throw error
            case .waitingForPageResponse(let p):
                await waitForResponse(p.operation)
                result = resume(p)
            }
        }
    }

    private func waitForResponse(_ op: Operation) async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now: Bool = lock.withLock {
                if op.response != nil { return true }
                op.continuation = c
                return false
            }
            if now { c.resume() }
        }
    }

    /// Where an operation stands after running.
    private enum Outcome {
        case completed
        case waiting(group: UInt16, address: UInt64)
        case failed(DMAError)
    }

    private func finish<V>(_ op: Operation, _ outcome: Outcome) -> DMAResult<V> {
        switch outcome {
        case .completed: .completed((op.isWrite ? () as Any : op.data as Any) as! V)
        case .waiting(let group, let address):
            .waitingForPageResponse(PendingDMA(operation: op, groupIndex: group, address: address))
        case .failed(let e): .failed(e)
        }
    }

    /// Continues `op` after its page response (or reports that it still waits).
    private func proceed(_ op: Operation, _ group: UInt16) -> Outcome {
        let response: PageResponseCode? = lock.withLock {
            let r = op.response
            if r != nil { op.response = nil }
            return r
        }
        switch response {
        case nil: return .waiting(group: group, address: (op.address + UInt64(op.done)) & ~0xFFF)
        case .success: return run(op)
        case .invalidRequest: return .failed(.pageRequestFailed(.invalidRequest))
        case .responseFailure: return .failed(.pageRequestFailed(.responseFailure))
        }
    }

    /// Moves the rest of `op`'s bytes, page by page.
    private func run(_ op: Operation) -> Outcome {
        let control = currentControl
        if let e = refusal(pasid: op.pasid, privileged: op.privileged, execute: op.execute, control: control) { return .failed(e) }
        var access: AccessPermissions = op.isWrite ? .write : .read
        if op.execute { access.insert(.execute) }
        while op.done < op.data.count {
            let address = op.address &+ UInt64(op.done)
            let step = pageStep(op, address, access, useATS: control.ats)
            switch step {
            case .moved(let n): op.done += n
            case .failed(let e): return .failed(e)
            case .needsPage(let fault):
                guard control.pri else { return .failed(fault) }
                switch sendPageRequests(pasid: op.pasid, privileged: op.privileged, pages: [(address & ~0xFFF, access)], waiting: op) {
                case .success(let group): return .waiting(group: group, address: address & ~0xFFF)
                case .failure(let e): return .failed(e)
                }
            }
        }
        return .completed
    }

    private enum Step {
        case moved(Int)
        case needsPage(DMAError)
        case failed(DMAError)
    }

    /// Translates the page containing `address` and moves the bytes of `op` that fall in it.
    private func pageStep(_ op: Operation, _ address: UInt64, _ access: AccessPermissions, useATS: Bool) -> Step {
        inFlight.withReadLock {
            let output: UInt64, n: Int
            switch translatePage(pasid: op.pasid, privileged: op.privileged, address: address, access: access,
                                 remaining: op.data.count - op.done, useATS: useATS) {
            case .translated(let o, let length): (output, n) = (o, length)
            case .needsPage(let e): return .needsPage(e)
            case .failed(let e): return .failed(e)
            }
            let done = op.done
            let result: Result<Void, PhysicalMemoryError>
            if op.isWrite {
                result = op.data.withUnsafeBytes { b in
                    Result { () throws(PhysicalMemoryError) in
                        try memory.write(UnsafeRawBufferPointer(rebasing: b[done..<(done + n)]), at: output)
                    }
                }
            } else {
                result = op.data.withUnsafeMutableBytes { b in
                    Result { () throws(PhysicalMemoryError) in
                        try memory.read(UnsafeMutableRawBufferPointer(rebasing: b[done..<(done + n)]), at: output)
                    }
                }
            }
            if case .failure(let e) = result { return .failed(.memory(e)) }
            return .moved(n)
        }
    }

    /// What one page's translation gave.
    private enum PageTranslation {
        /// Access `length` bytes at translated `output`.
        case translated(output: UInt64, length: Int)
        /// Not accessible, but a page request could make it so (the fault or ATS result).
        case needsPage(DMAError)
        /// Not accessible.
        case failed(DMAError)
    }

    /// Translates the page containing `address` for up to `remaining` bytes of `access`: through
    /// the ATC (and an ATS translation request on a miss) when `useATS`, then by the IOMMU (which
    /// translates an untranslated request or checks a translated one). The caller holds the
    /// reader side of `inFlight` until it has finished the access.
    @inline(__always)
    private func translatePage(pasid: PASID?, privileged: Bool, address: UInt64, access: AccessPermissions,
                               remaining: Int, useATS: Bool) -> PageTranslation {
        // Untranslated requests stop at the 4 KiB boundary (a PCIe request never crosses one);
        // translated ones at the end of the ATC's translation.
        var request = DMARequest(requesterID: requesterID, pasid: pasid, privileged: privileged, address: address,
                                 access: access, length: min(UInt64(remaining), (address | 0xFFF) &- address &+ 1))
        if useATS, let atc {
            let tag = TranslationTag(pasid: pasid, privileged: privileged)
            var cached = atc.lookup(tag, address: address)
            if let t = cached, !t.permissions.isSuperset(of: access) { cached = nil }
            if cached == nil {
                let ticket = atc.fillTicket()
                // A translation request always asks for read; ask for write too (NW = 0) so that
                // reads and writes can share the entry.
                let ats = ATSTranslationRequest(requesterID: requesterID, pasid: pasid, privileged: privileged,
                                                address: address, access: access.union(.readWrite))
                switch iommu.translate(ats) {
                case .translated(let t) where t.contains(address):
                    if !t.permissions.isEmpty { atc.insert(t, tag: tag, covering: address, ifUnchangedSince: ticket) }
                    guard t.permissions.isSuperset(of: access) else { return .needsPage(.noTranslation(address: address)) }
                    cached = t
                case .translated: return .failed(.translationRequestFailed(.completerAbort))
                case let other: return .failed(.translationRequestFailed(other))
                }
            }
            let t = cached!
            request.address = t.output(for: address)
            request.length = min(UInt64(remaining), t.inputBase &+ (t.size &- 1) &- address &+ 1)
            request.addressType = .translated
        }
        let target: Translation
        switch iommu.translate(request) {
        case .success(let t): target = t
        case .failure(let fault):
            let recoverable = fault.recoverable && request.addressType == .untranslated
            return recoverable ? .needsPage(.fault(fault)) : .failed(.fault(fault))
        }
        // Stay within the page the IOMMU translated.
        let n = Int(min(request.length, target.inputBase &+ (target.size &- 1) &- request.address &+ 1))
        return .translated(output: target.output(for: request.address), length: n)
    }

    /// Why a request may not be sent at all (PASID not enabled or too wide, privileged or
    /// execute access the function cannot ask for), or nil.
    private func refusal(pasid: PASID?, privileged: Bool, execute: Bool, control: Control) -> DMAError? {
        if let pasid {
            guard control.pasid, let width = capabilities.pasidWidth else { return .pasidNotEnabled }
            guard pasid.fits(width: width) else { return .pasidOutOfRange(pasid) }
            if privileged && !capabilities.privilegedMode { return .unsupportedAccess }
            if execute && !capabilities.executePermission { return .unsupportedAccess }
        } else if privileged || execute {
            return .unsupportedAccess
        }
        return nil
    }

    // MARK: Bulk DMA (no allocation)
    //
    // The same translation and fault semantics as `read`/`write` (and the same exactness against
    // ATC invalidation: each page's translate-and-access is one reader section of `inFlight`), for
    // device models that move data by the megabyte: the caller's buffers instead of arrays, and a
    // memory-to-memory copy that never stages the data. These never send page requests: a page
    // that only a page request could make accessible fails the access with its fault, as when PRI
    // is off. Bytes before the failing page may have moved.

    /// Which side of a memory-to-memory copy failed.
    public enum CopyFailure: Error, Hashable, Sendable {
        /// Reading the source failed.
        case read(DMAError)
        /// Writing the destination failed.
        case write(DMAError)
    }

    /// Reads `buffer.count` bytes at untranslated `address` (in the address space of `pasid`)
    /// into `buffer`. Allocates nothing.
    public func read(pasid: PASID? = nil, address: UInt64, into buffer: UnsafeMutableRawBufferPointer,
                     privileged: Bool = false) -> Result<Void, DMAError> {
        bulk(pasid: pasid, privileged: privileged, address: address, count: buffer.count, access: .read) { (done, n, output) throws(PhysicalMemoryError) in
            try memory.read(UnsafeMutableRawBufferPointer(rebasing: buffer[done..<(done + n)]), at: output)
        }
    }

    /// Writes `bytes` at untranslated `address` (in the address space of `pasid`). Allocates nothing.
    public func write(pasid: PASID? = nil, address: UInt64, from bytes: UnsafeRawBufferPointer,
                      privileged: Bool = false) -> Result<Void, DMAError> {
        bulk(pasid: pasid, privileged: privileged, address: address, count: bytes.count, access: .write) { (done, n, output) throws(PhysicalMemoryError) in
            try memory.write(UnsafeRawBufferPointer(rebasing: bytes[done..<(done + n)]), at: output)
        }
    }

    /// Moves `count` bytes at untranslated `address` page run by page run: each run is
    /// translated and moved (`move(offset, length, host address)`) inside one reader section of
    /// `inFlight`, so an ATC invalidation waits for it.
    @inline(__always)
    private func bulk(pasid: PASID?, privileged: Bool, address: UInt64, count: Int, access: AccessPermissions,
                      move: (Int, Int, UInt64) throws(PhysicalMemoryError) -> Void) -> Result<Void, DMAError> {
        let control = currentControl
        if let e = refusal(pasid: pasid, privileged: privileged, execute: false, control: control) { return .failure(e) }
        var done = 0
        while done < count {
            let step: Result<Int, DMAError> = inFlight.withReadLock {
                switch translatePage(pasid: pasid, privileged: privileged, address: address &+ UInt64(done), access: access,
                                     remaining: count - done, useATS: control.ats) {
                case .translated(let output, let n):
                    do throws(PhysicalMemoryError) { try move(done, n, output) } catch { return .failure(.memory(error)) }
                    return .success(n)
                case .needsPage(let e), .failed(let e): return .failure(e)
                }
            }
            switch step {
            case .success(let n): done += n
            case .failure(let e): return .failure(e)
            }
        }
        return .success(())
    }

    /// Copies `count` bytes from untranslated `source` to untranslated `destination` (both in the
    /// address space of `pasid`), as a DMA engine's memory-to-memory move: for each stretch that
    /// lies within one source page and one destination page, both pages are translated (read and
    /// write requests) and the bytes move directly between the translated addresses
    /// (``PhysicalMemory/copy(from:to:count:)``). Allocates nothing.
    public func copy(pasid: PASID? = nil, from source: UInt64, to destination: UInt64, count: Int,
                     privileged: Bool = false) -> Result<Void, CopyFailure> {
        let control = currentControl
        if let e = refusal(pasid: pasid, privileged: privileged, execute: false, control: control) { return .failure(.read(e)) }
        if !control.ats { return copyInBursts(pasid: pasid, from: source, to: destination, count: count, privileged: privileged) }
        var done = 0
        while done < count {
            let step: Result<Int, CopyFailure> = inFlight.withReadLock {
                let from = source &+ UInt64(done), to = destination &+ UInt64(done)
                let input: UInt64, output: UInt64, n: Int, n2: Int
                switch translatePage(pasid: pasid, privileged: privileged, address: from, access: .read,
                                     remaining: count - done, useATS: control.ats) {
                case .translated(let o, let length): (input, n) = (o, length)
                case .needsPage(let e), .failed(let e): return .failure(.read(e))
                }
                switch translatePage(pasid: pasid, privileged: privileged, address: to, access: .write,
                                     remaining: n, useATS: control.ats) {
                case .translated(let o, let length): (output, n2) = (o, length)
                case .needsPage(let e), .failed(let e): return .failure(.write(e))
                }
                do throws(PhysicalMemoryError) {
                    try memory.copy(from: input, to: output, count: n2)
                } catch {
                    if case .unbacked(let a) = error, a &- input < UInt64(n2) { return .failure(.read(.memory(error))) }
                    return .failure(.write(.memory(error)))
                }
                return .success(n2)
            }
            switch step {
            case .success(let n): done += n
            case .failure(let e): return .failure(e)
            }
        }
        return .success(())
    }

    /// The pages of one burst: a window of the copy of at most this many source (and
    /// destination) pages is translated, then moved.
    private static let burstPages = 16

    /// `copy` without ATS: the window's source pages are translated as one burst of read
    /// requests and its destination pages as one burst of write requests (each page an IOTLB
    /// lookup; the IOMMU may resolve the requester once per burst), then the bytes move in runs
    /// that are contiguous on both sides. A fault stops the burst at its page; the bytes before it
    /// move, then the copy fails. A source page may thus be translated (and its fault recorded)
    /// before the destination page of an earlier stretch fails, as with an engine that reads ahead.
    private func copyInBursts(pasid: PASID?, from source: UInt64, to destination: UInt64, count: Int,
                              privileged: Bool) -> Result<Void, CopyFailure> {
        let window = Self.burstPages << 12
        var done = 0
        while done < count {
            let from = source &+ UInt64(done), to = destination &+ UInt64(done)
            let length = min(count - done, window - Int(from & 0xFFF))
            let step: Result<Int, CopyFailure> = withUnsafeTemporaryAllocation(of: Translation.self, capacity: 2 * (Self.burstPages + 1)) { t in
                let reads = t.baseAddress!, writes = reads + (Self.burstPages + 1)
                return inFlight.withReadLock {
                    let sourcePages = Int(((from & 0xFFF) + UInt64(length) + 0xFFF) >> 12)
                    let r = iommu.translateBurst(DMARequest(requesterID: requesterID, pasid: pasid, privileged: privileged, address: from,
                                                            access: .read, length: min(UInt64(length), 0x1000 - (from & 0xFFF))),
                                                 count: sourcePages, into: reads)
                    // Bytes readable before the first source fault.
                    let readable = r.fault == nil ? length : max(0, r.translated * 4096 - Int(from & 0xFFF))
                    let destinationPages = readable == 0 ? 0 : Int(((to & 0xFFF) + UInt64(readable) + 0xFFF) >> 12)
                    let w = destinationPages == 0 ? (translated: 0, fault: nil) :
                        iommu.translateBurst(DMARequest(requesterID: requesterID, pasid: pasid, privileged: privileged, address: to,
                                                        access: .write, length: min(UInt64(readable), 0x1000 - (to & 0xFFF))),
                                             count: destinationPages, into: writes)
                    let writable = w.fault == nil ? readable : min(readable, max(0, w.translated * 4096 - Int(to & 0xFFF)))
                    // Move [0, writable) in runs contiguous on both sides.
                    var at = 0
                    while at < writable {
                        let a = from &+ UInt64(at), b = to &+ UInt64(at)
                        let input = reads[Int(((from & 0xFFF) + UInt64(at)) >> 12)].output(for: a)
                        let output = writes[Int(((to & 0xFFF) + UInt64(at)) >> 12)].output(for: b)
                        var run = min(writable - at, 0x1000 - Int(a & 0xFFF), 0x1000 - Int(b & 0xFFF))
                        while at + run < writable {
                            let na = a &+ UInt64(run), nb = b &+ UInt64(run)
                            let ni = reads[Int(((from & 0xFFF) + UInt64(at + run)) >> 12)].output(for: na)
                            let no = writes[Int(((to & 0xFFF) + UInt64(at + run)) >> 12)].output(for: nb)
                            guard ni == input &+ UInt64(run), no == output &+ UInt64(run) else { break }
                            run += min(writable - at - run, 0x1000 - Int(na & 0xFFF), 0x1000 - Int(nb & 0xFFF))
                        }
                        do throws(PhysicalMemoryError) {
                            try memory.copy(from: input, to: output, count: run)
                        } catch {
                            if case .unbacked(let x) = error, x &- input < UInt64(run) { return .failure(.read(.memory(error))) }
                            return .failure(.write(.memory(error)))
                        }
                        at += run
                    }
                    if writable < readable, let f = w.fault { return .failure(.write(.fault(f))) }
                    if readable < length, let f = r.fault { return .failure(.read(.fault(f))) }
                    return .success(length)
                }
            }
            switch step {
            case .success(let n): done += n
            case .failure(let e): return .failure(e)
            }
        }
        return .success(())
    }

    // MARK: Page requests

    /// Sends one page request group for `pages` (the last request marked last-in-group) and
    /// returns its group index. Fails when PRI is disabled or stopped, or the requests would
    /// exceed the Outstanding Page Request Allocation. The response is counted when it arrives.
    public func requestPages(pasid: PASID? = nil, privileged: Bool = false,
                             _ pages: [(address: UInt64, access: AccessPermissions)]) -> Result<UInt16, DMAError> {
        if let pasid {
            guard let width = capabilities.pasidWidth, control.pasid else { return .failure(.pasidNotEnabled) }
            guard pasid.fits(width: width) else { return .failure(.pasidOutOfRange(pasid)) }
        }
        return sendPageRequests(pasid: pasid, privileged: privileged, pages: pages, waiting: nil)
    }

    private func sendPageRequests(pasid: PASID?, privileged: Bool, pages: [(address: UInt64, access: AccessPermissions)],
                                  waiting op: Operation?) -> Result<UInt16, DMAError> {
        precondition(!pages.isEmpty, "a page request group has at least one request")
        let group: Result<UInt16, DMAError> = lock.withLock {
            guard state.control.pri, !state.priStatus.responseFailure else { return .failure(.pageRequestsStopped) }
            let allocation = state.control.pageRequestAllocation == 0 ? capabilities.pageRequestCapacity ?? 0
                : state.control.pageRequestAllocation
            guard state.outstandingRequests + pages.count <= allocation, state.groups.count <= Int(PageRequest.maxGroupIndex) else {
                return .failure(.pageRequestLimit)
            }
            var g = state.nextGroup
            while state.groups[g] != nil { g = (g + 1) & PageRequest.maxGroupIndex }
            state.nextGroup = (g + 1) & PageRequest.maxGroupIndex
            state.groups[g] = (pages.count, op)
            state.outstandingRequests += pages.count
            return .success(g)
        }
        guard case .success(let g) = group else { return group }
        for (i, page) in pages.enumerated() {
            iommu.pageRequest(PageRequest(requesterID: requesterID, pasid: pasid, privileged: privileged, address: page.address,
                                          access: page.access, groupIndex: g, lastInGroup: i == pages.count - 1))
        }
        return group
    }

    // MARK: DeviceEndpoint

    /// Explicitly asks the IOMMU to translate `address` (an ATS translation request) and caches
    /// a successful result with any rights in the ATC. Fails when ATS is not enabled.
    public func requestTranslation(pasid: PASID? = nil, address: UInt64, access: AccessPermissions = .readWrite,
                                   privileged: Bool = false) -> ATSCompletion {
        guard let atc, control.ats else { return .unsupportedRequest }
        return inFlight.withReadLock {
            let ticket = atc.fillTicket()
            let completion = iommu.translate(ATSTranslationRequest(requesterID: requesterID, pasid: pasid, privileged: privileged,
                                                                   address: address, access: access))
            if case .translated(let t) = completion, !t.permissions.isEmpty, t.contains(address) {
                atc.insert(t, tag: TranslationTag(pasid: pasid, privileged: privileged), covering: address, ifUnchangedSince: ticket)
            }
            return completion
        }
    }

    /// Removes the translations `request` covers from the ATC (with a PASID and without Global
    /// Invalidate: that PASID's entries and the global ones; otherwise every entry in the range),
    /// waits for DMA in flight, and completes.
    public func invalidate(_ request: ATCInvalidation) -> ATCInvalidationCompletion {
        if let atc {
            let spaces: TranslationCacheInvalidation.Spaces =
                if let pasid = request.pasid, !request.global { .only(pasid.rawValue, includingGlobal: true) } else { .all }
            atc.invalidate(TranslationCacheInvalidation(domain: 0, spaces: spaces,
                                                        range: request.range == .all ? nil : request.range))
        }
        inFlight.withWriteLock {}  // every access that might use a removed translation has finished
        return ATCInvalidationCompletion(requesterID: requesterID, tag: request.tag)
    }

    /// Waits until every DMA access begun before the call has finished (each page's
    /// translate-and-move is a reader section of `inFlight`): what an IOMMU's invalidation
    /// wait relies on.
    public func drainDMA() {
        inFlight.withWriteLock {}
    }

    /// Takes the response to one of the function's page request groups: frees its requests,
    /// and lets the operation waiting for it (if any) retry or fail. Response Failure stops PRI.
    /// A response for a group with nothing outstanding sets the Unexpected PRG Index status.
    public func receive(_ response: PageResponse) {
        let continuation: CheckedContinuation<Void, Never>? = lock.withLock {
            guard let group = state.groups.removeValue(forKey: response.groupIndex) else {
                state.priStatus.unexpectedResponse = true
                return nil
            }
            state.outstandingRequests -= group.requests
            if response.code == .responseFailure { state.priStatus.responseFailure = true }
            guard let op = group.operation else { return nil }
            op.response = response.code
            defer { op.continuation = nil }
            return op.continuation
        }
        continuation?.resume()
    }
}
