import CIOASIDSys
import IOASIDCore

/// One decoded ioctl argument (the kernel's `iommufd_ucmd`): the caller's struct copied into a
/// buffer of our struct's size with the extensible-struct rules applied, and the way back.
struct UserCommand {
    /// The caller's argument.
    let user: UnsafeMutableRawPointer
    /// The caller's `size` field.
    let userSize: Int
    /// Our copy, `size` bytes, zero past what the caller gave.
    let buffer: UnsafeMutableRawPointer
    /// Our struct's size.
    let size: Int

    /// Our copy as `T`.
    @inline(__always)
    func load<T: UAPIStruct>(_: T.Type = T.self) -> T { buffer.load(as: T.self) }

    /// Stores `value` into our copy and writes `min(userSize, size)` bytes back to the caller
    /// (the kernel's `iommufd_ucmd_respond`, a `copy_to_user`).
    ///
    /// - Throws: `EFAULT` when the caller's struct is not writeable (or an injected
    ///   `copy-to-user` fault); a handler that created something undoes it (`respond(_:undo:)`).
    @inline(__always)
    func respond<T: UAPIStruct>(_ value: T) throws(IOMMUError) {
        try prepareResponse()
        try respondPrepared(value)
    }

    /// `respond(_:)`, running `undo` when the answer cannot be written: for handlers that made
    /// an object the caller would never learn of (the kernel aborts it then).
    @inline(__always)
    func respond<T: UAPIStruct>(_ value: T, undo: () -> Void) throws(IOMMUError) {
        do throws(IOMMUError) { try respond(value) } catch {
            undo()
            throw error
        }
    }

    /// The failure `respond` would meet, checked before a step that cannot be undone (handing
    /// out a descriptor); `respondPrepared` then writes the answer. (The dispatcher has already
    /// checked that the struct of a request that creates something is writeable.)
    @inline(__always)
    func prepareResponse() throws(IOMMUError) {
        try FaultInjection.check(.copyToUser)
    }

    /// Writes the answer after `prepareResponse()` succeeded; `EFAULT` only if the caller's
    /// memory went away since the dispatcher checked it.
    @inline(__always)
    func respondPrepared<T: UAPIStruct>(_ value: T) throws(IOMMUError) {
        buffer.storeBytes(of: value, as: T.self)
        try StructCopy.copyOut(buffer, count: min(userSize, size), to: user)
    }

    /// Writes `count` bytes of our copy at `offset` back to the caller (a partial response).
    @inline(__always)
    func respond(bytes count: Int, at offset: Int) throws(IOMMUError) {
        try StructCopy.copyOut(buffer + offset, count: count, to: user + offset)
    }
}

/// The extensible-struct rules shared by every ioctl.
enum StructCopy {
    /// Copies the caller's struct of `userSize` bytes into `buffer` (`size` bytes, already zeroed).
    ///
    /// - Throws: `EINVAL` below `minimumSize`; `E2BIG` for non-zero bytes past `size`;
    ///   `EFAULT` when the tail cannot be read.
    @inline(__always)
    static func copyIn(from user: UnsafeMutableRawPointer, userSize: Int, into buffer: UnsafeMutableRawPointer,
                       size: Int, minimumSize: Int) throws(IOMMUError) {
        guard userSize >= minimumSize else { throw .invalid("argument size below the last mandatory field") }
        try FaultInjection.check(.copyFromUser)
        if ioasid_sys_copy_in(buffer, UInt64(UInt(bitPattern: user)), min(userSize, size)) != 0 {
            throw .fault("argument is not readable")
        }
        if userSize > size { try checkZeroTail(user + size, count: userSize - size) }
    }

    /// The tail checked one aligned 8-byte word at a time (a word never crosses a page):
    /// `E2BIG` at the first word with a non-zero byte of the span, `EFAULT` at the first word
    /// that cannot be read.
    static func checkZeroWords(_ address: UInt64, count: Int) throws(IOMMUError) {
        let end = address + UInt64(count)
        var word = address & ~7
        while word < end {
            var value: UInt64 = 0
            if ioasid_sys_copy_in(&value, word, 8) != 0 { throw .fault("argument tail is not readable") }
            let lo = max(word, address) - word, hi = min(word + 8, end) - word
            let mask = (hi - lo == 8 ? UInt64.max : ((UInt64(1) << ((hi - lo) * 8)) - 1)) << (lo * 8)
            if value & mask != 0 { throw .tooBig("non-zero bytes past the known struct") }
            word += 8
        }
    }

    /// The caller's `size` field, the first 4 bytes of every iommufd struct.
    @inline(__always)
    static func size(at user: UnsafeMutableRawPointer) throws(IOMMUError) -> Int {
        var size: UInt32 = 0
        if ioasid_sys_copy_in(&size, UInt64(UInt(bitPattern: user)), 4) != 0 { throw .fault("argument pointer not readable") }
        return Int(size)
    }

    /// Copies `count` bytes from `buffer` to the caller's `user`, fault-safely.
    @inline(__always)
    static func copyOut(_ buffer: UnsafeRawPointer, count: Int, to user: UnsafeMutableRawPointer) throws(IOMMUError) {
        if ioasid_sys_copy_out(UInt64(UInt(bitPattern: user)), buffer, count) != 0 { throw .fault("argument is not writeable") }
    }

    /// Checks that `count` bytes at `address` are zero, reading them fault-safely.
    static func checkZeroTail(_ address: UnsafeMutableRawPointer, count: Int) throws(IOMMUError) {
        var chunk: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)
        var at = UInt64(UInt(bitPattern: address))
        var rest = count
        while rest > 0 {
            let n = min(rest, 64)
            chunk = (0, 0, 0, 0, 0, 0, 0, 0)
            let rc = withUnsafeMutableBytes(of: &chunk) { ioasid_sys_copy_in($0.baseAddress, at, n) }
            if rc != 0 {
                // As the kernel's check_zeroed_user: aligned words in order, so a non-zero byte
                // before the unreadable part is E2BIG, not EFAULT.
                try checkZeroWords(at, count: n)
                throw .fault("argument tail is not readable")
            }
            let zero = withUnsafeBytes(of: &chunk) { b in b.allSatisfy { $0 == 0 } }
            if !zero { throw .tooBig("non-zero bytes past the known struct") }
            rest -= n
            at += UInt64(n)
        }
    }
}
