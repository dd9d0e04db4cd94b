/// The identifier of an object in a context's object table, as user space sees it.
///
/// IDs are handed out lowest-free from 1 and published only when the operation that created
/// the object succeeds. Typed views (`IOAS.ID`, `HWPT.ID`, …) wrap the same number.
public struct ObjectID: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let rawValue: UInt32
    @inlinable public init(_ rawValue: UInt32) { self.rawValue = rawValue }
    public static func < (a: ObjectID, b: ObjectID) -> Bool { a.rawValue < b.rawValue }
    public var description: String { "#\(rawValue)" }
}

/// The kinds of object a context holds; the same set as the kernel's object types.
public enum ObjectKind: Sendable, CustomStringConvertible {
    case ioas, hwptPaging, hwptNested, device, access, fault, viommu, vdevice, veventq, hwQueue
    /// An SVA bind (not a kernel iommufd object: the kernel's SVA handle, here in the table so
    /// its fault queue and lifetime follow the same rules).
    case hwptSVA
    /// An object private to a driver (the test driver's mock-device handle).
    case driver

    public var description: String {
        switch self {
        case .ioas: "IOAS"
        case .hwptPaging: "HWPT(paging)"
        case .hwptNested: "HWPT(nested)"
        case .hwptSVA: "HWPT(SVA)"
        case .device: "device"
        case .access: "access"
        case .fault: "fault queue"
        case .viommu: "vIOMMU"
        case .vdevice: "vDevice"
        case .veventq: "vEVENTQ"
        case .hwQueue: "HW queue"
        case .driver: "driver object"
        }
    }
}

/// Base class of everything in the object table.
///
/// All mutable state of an object is guarded by its context's lock (see `Context`).
open class IOMMUObject: @unchecked Sendable {
    /// The object's ID, assigned when it is published.
    @exclusivity(unchecked) public internal(set) var objectID = ObjectID(0)
    /// The object's kind.
    public let kind: ObjectKind
    /// How many other objects (or attachments) depend on this one; destroy is `EBUSY` while
    /// this is non-zero, as with the kernel's `users` reference count.
    @exclusivity(unchecked) public internal(set) var users = 0
    /// Whether the object is in the table (published and not destroyed).
    @exclusivity(unchecked) public internal(set) var isLive = false

    public init(kind: ObjectKind) { self.kind = kind }

    /// Records that something (another object, a driver) depends on this object.
    /// Call only with the context lock held (from `Context.withState`).
    public func retain() { users += 1 }
    /// Drops a dependency recorded with `retain()`.
    public func release() { users -= 1 }

    /// Called under the context lock when the object leaves the table; releases what it holds.
    open func destroyed(in state: ContextState) {}
}

/// The ID of an object of type `Object` (`IOAS.ID`, `HWPT.ID`, …): the same number as its
/// `ObjectID`, typed so a HWPT ID cannot be passed where an IOAS ID is expected.
public struct TypedID<Object: IOMMUObject>: Hashable, Sendable {
    /// The untyped ID.
    public let object: ObjectID
    public init(_ object: ObjectID) { self.object = object }
    public init(_ raw: UInt32) { object = ObjectID(raw) }
    /// The number user space sees.
    public var rawValue: UInt32 { object.rawValue }
}
