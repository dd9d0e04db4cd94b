import CIOASIDSys
import IOASIDCore
import IOASIDSets
import Synchronization

/// The host's IOASID layer: one PASID allocator (20-bit PASIDs) shared by every open of
/// `/dev/iommu` in this process, as the kernel's allocator is shared by the whole system.
public enum IOASIDHost {
    /// The layer every `IOMMUFile` enrolls its context in.
    public static let layer = IOASIDLayer(allocator: try! PASIDAllocator())
    /// The SVA binds of that layer. The process address spaces `IOASID_SVA_BIND` can name are
    /// the ones registered here (`SVABindings.register(_:)`) by whoever models them.
    public static let sva = SVABindings(layer: layer)
}

extension IOMMUFile {
    /// The ioctls of include/ioasid/ioasid.h, indexed by `_IOC_NR(request) - 0xc0`.
    static let ioasidTable: [IoctlOp] = [
        IoctlOp(IOASIDUAPI.IOASID_SET_ALLOC, "IOASID_SET_ALLOC", ioasid_set_alloc.self, last: "vm_id", creates: true, IOMMUFile.setAlloc),
        IoctlOp(IOASIDUAPI.IOASID_SET_INFO, "IOASID_SET_INFO", ioasid_set_info.self, last: "out_available", IOMMUFile.setInfo),
        IoctlOp(IOASIDUAPI.IOASID_PASID_ALLOC, "IOASID_PASID_ALLOC", ioasid_pasid_alloc.self, last: "out_pasid", creates: true, IOMMUFile.pasidAlloc),
        IoctlOp(IOASIDUAPI.IOASID_PASID_FREE, "IOASID_PASID_FREE", ioasid_pasid_free.self, last: "pasid", IOMMUFile.pasidFree),
        IoctlOp(IOASIDUAPI.IOASID_SVA_BIND, "IOASID_SVA_BIND", ioasid_sva_bind.self, last: "out_pasid", creates: true, IOMMUFile.svaBind),
        IoctlOp(IOASIDUAPI.IOASID_SVA_UNBIND, "IOASID_SVA_UNBIND", ioasid_sva_unbind.self, last: "pasid", IOMMUFile.svaUnbind),
    ]

    /// The set this file acts for. - Throws: `ENOENT` before `IOASID_SET_ALLOC`.
    func actingSet() throws(IOMMUError) -> IOASIDSetID {
        guard let set = IOASIDHost.layer.set(of: context) else { throw .noEntry("no IOASID set: call IOASID_SET_ALLOC first") }
        return set
    }

    static let setAlloc: IoctlOp.Handler = { f, u throws(IOMMUError) in
        var c = u.load(ioasid_set_alloc.self)
        let known = IOASIDUAPI.IOASID_SET_UNLIMITED | IOASIDUAPI.IOASID_SET_OWNER_VM
        guard c.flags & ~known == 0 else { throw .notSupported("unknown flags") }
        let unlimited = c.flags & IOASIDUAPI.IOASID_SET_UNLIMITED != 0
        if unlimited {
            guard c.quota == 0 else { throw .invalid("an unlimited set takes no quota") }
            // CAP_SYS_ADMIN (21) decides who may take from the shared capacity without a quota.
            guard f.configuration.privileged || ioasid_sys_has_capability(21) != 0 else {
                throw .notPermitted("an unlimited IOASID set needs CAP_SYS_ADMIN")
            }
        }
        let ownedByVM = c.flags & IOASIDUAPI.IOASID_SET_OWNER_VM != 0
        guard ownedByVM || c.vm_id == 0 else { throw .invalid("vm_id without IOASID_SET_OWNER_VM") }
        let layer = IOASIDHost.layer
        guard layer.set(of: f.context) == nil else { throw .exists("this file already acts for an IOASID set") }
        let set = try layer.allocator.allocSet(owner: ownedByVM ? .vm(id: c.vm_id) : .none,
                                               quota: unlimited ? .unlimited : .limited(c.quota))
        do throws(IOMMUError) { try layer.enroll(f.context, in: set) } catch {
            try? layer.allocator.freeSet(set)
            throw error
        }
        c.out_set_id = set.rawValue
        try u.respond(c)
        return 0
    }

    static let setInfo: IoctlOp.Handler = { f, u throws(IOMMUError) in
        var c = u.load(ioasid_set_info.self)
        let set = try f.actingSet()
        let allocator = IOASIDHost.layer.allocator
        let info = try allocator.setInfo(set)
        c.out_set_id = set.rawValue
        switch info.quota {
        case .unlimited: c.out_flags = IOASIDUAPI.IOASID_SET_UNLIMITED; c.out_quota = 0
        case .limited(let n): c.out_flags = 0; c.out_quota = n
        }
        if case .vm = info.owner { c.out_flags |= IOASIDUAPI.IOASID_SET_OWNER_VM }
        c.out_count = UInt32(info.count)
        c.out_pasid_bits = UInt32(allocator.pasidWidth)
        c.out_available = UInt64(allocator.availableCapacity)
        try u.respond(c)
        return 0
    }

    static let pasidAlloc: IoctlOp.Handler = { f, u throws(IOMMUError) in
        var c = u.load(ioasid_pasid_alloc.self)
        guard c.flags & ~IOASIDUAPI.IOASID_PASID_ALLOC_GUEST_ID == 0 else { throw .notSupported("unknown flags") }
        let guest = c.flags & IOASIDUAPI.IOASID_PASID_ALLOC_GUEST_ID != 0
        guard guest || c.guest_pasid == 0 else { throw .invalid("guest_pasid without IOASID_PASID_ALLOC_GUEST_ID") }
        _ = try f.actingSet()
        c.out_pasid = try IOASIDHost.layer.allocPASID(for: f.context, min: c.min, max: c.max == 0 ? nil : c.max,
                                                      guestPASID: guest ? c.guest_pasid : nil)
        try u.respond(c)
        return 0
    }

    static let pasidFree: IoctlOp.Handler = { f, u throws(IOMMUError) in
        let c = u.load(ioasid_pasid_free.self)
        _ = try f.actingSet()
        try IOASIDHost.layer.freePASID(c.pasid, for: f.context)
        return 0
    }

    static let svaBind: IoctlOp.Handler = { f, u throws(IOMMUError) in
        var c = u.load(ioasid_sva_bind.self)
        let known = IOASIDUAPI.IOASID_SVA_BIND_PASID | IOASIDUAPI.IOASID_SVA_BIND_FAULT_ID_VALID
        guard c.flags & ~known == 0, c.__reserved == 0 else { throw .notSupported("unknown flags or reserved field set") }
        let named = c.flags & IOASIDUAPI.IOASID_SVA_BIND_PASID != 0
        let fault = c.flags & IOASIDUAPI.IOASID_SVA_BIND_FAULT_ID_VALID != 0
        guard named || c.pasid == 0 else { throw .invalid("pasid without IOASID_SVA_BIND_PASID") }
        guard fault || c.fault_id == 0 else { throw .invalid("fault_id without IOASID_SVA_BIND_FAULT_ID_VALID") }
        guard c.pid >= 0 else { throw .invalid("negative pid") }
        _ = try f.actingSet()
        let space = try IOASIDHost.sva.addressSpace(pid: c.pid == 0 ? Int32(truncatingIfNeeded: ioasid_sys_getpid()) : c.pid)
        c.out_pasid = try IOASIDHost.sva.bind(space, device: Device.ID(c.dev_id), in: f.context, pasid: named ? c.pasid : nil,
                                              faultQueue: fault ? ObjectID(c.fault_id) : nil)
        try u.respond(c)
        return 0
    }

    static let svaUnbind: IoctlOp.Handler = { f, u throws(IOMMUError) in
        let c = u.load(ioasid_sva_unbind.self)
        guard c.flags == 0 else { throw .notSupported("flags must be zero") }
        _ = try f.actingSet()
        try IOASIDHost.sva.unbind(device: Device.ID(c.dev_id), pasid: c.pasid, in: f.context)
        return 0
    }

    /// On the last close: the context's attachments are gone (the context is closed first); the
    /// set this file created loses its PASIDs and is freed, returning its quota.
    func releaseIOASIDSet() {
        let layer = IOASIDHost.layer
        guard let set = layer.set(of: context) else { return }
        let others = layer.contexts(in: set).filter { $0 !== context }
        try? layer.withdraw(context)
        if others.isEmpty {
            _ = try? layer.allocator.freeAll(in: set)
            try? layer.allocator.freeSet(set)
        }
    }
}
