import Synchronization

/// DMA-buf exporters known to the framework: files whose pages an exporter may revoke
/// (the test driver's `IOMMU_TEST_OP_DMABUF_GET` makes them). While revoked, a new
/// `IOMMU_IOAS_MAP_FILE` of the buffer fails with `ENODEV`.
public final class DMABufRegistry: Sendable {
    public static let shared = DMABufRegistry()
    private let buffers = Mutex<[FileIdentity: Bool]>([:])

    /// Registers a buffer (not revoked).
    public func register(_ file: FileIdentity) { buffers.withLock { $0[file] = false } }
    /// Forgets a buffer.
    public func unregister(_ file: FileIdentity) { _ = buffers.withLock { $0.removeValue(forKey: file) } }
    /// Whether `file` is a registered buffer.
    public func isBuffer(_ file: FileIdentity) -> Bool { buffers.withLock { $0[file] != nil } }
    /// Revokes or restores a buffer; false if it is not one.
    @discardableResult
    public func setRevoked(_ file: FileIdentity, _ revoked: Bool) -> Bool {
        buffers.withLock { b in
            guard b[file] != nil else { return false }
            b[file] = revoked
            return true
        }
    }
    /// Whether a registered buffer is revoked.
    public func isRevoked(_ file: FileIdentity) -> Bool { buffers.withLock { $0[file] ?? false } }
}
