/// Decides which PASIDs a context may attach to its devices.
///
/// Without a gate a context follows the kernel: any PASID below the device's width can be
/// attached. The IOASID layer (`IOASIDSets`) installs a gate that admits only PASIDs the
/// context's IOASID set owns, takes a reference on each attached PASID and drops it when the
/// attachment ends. Every method runs with the context lock held; a gate must not call back into
/// the same context (it may take its own locks, always after the context's).
public protocol PASIDGate: AnyObject, Sendable {
    /// Called before `device` gets a new attachment at `pasid`; on success the gate holds what
    /// the attachment needs (a reference on the PASID) until ``refused(pasid:device:)`` or
    /// ``detached(pasid:device:)``. Throw to refuse; nothing has changed yet. A replace of an
    /// existing attachment keeps its authorization and does not call the gate.
    func authorize(pasid: PASID, device: Device) throws(IOMMUError)
    /// Called when the driver refused the attachment after ``authorize(pasid:device:)`` succeeded.
    func refused(pasid: PASID, device: Device)
    /// Called after the attachment at `pasid` was made.
    func attached(pasid: PASID, device: Device)
    /// Called after the attachment at `pasid` ended (detach, unbind, device destroyed, close).
    func detached(pasid: PASID, device: Device)
}

extension Context {
    /// Installs (or, with nil, removes) the gate that authorizes PASID attachments.
    ///
    /// - Throws: `EBUSY` while any device of this context has a PASID attached: the gate must
    ///   see every attachment from its start to its end.
    public func setPASIDGate(_ gate: (any PASIDGate)?) throws(IOMMUError) {
        try locked { s throws(IOMMUError) in
            for d in s.all(Device.self) where d.attachments.keys.contains(where: { $0 != nil }) {
                throw .busy("PASIDs are attached; detach them before changing the PASID gate")
            }
            s.pasidGate = gate
        }
    }

    /// The PASIDs attached to `device`, ascending (the RID attachment is not listed).
    public func attachedPASIDs(_ device: Device.ID) throws(IOMMUError) -> [PASID] {
        try locked { s throws(IOMMUError) in
            try s.object(device.object, as: Device.self).attachments.keys.compactMap { $0 }.sorted()
        }
    }

    /// Every (device, PASID) attachment of this context, for a gate that must end them.
    public func pasidAttachments() -> [(device: Device.ID, pasid: PASID)] {
        (try? locked { s throws(IOMMUError) in
            s.all(Device.self).flatMap { d in d.attachments.keys.compactMap { $0 }.sorted().map { (d.id, $0) } }
        }) ?? []
    }
}
