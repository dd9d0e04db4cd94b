// The software side of a VT-d unit: what a host driver does with the registers and tables.
//
//   VTdInvalidationQueue  owns the invalidation queue memory; `submit` writes descriptors and an
//                         invalidation wait with status write, moves IQT, checks the status and
//                         the queue errors (as the Linux driver's qi_submit_sync).
//   VTdPageRequestQueue   owns the page request queue memory; `drain` reads new requests and
//                         moves PQH (as the driver's page request interrupt thread).
//   VTdHostTables         owns the root table, context tables, PASID directories and PASID
//                         tables; programs context and PASID entries and performs the
//                         invalidations the spec's guidance asks for when they change.
//
// These are "software": they only use the unit's registers and memory, as a driver would.

import IOASIDStructures

/// Why an invalidation submission failed.
public enum VTdInvalidationError: Error, Hashable, Sendable {
    /// Hardware found an invalid descriptor (FSTS.IQE); it was replaced and the queue resumed.
    case invalidDescriptor(VTdDescriptor)
    /// A device-TLB invalidation got a wrong completion (FSTS.ICE) from `sourceID`.
    case completionError(sourceID: UInt16)
    /// A device-TLB invalidation was not completed (FSTS.ITE) by `sourceID`.
    case timeout(sourceID: UInt16)
    /// The wait descriptor's status was not written.
    case notCompleted
}

extension PhysicalMemory {
    /// Allocates `count` physically contiguous zeroed frames and returns the first one's address,
    /// or nil when the allocator runs out. (Frames it had to skip are given back.)
    func allocateContiguousFrames(_ count: Int) -> UInt64? {
        precondition(count >= 1)
        var run: [UInt64] = []
        var skipped: [UInt64] = []
        defer { for f in skipped { freeFrame(f) } }
        while run.count < count {
            guard let f = allocateFrame() else {
                skipped.append(contentsOf: run)
                return nil
            }
            if let last = run.last, f != last + PhysicalMemory.frameSize {
                skipped.append(contentsOf: run)
                run = [f]
            } else {
                run.append(f)
            }
        }
        return run[0]
    }
}

/// The invalidation queue as software drives it: a one-page queue of 128 descriptors, enabled
/// at creation (IQA with DW = 1, then GCMD.QIE), and synchronous submission.
public final class VTdInvalidationQueue: @unchecked Sendable {
    /// The unit.
    public let unit: VTdUnit
    /// The queue's physical address.
    public let base: UInt64
    /// Where invalidation wait descriptors write their status.
    public let statusAddress: UInt64
    /// Descriptors in the queue.
    public static let capacity = 128

    /// The next status value and the software tail (the lock serializes submissions).
    private let state = Locked<(sequence: UInt32, tail: UInt64)>((1, 0))

    /// Allocates the queue and status frames in the unit's memory and enables queued invalidation.
    public init?(unit: VTdUnit) {
        guard let q = unit.memory.allocateFrame(), let st = unit.memory.allocateFrame() else { return nil }
        self.unit = unit
        base = q
        statusAddress = st
        unit.writeRegister(VTdRegister.invalidationQueueTail, 0)
        unit.writeRegister(VTdRegister.invalidationQueueAddress, q | 1 << 11)  // DW = 256-bit, QS = 0 (one page)
        unit.writeRegister(VTdRegister.globalCommand, UInt64(unit.currentCommand | VTdGlobalCommand.queuedInvalidationEnable))
    }

    /// Submits `invalidations` followed by an invalidation wait with status write, and returns
    /// once hardware wrote the status: every listed invalidation has completed.
    public func submit(_ invalidations: [VTdInvalidation]) throws(VTdInvalidationError) {
        var rest = invalidations[...]
        repeat {
            let batch = rest.prefix(Self.capacity - 2)
            rest = rest.dropFirst(batch.count)
            try submitBatch(Array(batch))
        } while !rest.isEmpty
    }

    private func submitBatch(_ batch: [VTdInvalidation]) throws(VTdInvalidationError) {
        let size = UInt64(Self.capacity) * VTdDescriptor.size
        let result: Result<Void, VTdInvalidationError> = state.withLock { st in
            let sequence = st.sequence
            st.sequence &+= 1
            unit.memory.write64(statusAddress, 0)
            var tail = st.tail
            for inv in batch {
                inv.descriptor.write(unit.memory, at: base + tail)
                tail = (tail + VTdDescriptor.size) % size
            }
            let wait = VTdInvalidation.wait(statusWrite: true, statusData: sequence, statusAddress: statusAddress, fence: true)
            wait.descriptor.write(unit.memory, at: base + tail)
            tail = (tail + VTdDescriptor.size) % size
            st.tail = tail
            unit.writeRegister(VTdRegister.invalidationQueueTail, tail)
            // Check the errors hardware reports, as qi_check_fault does.
            let status = UInt32(truncatingIfNeeded: unit.readRegister(VTdRegister.faultStatus))
            let record = unit.readRegister(VTdRegister.invalidationQueueErrorRecord)
            if status & VTdFaultStatus.invalidationQueueError != 0 {
                // Replace the bad descriptor by a harmless wait, clear IQE: hardware resumes.
                let head = unit.readRegister(VTdRegister.invalidationQueueHead)
                let bad = VTdDescriptor.read(unit.memory, at: base + head)
                VTdInvalidation.wait(statusWrite: false, statusData: 0, statusAddress: 0).descriptor.write(unit.memory, at: base + head)
                unit.writeRegister(VTdRegister.faultStatus, UInt64(VTdFaultStatus.invalidationQueueError))
                return .failure(.invalidDescriptor(bad))
            }
            if status & VTdFaultStatus.invalidationTimeoutError != 0 {
                unit.writeRegister(VTdRegister.faultStatus, UInt64(VTdFaultStatus.invalidationTimeoutError))
                return .failure(.timeout(sourceID: UInt16(truncatingIfNeeded: record >> 32)))
            }
            if status & VTdFaultStatus.invalidationCompletionError != 0 {
                unit.writeRegister(VTdRegister.faultStatus, UInt64(VTdFaultStatus.invalidationCompletionError))
                return .failure(.completionError(sourceID: UInt16(truncatingIfNeeded: record >> 48)))
            }
            let written = UInt32(truncatingIfNeeded: unit.memory.read64(statusAddress))
            return written == sequence ? .success(()) : .failure(.notCompleted)
        }
        try result.get()
    }
}

/// The page request queue as software drives it: one page of 128 descriptors, programmed at
/// creation (PQH = PQT = 0, then PQA).
public final class VTdPageRequestQueue: @unchecked Sendable {
    /// The unit.
    public let unit: VTdUnit
    /// The queue's physical address.
    public let base: UInt64
    /// Requests the queue holds at most (one slot stays empty).
    public static let capacity = 127
    private let lock = Locked<Void>(())

    /// Allocates the queue in the unit's memory and programs the page request queue registers.
    public init?(unit: VTdUnit) {
        guard let q = unit.memory.allocateFrame() else { return nil }
        self.unit = unit
        base = q
        unit.writeRegister(VTdRegister.pageRequestQueueHead, 0)
        unit.writeRegister(VTdRegister.pageRequestQueueTail, 0)
        unit.writeRegister(VTdRegister.pageRequestQueueAddress, q)  // PQS = 0: one page
    }

    /// Reads every page request hardware queued since the last call, oldest first, and moves
    /// PQH past them; clears PRS.PPR first and PRS.PRO once the queue is empty (as the Linux
    /// driver's interrupt thread does).
    public func drain() -> [VTdPageRequestDescriptor] {
        lock.withLock { _ in
            unit.writeRegister(VTdRegister.pageRequestStatus, 1)  // PPR
            let size = UInt64(Self.capacity + 1) * VTdDescriptor.size
            var head = unit.readRegister(VTdRegister.pageRequestQueueHead)
            let tail = unit.readRegister(VTdRegister.pageRequestQueueTail)
            var out: [VTdPageRequestDescriptor] = []
            while head != tail {
                out.append(VTdPageRequestDescriptor(VTdDescriptor.read(unit.memory, at: base + head)))
                head = (head + VTdDescriptor.size) % size
            }
            unit.writeRegister(VTdRegister.pageRequestQueueHead, tail)
            if unit.readRegister(VTdRegister.pageRequestStatus) & 2 != 0 {
                unit.writeRegister(VTdRegister.pageRequestStatus, 2)  // PRO: the queue is empty now
            }
            return out
        }
    }
}

/// Errors of ``VTdHostTables``.
public enum VTdTableError: Error, Hashable, Sendable {
    /// The frame allocator ran out.
    case outOfMemory
    /// The requester has no context entry (``VTdHostTables/addDevice(_:pasids:deviceTLB:pageRequests:ridPASID:)``).
    case noSuchDevice
    /// The PASID is beyond the device's PASID directory.
    case pasidOutOfRange
    /// The PASID entry is present already (tear it down first).
    case busy
    /// The invalidations after a change failed.
    case invalidation(VTdInvalidationError)
}

/// The host's scalable-mode translation structures of one unit: the root table, context tables,
/// and per device a PASID directory with PASID tables allocated on demand. Every change that
/// can leave stale cache entries is followed by the invalidations the VT-d spec's guidance
/// (§6.5.3.3) lists, through ``queue``. Thread-safe.
public final class VTdHostTables: @unchecked Sendable {
    /// The unit.
    public let unit: VTdUnit
    /// The invalidation queue used after changes.
    public let queue: VTdInvalidationQueue
    /// The root table's physical address.
    public let rootTable: UInt64

    struct Device {
        var context: VTdContextEntry
        var contextAddress: UInt64
        var pasidTables: [UInt32: UInt64] = [:]
    }
    struct State {
        var contextTables: [UInt16: UInt64] = [:]   // bus << 1 | upper
        var devices: [UInt16: Device] = [:]
    }
    private let state = Locked(State())

    /// Allocates the root table, points the unit at it and makes the unit drop whatever it
    /// cached (global context, PASID-cache and IOTLB invalidations). Translation stays as it was;
    /// see ``VTdUnit/setTranslationEnabled(_:)``.
    public init(unit: VTdUnit, queue: VTdInvalidationQueue) throws(VTdTableError) {
        guard let root = unit.memory.allocateFrame() else { throw .outOfMemory }
        self.unit = unit
        self.queue = queue
        rootTable = root
        unit.setRootTable(root)
        do { try queue.submit([.contextCache(.global), .pasidCache(.global), .iotlb(.global)]) } catch {
            throw .invalidation(error)
        }
    }

    /// Creates the context entry of `rid`: PASIDs enabled when `pasids` > 0 (a directory
    /// covering at least that many), DTE and PRE as given, RID_PASID for requests without PASID.
    public func addDevice(_ rid: RequesterID, pasids: UInt32, deviceTLB: Bool, pageRequests: Bool,
                          ridPASID: UInt32 = 0) throws(VTdTableError) {
        let memory = unit.memory
        let r: Result<Void, VTdTableError> = state.withLock { s in
            let bus = rid.bus, devfn = UInt8(truncatingIfNeeded: rid.rawValue)
            let upper = devfn >= 128
            let key = UInt16(bus) << 1 | (upper ? 1 : 0)
            var table: UInt64
            if let t = s.contextTables[key] { table = t } else {
                guard let t = memory.allocateFrame() else { return .failure(.outOfMemory) }
                table = t
                s.contextTables[key] = t
                let rootAddress = VTdRootEntry.address(rootTable: rootTable, bus: bus)
                var root = VTdRootEntry.read(memory, at: rootAddress)
                if upper { root.upperContextTable = t; root.upperPresent = true } else { root.lowerContextTable = t; root.lowerPresent = true }
                root.write(memory, at: rootAddress)
            }
            let sizeField = VTdContextEntry.directorySizeField(covering: max(pasids, ridPASID + 1))
            let directoryPages = max(1, (1 << (Int(sizeField) + 7)) * 8 / 4096)
            guard let directory = memory.allocateContiguousFrames(directoryPages) else { return .failure(.outOfMemory) }
            var c = VTdContextEntry()
            c.pasidDirectory = directory
            c.pasidDirectorySizeField = sizeField
            c.pasidEnable = pasids > 0
            c.deviceTLBEnable = deviceTLB
            c.pageRequestEnable = pageRequests
            c.ridPASID = ridPASID
            c.present = true
            let address = table + UInt64(devfn & 0x7F) * VTdContextEntry.size
            c.write(memory, at: address)
            s.devices[rid.rawValue] = Device(context: c, contextAddress: address)
            return .success(())
        }
        try r.get()
        // A not-present → present change needs no invalidation (CM = 0); flush the device's
        // context-cache entry anyway in case an earlier entry was cached.
        do { try queue.submit([.contextCache(.device(domain: 0, sourceID: rid.rawValue, functionMask: 0))]) } catch {
            throw .invalidation(error)
        }
    }

    /// Removes the context entry of `rid` (with its PASID tables) and invalidates the context
    /// cache, the PASID cache, the IOTLB and the device TLB of the device.
    public func removeDevice(_ rid: RequesterID) throws(VTdTableError) {
        let memory = unit.memory
        let removed: Device? = state.withLock { s in
            guard let d = s.devices.removeValue(forKey: rid.rawValue) else { return nil }
            VTdContextEntry().write(memory, at: d.contextAddress)
            return d
        }
        guard let d = removed else { throw .noSuchDevice }
        var invs: [VTdInvalidation] = [.contextCache(.device(domain: 0, sourceID: rid.rawValue, functionMask: 0)),
                                       .pasidCache(.global), .iotlb(.global)]
        if d.context.deviceTLBEnable {
            invs.append(.deviceTLB(sourceID: rid.rawValue, physicalFunction: rid.rawValue, maxPending: 0,
                                   range: VTdDeviceTLBRange(address: 0, order: 52)))
        }
        do { try queue.submit(invs) } catch { throw .invalidation(error) }
        for t in d.pasidTables.values { memory.freeFrame(t) }
    }

    /// The context entry of `rid`, as the host wrote it.
    public func contextEntry(_ rid: RequesterID) -> VTdContextEntry? {
        state.withLock { $0.devices[rid.rawValue]?.context }
    }

    /// The address of the PASID entry of `pasid` for `rid`, allocating its PASID table.
    func pasidEntryAddress(_ s: inout State, rid: RequesterID, pasid: UInt32) -> Result<UInt64, VTdTableError> {
        guard let d = s.devices[rid.rawValue] else { return .failure(.noSuchDevice) }
        guard pasid < d.context.pasidLimit else { return .failure(.pasidOutOfRange) }
        let index = pasid >> 6
        if let t = d.pasidTables[index] { return .success(VTdPASIDEntry.address(table: t, pasid: pasid)) }
        guard let t = unit.memory.allocateFrame() else { return .failure(.outOfMemory) }
        s.devices[rid.rawValue]!.pasidTables[index] = t
        var dir = VTdPASIDDirectoryEntry(rawValue: 0)
        dir.pasidTable = t
        dir.present = true
        unit.memory.write64(VTdPASIDDirectoryEntry.address(directory: d.context.pasidDirectory, pasid: pasid), dir.rawValue)
        return .success(VTdPASIDEntry.address(table: t, pasid: pasid))
    }

    /// The PASID entry of `pasid` for `rid` (all zero when none was set).
    public func pasidEntry(_ rid: RequesterID, pasid: UInt32) -> VTdPASIDEntry? {
        state.withLock { s in
            guard let d = s.devices[rid.rawValue], pasid < d.context.pasidLimit, let t = d.pasidTables[pasid >> 6] else { return nil }
            return VTdPASIDEntry.read(unit.memory, at: VTdPASIDEntry.address(table: t, pasid: pasid))
        }
    }

    /// Programs a present PASID entry for `pasid` of `rid` where none is present. Hardware never
    /// caches a not-present entry, so no invalidation is needed (CM = 0).
    public func setPASIDEntry(_ rid: RequesterID, pasid: UInt32, _ entry: VTdPASIDEntry) throws(VTdTableError) {
        let memory = unit.memory
        let r: Result<Void, VTdTableError> = state.withLock { s in
            switch pasidEntryAddress(&s, rid: rid, pasid: pasid) {
            case .failure(let e): return .failure(e)
            case .success(let address):
                if VTdPASIDEntry.read(memory, at: address).present { return .failure(.busy) }
                entry.write(memory, at: address)
                return .success(())
            }
        }
        try r.get()
    }

    /// Changes a present PASID entry in place (e.g. SSADE for dirty tracking), then invalidates
    /// the PASID cache, the IOTLB of its domain and the device TLB for the PASID.
    public func updatePASIDEntry(_ rid: RequesterID, pasid: UInt32, _ change: (inout VTdPASIDEntry) -> Void) throws(VTdTableError) {
        let memory = unit.memory
        let r: Result<(VTdPASIDEntry, VTdContextEntry), VTdTableError> = state.withLock { s in
            switch pasidEntryAddress(&s, rid: rid, pasid: pasid) {
            case .failure(let e): return .failure(e)
            case .success(let address):
                let old = VTdPASIDEntry.read(memory, at: address)
                guard old.present else { return .failure(.noSuchDevice) }
                var e = old
                change(&e)
                e.write(memory, at: address)
                return .success((old, s.devices[rid.rawValue]!.context))
            }
        }
        let (old, context) = try r.get()
        do { try queue.submit(flushes(rid: rid, pasid: pasid, entry: old, context: context)) } catch { throw .invalidation(error) }
    }

    /// Tears down the PASID entry of `pasid` for `rid` as the Linux driver does: clear P, then
    /// PASID-cache, IOTLB (PASID-based for first-stage and pass-through entries, domain-selective
    /// for second-stage and nested ones) and device-TLB invalidations, then clear the entry.
    /// Returns the entry that was there (nil if none was present).
    @discardableResult
    public func clearPASIDEntry(_ rid: RequesterID, pasid: UInt32) throws(VTdTableError) -> VTdPASIDEntry? {
        let memory = unit.memory
        let r: Result<(VTdPASIDEntry, VTdContextEntry, UInt64)?, VTdTableError> = state.withLock { s in
            guard let d = s.devices[rid.rawValue] else { return .failure(.noSuchDevice) }
            guard pasid < d.context.pasidLimit else { return .failure(.pasidOutOfRange) }
            guard let t = d.pasidTables[pasid >> 6] else { return .success(nil) }
            let address = VTdPASIDEntry.address(table: t, pasid: pasid)
            var e = VTdPASIDEntry.read(memory, at: address)
            guard e.present else { return .success(nil) }
            e.present = false
            memory.write64(address, e.words.0)
            return .success((e, d.context, address))
        }
        guard let (old, context, address) = try r.get() else { return nil }
        do { try queue.submit(flushes(rid: rid, pasid: pasid, entry: old, context: context)) } catch { throw .invalidation(error) }
        VTdPASIDEntry().write(memory, at: address)
        var was = old
        was.present = true
        return was
    }

    /// The invalidations after a present PASID entry changed.
    func flushes(rid: RequesterID, pasid: UInt32, entry: VTdPASIDEntry, context: VTdContextEntry) -> [VTdInvalidation] {
        let did = entry.domainID
        var invs: [VTdInvalidation] = [.pasidCache(.pasid(did, pasid))]
        switch entry.pgtt {
        case .firstStage, .passThrough: invs.append(.pasidIOTLB(.pasid(did, pasid)))
        default: invs.append(.iotlb(.domain(did)))
        }
        if context.deviceTLBEnable {
            let all = VTdDeviceTLBRange(address: 0, order: 52)
            if pasid == context.ridPASID {
                invs.append(.deviceTLB(sourceID: rid.rawValue, physicalFunction: rid.rawValue, maxPending: 0, range: all))
            } else {
                invs.append(.pasidDeviceTLB(sourceID: rid.rawValue, physicalFunction: rid.rawValue, pasid: pasid, maxPending: 0,
                                            global: false, range: all))
            }
        }
        return invs
    }
}
