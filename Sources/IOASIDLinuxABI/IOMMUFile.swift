/// One open of `/dev/iommu`: a core context plus the ABI codec in front of it.
public final class IOMMUFile: LinuxFile, @unchecked Sendable {
    public let host: any DescriptorHost
    public let configuration: EngineConfiguration

    public init(host: any DescriptorHost, configuration: EngineConfiguration) {
        self.host = host
        self.configuration = configuration
    }

    public func ioctl(request: UInt, argument: UnsafeMutableRawPointer?) -> Int { -Int(ENOTTY_) }
    public func release() {}
}
