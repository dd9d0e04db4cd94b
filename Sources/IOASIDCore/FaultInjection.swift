import CIOASIDFaultInjection
import IOASIDStructures

/// A place where the framework can be made to fail on purpose, as the kernel's fault injection
/// (`failslab`, `fail_page_alloc`, `fail_usercopy`) fails its allocations, pins and user copies.
public enum FaultSite: Sendable, Equatable {
    /// An allocation: an object of `kind` (nil: a structure that is not an object, such as an
    /// IOAS area or a context). Fails with `ENOMEM`.
    case allocation(ObjectKind?)
    /// Pinning user pages. Fails with `ENOMEM`, as `pin_user_pages` does when it cannot allocate.
    case pin
    /// A copy from user memory (`copy_from_user`). Fails with `EFAULT`.
    case copyFromUser
    /// A copy to user memory (`copy_to_user`). Fails with `EFAULT`.
    case copyToUser

    /// What the kernel returns when this site fails.
    public var kernelError: IOMMUError {
        switch self {
        case .allocation, .pin: .noMemory("injected fault: allocation failed")
        case .copyFromUser, .copyToUser: .fault("injected fault: user copy failed")
        }
    }
}

/// The injection points and the two ways of arming them.
///
/// - **fail-nth**, per thread, as the kernel's `/proc/self/task/TID/fail-nth`: `armNth(N)` makes
///   the Nth injection point this thread reaches fail (once); `nth` then reads 0.
/// - **User rules** (`ioasid run --fail`, `FaultRule`), process-wide: installed once with
///   `install(_:)`; the dispatcher brackets each call with `callStarting(name:)` / `callEnded()`.
///
/// Every injection point calls `check(_:)`; with nothing armed that is one thread-local load.
public enum FaultInjection {
    /// Fails with the site's error when this injection point is the one armed to fail.
    @inline(__always)
    public static func check(_ site: FaultSite) throws(IOMMUError) {
        guard ioasid_fault_armed() != 0 else { return }
        try reached(site)
    }

    @inline(never)
    static func reached(_ site: FaultSite) throws(IOMMUError) {
        if ioasid_fault_nth_step() != 0 { throw site.kernelError }
        if ioasid_fault_rules_in_call() != 0, let error = rules?.reached(site) { throw error }
    }

    /// This thread's fail-nth countdown: 0 when nothing is armed or the armed fault fired.
    public static var nth: UInt32 { ioasid_fault_nth() }

    /// Arms this thread's countdown: the `n`th injection point from now on fails; 0 disarms.
    public static func armNth(_ n: UInt32) { ioasid_fault_set_nth(n) }

    // MARK: user rules

    nonisolated(unsafe) private static var rules: FaultRuleSet?

    /// Installs the process's user rules. Call once, before any call is served (the engine does
    /// it when it starts); later calls are ignored.
    public static func install(_ rules: [FaultRule]) {
        guard self.rules == nil, !rules.isEmpty else { return }
        self.rules = FaultRuleSet(rules)
    }

    /// Whether user rules are installed (one load; false for every program run without `--fail`).
    @inline(__always)
    public static var hasRules: Bool { rules != nil }

    /// A call named `name` (an ioctl, e.g. `IOMMU_IOAS_MAP`) starts on this thread: throws the
    /// rule's error when a rule fails this call outright; otherwise arms the site rules for it.
    /// Call only when `hasRules`; end with `callEnded()` whatever happens.
    public static func callStarting(name: StaticString) throws(IOMMUError) {
        guard let rules else { return }
        if let error = rules.called(name) { throw error }
        if rules.hasSiteRules { ioasid_fault_set_rules_in_call(1) }
    }

    /// The call started with `callStarting(name:)` is over.
    public static func callEnded() { ioasid_fault_set_rules_in_call(0) }
}

/// One user rule of `ioasid run --fail`: which calls or sites, which of them, and the errno.
///
/// Grammar: `TARGET[:WHEN[:ERRNO]]`
/// - TARGET: an ioctl name (`IOMMU_IOAS_MAP`, or without the prefix, `IOAS_MAP`): the call fails
///   at its start, before it changes anything; `alloc`: any allocation; an object kind (`ioas`,
///   `hwpt`, `device`, `access`, `fault`, `viommu`, `vdevice`, `veventq`, `hw-queue`): allocations
///   of that kind; `pin`: pinning user pages; `copy-from-user`, `copy-to-user`: user copies.
/// - WHEN: `N` the Nth only (counted from 1 over the whole process), `N+` the Nth and every later
///   one, `%N` every Nth, `*` every one. Default `*`.
/// - ERRNO: a name (`ENOMEM`, `EFAULT`, …) or a number. Default: the kernel's error at that site
///   (`ENOMEM` for allocations, pins and ioctls, `EFAULT` for copies).
public struct FaultRule: Sendable, Equatable, CustomStringConvertible {
    /// What the rule counts.
    public enum Target: Sendable, Equatable {
        case call(String)
        case anyAllocation
        case allocation(ObjectKind)
        case pin
        case copyFromUser
        case copyToUser
    }

    /// Which of the counted events fail.
    public enum When: Sendable, Equatable {
        case nth(Int)
        case from(Int)
        case every(Int)
        case always

        func matches(_ count: Int) -> Bool {
            switch self {
            case .nth(let n): count == n
            case .from(let n): count >= n
            case .every(let n): count % n == 0
            case .always: true
            }
        }
    }

    public var target: Target
    public var when: When
    /// The error the failing event returns.
    public var error: IOMMUError

    public init(target: Target, when: When = .always, error: IOMMUError? = nil) {
        self.target = target
        self.when = when
        self.error = error ?? Self.defaultError(for: target)
    }

    static func defaultError(for target: Target) -> IOMMUError {
        switch target {
        case .copyFromUser, .copyToUser: FaultSite.copyFromUser.kernelError
        case .call: .noMemory("injected fault: the call was made to fail")
        default: FaultSite.pin.kernelError
        }
    }

    /// The object kinds a rule can name, by their name in the grammar.
    static let kindNames: [(String, ObjectKind)] = [
        ("ioas", .ioas), ("hwpt", .hwptPaging), ("hwpt-nested", .hwptNested), ("device", .device),
        ("access", .access), ("fault", .fault), ("viommu", .viommu), ("vdevice", .vdevice),
        ("veventq", .veventq), ("hw-queue", .hwQueue),
    ]

    /// Parses one rule; the message names what is wrong.
    public static func parse(_ text: String) throws(FaultRuleError) -> FaultRule {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        guard parts.count <= 3, let first = parts.first, !first.isEmpty else {
            throw FaultRuleError("'\(text)': expected TARGET[:WHEN[:ERRNO]]")
        }
        let target: Target
        let lower = first.lowercased()
        if let kind = kindNames.first(where: { $0.0 == lower }) {
            target = .allocation(kind.1)
        } else {
            switch lower {
            case "alloc": target = .anyAllocation
            case "pin": target = .pin
            case "copy-from-user": target = .copyFromUser
            case "copy-to-user": target = .copyToUser
            default:
                let upper = first.uppercased()
                guard upper.allSatisfy({ $0 == "_" || $0.isLetter || $0.isNumber }), upper.first?.isLetter == true else {
                    throw FaultRuleError("'\(first)': not an ioctl name, object kind or site")
                }
                target = .call(upper.hasPrefix("IOMMU_") ? upper : "IOMMU_" + upper)
            }
        }
        var when = When.always
        if parts.count >= 2, !parts[1].isEmpty, parts[1] != "*" {
            let w = parts[1]
            func count(_ s: Substring) throws(FaultRuleError) -> Int {
                guard let n = Int(s), n >= 1 else { throw FaultRuleError("'\(w)': a count is a number from 1") }
                return n
            }
            if w.hasPrefix("%") { when = .every(try count(w.dropFirst())) }
            else if w.hasSuffix("+") { when = .from(try count(w.dropLast())) }
            else { when = .nth(try count(Substring(w))) }
        }
        var error: IOMMUError?
        if parts.count == 3, !parts[2].isEmpty {
            guard let e = IOMMUError.injected(named: parts[2]) else {
                throw FaultRuleError("'\(parts[2])': not an errno iommufd returns (ENOMEM, EFAULT, EINVAL, …)")
            }
            error = e
        }
        return FaultRule(target: target, when: when, error: error)
    }

    public var description: String {
        let t: String
        switch target {
        case .call(let name): t = name
        case .anyAllocation: t = "alloc"
        case .allocation(let kind): t = Self.kindNames.first { $0.1 == kind }?.0 ?? "\(kind)"
        case .pin: t = "pin"
        case .copyFromUser: t = "copy-from-user"
        case .copyToUser: t = "copy-to-user"
        }
        let w: String
        switch when {
        case .nth(let n): w = "\(n)"
        case .from(let n): w = "\(n)+"
        case .every(let n): w = "%\(n)"
        case .always: w = "*"
        }
        return "\(t):\(w):\(IOMMUError.errnoName(error.errno) ?? String(error.errno))"
    }
}

/// A `--fail` rule that does not parse.
public struct FaultRuleError: Error, Equatable, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// The installed rules and how many events each has counted (shared by all threads).
final class FaultRuleSet: Sendable {
    let rules: [FaultRule]
    let hasSiteRules: Bool
    private let counts: Locked<[Int]>

    init(_ rules: [FaultRule]) {
        self.rules = rules
        hasSiteRules = rules.contains { rule in if case .call = rule.target { return false }; return true }
        counts = Locked([Int](repeating: 0, count: rules.count))
    }

    /// Counts a call named `name` against the call rules; the error of the first that fails it.
    func called(_ name: StaticString) -> IOMMUError? {
        let text = name.withUTF8Buffer { String(decoding: $0, as: UTF8.self) }
        return count { rule in if case .call(let n) = rule.target { return n == text }; return false }
    }

    /// Counts a site against the site rules; the error of the first that fails it.
    func reached(_ site: FaultSite) -> IOMMUError? {
        count { rule in
            switch (rule.target, site) {
            case (.anyAllocation, .allocation): true
            case (.allocation(let k), .allocation(let s)): s == k || (k == .hwptPaging && s == .hwptNested)
            case (.pin, .pin), (.copyFromUser, .copyFromUser), (.copyToUser, .copyToUser): true
            default: false
            }
        }
    }

    private func count(_ applies: (FaultRule) -> Bool) -> IOMMUError? {
        counts.withLock { counts in
            var failure: IOMMUError?
            for (i, rule) in rules.enumerated() where applies(rule) {
                counts[i] += 1
                if failure == nil, rule.when.matches(counts[i]) { failure = rule.error }
            }
            return failure
        }
    }
}

extension IOMMUError {
    /// The error for an errno given by name (`ENOMEM`) or number (`12`), among those the
    /// framework returns; nil for any other.
    public static func injected(named name: String) -> IOMMUError? {
        let number = Int32(name) ?? errnoNames.first { $0.1 == name.uppercased() }?.0
        guard let number else { return nil }
        return all.first { $0.errno == number }
    }

    /// The conventional name of an errno the framework returns.
    public static func errnoName(_ errno: Int32) -> String? { errnoNames.first { $0.0 == errno }?.1 }

    private static let errnoNames: [(Int32, String)] = [
        (1, "EPERM"), (2, "ENOENT"), (3, "ESRCH"), (5, "EIO"), (6, "ENXIO"), (7, "E2BIG"), (9, "EBADF"),
        (11, "EAGAIN"), (12, "ENOMEM"), (13, "EACCES"), (14, "EFAULT"), (16, "EBUSY"), (17, "EEXIST"),
        (19, "ENODEV"), (22, "EINVAL"), (25, "ENOTTY"), (28, "ENOSPC"), (34, "ERANGE"), (35, "EDEADLK"),
        (52, "EBADE"), (75, "EOVERFLOW"), (77, "EBADFD"), (90, "EMSGSIZE"), (95, "EOPNOTSUPP"), (98, "EADDRINUSE"),
    ]

    private static let all: [IOMMUError] = [
        .notPermitted("injected fault"), .noEntry("injected fault"), .noProcess("injected fault"),
        .ioError("injected fault"), .noSuchAddress("injected fault"), .tooBig("injected fault"),
        .badDescriptor("injected fault"), .again("injected fault"), .noMemory("injected fault"),
        .accessDenied("injected fault"), .fault("injected fault"), .busy("injected fault"),
        .exists("injected fault"), .noDevice("injected fault"), .invalid("injected fault"),
        .notTTY("injected fault"), .noSpace("injected fault"), .range("injected fault"),
        .deadlock("injected fault"), .badExchange("injected fault"), .overflow("injected fault"),
        .badFileState("injected fault"), .messageSize("injected fault"), .notSupported("injected fault"),
        .addressInUse("injected fault"),
    ]
}
