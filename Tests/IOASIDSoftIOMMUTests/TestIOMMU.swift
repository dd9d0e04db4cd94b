import IOASIDStructures
@testable import IOASIDSoftIOMMU

/// A tiny IOMMU for testing device models: a dictionary from (requester, PASID, 4 KiB page) to
/// (physical page, rights), with ATS, a page request log and ATC invalidation on unmap.
final class TestIOMMU: TranslationAgent, @unchecked Sendable {
    struct Key: Hashable {
        var requester: RequesterID
        var pasid: PASID?
        var page: UInt64
    }
    struct Mapping: Hashable {
        var physical: UInt64
        var permissions: AccessPermissions
    }
    final class WeakEndpoint {
        weak var endpoint: (any DeviceEndpoint)?
        init(_ e: any DeviceEndpoint) { endpoint = e }
    }

    let memory: PhysicalMemory
    /// Whether ATS translation requests and translated requests are allowed.
    let atsAllowed: Bool
    /// Whether faults of PASID-tagged requests are recoverable (the owner takes page requests).
    let recoverable: Bool

    private let lock = Lock()
    private var map: [Key: Mapping] = [:]
    private var endpoints: [RequesterID: WeakEndpoint] = [:]
    private var _faults: [FaultRecord] = []
    private var _pageRequests: [PageRequest] = []
    private var _untranslated = 0, _translated = 0, _ats = 0
    /// Called (outside the lock) for every page request, e.g. to answer it from elsewhere.
    var onPageRequest: (@Sendable (PageRequest) -> Void)?

    init(memory: PhysicalMemory = PhysicalMemory(), atsAllowed: Bool = true, recoverable: Bool = true) {
        self.memory = memory
        self.atsAllowed = atsAllowed
        self.recoverable = recoverable
    }

    var faults: [FaultRecord] { lock.withLock { _faults } }
    var pageRequests: [PageRequest] { lock.withLock { _pageRequests } }
    var counts: (untranslated: Int, translated: Int, ats: Int) { lock.withLock { (_untranslated, _translated, _ats) } }

    /// Maps `pages` 4 KiB pages at `iova` to `physical` for `requester` / `pasid`.
    func map(_ requester: RequesterID, pasid: PASID?, iova: UInt64, physical: UInt64, pages: Int = 1,
             permissions: AccessPermissions = .readWrite) {
        lock.withLock {
            for i in 0..<UInt64(pages) {
                map[Key(requester: requester, pasid: pasid, page: iova / 4096 + i)] = Mapping(physical: physical + i * 4096, permissions: permissions)
            }
        }
    }

    /// Unmaps and invalidates the device's ATC (the lock is not held while it waits).
    @discardableResult
    func unmap(_ requester: RequesterID, pasid: PASID?, iova: UInt64, pages: Int = 1) -> ATCInvalidationCompletion? {
        let endpoint: (any DeviceEndpoint)? = lock.withLock {
            for i in 0..<UInt64(pages) { map[Key(requester: requester, pasid: pasid, page: iova / 4096 + i)] = nil }
            return endpoints[requester]?.endpoint
        }
        return endpoint?.invalidate(ATCInvalidation(range: IOVARange(start: iova, last: iova + UInt64(pages) * 4096 - 1),
                                                    pasid: pasid, tag: 3))
    }

    /// Sends `response` to the device it names.
    func respond(_ response: PageResponse) {
        let endpoint = lock.withLock { endpoints[response.requesterID]?.endpoint }
        endpoint?.receive(response)
    }

    func connect(_ endpoint: any DeviceEndpoint) {
        lock.withLock { endpoints[endpoint.requesterID] = WeakEndpoint(endpoint) }
    }

    func translate(_ request: DMARequest) -> Result<Translation, FaultRecord> {
        lock.withLock {
            if request.addressType == .translated {
                _translated += 1
                guard atsAllowed else {
                    let f = FaultRecord(request, reason: .translatedRequestBlocked)
                    _faults.append(f)
                    return .failure(f)
                }
                return .success(Translation(inputBase: request.address, outputBase: request.address, permissions: .all))
            }
            _untranslated += 1
            guard let m = map[Key(requester: request.requesterID, pasid: request.pasid, page: request.address / 4096)] else {
                let f = FaultRecord(request, reason: .translation(stage: .first, level: 1), recoverable: recoverable && request.pasid != nil)
                _faults.append(f)
                return .failure(f)
            }
            guard m.permissions.isSuperset(of: request.access) else {
                let f = FaultRecord(request, reason: .permission(stage: .first, level: 1), recoverable: recoverable && request.pasid != nil)
                _faults.append(f)
                return .failure(f)
            }
            return .success(Translation(inputBase: request.address, outputBase: m.physical, permissions: m.permissions))
        }
    }

    func translate(_ request: ATSTranslationRequest) -> ATSCompletion {
        lock.withLock {
            _ats += 1
            guard atsAllowed else { return .unsupportedRequest }
            let m = map[Key(requester: request.requesterID, pasid: request.pasid, page: request.address / 4096)]
            return .translated(Translation(inputBase: request.address, outputBase: m?.physical ?? 0,
                                           permissions: m?.permissions.intersection(request.access) ?? []))
        }
    }

    func pageRequest(_ request: PageRequest) {
        let handler: (@Sendable (PageRequest) -> Void)? = lock.withLock {
            _pageRequests.append(request)
            return onPageRequest
        }
        handler?(request)
    }
}
