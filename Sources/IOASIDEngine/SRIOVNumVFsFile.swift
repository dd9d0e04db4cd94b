import IOASIDCore
import IOASIDLinuxABI
import Synchronization

/// An open `sriov_numvfs` of a modelled physical function: `read` gives the number of enabled
/// VFs (`"N\n"`, from the position, as sysfs does: a second read returns 0), `write` enables or
/// disables VFs with the kernel's rules and errnos (`MachineDevices.setVirtualFunctions`). The
/// text is parsed as `kstrtou16(buf, 0, ...)` does: decimal, `0x` hex or `0` octal, an optional
/// `+`, one trailing newline; anything else is `EINVAL`.
final class SRIOVNumVFsFile: LinuxFile, Sendable {
    private let devices: MachineDevices
    private let pf: MachineDevice
    private let view: SysfsView?
    private let position = Mutex(0)

    init(devices: MachineDevices, pf: MachineDevice, view: SysfsView?) {
        self.devices = devices
        self.pf = pf
        self.view = view
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        let text = Array("\(devices.virtualFunctions(of: pf.index).count)\n".utf8)
        return position.withLock { at in
            guard at < text.count else { return 0 }
            let count = min(buffer.count, text.count - at)
            for i in 0..<count { buffer[i] = text[at + i] }
            at += count
            return count
        }
    }

    func write(from buffer: UnsafeRawBufferPointer) -> Int {
        guard let count = Self.parse(buffer) else {
            return -Int(IOMMUError.invalid("").errno)
        }
        do throws(IOMMUError) {
            let change = try devices.setVirtualFunctions(pf: pf.index, count: count)
            view?.apply(change, pf: pf)
            return buffer.count
        } catch {
            return -Int(error.errno)
        }
    }

    func release() {}

    var traceKind: String { "\(pf.address)/sriov_numvfs" }

    /// `kstrtou16(text, 0)`: nil when the text is not one unsigned 16-bit number.
    static func parse(_ bytes: UnsafeRawBufferPointer) -> Int? {
        KernelNumberText.unsigned(bytes, maximum: 0xffff).map { Int($0) }
    }
}
