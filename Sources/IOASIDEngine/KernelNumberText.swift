/// The kernel's `kstrtou*(text, 0)` for what a program writes to a sysfs, procfs or debugfs
/// attribute: one unsigned number, an optional leading `+`, a `0x` prefix for hexadecimal or a
/// leading `0` for octal, and at most one trailing newline.
enum KernelNumberText {
    /// The number in `bytes`, or nil when they are not one unsigned number no larger than `maximum`.
    static func unsigned<Bytes: Collection<UInt8>>(_ bytes: Bytes, maximum: UInt64) -> UInt64? {
        var text = Array(bytes)
        if text.last == UInt8(ascii: "\n") { text.removeLast() }
        if text.first == UInt8(ascii: "+") { text.removeFirst() }
        guard !text.isEmpty else { return nil }
        var radix = 10
        if text.count > 2, text[0] == UInt8(ascii: "0"), text[1] | 0x20 == UInt8(ascii: "x") {
            radix = 16
            text.removeFirst(2)
        } else if text.count > 1, text[0] == UInt8(ascii: "0") {
            radix = 8
            text.removeFirst()
        }
        guard text.allSatisfy({ $0 != UInt8(ascii: "+") && $0 != UInt8(ascii: "-") }),
              let value = UInt64(String(decoding: text, as: UTF8.self), radix: radix), value <= maximum else { return nil }
        return value
    }
}
