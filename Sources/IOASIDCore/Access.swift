import IOASIDStructures

/// What an access's owner (an in-process user such as a mediated-device driver) is told.
public protocol AccessOwner: AnyObject, Sendable {
    /// IOVA `[iova, iova+length)` is being unmapped: the owner must unpin what it pinned there,
    /// with `ContextState.unpin(access:iova:length:)`, before returning. Called with the context
    /// lock held.
    func unmapRequested(_ access: Access, iova: UInt64, length: UInt64, state: ContextState)
}

/// An in-process user of an IOAS that reads, writes and pins through it without a device, as
/// mdev drivers do (the kernel's `iommufd_access`).
public final class Access: IOMMUObject, @unchecked Sendable {
    /// The typed ID of this kind of object.
    public typealias ID = TypedID<Access>
    public weak var owner: (any AccessOwner)?
    /// Whether the access pins pages (and so needs page-aligned IOVA).
    public let pinsPages: Bool
    /// The IOAS the access uses, if attached.
    public internal(set) var ioas: IOAS?
    /// Pinned spans.
    var pins: [(iova: UInt64, length: UInt64)] = []

    var iovaAlignment: UInt64 = 1

    init(owner: any AccessOwner, pinsPages: Bool, pageSize: UInt64) {
        self.owner = owner
        self.pinsPages = pinsPages
        iovaAlignment = pinsPages ? pageSize : 1
        super.init(kind: .access)
    }

    public var id: ID { ID(objectID) }

    override public func destroyed(in state: ContextState) {
        try? state.changeIOAS(self, to: nil)
    }
}

extension ContextState {
    func notifyAccessesOfUnmap(_ ioas: IOAS, range: IOVARange) {
        for a in ioas.table.accesses {
            a.owner?.unmapRequested(a, iova: range.start, length: range.last - range.start + 1, state: self)
        }
    }

    /// Moves `access` to `ioas` (or detaches it when nil); `EBUSY` while it has pins… the kernel
    /// asks the owner to unpin everything first.
    func changeIOAS(_ access: Access, to ioas: IOAS?) throws(IOMMUError) {
        let current = access.ioas
        if current === ioas { return }
        if let new = ioas {
            let needed = max(new.table.iovaAlignment, access.iovaAlignment)
            if needed > new.table.iovaAlignment, !new.table.areasConform(to: needed, pageSize: options.pageSize) {
                throw .addressInUse("areas not aligned for the access")
            }
            new.table.accesses.append(access)
            new.table.iovaAlignment = needed
            new.users += 1
        }
        if let old = current {
            access.owner?.unmapRequested(access, iova: 0, length: .max, state: self)
            for p in access.pins { releaseAccessPin(old, iova: p.iova, length: p.length) }
            access.pins.removeAll()
            old.table.accesses.removeAll { $0 === access }
            old.table.iovaAlignment = old.table.requiredAlignment(pageSize: options.pageSize)
            old.users -= 1
        }
        access.ioas = ioas
    }

    /// Unpins what `access` pinned at `[iova, iova+length)`; for access owners.
    public func unpin(access: Access, iova: UInt64, length: UInt64) {
        guard let i = access.pins.firstIndex(where: { $0.iova == iova && $0.length == length }), let ioas = access.ioas else { return }
        access.pins.remove(at: i)
        releaseAccessPin(ioas, iova: iova, length: length)
    }

    private func releaseAccessPin(_ ioas: IOAS, iova: UInt64, length: UInt64) {
        guard let range = IOVARange(start: iova, length: length) else { return }
        var cursor = range.start
        while let i = ioas.table.areas.index(containing: cursor) {
            let e = ioas.table.areas[i]
            let last = min(range.last, e.range.last)
            let off = e.value.pagesOffset + (cursor - e.range.start)
            e.value.pages.unpin(offset: off, length: last - cursor + 1, state: self)
            ioas.table.areas[i].value.accessPins -= 1
            if last == range.last { break }
            cursor = last + 1
        }
    }
}

extension Context {
    /// Creates an access for `owner` attached to `ioas`.
    public func createAccess(owner: any AccessOwner, ioas: IOAS.ID, pinsPages: Bool) throws(IOMMUError) -> Access {
        try locked { s throws(IOMMUError) in
            try FaultInjection.check(.allocation(.access))
            let target = try s.object(ioas.object, as: IOAS.self)
            let a = Access(owner: owner, pinsPages: pinsPages, pageSize: s.options.pageSize)
            s.reserve(a)
            do throws(IOMMUError) { try s.changeIOAS(a, to: target) } catch { s.abort(a); throw error }
            a.users = 1 // held by its owner
            s.publish(a)
            return a
        }
    }

    /// Destroys an access on behalf of its owner.
    public func destroyAccess(_ access: Access) {
        try? locked { s throws(IOMMUError) in
            guard access.isLive else { return }
            access.users = 0
            s.remove(access)
        }
    }

    /// Moves an access to another IOAS; `ENOENT` if it has none.
    public func replaceIOAS(of access: Access, with ioas: IOAS.ID) throws(IOMMUError) {
        try locked { s throws(IOMMUError) in
            guard access.ioas != nil else { throw .noEntry("access has no IOAS") }
            try s.changeIOAS(access, to: try s.object(ioas.object, as: IOAS.self))
        }
    }

    /// Pins the pages behind `[iova, iova+length)` for `access`; returns the host address of
    /// each page in order.
    ///
    /// - Throws: `ENOENT` if not fully mapped; `EINVAL` if not page aligned within the areas or
    ///   being unmapped; `EPERM` if the mapping lacks the permission; `EFAULT` for unmapped memory.
    public func pinPages(_ access: Access, iova: UInt64, length: UInt64, write: Bool) throws(IOMMUError) -> [UInt64] {
        try locked { s throws(IOMMUError) in
            guard access.pinsPages else { throw .invalid("access does not pin pages") }
            guard length != 0 else { throw .invalid("zero length") }
            guard let range = IOVARange(start: iova, length: length) else { throw .overflow("IOVA + length overflows") }
            guard let ioas = access.ioas else { throw .noEntry("access has no IOAS") }
            let pageSize = s.options.pageSize
            var done: [(Int, UInt64, UInt64)] = []
            var result: [UInt64] = []
            var cursor = range.start
            do throws(IOMMUError) {
                guard var i = ioas.table.areas.index(containing: cursor) else { throw .noEntry("IOVA is not mapped") }
                while true {
                    let e = ioas.table.areas[i]
                    let last = min(range.last, e.range.last)
                    let off = e.value.pagesOffset + (cursor - e.range.start)
                    guard off % pageSize == 0 else { throw .invalid("not page aligned in the area") }
                    if last != range.last, (e.value.pagesOffset + (e.range.last - e.range.start)) % pageSize != pageSize - 1 {
                        throw .invalid("area does not end on a page")
                    }
                    if write ? !e.value.writable : !e.value.readable { throw .notPermitted("mapping lacks the permission") }
                    try e.value.pages.pin(offset: off, length: last - cursor + 1, state: s)
                    ioas.table.areas[i].value.accessPins += 1
                    done.append((i, off, last - cursor + 1))
                    var p = off & ~(pageSize - 1)
                    while p <= off + (last - cursor) { result.append(e.value.pages.hostAddress(p)); p += pageSize }
                    if last == range.last { break }
                    cursor = last + 1
                    i += 1
                    guard i < ioas.table.areas.count, ioas.table.areas[i].range.start == cursor else { throw .noEntry("IOVA has a hole") }
                }
            } catch {
                for (i, off, len) in done {
                    ioas.table.areas[i].value.pages.unpin(offset: off, length: len, state: s)
                    ioas.table.areas[i].value.accessPins -= 1
                }
                throw error
            }
            access.pins.append((iova, length))
            return result
        }
    }

    /// Drops a pin made by `pinPages`.
    public func unpinPages(_ access: Access, iova: UInt64, length: UInt64) {
        try? locked { s throws(IOMMUError) in s.unpin(access: access, iova: iova, length: length) }
    }

    /// Reads (or, with `write`, writes) `buffer.count` bytes at `iova` through the IOAS of `access`.
    ///
    /// - Throws: `ENOENT` if not fully mapped; `EPERM` without the permission; `EFAULT`.
    public func accessRW(_ access: Access, iova: UInt64, buffer: UnsafeMutableRawBufferPointer, write: Bool) throws(IOMMUError) {
        try locked { s throws(IOMMUError) in
            guard buffer.count != 0 else { throw .invalid("zero length") }
            guard let range = IOVARange(start: iova, length: UInt64(buffer.count)) else { throw .overflow("IOVA + length overflows") }
            guard let ioas = access.ioas else { throw .noEntry("access has no IOAS") }
            var cursor = range.start
            var done = 0
            guard var i = ioas.table.areas.index(containing: cursor) else { throw .noEntry("IOVA is not mapped") }
            while true {
                let e = ioas.table.areas[i]
                let last = min(range.last, e.range.last)
                if write ? !e.value.writable : !e.value.readable { throw .notPermitted("mapping lacks the permission") }
                let n = Int(last - cursor + 1)
                let offset = e.value.pagesOffset + (cursor - e.range.start)
                // Past the part of a file that is mapped: past its end, as a copy there would fault.
                guard e.value.pages.isHostMapped(offset, UInt64(n)) else { throw .fault("file pages past the end of the file") }
                let host = e.value.pages.hostAddress(offset)
                let slice = UnsafeMutableRawBufferPointer(rebasing: buffer[done..<done + n])
                if write { try s.memory.copyOut(UnsafeRawBufferPointer(slice), to: host) } else { try s.memory.copyIn(from: host, into: slice) }
                done += n
                if last == range.last { break }
                cursor = last + 1
                i += 1
                guard i < ioas.table.areas.count, ioas.table.areas[i].range.start == cursor else { throw .noEntry("IOVA has a hole") }
            }
        }
    }
}
