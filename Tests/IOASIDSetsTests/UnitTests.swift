import IOASIDCore
@testable import IOASIDSets
import Testing

@Suite struct FreeIDTreeTests {
    @Test func lowestClearMatchesNaiveModel() {
        var rng = SeededRNG(seed: 7)
        for size in [1, 63, 64, 65, 4096, 4097, 300_000] {
            var tree = FreeIDTree(size: size)
            var used = Set<Int>()
            for _ in 0..<2000 {
                let i = Int.random(in: 0..<size, using: &rng)
                if used.contains(i) { tree.remove(i); used.remove(i) } else { tree.insert(i); used.insert(i) }
                #expect(tree.contains(i) == used.contains(i))
                let from = Int.random(in: 0..<size, using: &rng)
                let expected = (from..<min(size, from + 5000)).first { !used.contains($0) }
                let got = tree.firstClear(from: from)
                if let expected { #expect(got == expected) } else if from + 5000 >= size { #expect(got == nil) }
            }
        }
    }

    @Test func fullTreeHasNoClearBit() {
        var tree = FreeIDTree(size: 130)
        for i in 0..<130 { tree.insert(i) }
        #expect(tree.firstClear(from: 0) == nil)
        tree.remove(129)
        #expect(tree.firstClear(from: 0) == 129)
        #expect(tree.firstClear(from: 130) == nil)
    }
}

@Suite struct CapacityTests {
    @Test func widthSetsCapacity() throws {
        let a = try PASIDAllocator()
        #expect(a.pasidWidth == 20)
        #expect(a.maxPASID == 0xF_FFFF)
        #expect(a.systemCapacity == (1 << 20) - 1)  // PASID 0 is reserved
        #expect(a.availableCapacity == (1 << 20) - 1)
        #expect(try PASIDAllocator(pasidWidth: 1).systemCapacity == 1)
    }

    @Test func badWidthIsEINVAL() {
        #expect(errnoOf { try PASIDAllocator(pasidWidth: 0) } == EINVAL)
        #expect(errnoOf { try PASIDAllocator(pasidWidth: 21) } == EINVAL)
    }

    @Test func reserveAndCancel() throws {
        let a = try PASIDAllocator(pasidWidth: 4)  // 15 PASIDs
        try a.reserveCapacity(10)
        #expect(a.availableCapacity == 5)
        #expect(a.reservedCapacity == 10)
        #expect(errnoOf { try a.reserveCapacity(6) } == ENOSPC)
        #expect(errnoOf { try a.reserveCapacity(-1) } == EINVAL)
        #expect(errnoOf { try a.cancelCapacity(11) } == EINVAL)
        #expect(errnoOf { try a.cancelCapacity(-1) } == EINVAL)
        try a.cancelCapacity(4)
        #expect(a.availableCapacity == 9)
        // Reserved capacity is not available to sets.
        #expect(errnoOf { try a.allocSet(owner: .none, quota: .limited(10)) } == ENOSPC)
        let u = try a.allocSet(owner: .none, quota: .unlimited)
        for _ in 0..<9 { _ = try a.alloc(in: u) }
        #expect(errnoOf { try a.alloc(in: u) } == ENOSPC)
    }
}

@Suite struct SetTests {
    @Test func ownersAreUnique() throws {
        let a = try PASIDAllocator()
        let vm = try a.allocSet(owner: .vm(id: 1), quota: .limited(4))
        #expect(errnoOf { try a.allocSet(owner: .vm(id: 1), quota: .unlimited) } == EEXIST)
        let p = try a.allocSet(owner: .process(pid: 1), quota: .unlimited)
        _ = try a.allocSet(owner: .none, quota: .unlimited)
        _ = try a.allocSet(owner: .none, quota: .unlimited)
        #expect(try a.set(ownedBy: .vm(id: 1)) == vm)
        #expect(try a.set(ownedBy: .process(pid: 1)) == p)
        #expect(errnoOf { try a.set(ownedBy: .vm(id: 2)) } == ENOENT)
        #expect(errnoOf { try a.set(ownedBy: .none) } == EINVAL)
        try a.freeSet(vm)
        #expect(errnoOf { try a.set(ownedBy: .vm(id: 1)) } == ENOENT)
        _ = try a.allocSet(owner: .vm(id: 1), quota: .unlimited)  // owner may make a new set
    }

    @Test func quotaZeroMeansZero() throws {
        let a = try PASIDAllocator()
        let s = try a.allocSet(owner: .none, quota: .limited(0))
        #expect(errnoOf { try a.alloc(in: s) } == ENOSPC)
        #expect(a.availableCapacity == a.systemCapacity)
    }

    @Test func quotaIsCarvedAndReturned() throws {
        let a = try PASIDAllocator(pasidWidth: 4)
        let s = try a.allocSet(owner: .vm(id: 1), quota: .limited(10))
        #expect(a.availableCapacity == 5)
        #expect(errnoOf { try a.allocSet(owner: .vm(id: 2), quota: .limited(6)) } == ENOSPC)
        for _ in 0..<10 { _ = try a.alloc(in: s) }
        #expect(errnoOf { try a.alloc(in: s) } == ENOSPC)
        #expect(try a.setInfo(s).count == 10)
        #expect(errnoOf { try a.freeSet(s) } == EBUSY)
        #expect(try a.freeAll(in: s) == 10)
        try a.freeSet(s)
        #expect(a.availableCapacity == 15)
        #expect(errnoOf { try a.freeSet(s) } == ENOENT)
        #expect(errnoOf { try a.setInfo(s) } == ENOENT)
        #expect(errnoOf { try a.freeAll(in: s) } == ENOENT)
    }

    @Test func unlimitedSetsShareTheRest() throws {
        let a = try PASIDAllocator(pasidWidth: 3)  // 7 PASIDs
        let l = try a.allocSet(owner: .none, quota: .limited(3))
        let u = try a.allocSet(owner: .none, quota: .unlimited)
        for _ in 0..<4 { _ = try a.alloc(in: u) }
        #expect(errnoOf { try a.alloc(in: u) } == ENOSPC)
        for _ in 0..<3 { _ = try a.alloc(in: l) }  // the limited set still gets its quota
        #expect(a.availableCapacity == 0)
        #expect(errnoOf { try a.reserveCapacity(1) } == ENOSPC)
    }
}

@Suite struct AllocTests {
    @Test func lowestFreeInRange() throws {
        let a = try PASIDAllocator()
        let s = try a.allocSet(owner: .none, quota: .unlimited)
        #expect(try a.alloc(in: s) == 1)
        #expect(try a.alloc(in: s) == 2)
        #expect(try a.alloc(in: s, min: 100, max: 200) == 100)
        #expect(try a.alloc(in: s, min: 100, max: 200) == 101)
        try a.free(1, in: s)
        #expect(try a.alloc(in: s) == 1)
        #expect(try a.alloc(in: s) == 3)
        #expect(try a.alloc(in: s, min: 0xF_FFFF) == 0xF_FFFF)
    }

    @Test func rangeErrors() throws {
        let a = try PASIDAllocator(pasidWidth: 8)
        let s = try a.allocSet(owner: .none, quota: .unlimited)
        #expect(errnoOf { try a.alloc(in: s, min: 0) } == EINVAL)
        #expect(errnoOf { try a.alloc(in: s, min: 10, max: 9) } == EINVAL)
        #expect(errnoOf { try a.alloc(in: s, min: 1, max: 256) } == EINVAL)
        #expect(errnoOf { try a.alloc(in: IOASIDSetID(rawValue: 99)) } == ENOENT)
        _ = try a.alloc(in: s, min: 5, max: 6)
        _ = try a.alloc(in: s, min: 5, max: 6)
        #expect(errnoOf { try a.alloc(in: s, min: 5, max: 6) } == ENOSPC)
    }

    @Test func freeErrors() throws {
        let a = try PASIDAllocator()
        let s = try a.allocSet(owner: .vm(id: 1), quota: .limited(4))
        let t = try a.allocSet(owner: .vm(id: 2), quota: .limited(4))
        let p = try a.alloc(in: s)
        #expect(errnoOf { try a.free(p, in: t) } == EPERM)
        #expect(errnoOf { try a.free(77, in: s) } == ENOENT)
        #expect(try a.free(p, in: s))
        #expect(errnoOf { try a.free(p, in: s) } == ENOENT)
        #expect(errnoOf { try a.entry(p, in: s) } == ENOENT)
    }
}

@Suite struct ReferenceTests {
    @Test func getPutAndFreePending() throws {
        let a = try PASIDAllocator()
        let s = try a.allocSet(owner: .none, quota: .limited(2))
        let t = try a.allocSet(owner: .none, quota: .limited(2))
        let p = try a.alloc(in: s)
        #expect(try a.get(p, in: s) == 1)
        #expect(try a.get(p, in: s) == 2)
        #expect(errnoOf { try a.get(p, in: t) } == EPERM)
        #expect(errnoOf { try a.get(999, in: s) } == ENOENT)
        #expect(try a.free(p, in: s) == false)  // users remain: free-pending
        #expect(try a.entry(p, in: s).state == .freePending)
        #expect(errnoOf { try a.get(p, in: s) } == EBUSY)  // no new users
        #expect(errnoOf { try a.free(p, in: s) } == ENOENT)  // already freed
        #expect(try a.setInfo(s).count == 1)  // still holds quota and ID
        #expect(try a.alloc(in: s) == p + 1)
        #expect(errnoOf { try a.alloc(in: s) } == ENOSPC)
        #expect(errnoOf { try a.put(p, in: t) } == EPERM)
        #expect(try a.put(p, in: s) == false)
        #expect(try a.put(p, in: s) == true)  // last put releases
        #expect(errnoOf { try a.put(p, in: s) } == ENOENT)
        #expect(try a.alloc(in: s) == p)
    }

    @Test func putWithoutUsersIsEINVAL() throws {
        let a = try PASIDAllocator()
        let s = try a.allocSet(owner: .none, quota: .unlimited)
        let p = try a.alloc(in: s)
        #expect(errnoOf { try a.put(p, in: s) } == EINVAL)
        try a.get(p, in: s)
        #expect(try a.put(p, in: s) == false)  // active PASIDs are not released by put
        #expect(try a.entry(p, in: s).state == .active)
    }

    @Test func findWithHook() throws {
        let a = try PASIDAllocator()
        let s = try a.allocSet(owner: .none, quota: .unlimited)
        let t = try a.allocSet(owner: .none, quota: .unlimited)
        let p = try a.alloc(in: s, privateData: "ctx")
        var seen: String?
        let e = try a.find(p, in: s) { entry in seen = entry.privateData as? String; return true }
        #expect(seen == "ctx")
        #expect(e.users == 1)
        #expect(try a.find(p) { _ in true }.users == 2)  // any set
        #expect(errnoOf { try a.find(p, in: s) { _ in false } } == EAGAIN)
        #expect(try a.entry(p, in: s).users == 2)  // a declined find takes nothing
        #expect(errnoOf { try a.find(p, in: t) { _ in true } } == ENOENT)
        #expect(errnoOf { try a.find(500) { _ in true } } == ENOENT)
        try a.free(p, in: s)
        #expect(errnoOf { try a.find(p, in: s) { _ in true } } == EBUSY)
    }
}

@Suite struct PrivateDataTests {
    @Test func attachDetach() throws {
        let a = try PASIDAllocator()
        let s = try a.allocSet(owner: .none, quota: .unlimited)
        let t = try a.allocSet(owner: .none, quota: .unlimited)
        let p = try a.alloc(in: s)
        #expect(errnoOf { try a.detachData(from: p, in: s) } == ENOENT)
        try a.attachData(42, to: p, in: s)
        #expect(errnoOf { try a.attachData(43, to: p, in: s) } == EEXIST)
        #expect(errnoOf { try a.attachData(43, to: p, in: t) } == EPERM)
        #expect(errnoOf { try a.attachData(43, to: 9, in: s) } == ENOENT)
        #expect(try a.entry(p, in: s).privateData as? Int == 42)
        #expect(try a.detachData(from: p, in: s) as? Int == 42)
        #expect(try a.entry(p, in: s).privateData == nil)
        try a.get(p, in: s)
        try a.free(p, in: s)
        #expect(errnoOf { try a.attachData(1, to: p, in: s) } == EBUSY)
    }
}

@Suite struct IterationTests {
    @Test func forEachAndFreeAll() throws {
        let a = try PASIDAllocator()
        let s = try a.allocSet(owner: .none, quota: .unlimited)
        let other = try a.allocSet(owner: .none, quota: .unlimited)
        for _ in 0..<5 { _ = try a.alloc(in: s) }
        _ = try a.alloc(in: other)
        _ = try a.alloc(in: s, min: 50)
        var seen: [PASID] = []
        try a.forEach(in: s) { seen.append($0.pasid) }
        #expect(seen == [1, 2, 3, 4, 5, 50])
        try a.get(3, in: s)
        #expect(try a.freeAll(in: s) == 5)  // 3 becomes free-pending
        #expect(try a.entries(in: s).map(\.pasid) == [3])
        #expect(try a.entries(in: s).first?.state == .freePending)
        #expect(try a.entries(in: other).count == 1)
        #expect(errnoOf { try a.entries(in: IOASIDSetID(rawValue: 77)) } == ENOENT)
        #expect(errnoOf { try a.forEach(in: IOASIDSetID(rawValue: 77)) { _ in } } == ENOENT)
        #expect(try a.put(3, in: s))
        #expect(try a.entries(in: s).isEmpty)
    }
}

@Suite struct PrivateIDTests {
    @Test func guestToHostBothWays() throws {
        let a = try PASIDAllocator()
        let vm1 = try a.allocSet(owner: .vm(id: 1), quota: .limited(8))
        let vm2 = try a.allocSet(owner: .vm(id: 2), quota: .limited(8))
        let h1 = try a.alloc(in: vm1)
        let h2 = try a.alloc(in: vm2)
        try a.setPrivateID(7, for: h1, in: vm1)
        try a.setPrivateID(7, for: h2, in: vm2)  // private IDs are per set
        #expect(try a.hostPASID(forPrivateID: 7, in: vm1) == h1)
        #expect(try a.hostPASID(forPrivateID: 7, in: vm2) == h2)
        #expect(try a.privateID(forHostPASID: h1, in: vm1) == 7)
        #expect(errnoOf { try a.privateID(forHostPASID: h1, in: vm2) } == EPERM)
        #expect(errnoOf { try a.setPrivateID(8, for: h1, in: vm1) } == EEXIST)
        let h3 = try a.alloc(in: vm1)
        #expect(errnoOf { try a.setPrivateID(7, for: h3, in: vm1) } == EEXIST)
        #expect(errnoOf { try a.privateID(forHostPASID: h3, in: vm1) } == ENOENT)
        #expect(errnoOf { try a.hostPASID(forPrivateID: 9, in: vm1) } == ENOENT)
        #expect(errnoOf { try a.hostPASID(forPrivateID: 7, in: IOASIDSetID(rawValue: 99)) } == ENOENT)
        #expect(errnoOf { try a.clearPrivateID(for: h3, in: vm1) } == ENOENT)
        try a.clearPrivateID(for: h1, in: vm1)
        #expect(errnoOf { try a.hostPASID(forPrivateID: 7, in: vm1) } == ENOENT)
        try a.setPrivateID(7, for: h3, in: vm1)
        try a.free(h3, in: vm1)  // release drops the mapping
        #expect(errnoOf { try a.hostPASID(forPrivateID: 7, in: vm1) } == ENOENT)
        try a.get(h2, in: vm2)
        try a.free(h2, in: vm2)
        #expect(errnoOf { try a.setPrivateID(9, for: h1 + 100, in: vm2) } == ENOENT)
        try a.clearPrivateID(for: h2, in: vm2)
        #expect(errnoOf { try a.setPrivateID(9, for: h2, in: vm2) } == EBUSY)
    }
}

@Suite struct NotificationTests {
    @Test func priorityOrderSetAndGlobal() throws {
        let a = try PASIDAllocator()
        let s = try a.allocSet(owner: .vm(id: 1), quota: .unlimited)
        let t = try a.allocSet(owner: .vm(id: 2), quota: .unlimited)
        let log = NoteLog()
        try a.registerNotifier(priority: 0, log.handler("g0"))
        try a.registerNotifier(set: s, priority: 10, log.handler("s10"))
        try a.registerNotifier(priority: 5, log.handler("g5"))
        try a.registerNotifier(set: s, priority: 5, log.handler("s5"))
        try a.registerNotifier(set: t, priority: 99, log.handler("t99"))
        _ = try a.alloc(in: s)
        #expect(log.all == ["s10:alloc:1", "g5:alloc:1", "s5:alloc:1", "g0:alloc:1"])
        _ = try a.alloc(in: t)
        #expect(log.all.suffix(3) == ["t99:alloc:2", "g5:alloc:2", "g0:alloc:2"])
    }

    @Test func allFourEvents() throws {
        let a = try PASIDAllocator()
        let s = try a.allocSet(owner: .vm(id: 3), quota: .unlimited)
        let t = try a.allocSet(owner: .none, quota: .unlimited)
        let notes = NoteLog()
        let owners = NoteLog()
        try a.registerNotifier(set: s) { n in
            notes.append("\(n.event):\(n.pasid):\(n.device.map(String.init) ?? "-")")
            owners.append("\(n.owner)")
        }
        let p = try a.alloc(in: s)
        try a.notifyBind(p, in: s, device: 4)
        #expect(errnoOf { try a.notifyBind(p, in: t) } == EPERM)
        #expect(errnoOf { try a.notifyBind(66, in: s) } == ENOENT)
        try a.get(p, in: s)
        try a.free(p, in: s)  // free-pending: no free event yet
        #expect(errnoOf { try a.notifyBind(p, in: s) } == EBUSY)
        try a.notifyUnbind(p, in: s, device: 4)
        #expect(errnoOf { try a.notifyUnbind(p, in: t) } == EPERM)
        try a.put(p, in: s)
        #expect(notes.all == ["alloc:1:-", "bind:1:4", "unbind:1:4", "free:1:-"])
        #expect(Set(owners.all) == ["vm(id: 3)"])
        #expect(errnoOf { try a.notifyUnbind(p, in: s) } == ENOENT)
    }

    @Test func registrationErrors() throws {
        let a = try PASIDAllocator()
        let s = try a.allocSet(owner: .none, quota: .unlimited)
        let log = NoteLog()
        #expect(errnoOf { try a.registerNotifier(set: IOASIDSetID(rawValue: 50), log.handler("x")) } == ENOENT)
        let tok = try a.registerNotifier(set: s, log.handler("s"))
        try a.unregisterNotifier(tok)
        #expect(errnoOf { try a.unregisterNotifier(tok) } == ENOENT)
        _ = try a.alloc(in: s)
        #expect(log.all.isEmpty)
        // A set's notifiers go with the set.
        let tok2 = try a.registerNotifier(set: s, log.handler("s"))
        try a.freeAll(in: s)
        try a.freeSet(s)
        #expect(errnoOf { try a.unregisterNotifier(tok2) } == ENOENT)
    }
}

@Suite struct ScaleTests {
    /// 2^17 outstanding PASIDs in the default 20-bit space: the free tree still yields the lowest
    /// free ID after holes are punched anywhere.
    @Test func manyOutstanding() throws {
        let a = try PASIDAllocator()
        let s = try a.allocSet(owner: .none, quota: .unlimited)
        var inOrder = true
        for i in 1...(1 << 17) where try a.alloc(in: s) != PASID(i) { inOrder = false }
        #expect(inOrder)
        for p in stride(from: PASID(1 << 16), through: 1, by: -997) { try a.free(p, in: s) }
        // Freed: 731, 1728, ..., 4719, ..., 65536 (65536 mod 997 = 731), plus 4800.
        try a.free(4800, in: s)
        #expect(errnoOf { try a.alloc(in: s, min: 4000, max: 4718) } == ENOSPC)
        #expect(try a.alloc(in: s, min: 4720) == 4800)
        #expect(try a.alloc(in: s) == 731)
        #expect(try a.alloc(in: s) == 1728)
        #expect(try a.alloc(in: s, min: 1 << 16) == 1 << 16)
        #expect(try a.alloc(in: s, min: 1 << 16) == (1 << 17) + 1)
        let held = try a.setInfo(s).count
        #expect(a.availableCapacity == a.systemCapacity - held)
        #expect(try a.freeAll(in: s) == held)
        #expect(a.availableCapacity == a.systemCapacity)
    }
}
