// A plugged device model: the hardware view of its configuration space, MSI-X and reset.
import IOASIDSoftIOMMU
import IOASIDStructures
import Testing

/// Records what a slot delivers.
final class RecordingSink: PCIInterruptSink, @unchecked Sendable {
    let delivered = Locked<[PCIInterrupt]>([])
    func deliver(_ interrupt: PCIInterrupt) { delivered.withLock { $0.append(interrupt) } }
    func take() -> [PCIInterrupt] { delivered.withLock { d in defer { d = [] }; return d } }
}

@Suite("PCI device slot")
struct PCIDeviceSlotTests {
    func makeSlot() -> PCIDeviceSlot {
        let model = GenericPCIDevice()
        let function = PCIFunction(requesterID: RequesterID(rawValue: 8), capabilities: .init(advertisedBy: model), iommu: TestIOMMU())
        return PCIDeviceSlot(model: model, function: function)
    }

    @Test func barSizingOnTheHardware() {
        let slot = makeSlot()
        let address = slot.configRead(0x10, size: 4)
        #expect(address & 0xf == 0x4, "64-bit memory, not prefetchable")
        #expect(address & ~0xf != 0, "placed by the host")
        slot.configWrite(0x10, size: 4, value: ~0)
        slot.configWrite(0x14, size: 4, value: ~0)
        #expect(slot.configRead(0x10, size: 4) == 0xffff_c004)
        #expect(slot.configRead(0x14, size: 4) == 0xffff_ffff)
        slot.configWrite(0x00, size: 4, value: 0)
        #expect(slot.configRead(0x00, size: 4) == 0x00f0_1b36, "IDs are read-only")
    }

    @Test func commandDrivesBusMastering() {
        let slot = makeSlot()
        #expect(!slot.busMasterEnabled, "COMMAND is 0 at power-on")
        slot.configWrite(0x04, size: 2, value: UInt32(PCIRegister.commandBusMaster))
        #expect(slot.busMasterEnabled)
        slot.configWrite(0x04, size: 2, value: 0)
        #expect(!slot.busMasterEnabled)
    }

    @Test func msixMaskedVectorIsPendingUntilUnmasked() {
        let slot = makeSlot()
        let sink = RecordingSink()
        slot.interruptSink = sink
        slot.signal(vector: 1)
        #expect(sink.take() == [.intx], "neither MSI nor MSI-X enabled: INTx")
        slot.setMSIX(enabled: true)
        slot.signal(vector: 1)
        #expect(sink.take().isEmpty, "entries come out of reset masked")
        #expect(slot.isMSIXPending(1))
        #expect(slot.barRead(0, offset: 0x3000, size: 8) == 1 << 1, "the pending bit array shows it")
        slot.barWrite(0, offset: 0x2000 + 16 + 12, size: 4, value: 0)   // unmask entry 1
        #expect(sink.take() == [.msix(vector: 1)])
        #expect(!slot.isMSIXPending(1))
        slot.signal(vector: 1)
        #expect(sink.take() == [.msix(vector: 1)])
        // Table writes and reads stay in the machine.
        slot.barWrite(0, offset: 0x2000, size: 8, value: 0xfee0_0000)
        #expect(slot.barRead(0, offset: 0x2000, size: 8) == 0xfee0_0000)
        #expect(slot.barRead(0, offset: 0x2001, size: 1) == 0xff, "a byte access to the table is not one it accepts")
    }

    @Test func wideAccessesGoToTheModelOrTheMSIXStructures() {
        let slot = makeSlot()
        // A 16-byte store of a whole MSI-X entry (a driver's memcpy): the table takes it, in
        // 8-byte pieces; the model never sees it.
        var entry: [UInt8] = [0x00, 0x00, 0xe0, 0xfe, 0, 0, 0, 0, 0x41, 0, 0, 0, 0, 0, 0, 0]
        entry.withUnsafeBytes { slot.barWrite(0, offset: 0x2000 + 32, bytes: $0) }
        #expect(slot.barRead(0, offset: 0x2000 + 32, size: 8) == 0xfee0_0000)
        #expect(slot.barRead(0, offset: 0x2000 + 40, size: 4) == 0x41)
        #expect(slot.barRead(0, offset: 0x2000 + 44, size: 4) == 0, "the 16-byte store unmasked entry 2")
        // A 32-byte store that ends in the table's first bytes is split where it crosses.
        let span = [UInt8](repeating: 0x11, count: 32)
        span.withUnsafeBytes { slot.barWrite(0, offset: 0x2000 - 16, bytes: $0) }
        #expect(slot.barRead(0, offset: 0x2000, size: 8) == 0x1111_1111_1111_1111)
        // Elsewhere the model gets one wide write (its default splits it into 8-byte writes),
        // and a wide read comes back as 8-byte reads.
        entry = Array(0..<16)
        entry.withUnsafeBytes { slot.barWrite(0, offset: 0x20, bytes: $0) }
        var back = [UInt8](repeating: 0, count: 16)
        back.withUnsafeMutableBytes { slot.barRead(0, offset: 0x20, into: $0) }
        #expect(Array(back[8..<16]) == Array(8..<16), "the scratch register holds the second half")
        #expect(slot.barRead(0, offset: 0x28, size: 8) == 0x0f0e_0d0c_0b0a_0908)
    }

    @Test func functionLevelResetRestoresPowerOnState() {
        let slot = makeSlot()
        slot.barWrite(0, offset: 0x28, size: 8, value: 7)
        slot.configWrite(0x04, size: 2, value: UInt32(PCIRegister.commandBusMaster | PCIRegister.commandMemory))
        let express = slot.layout.express
        slot.configWrite(express + 8, size: 2, value: UInt32(slot.configRead(express + 8, size: 2)) | UInt32(PCIRegister.expressDeviceControlFLR))
        #expect(slot.configRead(0x04, size: 2) == 0, "FLR clears COMMAND")
        #expect(!slot.busMasterEnabled)
        slot.configWrite(0x04, size: 2, value: UInt32(PCIRegister.commandMemory))
        #expect(slot.barRead(0, offset: 0x28, size: 8) == 0, "the model was reset")
    }
}
