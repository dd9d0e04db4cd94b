// Host PASID allocation with IOASID sets.
import IOASIDCore
import IOASIDStructures

// `PASID` is the core's (a UInt32). PASID 0 is reserved for "no PASID" and is never allocated.

/// Names one IOASID set of one allocator. Never reused by that allocator.
public struct IOASIDSetID: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
    public var description: String { "set#\(rawValue)" }
}

/// Who owns a set. A process or VM owns at most one live set per allocator; any number of sets
/// may have no owner.
public enum IOASIDSetOwner: Hashable, Sendable {
    case none
    case process(pid: Int32)
    case vm(id: UInt64)
}

/// How many PASIDs a set may hold at once.
///
/// `.limited(n)` is carved out of the system capacity when the set is made (so the set can always
/// get its `n`, and `.limited(0)` really means zero). `.unlimited` is an explicit choice: such a set
/// takes PASIDs from whatever capacity nobody has reserved or carved out.
public enum IOASIDQuota: Hashable, Sendable {
    case unlimited
    case limited(UInt32)
}

/// The state of an allocated PASID.
public enum PASIDState: Hashable, Sendable {
    /// Live: accepts new users.
    case active
    /// Freed while users still held references: no new users; released on the last `put`.
    case freePending
}

/// A snapshot of one allocated PASID.
public struct PASIDEntry: Sendable {
    public let pasid: PASID
    public let set: IOASIDSetID
    /// References taken with `get` (or a successful `find`) and not yet dropped with `put`.
    public let users: Int
    public let state: PASIDState
    /// The set-private ID (e.g. the guest PASID a VM uses for this host PASID), if any.
    public let privateID: UInt32?
    public let privateData: (any Sendable)?
}

/// What happened, for notifiers.
public enum PASIDEvent: Hashable, Sendable {
    case alloc, free, bind, unbind
}

/// One notification. `free` is sent when a PASID is released for reuse (at `free` if it had no
/// users, else at the last `put`), so listeners can drop all state for it.
public struct PASIDNotification: Sendable {
    public let event: PASIDEvent
    public let pasid: PASID
    public let set: IOASIDSetID
    public let owner: IOASIDSetOwner
    public let privateID: UInt32?
    /// For bind/unbind: the caller's tag (e.g. a device ID); nil otherwise.
    public let device: UInt32?
}

/// A registration of a notifier, for `unregisterNotifier`.
public struct PASIDNotifierToken: Hashable, Sendable {
    let rawValue: UInt64
}

/// The host-wide PASID allocator, partitioned into IOASID sets with quotas.
///
/// Design notes:
/// - **Capacity.** A PASID width of `w` bits gives `2^w − 1` allocatable PASIDs (0 is reserved).
///   Capacity is spent three ways: `reserveCapacity` (held back for some other user, returned by
///   `cancelCapacity`), the quota of every `.limited` set (carved out at `allocSet`, returned at
///   `freeSet`), and PASIDs held by `.unlimited` sets. What is left is `availableCapacity`.
///   Therefore a limited set can always allocate up to its quota, as long as its range has room.
/// - **Lowest free ID.** Allocation returns the lowest unused PASID in `[min, max]`, found in a
///   bitmap of bitmaps (`FreeIDTree`) in O(log₆₄ 2^w) word operations, independent of how many
///   PASIDs are outstanding.
/// - **References.** A PASID starts with no users. `get` adds one, `put` drops one. `free` of a
///   PASID without users releases it at once; with users it becomes *free-pending*: `get`, `find`,
///   `bind` and attaching data refuse it (`EBUSY`), and the last `put` releases it. A free-pending
///   PASID still occupies its ID and its set's quota.
/// - **Sets.** Operations that name a PASID also name the set the caller acts for; a PASID of
///   another set is refused with `EPERM` (the caller must not touch what it does not own).
///   `freeSet` needs the set to be empty (`EBUSY` otherwise; use `freeAll(in:)` first).
/// - **Locking.** One lock (`Locked`, a pthread mutex TSan can see) guards all state. The `find` hook runs under that lock and must not
///   call back into the allocator. Notifiers run after the lock is dropped, on the calling thread,
///   highest priority first (ties: registration order), set notifiers and global notifiers merged.
///   Notifications from different threads may interleave.
/// - **No syscalls.** Everything is in process memory.
public final class PASIDAllocator: Sendable {
    /// The default PASID width of the modelled IOMMUs.
    public static let defaultPASIDWidth = 20

    public let pasidWidth: Int
    /// The largest PASID: `2^pasidWidth − 1`.
    public let maxPASID: PASID
    /// The number of allocatable PASIDs: `2^pasidWidth − 1`.
    public var systemCapacity: Int { Int(maxPASID) }

    private let state: Locked<State>

    /// - Throws: `EINVAL` unless `1 <= pasidWidth <= 20`.
    public init(pasidWidth: Int = PASIDAllocator.defaultPASIDWidth) throws(IOMMUError) {
        guard (1...20).contains(pasidWidth) else { throw .invalid("PASID width must be 1...20 bits") }
        self.pasidWidth = pasidWidth
        self.maxPASID = (1 << UInt32(pasidWidth)) - 1
        var tree = FreeIDTree(size: 1 << pasidWidth)
        tree.insert(0)  // PASID 0 means "no PASID"
        self.state = Locked(State(tree: tree, capacity: Int(maxPASID)))
    }

    // MARK: capacity

    /// Capacity nobody has reserved, carved out for a limited set, or used by an unlimited set.
    public var availableCapacity: Int { state.withLock { $0.pool } }
    /// Capacity held back with `reserveCapacity`.
    public var reservedCapacity: Int { state.withLock { $0.reserved } }

    /// Holds back `count` PASIDs of capacity. - Throws: `EINVAL` if `count < 0`; `ENOSPC` if more
    /// than `availableCapacity`.
    public func reserveCapacity(_ count: Int) throws(IOMMUError) {
        try state.withLock { (s) throws(IOMMUError) in
            guard count >= 0 else { throw .invalid("negative capacity") }
            guard count <= s.pool else { throw .noSpace("not enough unreserved PASID capacity") }
            s.reserved += count
        }
    }

    /// Returns capacity held back with `reserveCapacity`. - Throws: `EINVAL` if `count < 0` or more
    /// than is reserved.
    public func cancelCapacity(_ count: Int) throws(IOMMUError) {
        try state.withLock { (s) throws(IOMMUError) in
            guard count >= 0, count <= s.reserved else { throw .invalid("cancelling more capacity than reserved") }
            s.reserved -= count
        }
    }

    // MARK: sets

    /// Makes a set. - Throws: `EEXIST` if the process or VM already owns a live set; `ENOSPC` if a
    /// limited quota exceeds `availableCapacity`.
    public func allocSet(owner: IOASIDSetOwner, quota: IOASIDQuota) throws(IOMMUError) -> IOASIDSetID {
        try state.withLock { (s) throws(IOMMUError) in
            if owner != .none, s.sets.values.contains(where: { $0.owner == owner }) {
                throw .exists("this owner already has an IOASID set")
            }
            if case .limited(let n) = quota {
                guard Int(n) <= s.pool else { throw .noSpace("quota exceeds the available PASID capacity") }
                s.carved += Int(n)
            }
            let id = IOASIDSetID(rawValue: s.nextSetID)
            s.nextSetID += 1
            s.sets[id] = SetRecord(owner: owner, quota: quota)
            return id
        }
    }

    /// Frees an empty set and returns its quota to the system.
    /// - Throws: `ENOENT` if no such set; `EBUSY` if it still holds PASIDs (active or free-pending).
    public func freeSet(_ id: IOASIDSetID) throws(IOMMUError) {
        let notes = try state.withLock { (s) throws(IOMMUError) -> [Delivery] in
            guard let set = s.sets[id] else { throw .noEntry("no such IOASID set") }
            guard set.members.isEmpty else { throw .busy("the set still holds PASIDs") }
            if case .limited(let n) = set.quota { s.carved -= Int(n) }
            s.sets[id] = nil
            s.notifiers.removeAll { $0.set == id }
            return []
        }
        deliver(notes)
    }

    /// The live set owned by a process or VM. - Throws: `EINVAL` for `.none`; `ENOENT` if none.
    public func set(ownedBy owner: IOASIDSetOwner) throws(IOMMUError) -> IOASIDSetID {
        try state.withLock { (s) throws(IOMMUError) in
            guard owner != .none else { throw .invalid("sets without owner cannot be looked up by owner") }
            guard let id = s.sets.first(where: { $0.value.owner == owner })?.key else {
                throw .noEntry("owner has no IOASID set")
            }
            return id
        }
    }

    /// Owner, quota and number of PASIDs held (active plus free-pending). - Throws: `ENOENT`.
    public func setInfo(_ id: IOASIDSetID) throws(IOMMUError) -> (owner: IOASIDSetOwner, quota: IOASIDQuota, count: Int) {
        try state.withLock { (s) throws(IOMMUError) in
            guard let set = s.sets[id] else { throw .noEntry("no such IOASID set") }
            return (set.owner, set.quota, set.members.count)
        }
    }

    // MARK: PASIDs

    /// Allocates the lowest free PASID in `[min, max]` to `set`.
    /// - Throws: `EINVAL` if `min == 0`, `min > max` or `max > maxPASID`; `ENOENT` if no such set;
    ///   `ENOSPC` if the set's quota (or, for an unlimited set, the system capacity) is used up, or
    ///   no PASID in the range is free.
    public func alloc(in set: IOASIDSetID, min: PASID = 1, max: PASID? = nil,
                      privateData: (any Sendable)? = nil) throws(IOMMUError) -> PASID {
        let maxID = max ?? maxPASID
        let (pasid, notes) = try state.withLock { (s) throws(IOMMUError) -> (PASID, [Delivery]) in
            guard min != 0 else { throw .invalid("PASID 0 is reserved") }
            guard min <= maxID, maxID <= maxPASID else { throw .invalid("bad PASID range") }
            // Read fields, not the record: a live copy would make the insert below copy the member set.
            guard let quota = s.sets[set]?.quota, let held = s.sets[set]?.members.count else {
                throw .noEntry("no such IOASID set")
            }
            switch quota {
            case .limited(let n):
                guard held < Int(n) else { throw .noSpace("the set's quota is used up") }
            case .unlimited:
                guard s.pool > 0 else { throw .noSpace("no PASID capacity left") }
            }
            guard let found = s.tree.firstClear(from: Int(min)), found <= Int(maxID) else {
                throw .noSpace("no free PASID in the range")
            }
            let pasid = PASID(found)
            s.tree.insert(found)
            s.sets[set]!.members.insert(pasid)
            if quota == .unlimited { s.unlimitedUsed += 1 }
            s.entries[pasid] = Entry(set: set, privateData: privateData)
            return (pasid, s.notes(.alloc, pasid, device: nil))
        }
        deliver(notes)
        return pasid
    }

    /// Frees a PASID of `set`. Without users it is released at once (a `free` notification);
    /// with users it becomes free-pending until the last `put`.
    /// - Returns: true if released now.
    /// - Throws: `ENOENT` if not allocated or already free-pending; `EPERM` if it belongs to another set.
    @discardableResult
    public func free(_ pasid: PASID, in set: IOASIDSetID) throws(IOMMUError) -> Bool {
        let (released, notes) = try state.withLock { (s) throws(IOMMUError) -> (Bool, [Delivery]) in
            var e = try s.owned(pasid, set)
            guard e.state == .active else { throw .noEntry("PASID is already freed") }
            if e.users == 0 { return (true, s.release(pasid)) }
            e.state = .freePending
            s.entries[pasid] = e
            return (false, [])
        }
        deliver(notes)
        return released
    }

    /// Frees every active PASID of `set` as `free` does. - Returns: how many were released at once.
    /// - Throws: `ENOENT` if no such set.
    @discardableResult
    public func freeAll(in set: IOASIDSetID) throws(IOMMUError) -> Int {
        let (count, notes) = try state.withLock { (s) throws(IOMMUError) -> (Int, [Delivery]) in
            // An array, not the record: holding the record would make each release copy the member set.
            guard let members = s.sets[set]?.members.sorted() else { throw .noEntry("no such IOASID set") }
            var notes: [Delivery] = []
            var count = 0
            for pasid in members {
                guard var e = s.entries[pasid], e.state == .active else { continue }
                if e.users == 0 {
                    notes += s.release(pasid)
                    count += 1
                } else {
                    e.state = .freePending
                    s.entries[pasid] = e
                }
            }
            return (count, notes)
        }
        deliver(notes)
        return count
    }

    /// Takes a reference. - Returns: the new number of users.
    /// - Throws: `ENOENT` if not allocated; `EPERM` if another set's; `EBUSY` if free-pending.
    @discardableResult
    public func get(_ pasid: PASID, in set: IOASIDSetID) throws(IOMMUError) -> Int {
        try state.withLock { (s) throws(IOMMUError) in
            var e = try s.owned(pasid, set)
            guard e.state == .active else { throw .busy("PASID is free-pending") }
            e.users += 1
            s.entries[pasid] = e
            return e.users
        }
    }

    /// Drops a reference; the last one releases a free-pending PASID (a `free` notification).
    /// - Returns: true if the PASID was released.
    /// - Throws: `ENOENT` if not allocated; `EPERM` if another set's; `EINVAL` if it has no users.
    @discardableResult
    public func put(_ pasid: PASID, in set: IOASIDSetID) throws(IOMMUError) -> Bool {
        let (released, notes) = try state.withLock { (s) throws(IOMMUError) -> (Bool, [Delivery]) in
            var e = try s.owned(pasid, set)
            guard e.users > 0 else { throw .invalid("PASID has no references to drop") }
            e.users -= 1
            if e.users == 0, e.state == .freePending { return (true, s.release(pasid)) }
            s.entries[pasid] = e
            return (false, [])
        }
        deliver(notes)
        return released
    }

    /// Looks a PASID up (in `set`, or in any set if nil) and, under the allocator lock, offers it to
    /// `takeReference`. If the hook returns true a PASID reference is taken as by `get` (drop it
    /// with `put`) and the entry is returned with the new user count.
    /// - Throws: `ENOENT` if not allocated or not in `set`; `EBUSY` if free-pending; `EAGAIN` if the
    ///   hook declined.
    public func find(_ pasid: PASID, in set: IOASIDSetID? = nil,
                     takeReference: (PASIDEntry) -> Bool) throws(IOMMUError) -> PASIDEntry {
        try state.withLock { (s) throws(IOMMUError) in
            guard var e = s.entries[pasid], set == nil || e.set == set else { throw .noEntry("no such PASID") }
            guard e.state == .active else { throw .busy("PASID is free-pending") }
            guard takeReference(s.snapshot(pasid, e)) else { throw .again("the take-reference hook declined") }
            e.users += 1
            s.entries[pasid] = e
            return s.snapshot(pasid, e)
        }
    }

    /// A snapshot of one PASID. - Throws: `ENOENT` if not allocated; `EPERM` if another set's.
    public func entry(_ pasid: PASID, in set: IOASIDSetID) throws(IOMMUError) -> PASIDEntry {
        try state.withLock { (s) throws(IOMMUError) in s.snapshot(pasid, try s.owned(pasid, set)) }
    }

    /// Attaches private data. - Throws: `ENOENT`/`EPERM` as `get`; `EBUSY` if free-pending;
    /// `EEXIST` if data is already attached.
    public func attachData(_ data: any Sendable, to pasid: PASID, in set: IOASIDSetID) throws(IOMMUError) {
        try state.withLock { (s) throws(IOMMUError) in
            var e = try s.owned(pasid, set)
            guard e.state == .active else { throw .busy("PASID is free-pending") }
            guard e.privateData == nil else { throw .exists("private data already attached") }
            e.privateData = data
            s.entries[pasid] = e
        }
    }

    /// Detaches and returns private data. - Throws: `ENOENT`/`EPERM` as `get`; `ENOENT` if none.
    @discardableResult
    public func detachData(from pasid: PASID, in set: IOASIDSetID) throws(IOMMUError) -> any Sendable {
        try state.withLock { (s) throws(IOMMUError) in
            var e = try s.owned(pasid, set)
            guard let data = e.privateData else { throw .noEntry("no private data attached") }
            e.privateData = nil
            s.entries[pasid] = e
            return data
        }
    }

    /// The PASIDs of a set (active and free-pending), in ascending order. - Throws: `ENOENT`.
    public func entries(in set: IOASIDSetID) throws(IOMMUError) -> [PASIDEntry] {
        try state.withLock { (s) throws(IOMMUError) in
            guard let rec = s.sets[set] else { throw .noEntry("no such IOASID set") }
            return rec.members.sorted().map { s.snapshot($0, s.entries[$0]!) }
        }
    }

    /// Calls `body` for each PASID of a set, in ascending order, on a snapshot taken under the lock
    /// (so `body` may call the allocator). - Throws: `ENOENT` if no such set.
    public func forEach(in set: IOASIDSetID, _ body: (PASIDEntry) throws(IOMMUError) -> Void) throws(IOMMUError) {
        for e in try entries(in: set) { try body(e) }
    }

    // MARK: set-private IDs

    /// Gives a PASID of `set` a set-private ID (a guest PASID). Private IDs are unique within a set.
    /// - Throws: `ENOENT`/`EPERM` as `get`; `EBUSY` if free-pending; `EEXIST` if the PASID already
    ///   has a private ID or another PASID of the set uses `privateID`.
    public func setPrivateID(_ privateID: UInt32, for pasid: PASID, in set: IOASIDSetID) throws(IOMMUError) {
        try state.withLock { (s) throws(IOMMUError) in
            var e = try s.owned(pasid, set)
            guard e.state == .active else { throw .busy("PASID is free-pending") }
            guard e.privateID == nil else { throw .exists("PASID already has a set-private ID") }
            guard s.sets[set]!.privateToHost[privateID] == nil else { throw .exists("set-private ID already in use") }
            e.privateID = privateID
            s.entries[pasid] = e
            s.sets[set]!.privateToHost[privateID] = pasid
        }
    }

    /// Removes a PASID's set-private ID. - Throws: `ENOENT`/`EPERM` as `get`; `ENOENT` if it has none.
    public func clearPrivateID(for pasid: PASID, in set: IOASIDSetID) throws(IOMMUError) {
        try state.withLock { (s) throws(IOMMUError) in
            var e = try s.owned(pasid, set)
            guard let p = e.privateID else { throw .noEntry("PASID has no set-private ID") }
            e.privateID = nil
            s.entries[pasid] = e
            s.sets[set]!.privateToHost[p] = nil
        }
    }

    /// The host PASID behind a set-private ID. - Throws: `ENOENT` if no such set or ID.
    public func hostPASID(forPrivateID privateID: UInt32, in set: IOASIDSetID) throws(IOMMUError) -> PASID {
        try state.withLock { (s) throws(IOMMUError) in
            guard let rec = s.sets[set] else { throw .noEntry("no such IOASID set") }
            guard let p = rec.privateToHost[privateID] else { throw .noEntry("no such set-private ID") }
            return p
        }
    }

    /// The set-private ID of a host PASID. - Throws: `ENOENT`/`EPERM` as `get`; `ENOENT` if none.
    public func privateID(forHostPASID pasid: PASID, in set: IOASIDSetID) throws(IOMMUError) -> UInt32 {
        try state.withLock { (s) throws(IOMMUError) in
            guard let p = try s.owned(pasid, set).privateID else { throw .noEntry("PASID has no set-private ID") }
            return p
        }
    }

    // MARK: notifications

    /// Registers a notifier for one set (or all sets if `set` is nil). Higher `priority` runs first.
    /// A set's notifiers are dropped when the set is freed. - Throws: `ENOENT` if no such set.
    @discardableResult
    public func registerNotifier(set: IOASIDSetID? = nil, priority: Int = 0,
                                 _ handler: @escaping @Sendable (PASIDNotification) -> Void) throws(IOMMUError) -> PASIDNotifierToken {
        try state.withLock { (s) throws(IOMMUError) in
            if let set, s.sets[set] == nil { throw .noEntry("no such IOASID set") }
            let token = PASIDNotifierToken(rawValue: s.nextNotifier)
            s.nextNotifier += 1
            // Kept in delivery order: higher priority first, ties in registration order.
            let at = s.notifiers.firstIndex { $0.priority < priority } ?? s.notifiers.endIndex
            s.notifiers.insert(Notifier(token: token, set: set, priority: priority, handler: handler), at: at)
            return token
        }
    }

    /// - Throws: `ENOENT` if the token is not registered.
    public func unregisterNotifier(_ token: PASIDNotifierToken) throws(IOMMUError) {
        try state.withLock { (s) throws(IOMMUError) in
            guard let i = s.notifiers.firstIndex(where: { $0.token == token }) else { throw .noEntry("no such notifier") }
            s.notifiers.remove(at: i)
        }
    }

    /// Announces that a PASID was bound to a device (`device` is the caller's tag).
    /// - Throws: `ENOENT`/`EPERM` as `get`; `EBUSY` if free-pending.
    public func notifyBind(_ pasid: PASID, in set: IOASIDSetID, device: UInt32? = nil) throws(IOMMUError) {
        let notes = try state.withLock { (s) throws(IOMMUError) -> [Delivery] in
            let e = try s.owned(pasid, set)
            guard e.state == .active else { throw .busy("PASID is free-pending") }
            return s.notes(.bind, pasid, device: device)
        }
        deliver(notes)
    }

    /// Announces that a PASID was unbound (allowed while free-pending, so users can tear down).
    /// - Throws: `ENOENT`/`EPERM` as `get`.
    public func notifyUnbind(_ pasid: PASID, in set: IOASIDSetID, device: UInt32? = nil) throws(IOMMUError) {
        let notes = try state.withLock { (s) throws(IOMMUError) -> [Delivery] in
            _ = try s.owned(pasid, set)
            return s.notes(.unbind, pasid, device: device)
        }
        deliver(notes)
    }

    private func deliver(_ notes: [Delivery]) {
        for d in notes { d.handler(d.note) }
    }
}

// MARK: - state

struct Delivery {
    let handler: @Sendable (PASIDNotification) -> Void
    let note: PASIDNotification
}

private struct SetRecord {
    var owner: IOASIDSetOwner
    var quota: IOASIDQuota
    var members: Set<PASID> = []
    var privateToHost: [UInt32: PASID] = [:]
}

private struct Entry {
    var set: IOASIDSetID
    var users = 0
    var state = PASIDState.active
    var privateID: UInt32?
    var privateData: (any Sendable)?
}

private struct Notifier {
    let token: PASIDNotifierToken
    let set: IOASIDSetID?
    let priority: Int
    let handler: @Sendable (PASIDNotification) -> Void
}

private struct State: ~Copyable {
    var tree: FreeIDTree
    let capacity: Int
    var reserved = 0
    var carved = 0
    var unlimitedUsed = 0
    var entries: [PASID: Entry] = [:]
    var sets: [IOASIDSetID: SetRecord] = [:]
    var nextSetID: UInt32 = 1
    var notifiers: [Notifier] = []
    var nextNotifier: UInt64 = 1

    init(tree: FreeIDTree, capacity: Int) {
        self.tree = tree
        self.capacity = capacity
    }

    var pool: Int { capacity - reserved - carved - unlimitedUsed }

    func owned(_ pasid: PASID, _ set: IOASIDSetID) throws(IOMMUError) -> Entry {
        guard let e = entries[pasid] else { throw .noEntry("PASID is not allocated") }
        guard e.set == set else { throw .notPermitted("PASID belongs to another IOASID set") }
        return e
    }

    func snapshot(_ pasid: PASID, _ e: Entry) -> PASIDEntry {
        PASIDEntry(pasid: pasid, set: e.set, users: e.users, state: e.state,
                   privateID: e.privateID, privateData: e.privateData)
    }

    /// Returns the ID to the free tree and the quota to its set.
    mutating func release(_ pasid: PASID) -> [Delivery] {
        let notes = self.notes(.free, pasid, device: nil)
        let e = entries.removeValue(forKey: pasid)!
        tree.remove(Int(pasid))
        sets[e.set]!.members.remove(pasid)
        if let p = e.privateID { sets[e.set]!.privateToHost[p] = nil }
        if sets[e.set]!.quota == .unlimited { unlimitedUsed -= 1 }
        return notes
    }

    /// The deliveries of one event, in order (`notifiers` is kept sorted). No allocation when
    /// nobody listens.
    func notes(_ event: PASIDEvent, _ pasid: PASID, device: UInt32?) -> [Delivery] {
        guard !notifiers.isEmpty else { return [] }
        let e = entries[pasid]!
        let note = PASIDNotification(event: event, pasid: pasid, set: e.set, owner: sets[e.set]!.owner,
                                     privateID: e.privateID, device: device)
        var out: [Delivery] = []
        for n in notifiers where n.set == nil || n.set == e.set { out.append(Delivery(handler: n.handler, note: note)) }
        return out
    }
}
