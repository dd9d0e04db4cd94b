// VFIO_DEVICE_IOEVENTFD and the INTx unmask eventfd: eventfds the device watches. The errnos are
// the real kernel's, recorded on the oracle with an igb behind QEMU's VT-d (the MSI-X table case
// adapted to this device's layout: its table is at 0x2000 of BAR 0).
import CIOASIDSys
import Foundation
import IOASIDLinuxABI
import IOASIDSoftIOMMU
import Testing

@Suite("vfio-pci ioeventfds and the INTx unmask eventfd")
struct VFIOIOEventfdTests {
    static let bar0: UInt64 = 0, config: UInt64 = 7 << 40

    @Test func argumentChecksAsVFIOPCI() throws {
        let t = try VFIOTestbed()
        let e = TestEventfd()
        #expect(t.cdev.ioctl(request: IOCTL.VFIO_DEVICE_IOEVENTFD, argument: UnsafeMutableRawPointer(bitPattern: 8)) == -14)
        #expect(t.ioeventfd(argsz: 27, size: 4, offset: 0x28, data: 1, fd: e.fd) == -22)
        #expect(t.ioeventfd(flags: 0x14, offset: 0x28, data: 1, fd: e.fd) == -22, "a flag outside the size mask")
        #expect(t.ioeventfd(flags: 0, offset: 0x28, data: 1, fd: e.fd) == -22, "no size")
        #expect(t.ioeventfd(flags: 3, offset: 0x28, data: 1, fd: e.fd) == -22, "two sizes")
        #expect(t.ioeventfd(size: 4, offset: 0x28, data: 1, fd: -2) == -22)
        #expect(t.ioeventfd(size: 4, offset: Self.config + 0x28, data: 1, fd: e.fd) == -22, "config space")
        #expect(t.ioeventfd(size: 4, offset: 6 << 40, data: 1, fd: e.fd) == -22, "ROM")
        #expect(t.ioeventfd(size: 4, offset: 5 << 40, data: 1, fd: e.fd) == -22, "an unimplemented BAR")
        #expect(t.ioeventfd(size: 4, offset: 0x4000 - 2, data: 1, fd: e.fd) == -22, "past the BAR's end")
        #expect(t.ioeventfd(size: 8, offset: 0x28, data: 1, fd: e.fd) == -22, "8-byte writes")
        #expect(t.ioeventfd(size: 8, offset: 0x28, data: 1, fd: -1) == -22)
        #expect(t.ioeventfd(size: 4, offset: 0x28, data: 1, fd: -1) == -19, "removing one that is not there")
        #expect(t.ioeventfd(size: 4, offset: 0x28, data: 1, fd: 999_999) == -9)
        var pipeFDs: [Int32] = [0, 0]
        #expect(pipe(&pipeFDs) == 0)
        defer { close(pipeFDs[0]); close(pipeFDs[1]) }
        #expect(t.ioeventfd(size: 4, offset: 0x28, data: 1, fd: pipeFDs[0]) == -22, "not an eventfd")
        #expect(t.ioeventfd(size: 4, offset: 0x2000, data: 1, fd: e.fd) == -22, "the MSI-X table")
        #expect(t.ioeventfd(size: 4, offset: 0x2000 - 2, data: 1, fd: e.fd) == -22, "straddling the table's start")
        #expect(t.ioeventfd(size: 4, offset: 0x2000 - 4, data: 1, fd: e.fd) == 0, "just before it")
        #expect(t.ioeventfd(argsz: 28, size: 4, offset: 0x28, data: 1, fd: e.fd) == 0, "argsz up to fd is enough")
        #expect(t.ioeventfd(size: 4, offset: 0x28, data: 1, fd: e.fd) == -17, "the same write again")
        #expect(t.ioeventfd(size: 2, offset: 0x28, data: 1, fd: e.fd) == 0, "another size is another ioeventfd")
        #expect(t.ioeventfd(size: 4, offset: 0x28, data: 2, fd: e.fd) == 0, "and so is other data")
        // At most 1000 per device.
        var added = 4
        while added < 1000, t.ioeventfd(size: 4, offset: 0x40, data: UInt64(added), fd: e.fd) == 0 { added += 1 }
        #expect(added == 1000)
        #expect(t.ioeventfd(size: 4, offset: 0x40, data: 5000, fd: e.fd) == -28)
        #expect(t.ioeventfd(size: 4, offset: 0x40, data: 4, fd: -1) == 0)
        #expect(t.ioeventfd(size: 4, offset: 0x40, data: 5000, fd: e.fd) == 0, "room again after a removal")
    }

    @Test func aSignalWritesTheBARRegister() throws {
        let t = try VFIOTestbed()
        let e = TestEventfd(), other = TestEventfd()
        #expect(t.ioeventfd(size: 4, offset: 0x28, data: 0x1234_5678, fd: e.fd) == 0)
        #expect(t.bar0(0x28, 4) == (4, 0))
        signal(e.fd)
        #expect(waitFor { t.bar0(0x28, 4).1 == 0x1234_5678 }, "the device saw the write")
        #expect(e.take() == 0, "the counter was taken, as the kernel's virqfd takes it")

        // Every ioeventfd of one eventfd fires, the newest first (as the kernel wakes them): a
        // 2-byte and a 1-byte write next to it, through a second descriptor of the same file.
        // (The model's one plain register is the 8-byte scratch at 0x28.)
        #expect(t.setBAR0(0x28, 8, 0) == 8)
        let sameFile = dup(other.fd)
        defer { close(sameFile) }
        #expect(t.ioeventfd(size: 2, offset: 0x2c, data: 0xbeef, fd: other.fd) == 0)
        #expect(t.ioeventfd(size: 1, offset: 0x2e, data: 0xab, fd: sameFile) == 0)
        signal(other.fd)
        #expect(waitFor { t.bar0(0x28, 8).1 == 0x00ab_beef_0000_0000 }, "both writes: \(t.bar0(0x28, 8))")
        // Overlapping writes show the order: the newer 2-byte write, then the older 4-byte one
        // (on the kernel, with a 4-byte 0x5678 and a newer 2-byte 0x1234, 0x5678 remained).
        let third = TestEventfd()
        #expect(t.ioeventfd(size: 4, offset: 0x28, data: 0x1111_1111, fd: third.fd) == 0)
        #expect(t.ioeventfd(size: 2, offset: 0x28, data: 0x2222, fd: third.fd) == 0)
        signal(third.fd)
        #expect(waitFor { t.bar0(0x28, 4).1 != 0 })
        Thread.sleep(forTimeInterval: 0.02)
        #expect(t.bar0(0x28, 4) == (4, 0x1111_1111), "newest first")
        #expect(t.ioeventfd(size: 4, offset: 0x28, data: 0x1111_1111, fd: -1) == 0)
        #expect(t.ioeventfd(size: 2, offset: 0x28, data: 0x2222, fd: -1) == 0)
        #expect(t.setBAR0(0x28, 8, 0) == 8)

        // Removed: a signal writes nothing.
        #expect(t.ioeventfd(size: 4, offset: 0x28, data: 0x1234_5678, fd: -1) == 0)
        #expect(t.setBAR0(0x28, 4, 0) == 4)
        signal(e.fd)
        Thread.sleep(forTimeInterval: 0.05)
        #expect(t.bar0(0x28, 4) == (4, 0))
        #expect(e.take() == 1, "nobody watches the eventfd any more")

        // Memory decoding off: the write is dropped, as vfio-pci's test_mem drops it.
        #expect(t.ioeventfd(size: 4, offset: 0x28, data: 7, fd: e.fd) == 0)
        let command = t.config(4, 2)
        t.setConfig(4, 2, command & ~UInt32(PCIRegister.commandMemory))
        signal(e.fd)
        #expect(waitFor { e.take() == 0 && pendingCount(e.fd) == 0 }, "the signal was taken")
        Thread.sleep(forTimeInterval: 0.05)
        t.setConfig(4, 2, command)
        #expect(t.bar0(0x28, 4) == (4, 0), "no write with memory decoding off")
        signal(e.fd)
        #expect(waitFor { t.bar0(0x28, 4).1 == 7 })
    }

    @Test func anEventfdSignalledBeforehandFiresAtOnceAndTheLastCloseEndsThem() throws {
        let t = try VFIOTestbed()
        let e = TestEventfd()
        signal(e.fd)
        #expect(t.ioeventfd(size: 4, offset: 0x28, data: 0x9abc, fd: e.fd) == 0)
        #expect(waitFor { t.bar0(0x28, 4).1 == 0x9abc })
        // The program's own descriptor may be closed: the ioeventfd stays (the engine holds a
        // duplicate), and removing it still works.
        let copy = dup(e.fd)
        #expect(t.ioeventfd(size: 4, offset: 0x2c, data: 1, fd: copy) == 0)
        close(copy)
        #expect(t.ioeventfd(size: 4, offset: 0x2c, data: 1, fd: e.fd) == -17)
        // The device's last close ends them all.
        #expect(t.pci.ioeventfdCount == 2)
        t.cdev.release()
        #expect(t.pci.ioeventfdCount == 0)
        signal(e.fd)
        Thread.sleep(forTimeInterval: 0.05)
        #expect(e.take() == 1, "nobody watches the eventfd after the close")
    }

    @Test func theUnmaskEventfdUnmasksINTx() throws {
        let t = try VFIOTestbed()
        let trigger = TestEventfd(), unmask = TestEventfd()
        #expect(t.setIRQs(flags: dataEventfd | actionUnmask, index: 0, start: 0, count: 1, data: fdBytes(unmask.fd)) == -22, "INTx is not enabled yet")
        #expect(t.setIRQs(flags: dataEventfd | irqTrigger, index: 0, start: 0, count: 1, data: fdBytes(trigger.fd)) == 0)
        #expect(t.setIRQs(flags: dataEventfd | actionUnmask, index: 0, start: 0, count: 1, data: fdBytes(unmask.fd)) == 0)
        let second = TestEventfd()
        #expect(t.setIRQs(flags: dataEventfd | actionUnmask, index: 0, start: 0, count: 1, data: fdBytes(second.fd)) == -16, "one unmask eventfd at a time")
        t.plugged.slot.signal(vector: 0)
        #expect(trigger.take() == 1)
        t.plugged.slot.signal(vector: 0)
        #expect(trigger.take() == 0, "masked after firing")
        signal(unmask.fd)
        #expect(waitFor { trigger.take() == 1 }, "the signal unmasked INTx and the pending interrupt came")
        t.plugged.slot.signal(vector: 0)
        #expect(trigger.take() == 0, "masked again")
        // fd -1 stops the watch; a new one may then be set.
        #expect(t.setIRQs(flags: dataEventfd | actionUnmask, index: 0, start: 0, count: 1, data: fdBytes(-1)) == 0)
        signal(unmask.fd)
        Thread.sleep(forTimeInterval: 0.05)
        #expect(trigger.take() == 0, "no unmask without the watch")
        #expect(unmask.take() == 1)
        #expect(t.setIRQs(flags: dataEventfd | actionUnmask, index: 0, start: 0, count: 1, data: fdBytes(second.fd)) == 0)
        signal(second.fd)
        #expect(waitFor { trigger.take() == 1 })
        // Closing every descriptor of the watched eventfd ends it, as in the kernel: QEMU closes
        // the old unmask eventfd and sets a new one when the INTx route changes.
        #expect(t.setIRQs(flags: dataEventfd | actionUnmask, index: 0, start: 0, count: 1, data: fdBytes(-1)) == 0)
        let lone = Int32(ioasid_sys_eventfd(0, IOASID_SYS_EFD_NONBLOCK))
        let alias = dup(lone)
        #expect(t.setIRQs(flags: dataEventfd | actionUnmask, index: 0, start: 0, count: 1, data: fdBytes(lone)) == 0)
        let next = TestEventfd()
        close(lone)
        #expect(t.setIRQs(flags: dataEventfd | actionUnmask, index: 0, start: 0, count: 1, data: fdBytes(next.fd)) == -16,
                "the program still has the eventfd under another number")
        close(alias)
        #expect(t.setIRQs(flags: dataEventfd | actionUnmask, index: 0, start: 0, count: 1, data: fdBytes(next.fd)) == 0,
                "its last descriptor closed, the old one is gone")
        t.plugged.slot.signal(vector: 0)
        _ = trigger.take()
        signal(next.fd)
        t.plugged.slot.signal(vector: 0)
        #expect(waitFor { trigger.take() == 1 }, "the new one unmasks")
        // Set `second` again for the end of the test.
        #expect(t.setIRQs(flags: dataEventfd | actionUnmask, index: 0, start: 0, count: 1, data: fdBytes(-1)) == 0)
        #expect(t.setIRQs(flags: dataEventfd | actionUnmask, index: 0, start: 0, count: 1, data: fdBytes(second.fd)) == 0)
        // Disabling INTx ends the unmask watch with it.
        #expect(t.setIRQs(flags: dataNone | irqTrigger, index: 0, start: 0, count: 0) == 0)
        signal(second.fd)
        Thread.sleep(forTimeInterval: 0.05)
        #expect(second.take() == 1, "nobody watches it after INTx is disabled")
    }
}

private func signal(_ fd: Int32) {
    var one: UInt64 = 1
    _ = write(fd, &one, 8)
}

/// The eventfd's counter without taking it (0 when not readable).
private func pendingCount(_ fd: Int32) -> Int {
    var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
    return poll(&p, 1, 0) == 1 ? 1 : 0
}

/// Polls `condition` for up to 2 s (the watcher thread acts asynchronously).
private func waitFor(_ condition: () -> Bool) -> Bool {
    for _ in 0..<400 {
        if condition() { return true }
        Thread.sleep(forTimeInterval: 0.005)
    }
    return condition()
}

extension VFIOTestbed {
    /// `VFIO_DEVICE_IOEVENTFD`; `size` sets the one size flag, `flags` overrides the flags.
    func ioeventfd(argsz: UInt32 = 32, flags: UInt32? = nil, size: Int = 4, offset: UInt64, data: UInt64, fd: Int32) -> Int {
        var raw = [UInt8](repeating: 0, count: 32)
        raw.withUnsafeMutableBytes { b in
            b.storeBytes(of: argsz, toByteOffset: 0, as: UInt32.self)
            b.storeBytes(of: flags ?? UInt32(size), toByteOffset: 4, as: UInt32.self)
            b.storeBytes(of: offset, toByteOffset: 8, as: UInt64.self)
            b.storeBytes(of: data, toByteOffset: 16, as: UInt64.self)
            b.storeBytes(of: fd, toByteOffset: 24, as: Int32.self)
        }
        return raw.withUnsafeMutableBytes { cdev.ioctl(request: IOCTL.VFIO_DEVICE_IOEVENTFD, argument: $0.baseAddress) }
    }
}
