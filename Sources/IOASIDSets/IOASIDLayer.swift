// The IOASID layer: contexts act for IOASID sets, and a PASID reaches a device only through
// the set that owns it.
import IOASIDCore
import IOASIDStructures

/// Binds contexts to IOASID sets and authorizes their PASID attachments.
///
/// A context *enrolled* in a set gets a `PASIDGate`: attaching (device, PASID) then needs a PASID
/// that set owns. Errors, as returned by `Context.attach`/`replace` with a PASID:
/// - `ENOENT` — the PASID is not allocated;
/// - `EPERM` — the PASID belongs to another set (another VM or process);
/// - `EBUSY` — the PASID was freed and is waiting for its last user (free-pending).
///
/// Each attachment holds a reference on its PASID (`get`/`put` of the allocator) and is announced
/// with `bind`/`unbind` notifications carrying the device's object ID. ``freePASID(_:in:)`` detaches
/// the PASID from every device of every context enrolled in the set, then frees it, so the `free`
/// notification comes last and the hardware no longer translates DMA tagged with it.
///
/// Contexts that are not enrolled keep the kernel's behaviour (any PASID within the device's width).
/// Lock order: context lock, then the allocator's; the layer's own lock is never held while a
/// context is called.
public final class IOASIDLayer: Sendable {
    /// The host-wide PASID allocator the sets live in.
    public let allocator: PASIDAllocator
    private let enrolled = Locked<[IOASIDSetID: [Context]]>([:])

    /// Creates a layer over `allocator`.
    public init(allocator: PASIDAllocator) { self.allocator = allocator }

    /// Makes `context` act for `set`: installs the gate that admits only the set's PASIDs.
    /// - Throws: `ENOENT` if the set does not exist; `EEXIST` if the context is enrolled already;
    ///   `EBUSY` if the context has PASIDs attached (they were not authorized by the set).
    public func enroll(_ context: Context, in set: IOASIDSetID) throws(IOMMUError) {
        _ = try allocator.setInfo(set)
        guard self.set(of: context) == nil else { throw .exists("the context already acts for a set") }
        try context.setPASIDGate(SetGate(set: set, allocator: allocator))
        enrolled.withLock { $0[set, default: []].append(context) }
    }

    /// Ends the enrollment of `context`: detaches its PASIDs (dropping their references) and
    /// removes the gate. The set and its PASIDs stay. - Throws: `ENOENT` if not enrolled.
    public func withdraw(_ context: Context) throws(IOMMUError) {
        guard let set = self.set(of: context) else { throw .noEntry("the context is not enrolled") }
        for (device, pasid) in context.pasidAttachments() { try? context.detach(device, pasid: pasid) }
        try context.setPASIDGate(nil)
        enrolled.withLock { $0[set]?.removeAll { $0 === context }; if $0[set]?.isEmpty == true { $0[set] = nil } }
    }

    /// The set `context` acts for, if enrolled.
    public func set(of context: Context) -> IOASIDSetID? {
        enrolled.withLock { e in e.first { $0.value.contains { $0 === context } }?.key }
    }

    /// The contexts acting for `set`.
    public func contexts(in set: IOASIDSetID) -> [Context] { enrolled.withLock { $0[set] ?? [] } }

    /// Allocates the lowest free PASID in `[min, max]` to the set `context` acts for; with
    /// `guestPASID`, records it as the set-private ID (the VM's PASID for this host PASID).
    /// - Throws: `ENOENT` if the context is not enrolled; the allocator's errors otherwise
    ///   (`ENOSPC` when the quota is used up, `EEXIST` if the guest PASID is taken in the set).
    public func allocPASID(for context: Context, min: PASID = 1, max: PASID? = nil, guestPASID: UInt32? = nil) throws(IOMMUError) -> PASID {
        guard let set = self.set(of: context) else { throw .noEntry("the context is not enrolled in an IOASID set") }
        let pasid = try allocator.alloc(in: set, min: min, max: max)
        if let g = guestPASID {
            do throws(IOMMUError) { try allocator.setPrivateID(g, for: pasid, in: set) } catch {
                _ = try? allocator.free(pasid, in: set)
                throw error
            }
        }
        return pasid
    }

    /// Frees `pasid` of the set `context` acts for, after detaching it from every device of
    /// every context enrolled in that set.
    /// - Returns: the number of attachments that were ended.
    /// - Throws: `ENOENT` if the context is not enrolled or the PASID is not allocated; `EPERM`
    ///   if it belongs to another set.
    @discardableResult
    public func freePASID(_ pasid: PASID, for context: Context) throws(IOMMUError) -> Int {
        guard let set = self.set(of: context) else { throw .noEntry("the context is not enrolled in an IOASID set") }
        return try freePASID(pasid, in: set)
    }

    /// Frees `pasid` of `set` (see ``freePASID(_:for:)``). The PASID is freed first — from then on
    /// no new attachment can take it (`EBUSY`) — then every attachment is ended; the last one
    /// releases it (the `free` notification).
    @discardableResult
    public func freePASID(_ pasid: PASID, in set: IOASIDSetID) throws(IOMMUError) -> Int {
        try allocator.free(pasid, in: set)
        var ended = 0
        for context in contexts(in: set) {
            for (device, p) in context.pasidAttachments() where p == pasid {
                try? context.detach(device, pasid: p)
                ended += 1
            }
        }
        return ended
    }

    /// Frees every PASID of the set `context` acts for (each detached first).
    /// - Returns: how many PASIDs were freed.
    @discardableResult
    public func freeAll(for context: Context) throws(IOMMUError) -> Int {
        guard let set = self.set(of: context) else { throw .noEntry("the context is not enrolled in an IOASID set") }
        var count = 0
        for e in try allocator.entries(in: set) where e.state == .active {
            try freePASID(e.pasid, in: set)
            count += 1
        }
        return count
    }
}

/// The gate a ``IOASIDLayer`` installs in an enrolled context: each attachment holds one
/// reference on its PASID.
final class SetGate: PASIDGate {
    let set: IOASIDSetID
    let allocator: PASIDAllocator
    init(set: IOASIDSetID, allocator: PASIDAllocator) { self.set = set; self.allocator = allocator }

    func authorize(pasid: PASID, device: Device) throws(IOMMUError) {
        _ = try allocator.get(pasid, in: set)  // ENOENT, EPERM, or EBUSY when free-pending
    }

    func refused(pasid: PASID, device: Device) {
        _ = try? allocator.put(pasid, in: set)
    }

    func attached(pasid: PASID, device: Device) {
        try? allocator.notifyBind(pasid, in: set, device: device.id.rawValue)
    }

    func detached(pasid: PASID, device: Device) {
        try? allocator.notifyUnbind(pasid, in: set, device: device.id.rawValue)
        _ = try? allocator.put(pasid, in: set)
    }
}
