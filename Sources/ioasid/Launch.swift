import Glibc

/// Starts a program with a modified environment, waits for it and ends this process the way the
/// program ended, as `fakeroot` and `umockdev-run` do.
///
/// While the program runs, `SIGINT` and `SIGQUIT` are ignored here (the terminal delivers them to
/// the program too, as `system(3)` does) and `SIGTERM`, `SIGHUP`, `SIGUSR1`, `SIGUSR2` are
/// forwarded to it. Signals this process inherited as ignored stay ignored in the program, and
/// the program starts with the signal mask this process inherited.
struct Launch {
    enum Setting: Equatable {
        case set(String)
        case unset
    }

    var command: [String]
    var environment: [String: Setting] = [:]

    init(command: [String]) {
        self.command = command
    }

    static func variable(_ name: String) -> String? {
        getenv(name).map { String(cString: $0) }
    }

    /// `path` first, then the entries of a `LD_PRELOAD`-style list (separated by `:` or space)
    /// other than `path`.
    static func prepending(_ path: String, toSearchList list: String?) -> String {
        let others = (list ?? "").split(whereSeparator: { $0 == ":" || $0 == " " }).map(String.init).filter { $0 != path }
        return ([path] + others).joined(separator: ":")
    }

    func runAndExitLikeChild() -> Never {
        for (name, setting) in environment {
            switch setting {
            case .set(let value): setenv(name, value, 1)
            case .unset: unsetenv(name)
            }
        }
        let signals = SignalPlan()
        signals.blockForwarded()
        let pid = spawn(signals)
        forwardTarget = pid
        signals.installWhileWaiting()
        let status = wait(for: pid)
        signals.restore()
        exitLike(status)
    }

    private func spawn(_ signals: SignalPlan) -> pid_t {
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var defaults = signals.defaultsForChild
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        var mask = signals.originalMask
        posix_spawnattr_setsigmask(&attributes, &mask)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))

        var argv: [UnsafeMutablePointer<CChar>?] = command.map { strdup($0) }
        argv.append(nil)
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let error = posix_spawnp(&pid, command[0], nil, &attributes, argv, environ)
        if error != 0 {
            let message = "ioasid: \(command[0]): \(String(cString: strerror(error)))\n"
            _ = message.withCString { Glibc.write(2, $0, strlen($0)) }
            exit(error == ENOENT ? 127 : 126)
        }
        return pid
    }

    private func wait(for pid: pid_t) -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            if errno != EINTR {
                perror("ioasid: waitpid")
                exit(125)
            }
        }
        return status
    }

    /// Exits with the program's status, or dies of the program's signal.
    private func exitLike(_ status: Int32) -> Never {
        let signal = status & 0x7f
        if signal == 0 { exit((status >> 8) & 0xff) }
        // Die the same way. Do not dump a second core for the program's crash.
        let core = __rlimit_resource_t(RLIMIT_CORE.rawValue)
        var limit = rlimit(rlim_cur: 0, rlim_max: 0)
        if getrlimit(core, &limit) == 0 {
            limit.rlim_cur = 0
            _ = setrlimit(core, &limit)
        }
        Glibc.signal(signal, SIG_DFL)
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, signal)
        sigprocmask(SIG_UNBLOCK, &set, nil)
        raise(signal)
        exit(128 + signal)
    }
}

/// The process the forwarding handler sends signals to (0 until the program is started).
nonisolated(unsafe) private var forwardTarget: pid_t = 0

private let forward: @convention(c) (Int32) -> Void = { signal in
    if forwardTarget > 0 { kill(forwardTarget, signal) }
}

/// Which signals are ignored or forwarded while the program runs, and how to undo it.
private struct SignalPlan {
    static let ignored = [SIGINT, SIGQUIT]
    static let forwarded = [SIGTERM, SIGHUP, SIGUSR1, SIGUSR2]

    /// Signals this process did not inherit as ignored (the program gets them at default).
    let managed: [Int32]
    let originalMask: sigset_t
    var defaultsForChild: sigset_t

    init() {
        managed = (Self.ignored + Self.forwarded).filter { !Self.isIgnored($0) }
        var mask = sigset_t()
        sigprocmask(SIG_BLOCK, nil, &mask)
        originalMask = mask
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in managed { sigaddset(&defaults, signal) }
        defaultsForChild = defaults
    }

    /// Holds forwarded signals until the program's pid is known; they are delivered then.
    func blockForwarded() {
        var set = sigset_t()
        sigemptyset(&set)
        for signal in Self.forwarded { sigaddset(&set, signal) }
        sigprocmask(SIG_BLOCK, &set, nil)
    }

    /// Installs the handlers and unblocks the forwarded signals here, even if this process was
    /// started with them blocked (the program keeps the mask it inherited).
    func installWhileWaiting() {
        for signal in managed {
            Glibc.signal(signal, Self.ignored.contains(signal) ? SIG_IGN : forward)
        }
        var mask = originalMask
        for signal in managed where !Self.ignored.contains(signal) { sigdelset(&mask, signal) }
        sigprocmask(SIG_SETMASK, &mask, nil)
    }

    func restore() {
        for signal in managed { Glibc.signal(signal, SIG_DFL) }
    }

    private static func isIgnored(_ signal: Int32) -> Bool {
        var current = sigaction()
        sigaction(signal, nil, &current)
        return unsafeBitCast(current.__sigaction_handler.sa_handler, to: Int.self) == unsafeBitCast(SIG_IGN, to: Int.self)
    }
}
