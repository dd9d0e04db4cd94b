// The text that names a modelled machine's devices: `ioasid run --machine SPEC`,
// `ioasid devices --machine SPEC`, and `IOASID_MACHINE` for the engine.

/// A parsed machine specification: which devices, behind which IOMMU, in which order.
///
/// Grammar: `SPEC := ITEM ("," ITEM)*`, `ITEM := IOMMU [":" DEVICE] [":" COUNT]`.
/// - `IOMMU`: `mock` (the test driver's mock IOMMU; takes no `DEVICE`), `vtd` (the software
///   VT-d unit) or `smmuv3` (the software SMMUv3);
/// - `DEVICE`: a registered device kind (``DeviceKinds``): built in, `pci` (the default: a PCI
///   function with 20-bit PASIDs, ATS and PRI) and `ioat` (an Intel I/OAT DMA engine,
///   8086:2021); an engine built with a device author's code adds its own;
/// - `COUNT`: 1 to 31 devices of that item (default 1).
///
/// Examples: `vtd`, `vtd:2`, `vtd:ioat`, `vtd:ioat:2,smmuv3`, `mock,vtd`.
/// Devices are numbered in the order of the items (`/dev/vfio/devices/vfio0`, `vfio1`, …).
public struct MachineSpec: Hashable, Sendable, CustomStringConvertible {
    /// The IOMMU a device sits behind.
    public enum IOMMU: String, Hashable, Sendable, CaseIterable {
        case mock, vtd, smmuv3
    }

    /// The name of a kind of device model, registered in ``DeviceKinds``.
    public struct DeviceKind: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        /// The kind's name in specifications.
        public var rawValue: String
        /// A kind named `rawValue` (registered or not: parsing checks).
        public init(rawValue: String) { self.rawValue = rawValue }
        /// A PCI function with 20-bit PASIDs, ATS, PRI, MSI, MSI-X and SR-IOV (`GenericPCIDevice`).
        public static let pci = DeviceKind(rawValue: "pci")
        /// An Intel I/OAT DMA engine (`IOATDevice`).
        public static let ioat = DeviceKind(rawValue: "ioat")
        public var description: String { rawValue }
    }

    /// One `ITEM`: `count` devices of one kind behind one IOMMU.
    public struct Item: Hashable, Sendable {
        public var iommu: IOMMU
        public var device: DeviceKind
        public var count: Int

        /// An item.
        public init(iommu: IOMMU, device: DeviceKind = .pci, count: Int = 1) {
            self.iommu = iommu
            self.device = device
            self.count = count
        }
    }

    /// Why a specification was refused: one line that names the bad part.
    public struct ParseError: Error, Hashable, Sendable, CustomStringConvertible {
        public let description: String
    }

    /// The most devices one item may ask for (the bus of the modelled machine has 31 slots).
    public static let maximumCount = 31

    /// The items in order.
    public var items: [Item]

    /// A specification of `items`.
    public init(items: [Item]) { self.items = items }

    /// The devices one by one, in cdev order.
    public var devices: [Item] {
        items.flatMap { item in Array(repeating: Item(iommu: item.iommu, device: item.device, count: 1), count: item.count) }
    }

    /// The canonical text (`vtd:ioat:2,smmuv3`).
    public var description: String {
        items.map { item in
            var text = item.iommu.rawValue
            if item.device != .pci { text += ":" + item.device.rawValue }
            if item.count != 1 { text += ":\(item.count)" }
            return text
        }.joined(separator: ",")
    }

    /// Parses `text`; throws a ``ParseError`` that names the bad item or part.
    public static func parse(_ text: String) throws(ParseError) -> MachineSpec {
        guard !text.isEmpty else { throw ParseError(description: "empty machine specification (expected IOMMU[:DEVICE][:COUNT],...)") }
        var items: [Item] = []
        for raw in text.split(separator: ",", omittingEmptySubsequences: false) {
            let item = String(raw)
            guard !item.isEmpty else { throw ParseError(description: "empty item in machine specification '\(text)'") }
            let parts = item.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            guard let iommu = IOMMU(rawValue: parts[0]) else {
                throw ParseError(description: "unknown IOMMU '\(parts[0])' in '\(item)' (known: \(IOMMU.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            var device = DeviceKind.pci
            var count = 1
            var rest = parts.dropFirst()
            if let next = rest.first, !next.isEmpty, !next.allSatisfy(\.isNumber) {
                guard DeviceKinds.entry(named: next) != nil else {
                    throw ParseError(description: "unknown device '\(next)' in '\(item)' (known: \(DeviceKinds.names.joined(separator: ", ")); or a count)")
                }
                let kind = DeviceKind(rawValue: next)
                guard iommu != .mock else { throw ParseError(description: "'mock' takes no device kind in '\(item)'") }
                device = kind
                rest = rest.dropFirst()
            }
            if let next = rest.first {
                guard let n = Int(next), n >= 1, n <= maximumCount else {
                    throw ParseError(description: "bad count '\(next)' in '\(item)' (expected 1 to \(maximumCount))")
                }
                count = n
                rest = rest.dropFirst()
            }
            guard rest.isEmpty else { throw ParseError(description: "too many ':' parts in '\(item)' (expected IOMMU[:DEVICE][:COUNT])") }
            items.append(Item(iommu: iommu, device: device, count: count))
        }
        let total = items.reduce(0) { $0 + $1.count }
        guard total <= maximumCount else { throw ParseError(description: "\(total) devices in '\(text)' (the machine has \(maximumCount) slots)") }
        return MachineSpec(items: items)
    }
}
