// The two sides of the link between devices and the IOMMU.

/// The IOMMU as devices see it (the PCIe "translation agent"): the only way a device model
/// reaches memory. The VT-d and SMMUv3 models implement it, as does the test IOMMU.
public protocol TranslationAgent: AnyObject, Sendable {
    /// The memory behind the IOMMU: where translated requests land.
    var memory: PhysicalMemory { get }

    /// Translates an untranslated request, or checks a translated one (which then translates to
    /// itself). Returns the translation of the page containing `request.address`, or the fault
    /// the IOMMU recorded. The hot path of every DMA: it should allocate nothing.
    func translate(_ request: DMARequest) -> Result<Translation, FaultRecord>

    /// Translates a burst of untranslated requests of one stream, as a DMA engine issues them
    /// back to back: `first`, then one request at the start of each following 4 KiB page (same
    /// requester, PASID, privilege and access), `count` requests in all. Writes the translation
    /// of request i to `translations[i]` and returns how many it translated; it stops at the first
    /// fault, which it records and returns. Each request is translated as ``translate(_:)-(DMARequest)``
    /// would (an IOTLB lookup per page); an agent may resolve the requester's context once for
    /// the burst. Should allocate nothing.
    func translateBurst(_ first: DMARequest, count: Int, into translations: UnsafeMutablePointer<Translation>)
        -> (translated: Int, fault: FaultRecord?)

    /// Answers an ATS translation request. Never records a fault: a page without access is a
    /// successful completion granting no rights.
    func translate(_ request: ATSTranslationRequest) -> ATSCompletion

    /// Accepts a page request message (PRI). The IOMMU queues it for the fault owner, whose
    /// ``PageResponse`` reaches the device through ``DeviceEndpoint/receive(_:)``.
    func pageRequest(_ request: PageRequest)

    /// Connects a device, so that ATC invalidations and page responses can reach it. The agent
    /// keeps only a weak reference.
    func connect(_ endpoint: any DeviceEndpoint)
}

/// A device as the IOMMU sees it: where ATC invalidations and page responses are delivered.
public protocol DeviceEndpoint: AnyObject, Sendable {
    /// The device's requester ID.
    var requesterID: RequesterID { get }

    /// Removes the translations `request` covers from the device's ATC and returns the
    /// completion once none is cached or in use any more.
    func invalidate(_ request: ATCInvalidation) -> ATCInvalidationCompletion

    /// Delivers the response to one of the device's page request groups.
    func receive(_ response: PageResponse)

    /// Returns once every DMA access the device began before the call has finished: its
    /// translation used and its bytes moved. The IOMMU calls it before it completes an
    /// invalidation that software waits for (a VT-d invalidation wait descriptor, an SMMUv3
    /// `CMD_SYNC`), so no access that used a removed translation lands after the wait. Called
    /// with no lock of the IOMMU's translate path held. A device that reaches memory only
    /// through ``PCIFunction`` gets this from it.
    func drainDMA()
}

extension DeviceEndpoint {
    /// Nothing to drain: a device without DMA of its own.
    public func drainDMA() {}
}

extension TranslationAgent {
    /// One ``translate(_:)-(DMARequest)`` per request of the burst.
    public func translateBurst(_ first: DMARequest, count: Int, into translations: UnsafeMutablePointer<Translation>)
        -> (translated: Int, fault: FaultRecord?) {
        var request = first
        for i in 0..<count {
            if i > 0 { request.address = (first.address & ~0xFFF) &+ UInt64(i) << 12 }
            switch translate(request) {
            case .success(let t): translations[i] = t
            case .failure(let f): return (i, f)
            }
        }
        return (count, nil)
    }
}
