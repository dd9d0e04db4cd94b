// The one door a device model's DMA goes through: requests by IOVA and length, answered with the
// bytes or the IOMMU's refusal. No pointer into the program's memory ever reaches a model, so the
// door can be moved: in a mode where the engine runs in another process than the program, the
// port's other side is that process's view of the program's pinned pages (shared memory, or
// process_vm_readv/writev), and the model's code stays as it is.

/// Why a DMA through a ``DMAPort`` did not happen (or stopped part way).
public enum DMAPortError: Error, Hashable, Sendable {
    /// COMMAND's bus-master enable is clear: the function issues no requests.
    case busMasterDisabled
    /// The request failed (the IOMMU refused it, or the memory behind it is gone).
    case dma(DMAError)

    /// The IOMMU's fault record, when the IOMMU refused the request.
    public var faultRecord: FaultRecord? {
        if case .dma(.fault(let record)) = self { return record }
        return nil
    }
}

/// Where a device model's DMA goes: reads and writes at untranslated addresses (IOVAs) of its
/// function's address space, through the IOMMU. Bytes before a failing page may have moved.
public protocol DMAPort: Sendable {
    /// Reads `buffer.count` bytes at `address` into `buffer` (the model's own memory).
    func read(address: UInt64, into buffer: UnsafeMutableRawBufferPointer) -> Result<Void, DMAPortError>
    /// Writes `bytes` (the model's own memory) at `address`.
    func write(address: UInt64, from bytes: UnsafeRawBufferPointer) -> Result<Void, DMAPortError>
}

/// The DMA port of a plugged device: its function's requests without PASID, refused while
/// bus mastering is off. Allocates nothing per request.
public struct FunctionDMAPort: DMAPort {
    /// The machine's side of the device.
    public let host: any PCIDeviceHost

    /// The port of `host`.
    public init(host: any PCIDeviceHost) { self.host = host }

    public func read(address: UInt64, into buffer: UnsafeMutableRawBufferPointer) -> Result<Void, DMAPortError> {
        guard host.busMasterEnabled else { return .failure(.busMasterDisabled) }
        return host.function.read(address: address, into: buffer).mapError { .dma($0) }
    }

    public func write(address: UInt64, from bytes: UnsafeRawBufferPointer) -> Result<Void, DMAPortError> {
        guard host.busMasterEnabled else { return .failure(.busMasterDisabled) }
        return host.function.write(address: address, from: bytes).mapError { .dma($0) }
    }
}

extension PCIDeviceHost {
    /// The device's DMA port (``FunctionDMAPort``): what a model should use for its DMA.
    public var dma: FunctionDMAPort { FunctionDMAPort(host: self) }
}
