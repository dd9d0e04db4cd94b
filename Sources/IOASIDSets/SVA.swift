// SVA bind through the IOASID layer: a process address space shared with
// devices at the process's PASID, which the layer hands out from the binding context's set.
//
// The kernel's model (drivers/iommu/iommu-sva.c), with the IOASID layer as the allocator:
// - One PASID per process (the kernel's mm PASID), allocated on its first bind from the set the
//   binding context acts for (or a PASID of that set the caller names), recorded as the PASID's
//   private data (`SVAProcessData`), and kept until the process exits, as the kernel keeps
//   mm->pasid until the mm is freed. Every bind of the process uses it; a context acting for
//   another set cannot bind the process (the PASID gate answers `EPERM`).
// - A bind is the core's `Context.bindSVA` at that PASID: the gate authorizes it and announces
//   it (`bind` notification, with the device's object ID); an unbind announces `unbind`.
// - The process's exit ends every bind: the driver's SVA domain has torn down the PASID entries
//   (DMA blocked and reported) before this layer's observer runs; the observer then unbinds each
//   (outstanding page requests answered Invalid, `unbind` notifications) and frees the PASID if
//   the layer allocated it (`free` notification); a PASID the caller named stays with its set.
// - If the set frees the PASID first (IOASID_PASID_FREE, the file's close), its binds end with it
//   and the process gets a new PASID on its next bind.
//
// Locks, in order: `binding` (serializes bind, unbind and exit handling) → a context's lock →
// the allocator's → `records` and `registry` (leaves, never held while calling out). The
// allocator's `free` notifier takes only `records`, since it may run under a context lock.
import IOASIDCore
import IOASIDStructures

/// The private data the SVA layer attaches to a process's PASID.
public struct SVAProcessData: Sendable, Equatable {
    /// The process the PASID belongs to.
    public let pid: Int32
}

/// The SVA binds of one ``IOASIDLayer``: which PASID each process has, which devices share it,
/// and the end of all of them when the process exits.
public final class SVABindings: Sendable {
    /// The layer the PASIDs come from.
    public let layer: IOASIDLayer

    struct Bond {
        weak var context: Context?
        let device: Device.ID
    }
    struct Record {
        let space: any SharedAddressSpace
        let watcher: ExitWatcher
        var pasid: PASID?
        var set: IOASIDSetID?
        /// Whether the layer allocated the PASID (and frees it at exit).
        var ownsPASID = false
        var bonds: [Bond] = []
    }
    /// Serializes bind, unbind and exit handling; counts them (a `Locked<Void>` would do, but
    /// ThreadSanitizer reports false races on the exclusivity check of an empty state).
    private let binding = Locked<UInt64>(0)
    private let records = Locked<[ObjectIdentifier: Record]>([:])
    struct WeakSpace { weak var space: (any SharedAddressSpace)? }
    private let registry = Locked<[Int32: WeakSpace]>([:])

    /// Creates the SVA binds of `layer`.
    public init(layer: IOASIDLayer) {
        self.layer = layer
        _ = try? layer.allocator.registerNotifier(priority: Int.min) { [weak self] note in
            guard note.event == .free else { return }
            self?.forget(pasid: note.pasid, set: note.set)
        }
    }

    // MARK: Processes by pid

    /// Makes `space` known by its pid, for callers that name processes by pid (the ioctls).
    /// - Throws: `EEXIST` if another live address space has that pid; `ESRCH` if it exited.
    public func register(_ space: any SharedAddressSpace) throws(IOMMUError) {
        guard !space.hasExited else { throw .noProcess("the process has exited") }
        try registry.withLock { (r) throws(IOMMUError) in
            if let old = r[space.pid]?.space, old !== space, !old.hasExited { throw .exists("another process has that pid") }
            r[space.pid] = WeakSpace(space: space)
        }
    }

    /// Forgets `space`'s pid.
    public func unregister(_ space: any SharedAddressSpace) {
        registry.withLock { r in if r[space.pid]?.space === space { r[space.pid] = nil } }
    }

    /// The registered, live address space of `pid`. - Throws: `ESRCH` if there is none.
    public func addressSpace(pid: Int32) throws(IOMMUError) -> any SharedAddressSpace {
        guard let s = registry.withLock({ $0[pid]?.space }), !s.hasExited else { throw .noProcess("no such process") }
        return s
    }

    // MARK: Bind

    /// Binds `space` to `device` of `context` at the process's PASID, and returns that PASID.
    ///
    /// The process's first bind gives it a PASID: `pasid` if given (one the context's set owns),
    /// else the lowest free one in the set. Later binds use the same PASID (`pasid`, if given,
    /// must be it). Page requests of the device at the PASID go to `faultQueue` (an object of
    /// `context`), or are answered Invalid without one.
    ///
    /// - Throws: `ESRCH` the process exited; `ENOENT` the context is not enrolled in a set, the
    ///   named PASID is not allocated, the device or fault queue does not exist; `EPERM` the
    ///   PASID (named, or the process's) belongs to another set; `EINVAL` `pasid` differs from
    ///   the process's PASID, the device has no PASID capability (or, on VT-d, no ATS);
    ///   `EBUSY` the device is bound (or something is attached) at the PASID, or it is
    ///   free-pending; `EEXIST` the named PASID belongs to another process; `ENOSPC` the set's
    ///   quota is used up; `EOPNOTSUPP`/`ENODEV` the IOMMU has no SVA.
    @discardableResult
    public func bind(_ space: any SharedAddressSpace, device: Device.ID, in context: Context, pasid: PASID? = nil,
                     faultQueue: ObjectID? = nil) throws(IOMMUError) -> PASID {
        try binding.withLock { (operations) throws(IOMMUError) -> PASID in
            operations &+= 1
            guard !space.hasExited else { throw .noProcess("the process has exited") }
            guard let set = layer.set(of: context) else { throw .noEntry("the context is not enrolled in an IOASID set") }
            let key = ObjectIdentifier(space)
            let existing = records.withLock { $0[key] }
            let chosen: PASID
            var created = false
            if let rec = existing, let mm = rec.pasid {
                if let pasid, pasid != mm { throw .invalid("the process already has another PASID") }
                chosen = mm
            } else {
                let allocator = layer.allocator
                let owns = pasid == nil
                let p: PASID
                if let pasid { p = pasid } else { p = try allocator.alloc(in: set) }
                do throws(IOMMUError) { try allocator.attachData(SVAProcessData(pid: space.pid), to: p, in: set) } catch {
                    if owns { _ = try? allocator.free(p, in: set) }
                    throw error
                }
                var rec = existing
                if rec == nil {
                    let watcher = ExitWatcher(owner: self)
                    do throws(IOMMUError) { try space.addObserver(watcher) } catch {
                        _ = try? allocator.detachData(from: p, in: set)
                        if owns { _ = try? allocator.free(p, in: set) }
                        throw error
                    }
                    rec = Record(space: space, watcher: watcher)
                }
                rec!.pasid = p
                rec!.set = set
                rec!.ownsPASID = owns
                rec!.bonds = []
                records.withLock { [rec] in $0[key] = rec! }
                chosen = p
                created = true
            }
            do throws(IOMMUError) {
                _ = try context.bindSVA(device, pasid: chosen, addressSpace: space, faultQueue: faultQueue)
            } catch {
                if created { dropPASID(of: space) }
                throw error
            }
            records.withLock { $0[key]?.bonds.append(Bond(context: context, device: device)) }
            return chosen
        }
    }

    /// Ends the SVA bind of `device` of `context` at `pasid` (the process keeps its PASID).
    /// - Throws: `ENOENT` when the device is not SVA-bound there.
    public func unbind(device: Device.ID, pasid: PASID, in context: Context) throws(IOMMUError) {
        try binding.withLock { (operations) throws(IOMMUError) in
            operations &+= 1
            try context.unbindSVA(device, pasid: pasid)
            records.withLock { r in
                for (k, rec) in r where rec.pasid == pasid {
                    r[k]!.bonds.removeAll { ($0.context === context && $0.device == device) || $0.context == nil }
                }
            }
        }
    }

    /// The process's PASID, if it has one.
    public func pasid(of space: any SharedAddressSpace) -> PASID? {
        records.withLock { $0[ObjectIdentifier(space)]?.pasid }
    }

    /// The devices the process is bound to, with their contexts.
    public func bonds(of space: any SharedAddressSpace) -> [(context: Context, device: Device.ID)] {
        records.withLock { r in (r[ObjectIdentifier(space)]?.bonds ?? []).compactMap { b in b.context.map { ($0, b.device) } } }
    }

    // MARK: Exit and free

    /// The process exited: unbind everywhere, then give the PASID back.
    func processExited(_ watcher: ExitWatcher) {
        binding.withLock { operations in
            operations &+= 1
            guard let (key, rec) = records.withLock({ r in r.first { $0.value.watcher === watcher }.map { ($0.key, $0.value) } }) else {
                return
            }
            if let p = rec.pasid {
                for b in rec.bonds {
                    guard let c = b.context, let shared = try? c.sharedAddressSpace(b.device, pasid: p),
                          shared === rec.space else { continue }
                    try? c.unbindSVA(b.device, pasid: p)
                }
            }
            dropPASID(of: rec.space)
            records.withLock { _ = $0.removeValue(forKey: key) }
        }
    }

    /// Ends the association of the process with its PASID: frees it if the layer allocated it
    /// (detaching whatever still uses it), else detaches the private data.
    private func dropPASID(of space: any SharedAddressSpace) {
        let key = ObjectIdentifier(space)
        guard let rec = records.withLock({ r -> Record? in
            let rec = r[key]
            r[key]?.pasid = nil
            r[key]?.bonds = []
            return rec
        }), let p = rec.pasid, let set = rec.set else { return }
        _ = try? layer.allocator.detachData(from: p, in: set)
        if rec.ownsPASID { _ = try? layer.freePASID(p, in: set) }
    }

    /// A PASID was released: if it was a process's, the process has none any more.
    func forget(pasid: PASID, set: IOASIDSetID) {
        records.withLock { r in
            for (k, rec) in r where rec.pasid == pasid && rec.set == set {
                r[k]!.pasid = nil
                r[k]!.bonds = []
            }
        }
    }
}

/// The SVA layer's observer of one process: acts on its exit.
final class ExitWatcher: AddressSpaceObserver, @unchecked Sendable {
    weak var owner: SVABindings?
    init(owner: SVABindings) { self.owner = owner }
    func invalidate(first: UInt64, last: UInt64) {}
    func released() { owner?.processExited(self) }
}
