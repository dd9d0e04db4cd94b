#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The project's one mutex: a pthread mutex, because ThreadSanitizer models pthread locks (it
/// does not see `Synchronization.Mutex`'s raw futex on Linux and reports false races through
/// it). Not recursive: a body must not take the same lock again. `Locked` guards a value with it.
public final class Lock: @unchecked Sendable {
    @usableFromInline let mutex: UnsafeMutablePointer<pthread_mutex_t>

    /// An unlocked mutex.
    public init() {
        mutex = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// Runs `body` with the lock held.
    @inlinable @inline(__always)
    public func withLock<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }
}

/// A value guarded by a `Lock`: the same shape as `Synchronization.Mutex`, on the lock
/// ThreadSanitizer models. Not recursive: a body must not take the same lock again.
public final class Locked<State: ~Copyable>: @unchecked Sendable {
    @usableFromInline let lock = Lock()
    private var state: State

    /// Guards `initial`.
    public init(_ initial: consuming State) {
        state = initial
    }

    /// Runs `body` with the lock held and the state lent to it.
    @inlinable @inline(__always)
    public func withLock<R, E: Error>(_ body: (inout State) throws(E) -> R) throws(E) -> R {
        pthread_mutex_lock(lock.mutex)
        defer { pthread_mutex_unlock(lock.mutex) }
        return try body(&stateStorage)
    }

    @usableFromInline var stateStorage: State {
        _read { yield state }
        _modify { yield &state }
    }
}
