/// The one error type of the IOASID framework. Each case is one Linux errno value, as the
/// kernel's iommufd returns it; `reason` names the check that failed.
///
/// Conversion to a negative errno happens only in the ABI dispatcher, through `errno`.
public enum IOMMUError: Error, Equatable, Sendable, CustomStringConvertible {
    /// `EPERM`: the operation is not permitted (a capability, a read-only source).
    case notPermitted(StaticString)
    /// `ENOENT`: no such object, or nothing mapped where an operation needs a mapping.
    case noEntry(StaticString)
    /// `EIO`: a device or check reported an input/output error.
    case ioError(StaticString)
    /// `ENXIO`: no such address (an mmap offset that names nothing).
    case noSuchAddress(StaticString)
    /// `E2BIG`: an argument struct carries non-zero bytes past what we understand.
    case tooBig(StaticString)
    /// `EBADF`: a file descriptor argument is not open or of the wrong kind.
    case badDescriptor(StaticString)
    /// `ENOMEM`: out of memory or over a memory limit of the mock hardware.
    case noMemory(StaticString)
    /// `EFAULT`: a user address cannot be read or written.
    case fault(StaticString)
    /// `EBUSY`: the object is in use.
    case busy(StaticString)
    /// `EEXIST`: something already occupies the place.
    case exists(StaticString)
    /// `ENODEV`: no such device or the device lacks the capability.
    case noDevice(StaticString)
    /// `EINVAL`: an argument is invalid.
    case invalid(StaticString)
    /// `ENOSPC`: no room left (IOVA space, a queue, an ID space).
    case noSpace(StaticString)
    /// `ENOTTY`: the request is not an ioctl of this file.
    case notTTY(StaticString)
    /// `EOVERFLOW`: an address or length computation overflows.
    case overflow(StaticString)
    /// `EOPNOTSUPP`: unknown flags, non-zero reserved fields, or an unsupported type.
    case notSupported(StaticString)
    /// `EMSGSIZE`: the caller's array is too small for the answer (which was still written).
    case messageSize(StaticString)
    /// `EDEADLK`/`EDEADLOCK`: an access refused to let go of pages being unmapped.
    case deadlock(StaticString)
    /// `EAGAIN`: try again.
    case again(StaticString)
    /// `EBADE`/`EBADMSG`-style data mismatch used by the test driver (`EBADE`).
    case badExchange(StaticString)
    /// `ERANGE`: a value is out of the permitted range.
    case range(StaticString)
    /// `ENOSYS`/`ENODATA` are not used by iommufd; `EACCES` is.
    case accessDenied(StaticString)
    /// `ESRCH`: the owning process is gone.
    case noProcess(StaticString)
    /// `EBADFD`: a descriptor names a file of the wrong kind or state.
    case badFileState(StaticString)
    /// `EADDRINUSE`: the IOVA is taken by a mapping or an allowed span.
    case addressInUse(StaticString)

    /// The Linux errno value of this error.
    public var errno: Int32 {
        switch self {
        case .notPermitted: 1
        case .noEntry: 2
        case .noProcess: 3
        case .ioError: 5
        case .noSuchAddress: 6
        case .tooBig: 7
        case .badDescriptor: 9
        case .again: 11
        case .noMemory: 12
        case .accessDenied: 13
        case .fault: 14
        case .busy: 16
        case .exists: 17
        case .noDevice: 19
        case .invalid: 22
        case .noSpace: 28
        case .notTTY: 25
        case .range: 34
        case .deadlock: 35
        case .badExchange: 52
        case .overflow: 75
        case .messageSize: 90
        case .notSupported: 95
        case .addressInUse: 98
        case .badFileState: 77
        }
    }

    /// The check that failed.
    public var reason: StaticString {
        switch self {
        case .notPermitted(let r), .noEntry(let r), .ioError(let r), .noSuchAddress(let r), .tooBig(let r),
             .badDescriptor(let r), .noMemory(let r), .fault(let r), .busy(let r), .exists(let r),
             .noDevice(let r), .invalid(let r), .noSpace(let r), .notTTY(let r), .overflow(let r),
             .notSupported(let r), .messageSize(let r), .deadlock(let r), .again(let r),
             .badExchange(let r), .range(let r), .accessDenied(let r), .noProcess(let r), .addressInUse(let r), .badFileState(let r):
            r
        }
    }

    public var description: String { "errno \(errno): \(reason)" }

    public static func == (a: IOMMUError, b: IOMMUError) -> Bool { a.errno == b.errno }
}
