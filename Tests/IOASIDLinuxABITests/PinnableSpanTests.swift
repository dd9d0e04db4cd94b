// The pin check's memory of spans that passed it (ioasid_sys_pinnable.h), in-process: this test
// reports its own mmap calls as the preload reports a program's. PreloadTests'
// `rememberedMemoryStillMeetsThePinRules` runs the same rules through the preload.

import CIOASIDSys
import Glibc
import Testing

@Suite(.serialized) struct PinnableSpanTests {
    static let page: UInt64 = 4096

    /// Runs `body` with the spans watched (and no other pinning test running), then stops.
    private func watching(_ body: () throws -> Void) rethrows {
        try PinLock.exclusive {
            #expect(ioasid_sys_uaccess_install() == 0)
            ioasid_sys_pinnable_watch(1)
            defer { ioasid_sys_pinnable_watch(0) }
            try body()
        }
    }

    /// Other tests of this process may report mappings of their own at any moment, which
    /// forgets every span: runs `body` until no change was reported while it ran.
    private func undisturbed(_ body: () -> Bool) -> Bool {
        for _ in 0..<20 {
            let changes = ioasid_sys_pinnable_changes()
            let result = body()
            if ioasid_sys_pinnable_changes() == changes { return result }
        }
        return false
    }

    /// Fresh anonymous memory, mapped as a reported change.
    private func anonymous(pages: Int, at address: UInt64 = 0) -> UInt64 {
        ioasid_sys_mappings_changing()
        defer { ioasid_sys_mappings_changing() }
        let hint = UnsafeMutableRawPointer(bitPattern: UInt(address))
        let p = mmap(hint, pages * Int(Self.page), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | (address != 0 ? MAP_FIXED : 0), -1, 0)!
        precondition(p != MAP_FAILED)
        return UInt64(UInt(bitPattern: p))
    }

    private func pointer(_ address: UInt64) -> UnsafeMutableRawPointer { UnsafeMutableRawPointer(bitPattern: UInt(address))! }

    @Test func aSpanThatPassedIsAnsweredWithoutTheKernel() {
        watching {
            let a = anonymous(pages: 4)
            let skipped = undisturbed {
                let first = ioasid_sys_pinnable_populates()
                guard ioasid_sys_check_range(a, 4 * Self.page, 1) == 0, ioasid_sys_pinnable_populates() == first + 1,
                      ioasid_sys_pinnable_remembered(a, 4 * Self.page) == 1 else { return false }
                // The whole span again and a part of it: no system call.
                guard ioasid_sys_check_range(a, 4 * Self.page, 1) == 0, ioasid_sys_check_range(a + 4096 + 12, 100, 1) == 0 else { return false }
                return ioasid_sys_pinnable_populates() == first + 1
            }
            #expect(skipped, "a writeable span that passed is answered by the probe")
            // A read-only check always asks the kernel (PROT_WRITE-only memory passes a
            // writeable pin and fails a read pin); so does a span reaching past the remembered one.
            let before = ioasid_sys_pinnable_populates()
            #expect(ioasid_sys_check_range(a, 4 * Self.page, 0) == 0)
            #expect(ioasid_sys_pinnable_populates() == before + 1)
            munmap(pointer(a), 4 * Int(Self.page))
        }
    }

    @Test func aProbeThatFaultsIsNeverTheAnswer() {
        watching {
            let a = anonymous(pages: 4)
            let p = pointer(a)
            #expect(ioasid_sys_check_range(a, 4 * Self.page, 1) == 0)
            // Changes nobody reports: the probe sees them and the kernel is asked.
            mprotect(p + 4096, 4096, PROT_READ)
            let before = ioasid_sys_pinnable_populates()
            #expect(ioasid_sys_check_range(a, 4 * Self.page, 1) == -EFAULT, "read-only page, writeable check")
            #expect(ioasid_sys_pinnable_populates() == before + 1, "the kernel answered")
            #expect(ioasid_sys_check_range(a, 4 * Self.page, 0) == 0, "read-only page, read check")
            mprotect(p + 4096, 4096, PROT_NONE)
            #expect(ioasid_sys_check_range(a, 4 * Self.page, 1) == -EFAULT, "PROT_NONE page")
            mprotect(p + 4096, 4096, PROT_READ | PROT_WRITE)
            #expect(ioasid_sys_check_range(a, 4 * Self.page, 1) == 0)
            #expect(ioasid_sys_check_range(a, 4 * Self.page, 1) == 0)
            munmap(p + 2 * 4096, 4096)  // (this process has no preload: not reported)
            #expect(ioasid_sys_check_range(a, 4 * Self.page, 1) == -EFAULT, "unmapped page")
            munmap(p, 4 * Int(Self.page))
        }
    }

    @Test func aReportedChangeForgetsEverySpan() {
        watching {
            let a = anonymous(pages: 2)
            let forgotten = undisturbed {
                guard ioasid_sys_check_range(a, 2 * Self.page, 1) == 0, ioasid_sys_pinnable_remembered(a, 2 * Self.page) == 1 else { return false }
                return true
            }
            #expect(forgotten)
            ioasid_sys_mappings_changing()
            #expect(ioasid_sys_pinnable_remembered(a, 2 * Self.page) == 0)
            let before = ioasid_sys_pinnable_populates()
            #expect(ioasid_sys_check_range(a, 2 * Self.page, 1) == 0)
            #expect(ioasid_sys_pinnable_populates() == before + 1)
            // Unwatched, nothing is remembered and every check asks.
            ioasid_sys_pinnable_watch(0)
            #expect(ioasid_sys_check_range(a, 2 * Self.page, 1) == 0)
            #expect(ioasid_sys_check_range(a, 2 * Self.page, 1) == 0)
            #expect(ioasid_sys_pinnable_populates() == before + 3)
            #expect(ioasid_sys_pinnable_remembered(a, 2 * Self.page) == 0)
            munmap(pointer(a), 2 * Int(Self.page))
        }
    }

    @Test func neighbouringSpansMergeAndAFullSetStartsOver() {
        watching {
            let a = anonymous(pages: 200)
            func check(_ first: UInt64, _ count: UInt64) -> Bool { ioasid_sys_check_range(a + first * Self.page, count * Self.page, 1) == 0 }
            func remembered(_ first: UInt64, _ count: UInt64) -> Bool { ioasid_sys_pinnable_remembered(a + first * Self.page, count * Self.page) == 1 }
            let merged = undisturbed {
                // Out of order, apart, then filling the holes: one span [10, 16).
                guard check(14, 2), check(10, 1), check(12, 1), !remembered(10, 3), check(11, 1), remembered(10, 3),
                      !remembered(10, 6), check(13, 1), remembered(10, 6) else { return false }
                // One span swallowing several: [5, 40).
                guard check(30, 2), check(20, 2), check(5, 35), remembered(5, 35), !remembered(4, 2), !remembered(39, 2) else { return false }
                return true
            }
            #expect(merged)
            let restarted = undisturbed {
                // More separate spans than the set holds (64): it starts over with the newest.
                for i in stride(from: 60 as UInt64, to: 60 + 2 * 70, by: 2) where !check(i, 1) { return false }
                return remembered(198, 1) && !remembered(60, 1) && !remembered(5, 35)
            }
            #expect(restarted)
            munmap(pointer(a), 200 * Int(Self.page))
        }
    }

    @Test func secretMemoryPutOverARememberedSpanIsRefused() throws {
        let fd = ioasid_sys_memfd_secret(2 * Self.page)
        try #require(fd >= 0 || fd == -Int(ENOSYS) || fd == -Int(EPERM) || fd == -Int(EINVAL), "memfd_secret: \(fd)")
        guard fd >= 0 else { return }  // not offered by this kernel
        let secret = Int32(fd)
        defer { close(secret) }
        watching {
            let a = anonymous(pages: 2)
            #expect(ioasid_sys_check_range(a, 2 * Self.page, 1) == 0)
            #expect(ioasid_sys_check_range(a, 2 * Self.page, 1) == 0)
            // The CPU may use secret memory; the kernel never pins it.
            ioasid_sys_mappings_changing()
            let over = mmap(pointer(a), 2 * Int(Self.page), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, secret, 0)
            ioasid_sys_mappings_changing()
            #expect(over == pointer(a))
            pointer(a).storeBytes(of: 7, as: UInt8.self)
            #expect(ioasid_sys_check_range(a, 2 * Self.page, 1) == -EFAULT)
            munmap(pointer(a), 2 * Int(Self.page))
        }
    }
}
