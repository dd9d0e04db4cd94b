import CIOASIDSys
import Glibc
import IOASIDCore
import IOASIDStructures
import Synchronization

/// An eventfd of the program that a modelled device watches (`VFIOEventfdWatcher`).
final class VFIOEventfdWatch: Sendable {
    let token: UInt64
    /// The engine's own duplicate of the program's eventfd; closed by `cancel()`.
    let descriptor: Int32
    private let cancelled = Atomic<Bool>(false)

    fileprivate init(token: UInt64, descriptor: Int32) {
        self.token = token
        self.descriptor = descriptor
    }

    /// Stops watching and closes the duplicate. When this returns the action is not running and
    /// never runs again (unless it is the action itself that cancels). Idempotent.
    func cancel() {
        guard !cancelled.exchange(true, ordering: .acquiringAndReleasing) else { return }
        VFIOEventfdWatcher.shared.remove(self)
    }
}

/// The eventfds the modelled devices watch, as the kernel's virqfd watches them for vfio-pci:
/// when the program (or KVM) signals one, its counter is taken and the watch's action runs — a
/// BAR write for a `VFIO_DEVICE_IOEVENTFD`, an INTx unmask for an unmask eventfd given to
/// `VFIO_DEVICE_SET_IRQS`. An eventfd already signalled when the watch starts fires at once.
/// Watches of one eventfd (the same open file, however many descriptors name it) all fire on
/// each signal, the newest first, as the kernel wakes every virqfd waiting on it.
///
/// One thread per process serves every watch: started by the first watch, with every signal
/// blocked (none of the program's signals is ever delivered to it), named `ioasid-virqfd`, waiting
/// on an epoll set with raw system calls (the engine never re-enters the preload). Actions run on
/// that thread one at a time.
///
/// A forked child has no thread: on its first use of the watcher it starts with an empty set of
/// its own (the watches its copy of the engine inherited are not served in the child; cancelling
/// them only closes the child's duplicates).
final class VFIOEventfdWatcher: @unchecked Sendable {
    static let shared = VFIOEventfdWatcher()

    private struct Entry {
        let descriptor: Int32
        let action: @Sendable () -> Void
        /// The token of the oldest watch of the same eventfd (its own when it is the first).
        let file: UInt64
    }

    private struct State {
        /// The process the epoll set and the thread belong to (0: none yet).
        var process: Int = 0
        var epoll: Int32 = -1
        var serving = false
        var servingThread: Int = 0
        var entries: [UInt64: Entry] = [:]
        var nextToken: UInt64 = 1
        /// The eventfd (`Entry.file`) whose actions are running now (0: none).
        var running: UInt64 = 0

        /// Forgets the parent's set in a forked child.
        mutating func adopt(_ pid: Int) {
            guard process != pid else { return }
            if process != 0, epoll >= 0 { _ = ioasid_sys_close(epoll) }
            process = pid
            epoll = -1
            serving = false
            servingThread = 0
            entries = [:]
            running = 0
        }
    }

    private let state = Locked(State())

    /// Watches the program's eventfd through `descriptor`, a duplicate the engine made (which the
    /// watch then owns). ENOMEM when the epoll set or the thread cannot be made; the duplicate is
    /// then closed.
    func watch(_ descriptor: Int32, action: @escaping @Sendable () -> Void) throws(IOMMUError) -> VFIOEventfdWatch {
        let pid = Int(ioasid_sys_getpid())
        let setup: (token: UInt64, epoll: Int32, start: Bool)? = state.withLock { s in
            s.adopt(pid)
            if s.epoll < 0 {
                let made = ioasid_sys_epoll_create()
                guard made >= 0 else { return nil }
                s.epoll = Int32(made)
            }
            let token = s.nextToken
            guard ioasid_sys_epoll_add(s.epoll, descriptor, token) == 0 else { return nil }
            s.nextToken += 1
            let sameFile = s.entries.first { ioasid_sys_same_file($0.value.descriptor, descriptor) == 1 }
            s.entries[token] = Entry(descriptor: descriptor, action: action, file: sameFile?.value.file ?? token)
            let start = !s.serving
            s.serving = true
            return (token, s.epoll, start)
        }
        guard let setup else {
            _ = ioasid_sys_close(descriptor)
            throw .noMemory("cannot watch the eventfd")
        }
        let watch = VFIOEventfdWatch(token: setup.token, descriptor: descriptor)
        if setup.start {
            let started = ioasid_sys_start_thread(Self.threadBody, UnsafeMutableRawPointer(bitPattern: Int(setup.epoll) + 1), "ioasid-virqfd")
            if started != 0 {
                state.withLock { $0.serving = false }
                watch.cancel()
                throw .noMemory("cannot start the eventfd thread")
            }
        }
        return watch
    }

    private static let threadBody: @convention(c) (UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? = { argument in
        shared.serve(epoll: Int32(Int(bitPattern: argument) - 1))
        return nil
    }

    private func serve(epoll: Int32) {
        let thread = Int(ioasid_sys_gettid())
        state.withLock { $0.servingThread = thread }
        while true {
            var token: UInt64 = 0
            let n = ioasid_sys_epoll_wait_one(epoll, &token, -1)
            if n == 0 || n == -Int(EINTR) { continue }
            if n < 0 { return }
            let entry = state.withLock { s -> Entry? in
                guard s.epoll == epoll, let e = s.entries[token] else { return nil }
                s.running = e.file
                return e
            }
            guard let entry else { continue }
            if ioasid_sys_eventfd_take(entry.descriptor) > 0 {
                let actions = state.withLock { s in
                    s.entries.filter { $0.value.file == entry.file }.sorted { $0.key > $1.key }.map(\.value.action)
                }
                for action in actions { action() }
            }
            state.withLock { $0.running = 0 }
        }
    }

    /// Whether the program still has a descriptor of the watched eventfd: one that is neither
    /// this watch's duplicate nor another watch's. (In the kernel a watch ends when the eventfd's
    /// last descriptor is closed; the engine's duplicate keeps the file open, so this is asked
    /// where that end can be seen.) True when it cannot be told.
    func programHolds(_ watch: VFIOEventfdWatch) -> Bool {
        let all = ioasid_sys_count_other_descriptors(watch.descriptor)
        guard all >= 0 else { return true }
        let watched = state.withLock { s in
            s.entries.filter { $0.key != watch.token && ioasid_sys_same_file($0.value.descriptor, watch.descriptor) == 1 }.count
        }
        return all > watched
    }

    fileprivate func remove(_ watch: VFIOEventfdWatch) {
        let pid = Int(ioasid_sys_getpid())
        let thread = Int(ioasid_sys_gettid())
        let file = state.withLock { s -> UInt64? in
            guard s.process == pid, let removed = s.entries.removeValue(forKey: watch.token) else { return nil }
            _ = ioasid_sys_epoll_remove(s.epoll, watch.descriptor)
            return s.running == removed.file && s.servingThread != thread ? removed.file : nil
        }
        if let file {
            // The actions are short (a register write, an unmask); bounded so that a stuck one
            // can never hang the program's close.
            var waited = 0
            while state.withLock({ $0.running == file }), waited < 2_000_000 {
                usleep(20)
                waited += 20
            }
        }
        _ = ioasid_sys_close(watch.descriptor)
    }
}
